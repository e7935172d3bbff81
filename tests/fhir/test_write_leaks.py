"""Security review finding 1 (and 16): a write never shows a token data it may not read.

A conditional create or update is a search (its answer tells whether the identifier exists, and
which resource has it), so it needs the search permission as well; a matched or updated resource
comes back only to a token that may read it; an error never names another patient. Each test
failed before the fix (the ``c``-only token got 200 with the other patient's resource).
"""

from __future__ import annotations

import json

import pytest

from service.auth import create_token
from service.models import Patient
from tests.factories import PATIENT, make

pytestmark = pytest.mark.postgres

FHIR = {"Content-Type": "application/fhir+json"}
BASE = "https://clinic.example.org/fhir"
MRN_SYSTEM = f"{BASE}/mrn"


def bearer(db, name: str, *scopes: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {create_token(db, name, scopes)}"} | FHIR


def ehr_patient(family: str = "Quill", mrn: str = "E-9") -> dict:
    return {"resourceType": "Patient",
            "identifier": [{"system": "urn:oid:2.16.840.1.113883.3.9999.7", "value": mrn}],
            "name": [{"family": family, "given": ["Tam"]}], "gender": "male", "birthDate": "1990-01-01"}


def with_mrn(resource: dict, mrn: str) -> dict:
    resource["identifier"] = [{"type": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v2-0203",
                                                    "code": "MR"}]}, "system": MRN_SYSTEM, "value": mrn}]
    return resource


@pytest.fixture
def stored(api) -> dict:
    """A clinic patient (MRN-0001, 'Rowan') that the write-only tokens must learn nothing about."""
    assert api.put("/patients/pt-x", make(PATIENT, id="pt-x", referring_practitioner_id=None)).status_code == 201
    return {"mrn": PATIENT["mrn"], "family": PATIENT["name"]["family"], "birth": PATIENT["birth_date"]}


def _nothing_of(response, stored: dict) -> None:
    text = response.get_data(as_text=True)
    for value in (stored["mrn"], stored["family"], stored["birth"], "pt-x"):
        assert value not in text, (value, text)
    for name, value in response.headers.items():
        if name.lower() not in ("content-type", "content-length"):
            assert "pt-x" not in value


def test_a_create_only_token_cannot_conditional_create(client, db, stored):
    headers = bearer(db, "c-only", "system/Patient.c") | {"If-None-Exist": f"identifier={MRN_SYSTEM}|{stored['mrn']}"}
    response = client.post("/fhir/Patient", json=ehr_patient(), headers=headers)
    assert response.status_code == 403
    _nothing_of(response, stored)
    assert db.query(Patient).count() == 1  # nothing created either


def test_a_match_without_read_permission_comes_back_without_a_body(client, db, stored):
    headers = bearer(db, "cs", "system/Patient.cs") | {"If-None-Exist": f"identifier={MRN_SYSTEM}|{stored['mrn']}"}
    response = client.post("/fhir/Patient", json=ehr_patient(), headers=headers)
    assert response.status_code == 200 and response.get_data() == b""
    _nothing_of(response, stored)


def test_a_match_with_read_permission_is_returned(client, db, stored):
    headers = bearer(db, "crs", "system/Patient.crs") | {"If-None-Exist": f"identifier={MRN_SYSTEM}|{stored['mrn']}"}
    response = client.post("/fhir/Patient", json=ehr_patient(), headers=headers)
    assert response.status_code == 200 and response.get_json(force=True)["name"][0]["family"] == stored["family"]


def test_a_conditional_update_needs_search_and_answers_no_body_without_read(client, db, stored):
    query = f"identifier={MRN_SYSTEM}|{stored['mrn']}"
    denied = client.put(f"/fhir/Patient?{query}", json=ehr_patient(), headers=bearer(db, "u", "system/Patient.u"))
    assert denied.status_code == 403
    _nothing_of(denied, stored)
    updated = client.put(f"/fhir/Patient?{query}", json=with_mrn(ehr_patient(), stored["mrn"]),
                         headers=bearer(db, "us", "system/Patient.us"))
    assert updated.status_code == 200 and updated.get_data() == b""


def test_a_transaction_returns_representations_only_of_what_the_token_may_read(client, db, stored):
    bundle = {"resourceType": "Bundle", "type": "transaction", "entry": [
        {"resource": ehr_patient(), "request": {"method": "POST", "url": "Patient",
                                                "ifNoneExist": f"identifier={MRN_SYSTEM}|{stored['mrn']}"}}]}
    prefer = {"Prefer": "return=representation"}
    denied = client.post("/fhir", data=json.dumps(bundle), headers=bearer(db, "c", "system/Patient.c") | prefer)
    assert denied.status_code == 403
    _nothing_of(denied, stored)
    matched = client.post("/fhir", data=json.dumps(bundle), headers=bearer(db, "cs2", "system/Patient.cs") | prefer)
    assert matched.status_code == 200, matched.get_data(as_text=True)
    entry = matched.get_json(force=True)["entry"][0]
    assert "resource" not in entry and entry["response"]["status"] == "200 OK"
    _nothing_of(matched, stored)


def test_a_taken_mrn_names_no_other_patient(client, db, api, stored):
    taken = make(PATIENT, id="pt-y", referring_practitioner_id=None, identifiers=[])
    clinic = api.put("/patients/pt-y", taken)
    assert clinic.status_code == 409 and "pt-x" not in clinic.get_data(as_text=True)
    resource = with_mrn(ehr_patient(), stored["mrn"])
    over_fhir = client.post("/fhir/Patient", json=resource, headers=bearer(db, "writer", "system/Patient.c"))
    assert over_fhir.status_code in (409, 422), over_fhir.get_data(as_text=True)
    _nothing_of(over_fhir, stored)


@pytest.mark.parametrize("criteria", ["identifier=urn:oid:2.16.840.1.113883.3.9999.7|", "identifier=|E-9",
                                      "identifier="])
def test_conditional_criteria_need_a_system_and_a_value(client, db, criteria):
    # finding 16: "system|" (any value) created a new patient instead of matching or refusing
    headers = bearer(db, "op", "*") | {"If-None-Exist": criteria}
    response = client.post("/fhir/Patient", json=ehr_patient(), headers=headers)
    assert response.status_code in (400, 412), response.get_data(as_text=True)
    assert db.query(Patient).count() == 0
