"""EHR writes over FHIR: Patient, Practitioner and ServiceRequest become clinic records; conditional
creates never duplicate, even when 16 race each other on PostgreSQL."""

from __future__ import annotations

import threading

import pytest

from mappings.datatypes import fhir_id
from tests.factories import PATIENT, seed_course

pytestmark = pytest.mark.postgres

FHIR = {"Content-Type": "application/fhir+json"}
BASE = "https://clinic.example.org/fhir"
EHR_MRN = "urn:oid:2.16.840.1.113883.3.9999.7"


def ehr_patient(mrn: str = "E-777", family: str = "Larch") -> dict:
    return {"resourceType": "Patient",
            "identifier": [{"type": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v2-0203",
                                                 "code": "MR"}]}, "system": EHR_MRN, "value": mrn}],
            "name": [{"family": family, "given": ["Robin"]}], "gender": "female", "birthDate": "1979-05-02"}


def _outcome(response, status: int) -> dict:
    assert response.status_code == status, response.get_data(as_text=True)
    body = response.get_json(force=True)
    assert body["resourceType"] == "OperationOutcome"
    return body


def test_create_makes_a_clinic_patient_visible_in_the_clinic_api(client, auth, api):
    response = client.post("/fhir/Patient", json=ehr_patient(), headers=auth | FHIR)
    assert response.status_code == 201, response.get_data(as_text=True)
    assert "/fhir/Patient/" in response.headers["Location"] and "/_history/1" in response.headers["Location"]
    assert response.headers["ETag"] == 'W/"1"'
    served = response.get_json(force=True)
    clinic_id = next(i["value"] for i in served["identifier"] if i["system"] == f"{BASE}/patients")
    record = api.get(f"/patients/{clinic_id}").get_json()
    assert record["mrn"] == "E-777" and record["name"]["family"] == "Larch"


def test_conditional_create_finds_the_existing_patient(client, auth):
    first = client.post("/fhir/Patient", json=ehr_patient(), headers=auth | FHIR)
    again = client.post("/fhir/Patient", json=ehr_patient(),
                        headers=auth | FHIR | {"If-None-Exist": f"identifier={EHR_MRN}|E-777"})
    assert again.status_code == 200
    assert again.get_json(force=True)["id"] == first.get_json(force=True)["id"]


def test_sixteen_concurrent_identical_conditional_creates_make_one_patient(app, auth, db):
    from service.models import Patient

    statuses: list[int] = []

    def create() -> None:
        with app.test_client() as c:
            statuses.append(c.post("/fhir/Patient", json=ehr_patient(mrn="RACE-1"),
                                   headers=auth | FHIR | {"If-None-Exist": f"identifier={EHR_MRN}|RACE-1"}).status_code)

    threads = [threading.Thread(target=create) for _ in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    db.rollback()
    assert sorted(statuses) == [200] * 15 + [201]
    assert db.query(Patient).filter(Patient.mrn == "RACE-1").count() == 1


def test_update_with_if_match_and_a_stale_version_is_412(client, auth):
    created = client.post("/fhir/Patient", json=ehr_patient(), headers=auth | FHIR).get_json(force=True)
    url = f"/fhir/Patient/{created['id']}"
    changed = ehr_patient(family="Larch-Oak") | {"id": created["id"]}
    ok = client.put(url, json=changed, headers=auth | FHIR | {"If-Match": 'W/"1"'})
    assert ok.status_code == 200 and ok.headers["ETag"] == 'W/"2"'
    stale = client.put(url, json=changed | {"gender": "male"}, headers=auth | FHIR | {"If-Match": 'W/"1"'})
    _outcome(stale, 412)


def test_conditional_update_creates_then_updates(client, auth):
    url = f"/fhir/Patient?identifier={EHR_MRN}|E-900"
    assert client.put(url, json=ehr_patient(mrn="E-900"), headers=auth | FHIR).status_code == 201
    again = client.put(url, json=ehr_patient(mrn="E-900", family="Pine"), headers=auth | FHIR)
    assert again.status_code == 200 and again.get_json(force=True)["name"][0]["family"] == "Pine"


def test_an_ehr_update_of_a_patient_keeps_the_clinic_only_weight_and_height(client, auth, api):
    # a FHIR Patient has no place for them, and weight-based dosing needs them
    created = client.post("/fhir/Patient", json=ehr_patient(mrn="E-950"), headers=auth | FHIR).get_json(force=True)
    clinic_id = next(i["value"] for i in created["identifier"] if i["system"] == f"{BASE}/patients")
    record = api.get(f"/patients/{clinic_id}").get_json()
    kept = {k: v for k, v in record.items() if k not in ("version", "created_at", "updated_at")}
    assert api.put(f"/patients/{clinic_id}", kept | {"weight_kg": 71.5, "height_cm": 168.0}).status_code == 200
    changed = ehr_patient(mrn="E-950", family="Birch") | {"id": created["id"]}
    assert client.put(f"/fhir/Patient/{created['id']}", json=changed, headers=auth | FHIR).status_code == 200
    after = api.get(f"/patients/{clinic_id}").get_json()
    assert (after["name"]["family"], after["weight_kg"], after["height_cm"]) == ("Birch", 71.5, 168.0)


def test_prefer_return_minimal_and_operation_outcome(client, auth):
    minimal = client.post("/fhir/Patient", json=ehr_patient(), headers=auth | FHIR | {"Prefer": "return=minimal"})
    assert minimal.status_code == 201 and minimal.get_data() == b"" and minimal.headers["Location"]
    oo = client.post("/fhir/Patient", json=ehr_patient(mrn="E-2"),
                     headers=auth | FHIR | {"Prefer": "return=OperationOutcome"})
    assert oo.get_json(force=True)["resourceType"] == "OperationOutcome"


def test_a_referral_from_an_ehr_becomes_a_clinic_referral(client, auth, api):
    seed_course(api)
    patient_ref = f"Patient/{fhir_id(BASE, 'Patient', 'patients', 'pt-1')}"
    psychiatrist_ref = f"Practitioner/{fhir_id(BASE, 'Practitioner', 'practitioners', 'dr-ortiz')}"
    referral = {"resourceType": "ServiceRequest", "status": "active", "intent": "order",
                "identifier": [{"system": "urn:oid:2.16.840.1.113883.3.9999.8", "value": "REF-55"}],
                "subject": {"reference": patient_ref}, "requester": {"reference": psychiatrist_ref},
                "authoredOn": "2026-02-01", "code": {"text": "Ketamine treatment referral"},
                "reasonCode": [{"coding": [{"system": "http://hl7.org/fhir/sid/icd-10-cm", "code": "F33.2"}]}]}
    first = client.post("/fhir/ServiceRequest", json=referral, headers=auth | FHIR)
    assert first.status_code == 201, first.get_data(as_text=True)
    # the EHR's identifier stays on the referral: pushed back there, it must not be stripped
    assert referral["identifier"][0] in first.get_json(force=True)["identifier"]
    again = client.post("/fhir/ServiceRequest", json=referral, headers=auth | FHIR)
    assert again.get_json(force=True)["id"] == first.get_json(force=True)["id"]  # same EHR identifier, one referral
    referrals = api.get("/referrals?patient_id=pt-1").get_json()["items"]
    assert any(r["diagnoses"] == ["F33.2"] and r["referrer_id"] == "dr-ortiz" for r in referrals
               if r["id"].startswith("ehr-"))


def test_an_ehr_update_of_a_patient_without_general_practitioner_keeps_the_referrer(client, auth, api):
    """Our Patients carry no generalPractitioner (the PCP in R4, mapping revision 2), so the EHR's
    copy sent back must not erase the clinic's referring practitioner."""
    seed_course(api)
    url = f"/fhir/Patient/{fhir_id(BASE, 'Patient', 'patients', 'pt-1')}"
    ours = client.get(url, headers=auth).get_json(force=True)
    assert "generalPractitioner" not in ours
    changed = {k: v for k, v in ours.items() if k != "meta"} | {"gender": "other"}
    assert client.put(f"/fhir/Patient/{ours['id']}", json=changed, headers=auth | FHIR).status_code == 200
    after = api.get("/patients/pt-1").get_json()
    assert (after["sex"], after["referring_practitioner_id"]) == ("other", "dr-ortiz")


def test_an_ehr_referral_without_requester_takes_the_referrer_from_the_patients_general_practitioner(
        client, auth, api):
    """The requester first; Patient.generalPractitioner (one of our Practitioners) only as the fallback."""
    seed_course(api)
    psychiatrist_ref = f"Practitioner/{fhir_id(BASE, 'Practitioner', 'practitioners', 'dr-ortiz')}"
    patient = ehr_patient(mrn="E-960") | {"generalPractitioner": [{"reference": psychiatrist_ref}]}
    created = client.post("/fhir/Patient", json=patient, headers=auth | FHIR)
    assert created.status_code == 201, created.get_data(as_text=True)
    referral = {"resourceType": "ServiceRequest", "status": "active", "intent": "order",
                "identifier": [{"system": "urn:oid:2.16.840.1.113883.3.9999.8", "value": "REF-56"}],
                "subject": {"reference": f"Patient/{created.get_json(force=True)['id']}"},
                "authoredOn": "2026-02-01", "code": {"text": "Ketamine treatment referral"},
                "reasonCode": [{"coding": [{"system": "http://hl7.org/fhir/sid/icd-10-cm", "code": "F33.2"}]}]}
    response = client.post("/fhir/ServiceRequest", json=referral, headers=auth | FHIR)
    assert response.status_code == 201, response.get_data(as_text=True)
    assert response.get_json(force=True)["requester"]["reference"] == psychiatrist_ref


@pytest.mark.parametrize("body,headers,status", [
    ({"resourceType": "Patient"}, {"Content-Type": "text/plain"}, 415),
    ("{not json", FHIR, 400),
    ({"resourceType": "Observation"}, FHIR, 400),
    ({"resourceType": "Patient", "gender": 5}, FHIR, 400),
    ({"resourceType": "Patient", "name": [{"family": "X"}], "gender": "female", "birthDate": "1980-01-01"}, FHIR, 422),
])
def test_bad_writes_are_operation_outcomes(client, auth, body, headers, status):
    data = body if isinstance(body, str) else None
    kwargs = {"data": data} if data else {"json": body}
    response = client.post("/fhir/Patient", headers=auth | headers, **kwargs)
    _outcome(response, status)


def test_update_as_create_is_refused(client, auth):
    _outcome(client.put("/fhir/Patient/does-not-exist", json=ehr_patient(), headers=auth | FHIR), 405)


def test_a_clinic_patient_mrn_clash_is_409(client, auth, api):
    api.put("/patients/pt-1", {k: v for k, v in PATIENT.items() if k != "referring_practitioner_id"})
    clash = ehr_patient(mrn=PATIENT["mrn"])
    _outcome(client.post("/fhir/Patient", json=clash, headers=auth | FHIR), 409)
