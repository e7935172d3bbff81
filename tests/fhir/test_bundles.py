"""POST /fhir with transaction and batch Bundles (R4 http.html#transaction): urn:uuid and conditional
references, processing order, all-or-nothing transactions, independent batch entries, size limits,
malformed Bundles and scopes."""

from __future__ import annotations

import json

import pytest

from service.auth import create_token
from service.fhir.bundles import MAX_ENTRIES
from service.synthetic import npi_with_check_digit
from tests.fhir_checks import validate_with_peer

pytestmark = pytest.mark.postgres

FHIR = {"Content-Type": "application/fhir+json"}
EHR_MRN = "urn:oid:2.16.840.1.113883.3.9999.7"
EHR_REF = "urn:oid:2.16.840.1.113883.3.9999.8"
NPI_SYSTEM = "http://hl7.org/fhir/sid/us-npi"
NPI = npi_with_check_digit("123456789")
PT_URN = "urn:uuid:6f1c6c1e-2b8a-4c3e-9a4e-0d5f2f6a1b01"
DR_URN = "urn:uuid:6f1c6c1e-2b8a-4c3e-9a4e-0d5f2f6a1b02"


def patient(mrn: str = "E-100", family: str = "Larch") -> dict:
    mr = {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v2-0203", "code": "MR"}]}
    return {"resourceType": "Patient", "identifier": [{"type": mr, "system": EHR_MRN, "value": mrn}],
            "name": [{"family": family, "given": ["Robin"]}], "gender": "female", "birthDate": "1979-05-02"}


def practitioner() -> dict:
    return {"resourceType": "Practitioner", "identifier": [{"system": NPI_SYSTEM, "value": NPI}],
            "name": [{"family": "Ortiz", "given": ["Ana"]}]}


def referral(subject: str, requester: str, ref: str = "REF-1") -> dict:
    return {"resourceType": "ServiceRequest", "status": "active", "intent": "order",
            "identifier": [{"system": EHR_REF, "value": ref}],
            "subject": {"reference": subject}, "requester": {"reference": requester},
            "authoredOn": "2026-02-01", "code": {"text": "Ketamine treatment referral"},
            "reasonCode": [{"coding": [{"system": "http://hl7.org/fhir/sid/icd-10-cm", "code": "F33.2"}]}]}


def post(resource: dict, full_url: str | None = None, if_none_exist: str | None = None) -> dict:
    request = {"method": "POST", "url": resource["resourceType"]}
    if if_none_exist:
        request["ifNoneExist"] = if_none_exist
    return {**({"fullUrl": full_url} if full_url else {}), "resource": resource, "request": request}


def bundle(kind: str, *entries: dict) -> dict:
    return {"resourceType": "Bundle", "type": kind, "entry": list(entries)}


def linked_transaction() -> dict:
    """A referral listed before the Patient and Practitioner it names by urn:uuid."""
    return bundle("transaction",
                  post(referral(PT_URN, DR_URN), "urn:uuid:6f1c6c1e-2b8a-4c3e-9a4e-0d5f2f6a1b03",
                       f"identifier={EHR_REF}|REF-1"),
                  post(patient(), PT_URN, f"identifier={EHR_MRN}|E-100"),
                  post(practitioner(), DR_URN, f"identifier={NPI_SYSTEM}|{NPI}"))


def _outcome(response, status: int) -> dict:
    assert response.status_code == status, response.get_data(as_text=True)
    body = response.get_json(force=True)
    assert body["resourceType"] == "OperationOutcome" and body["issue"][0]["severity"] == "error"
    return body


def _response(response, kind: str) -> dict:
    assert response.status_code == 200, response.get_data(as_text=True)
    body = response.get_json(force=True)
    assert body["resourceType"] == "Bundle" and body["type"] == kind
    return body


def _counts(db) -> tuple[int, int, int]:
    from service.models import Patient, Practitioner, Referral

    db.rollback()
    return db.query(Patient).count(), db.query(Practitioner).count(), db.query(Referral).count()


def test_a_transaction_links_new_resources_by_urn_uuid(client, auth, api, tmp_path):
    sent = client.post("/fhir", json=linked_transaction(), headers=auth | FHIR | {"Prefer": "return=representation"})
    body = _response(sent, "transaction-response")
    referral_entry, patient_entry, practitioner_entry = body["entry"]
    assert [e["response"]["status"] for e in body["entry"]] == ["201 Created"] * 3
    for e in body["entry"]:
        assert e["response"]["etag"] == 'W/"1"' and e["response"]["lastModified"].endswith("Z")
        assert e["response"]["location"] == f"{e['resource']['resourceType']}/{e['resource']['id']}/_history/1"
    served = referral_entry["resource"]
    assert served["subject"]["reference"] == f"Patient/{patient_entry['resource']['id']}"
    assert served["requester"]["reference"] == f"Practitioner/{practitioner_entry['resource']['id']}"
    # visible through the clinic API: one patient, with the referral from the new psychiatrist
    clinic_patient = next(i["value"] for i in patient_entry["resource"]["identifier"]
                          if i["system"].endswith("/patients"))
    referrals = api.get(f"/referrals?patient_id={clinic_patient}").get_json()["items"]
    assert len(referrals) == 1 and referrals[0]["diagnoses"] == ["F33.2"]
    assert api.get(f"/practitioners/{referrals[0]['referrer_id']}").get_json()["npi"] == NPI
    read = client.get(f"/fhir/ServiceRequest/{served['id']}", headers=auth)
    assert read.status_code == 200 and read.get_json(force=True)["subject"] == served["subject"]
    assert validate_with_peer([body], tmp_path) == []


def test_the_same_transaction_twice_with_if_none_exist_makes_no_duplicates(client, auth, db):
    first = _response(client.post("/fhir", json=linked_transaction(), headers=auth | FHIR), "transaction-response")
    again = _response(client.post("/fhir", json=linked_transaction(), headers=auth | FHIR), "transaction-response")
    assert [e["response"]["status"] for e in again["entry"]] == ["200 OK"] * 3
    assert [e["fullUrl"] for e in again["entry"]] == [e["fullUrl"] for e in first["entry"]]
    assert "resource" not in first["entry"][0]  # return=minimal is the default inside a Bundle
    assert _counts(db) == (1, 1, 1)


def test_conditional_references_resolve_to_the_single_match(client, auth, db):
    made = _response(client.post("/fhir", json=bundle("batch", post(patient()), post(practitioner())),
                                 headers=auth | FHIR), "batch-response")
    pid = made["entry"][0]["fullUrl"].rsplit("/", 1)[1]
    conditional = referral(f"Patient?identifier={EHR_MRN}|E-100", f"Practitioner?identifier={NPI_SYSTEM}|{NPI}")
    sent = client.post("/fhir", json=bundle("transaction", post(conditional)),
                       headers=auth | FHIR | {"Prefer": "return=representation"})
    served = _response(sent, "transaction-response")["entry"][0]["resource"]
    assert served["subject"]["reference"] == f"Patient/{pid}"
    # no match: the transaction fails on that entry and stores nothing
    unknown = referral(f"Patient?identifier={EHR_MRN}|NOBODY", f"Practitioner?identifier={NPI_SYSTEM}|{NPI}", "REF-2")
    failed = _outcome(client.post("/fhir", json=bundle("transaction", post(patient("E-101")), post(unknown)),
                                  headers=auth | FHIR), 412)
    assert failed["issue"][0]["expression"][0] == "Bundle.entry[1]"
    assert _counts(db) == (1, 1, 1)


def test_gets_run_after_the_writes_and_answers_keep_the_bundle_order(client, auth):
    search = {"request": {"method": "GET", "url": f"Patient?identifier={EHR_MRN}|E-100"}}
    sent = bundle("transaction", search, post(patient(), PT_URN),
                  {"request": {"method": "GET", "url": "Organization?_count=1"}})
    body = _response(client.post("/fhir", json=sent, headers=auth | FHIR), "transaction-response")
    found, created, _org = body["entry"]
    assert created["response"]["status"] == "201 Created"
    assert found["resource"]["type"] == "searchset" and found["resource"]["total"] == 1
    assert found["resource"]["entry"][0]["fullUrl"] == created["fullUrl"]
    pid = created["fullUrl"].rsplit("/", 1)[1]
    reads = bundle("batch", {"request": {"method": "GET", "url": f"Patient/{pid}"}},
                   {"request": {"method": "GET", "url": f"Patient/{pid}/_history/1"}})
    answered = _response(client.post("/fhir", json=reads, headers=auth | FHIR), "batch-response")
    assert [e["response"]["etag"] for e in answered["entry"]] == ['W/"1"', 'W/"1"']


def test_a_failing_entry_rolls_back_the_whole_transaction(client, auth, db):
    from service.models import FhirResource

    no_mrn = {k: v for k, v in patient().items() if k != "identifier"}  # 422: the clinic needs an MRN
    sent = bundle("transaction", post(practitioner()), post(patient("E-5")), post(patient("E-6")),
                  post(no_mrn))
    outcome = _outcome(client.post("/fhir", json=sent, headers=auth | FHIR), 422)
    assert outcome["issue"][0]["expression"][0] == "Bundle.entry[3]"
    assert "entry 3" in outcome["issue"][0]["diagnostics"]
    assert _counts(db) == (0, 0, 0)
    assert db.query(FhirResource).filter(FhirResource.resource_type.in_(["Patient", "Practitioner"])).count() == 0


def test_batch_entries_succeed_and_fail_alone(client, auth, db, tmp_path):
    no_mrn = {k: v for k, v in patient().items() if k != "identifier"}
    sent = bundle("batch",
                  post(patient("E-7")),
                  post(no_mrn),
                  {"request": {"method": "GET", "url": "Patient/does-not-exist"}},
                  {"request": {"method": "DELETE", "url": "Patient/x"}},
                  post({"resourceType": "Observation", "status": "final", "code": {"text": "x"}}),
                  {"request": {"method": "GET", "url": "Basic/1"}},
                  post(referral(PT_URN, DR_URN)),  # a batch cannot reference its own entries
                  post({"resourceType": "Patient", "gender": 5}))
    body = _response(client.post("/fhir", json=sent, headers=auth | FHIR), "batch-response")
    statuses = [e["response"]["status"] for e in body["entry"]]
    assert statuses == ["201 Created", "422 Unprocessable Entity", "404 Not Found", "405 Method Not Allowed",
                        "405 Method Not Allowed", "404 Not Found", "400 Bad Request", "400 Bad Request"]
    for index, e in enumerate(body["entry"][1:], start=1):
        issue = e["response"]["outcome"]["issue"][0]
        assert issue["severity"] == "error" and issue["expression"][0] == f"Bundle.entry[{index}]"
    assert _counts(db) == (1, 0, 0)
    from service.models import FhirResource

    # the failed entries' rolled-back SAVEPOINTs leave the good entry's Provenance in place
    created = body["entry"][0]["fullUrl"].rsplit("/", 1)[1]
    provenances = db.query(FhirResource).filter(FhirResource.resource_type == "Provenance").all()
    assert any(f"Patient/{created}" in p.content for p in provenances)
    assert validate_with_peer([body], tmp_path) == []


def test_too_many_entries_or_bytes_is_413_at_once(client, auth):
    many = bundle("batch", *[{"request": {"method": "GET", "url": "Patient/x"}}] * (MAX_ENTRIES + 1))
    assert _outcome(client.post("/fhir", json=many, headers=auth | FHIR), 413)["issue"][0]["code"] == "too-costly"
    huge = json.dumps(bundle("batch", post(patient() | {"text": {"status": "generated",
                                                                   "div": "x" * (5 * 1024 * 1024)}})))
    _outcome(client.post("/fhir", data=huge, headers=auth | FHIR), 413)


@pytest.mark.parametrize("body", [
    "{not json",
    json.dumps(patient()),
    json.dumps(bundle("collection", post(patient()))),
    json.dumps(bundle("transaction", {"resource": patient()})),
    json.dumps(bundle("batch", {"resource": patient(), "request": {"method": "FETCH", "url": "Patient"}})),
    json.dumps(bundle("batch", {"resource": patient(), "request": {"method": "POST", "url": ""}})),
    json.dumps(bundle("batch", {"resource": patient(), "request": {"method": "POST", "url": "123"}})),
    json.dumps(bundle("batch", {"resource": patient(), "request": {"method": "POST", "url": "Patient/a/b/c/d/e"}})),
    json.dumps(bundle("transaction", post({"resourceType": "NoSuchType"}))),
    json.dumps(bundle("batch", {"resource": {"resourceType": "NoSuchType"}, "request": {"method": "POST",
                                                                                      "url": "NoSuchType"}})),
    json.dumps(bundle("transaction", {"request": {"method": "POST", "url": "Patient"}})),
    json.dumps({"resourceType": "Bundle", "type": "batch", "entry": {"not": "a list"}}),
    json.dumps(bundle("batch", "not an entry")),
])
def test_malformed_bundles_are_400(client, auth, body):
    _outcome(client.post("/fhir", data=body, headers=auth | FHIR), 400)


def test_scopes_are_checked_per_entry(client, db):
    limited = {"Authorization": f"Bearer {create_token(db, 'ehr', ['system/Patient.cruds'])}"}
    db.commit()
    sent = bundle("transaction", post(patient()), post(practitioner()))
    outcome = _outcome(client.post("/fhir", json=sent, headers=limited | FHIR), 403)
    assert outcome["issue"][0]["expression"][0] == "Bundle.entry[1]"
    assert _counts(db) == (0, 0, 0)
    answered = _response(client.post("/fhir", json=bundle("batch", post(patient()), post(practitioner())),
                                      headers=limited | FHIR), "batch-response")
    assert [e["response"]["status"] for e in answered["entry"]] == ["201 Created", "403 Forbidden"]
    _outcome(client.post("/fhir", json=sent, headers=FHIR), 401)


def test_transaction_and_batch_are_in_the_capability_statement(client):
    rest = client.get("/fhir/metadata").get_json(force=True)["rest"][0]
    assert {i["code"] for i in rest["interaction"]} == {"transaction", "batch"}
