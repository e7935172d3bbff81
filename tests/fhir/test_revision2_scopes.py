"""The resource types mapping revision 2 added (CareTeam, Flag, QuestionnaireResponse, Medication)
and the ``_security`` search are behind the same SMART scopes as every type: a token without the
type's read scope gets a 403 OperationOutcome naming no patient data, never a resource."""

from __future__ import annotations

import pytest
from sqlalchemy import select

from service.auth import create_token
from service.models import FhirResource
from service.synthetic import clinic_lines

NEW_TYPES = ("CareTeam", "Flag", "QuestionnaireResponse", "Medication")


@pytest.fixture
def patient_only(api, db) -> dict[str, str]:
    assert api.import_ndjson("\n".join(clinic_lines(4))).get_json()["rejected"] == 0
    return {"Authorization": f"Bearer {create_token(db, 'patients-only', ['system/Patient.rs'])}"}


@pytest.mark.parametrize("resource_type", NEW_TYPES)
def test_a_token_without_the_type_scope_reads_and_searches_nothing(client, db, patient_only, resource_type):
    ids = db.scalars(select(FhirResource.id).where(FhirResource.resource_type == resource_type)).all()
    assert ids  # the clinic has some: a 403 is not an empty result
    one = f"/fhir/{resource_type}/{ids[0]}"
    for url in (f"/fhir/{resource_type}", one, f"{one}/_history"):
        response = client.get(url, headers=patient_only)
        body = response.get_data(as_text=True)
        assert response.status_code == 403, url
        assert response.get_json()["resourceType"] == "OperationOutcome"
        assert ids[0] not in body and "Patient/" not in body


def test_a_security_label_search_on_a_type_outside_the_scope_is_refused(client, patient_only):
    response = client.get("/fhir/Condition?_security=http://terminology.hl7.org/CodeSystem/v3-ActCode|SUD",
                          headers=patient_only)
    assert response.status_code == 403 and "entry" not in response.get_json()
