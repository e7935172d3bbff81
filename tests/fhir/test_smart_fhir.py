"""End to end: a backend client discovers the token endpoint, signs an assertion and calls /fhir."""

from __future__ import annotations

import pytest
from sqlalchemy import select

from service.fhir.smart import register_client
from service.models import FhirResource
from service.synthetic import clinic_lines
from tests.fhir.smart_support import Clock, assertion, ec_key, jwks, token_form, with_smart


@pytest.mark.postgres
def test_a_backend_client_authenticates_with_a_signed_jwt_and_reads_within_its_scopes(app, db, api):
    clock = Clock()
    http = with_smart(app, clock).test_client()
    assert api.import_ndjson("\n".join(clinic_lines(1))).status_code == 200
    client_id = register_client(db, "ehr", jwks(ec_key()), ["system/Patient.rs"]).client_id

    token_url = http.get("/.well-known/smart-configuration").get_json()["token_endpoint"]
    answer = http.post(token_url, data=token_form(assertion(ec_key(), client_id, clock.now), "system/Patient.rs"))
    headers = {"Authorization": f"Bearer {answer.get_json()['access_token']}", "Accept": "application/fhir+json"}

    patient, practitioner = (f"{t}/{db.scalar(select(FhirResource.id).where(FhirResource.resource_type == t))}"
                             for t in ("Patient", "Practitioner"))
    read = http.get(f"/fhir/{patient}", headers=headers)
    assert read.status_code == 200 and f"Patient/{read.get_json()['id']}" == patient

    forbidden = http.get(f"/fhir/{practitioner}", headers=headers)
    assert forbidden.status_code == 403 and forbidden.get_json()["issue"][0]["code"] == "forbidden"
    anonymous = http.get(f"/fhir/{patient}")
    assert anonymous.status_code == 401 and anonymous.get_json()["resourceType"] == "OperationOutcome"
    assert anonymous.headers["WWW-Authenticate"].startswith("Bearer")
    clock.advance(300)
    assert http.get(f"/fhir/{patient}", headers=headers).status_code == 401  # the token lived 300 s
