"""Inbound pull (service.sync.pull): an EHR's new and changed Patients and referrals become clinic
records, idempotently, from a watermark on; what we pushed and pull back is not written again.

The destination's FHIR server is the ``responses`` mock at http://ehr.test/fhir.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
import requests
import responses
from responses import matchers
from sqlalchemy import func, select

from mappings.datatypes import fhir_id
from service import models
from service.sync import destinations
from service.sync.pull import PullStats, pull, pull_all
from tests.factories import PATIENT, PSYCHIATRIST, make

pytestmark = pytest.mark.postgres

BASE = "https://clinic.example.org/fhir"
EHR = "http://ehr.test/fhir"
EHR_MRN = "http://ehr.example.org/mrn"
EHR_REFERRALS = "http://ehr.example.org/referrals"
NPI_SYSTEM = "http://hl7.org/fhir/sid/us-npi"
NPI = "1234567893"
MR = {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v2-0203", "code": "MR"}]}
T0 = datetime(2026, 3, 2, 12, 0, tzinfo=UTC)
EARLY, LATE = "2026-03-01T10:00:00.000Z", "2026-03-01T11:30:00.000Z"


# --- the EHR's resources ---


def ehr_patient(their_id: str = "p-1", mrn: str = "E-777", family: str = "Larch", updated: str = EARLY,
                **changes: Any) -> dict[str, Any]:
    resource = {"resourceType": "Patient", "id": their_id, "meta": {"versionId": "1", "lastUpdated": updated},
                "identifier": [{"type": MR, "system": EHR_MRN, "value": mrn}],
                "name": [{"family": family, "given": ["Robin"]}], "gender": "female", "birthDate": "1979-05-02"}
    return make(resource, **changes)


def ehr_practitioner(their_id: str = "dr-9") -> dict[str, Any]:
    return {"resourceType": "Practitioner", "id": their_id, "meta": {"versionId": "1", "lastUpdated": EARLY},
            "identifier": [{"system": "http://ehr.example.org/staff", "value": "S-12"},
                           {"system": NPI_SYSTEM, "value": NPI}],
            "name": [{"family": "Ortiz", "given": ["Ana"]}]}


def ehr_referral(their_id: str = "sr-1", subject: str = "Patient/p-1", requester: str = "Practitioner/dr-9",
                 number: str = "REF-55", updated: str = LATE) -> dict[str, Any]:
    return {"resourceType": "ServiceRequest", "id": their_id, "meta": {"versionId": "1", "lastUpdated": updated},
            "status": "active", "intent": "order", "identifier": [{"system": EHR_REFERRALS, "value": number}],
            "subject": {"reference": subject}, "requester": {"reference": requester},
            "authoredOn": "2026-02-01", "code": {"text": "Ketamine treatment referral"},
            "reasonCode": [{"coding": [{"system": "http://hl7.org/fhir/sid/icd-10-cm", "code": "F33.2"}]}]}


def searchset(*resources: dict[str, Any], next_url: str | None = None) -> dict[str, Any]:
    links = [{"relation": "self", "url": f"{EHR}/search"}] + ([{"relation": "next", "url": next_url}]
                                                              if next_url else [])
    return {"resourceType": "Bundle", "type": "searchset", "total": len(resources), "link": links,
            "entry": [{"fullUrl": f"{EHR}/{r['resourceType']}/{r['id']}", "resource": r, "search": {"mode": "match"}}
                      for r in resources]}


# --- fixtures and helpers ---


@pytest.fixture
def ehr():
    with responses.RequestsMock(assert_all_requests_are_fired=False) as mock:
        yield mock


@pytest.fixture
def factory(app):
    return app.extensions["db_sessionmaker"]


@pytest.fixture
def dest_id(db) -> str:
    dest = destinations.create(db, {"name": "ehr", "url": EHR, "pull": True}, T0)
    db.commit()
    return dest.id


def serve(ehr, patients: list[dict] | None = None, referrals: list[dict] | None = None) -> None:
    """The EHR answers every Patient and ServiceRequest search with these (whatever the query)."""
    ehr.get(f"{EHR}/Patient", json=searchset(*(patients or [])))
    ehr.get(f"{EHR}/ServiceRequest", json=searchset(*(referrals or [])))


def run(factory, dest_id: str, **options: Any) -> PullStats:
    return pull(factory, dest_id, now=T0, **options)


def fresh(db):
    """The session, past its last snapshot: it sees what the pull committed."""
    db.rollback()
    return db


def versions(db) -> dict[tuple[str, str], int]:
    """Every stored FHIR resource and its version."""
    return {(r.resource_type, r.id): r.version_id for r in fresh(db).scalars(select(models.FhirResource))}


def searches(ehr, resource_type: str) -> list[dict[str, list[str]]]:
    """The query of each search of the type the EHR received."""
    return [parse_qs(urlsplit(c.request.url).query) for c in ehr.calls
            if urlsplit(c.request.url).path == f"/fhir/{resource_type}"]


def clinic_patients(api) -> list[dict[str, Any]]:
    return api.get("/patients").get_json()["items"]


def remote(db, dest_id: str, resource_type: str, their_id: str) -> models.RemoteResource | None:
    return fresh(db).scalar(select(models.RemoteResource).where(
        models.RemoteResource.destination_id == dest_id, models.RemoteResource.resource_type == resource_type,
        models.RemoteResource.remote_id == their_id))


# --- patients ---


def test_a_new_ehr_patient_becomes_a_clinic_patient(ehr, factory, dest_id, api, db):
    serve(ehr, [ehr_patient()])
    stats = run(factory, dest_id)
    assert (stats.fetched, stats.applied, stats.unchanged, stats.skipped, stats.errors) == (1, 1, 0, 0, [])
    [patient] = clinic_patients(api)
    assert patient["mrn"] == "E-777" and patient["name"]["family"] == "Larch"
    assert {"system": EHR_MRN, "value": "E-777"} in patient["identifiers"]


def test_the_pulled_patient_is_mapped_to_their_id_so_the_push_engine_sends_nothing_back(ehr, factory, dest_id, db,
                                                                                        api):
    serve(ehr, [ehr_patient()])
    run(factory, dest_id)
    [patient] = clinic_patients(api)
    ours = fresh(db).get(models.FhirResource, ("Patient", fhir_id(BASE, "Patient", "patients", patient["id"])))
    row = remote(db, dest_id, "Patient", "p-1")
    assert row.resource_id == ours.id and row.content_hash == ours.content_hash and row.version_id == ours.version_id


def test_pulling_the_same_page_again_changes_nothing(ehr, factory, dest_id, db, api):
    serve(ehr, [ehr_patient()])
    run(factory, dest_id)
    before = versions(db)
    stats = run(factory, dest_id)
    assert (stats.applied, stats.unchanged, stats.errors) == (0, 1, [])
    assert versions(db) == before
    assert len(clinic_patients(api)) == 1


def test_a_patient_changed_in_the_ehr_updates_the_clinic_patient(ehr, factory, dest_id, db, api):
    serve(ehr, [ehr_patient()])
    run(factory, dest_id)
    ehr.replace(responses.GET, f"{EHR}/Patient", json=searchset(ehr_patient(family="Pine", updated=LATE)))
    stats = run(factory, dest_id)
    assert (stats.applied, stats.unchanged) == (1, 0)
    [patient] = clinic_patients(api)
    assert patient["name"]["family"] == "Pine" and patient["meta"]["version"] == 2


def test_a_patient_the_clinic_cannot_take_is_reported_without_data_and_skipped(ehr, factory, dest_id, db, api):
    serve(ehr, [ehr_patient("p-bad", mrn="E-1", family="Secretname", birthDate="1979-05"),
                ehr_patient("p-2", mrn="E-2", updated=LATE)])
    stats = run(factory, dest_id)
    assert (stats.applied, stats.skipped, stats.errors) == (1, 1, ["Patient/p-bad: 422 processing"])
    assert [p["mrn"] for p in clinic_patients(api)] == ["E-2"]
    dest = fresh(db).get(models.Destination, dest_id)
    assert dest.last_pull_error == "Patient/p-bad: 422 processing" and dest.last_pull_at == T0
    assert dest.pull_watermarks["Patient"] == LATE  # not retried for ever


def test_a_patient_without_any_identifier_is_skipped(ehr, factory, dest_id, api):
    serve(ehr, [ehr_patient(identifier=None)])
    stats = run(factory, dest_id)
    assert stats.errors == ["Patient/p-1: no identifier"] and clinic_patients(api) == []


# --- referrals ---


def test_a_referral_naming_their_patient_and_practitioner_becomes_a_clinic_referral(ehr, factory, dest_id, db, api):
    serve(ehr, [ehr_patient()], [ehr_referral(), ehr_referral("sr-2", number="REF-56")])
    ehr.get(f"{EHR}/Practitioner/dr-9", json=ehr_practitioner())
    stats = run(factory, dest_id)
    assert stats.errors == [] and (stats.fetched, stats.applied) == (4, 4)  # 1 patient, 2 referrals, 1 practitioner
    [patient] = clinic_patients(api)
    referrals = api.get(f"/referrals?patient_id={patient['id']}").get_json()["items"]
    assert len(referrals) == 2 and {r["diagnoses"][0] for r in referrals} == {"F33.2"}
    [doctor] = [p for p in api.get("/practitioners").get_json()["items"] if p.get("npi") == NPI]
    assert {r["referrer_id"] for r in referrals} == {doctor["id"]} and doctor["role"] == "psychiatrist"
    assert len([c for c in ehr.calls if "/Practitioner/" in c.request.url]) == 1  # fetched once, then mapped
    assert remote(db, dest_id, "Practitioner", "dr-9").resource_id == fhir_id(BASE, "Practitioner", "practitioners",
                                                                             doctor["id"])


def test_a_referral_pulled_again_is_the_same_clinic_referral(ehr, factory, dest_id, db, api):
    serve(ehr, [ehr_patient()], [ehr_referral()])
    ehr.get(f"{EHR}/Practitioner/dr-9", json=ehr_practitioner())
    run(factory, dest_id)
    before = versions(db)
    stats = run(factory, dest_id)
    assert (stats.applied, stats.unchanged, stats.errors) == (0, 2, [])
    assert versions(db) == before


def test_a_referral_whose_patient_they_cannot_give_is_skipped(ehr, factory, dest_id, api):
    serve(ehr, [], [ehr_referral(subject="Patient/p-404")])
    ehr.get(f"{EHR}/Patient/p-404", status=404, json={"resourceType": "OperationOutcome", "issue": []})
    stats = run(factory, dest_id)
    assert stats.errors == ["ServiceRequest/sr-1: subject Patient/p-404: HTTP 404"]
    assert api.get("/referrals").get_json()["items"] == []


def test_a_referral_whose_patient_changed_after_the_patient_search_fetches_that_patient(ehr, factory, dest_id, api):
    serve(ehr, [], [ehr_referral()])
    ehr.get(f"{EHR}/Patient/p-1", json=ehr_patient())
    ehr.get(f"{EHR}/Practitioner/dr-9", json=ehr_practitioner())
    stats = run(factory, dest_id)
    assert stats.errors == [] and stats.applied == 3
    assert len(api.get("/referrals").get_json()["items"]) == 1


# --- watermark and paging ---


def test_the_watermark_is_stored_and_sent_the_next_time(ehr, factory, dest_id, db):
    serve(ehr, [ehr_patient(updated=LATE), ehr_patient("p-2", mrn="E-2", updated=EARLY)])
    run(factory, dest_id, page_size=50)
    assert fresh(db).get(models.Destination, dest_id).pull_watermarks == {"Patient": LATE}
    assert searches(ehr, "Patient")[0] == {"_sort": ["_lastUpdated"], "_count": ["50"]}
    run(factory, dest_id)
    assert searches(ehr, "Patient")[1]["_lastUpdated"] == [f"gt{LATE}"]
    assert "_lastUpdated" not in searches(ehr, "ServiceRequest")[1]  # nothing pulled of that type yet


def test_pages_are_followed_through_next_links(ehr, factory, dest_id, db, api):
    page2 = f"{EHR}/Patient?_page=2"
    ehr.get(f"{EHR}/Patient", match=[matchers.query_param_matcher({"_page": "2"})],
            json=searchset(ehr_patient("p-2", mrn="E-2", updated=LATE)))
    ehr.get(f"{EHR}/Patient", json=searchset(ehr_patient(), next_url=page2))
    ehr.get(f"{EHR}/ServiceRequest", json=searchset())
    stats = run(factory, dest_id, page_size=1)
    assert (stats.fetched, stats.applied) == (2, 2)
    assert sorted(p["mrn"] for p in clinic_patients(api)) == ["E-2", "E-777"]
    assert fresh(db).get(models.Destination, dest_id).pull_watermarks["Patient"] == LATE


def test_a_next_link_to_another_server_is_not_followed(ehr, factory, dest_id, db):
    ehr.get(f"{EHR}/Patient", json=searchset(ehr_patient(), next_url="http://elsewhere.test/fhir/Patient?p=2"))
    stats = run(factory, dest_id)
    assert stats.errors == ["a next link outside the destination's base URL"]
    assert all("elsewhere" not in c.request.url for c in ehr.calls)
    assert fresh(db).get(models.Destination, dest_id).pull_watermarks["Patient"] == EARLY  # the page was applied


# --- failures ---


@pytest.mark.parametrize("failure,error", [({"status": 503}, "HTTP 503"),
                                           ({"body": requests.ConnectionError("refused")}, "ConnectionError")])
def test_an_unavailable_destination_stops_the_run_and_keeps_the_watermark(ehr, factory, dest_id, db, failure, error):
    serve(ehr, [ehr_patient()])
    run(factory, dest_id)
    ehr.replace(responses.GET, f"{EHR}/Patient", **failure)
    stats = run(factory, dest_id)
    assert stats.errors == [error]
    dest = fresh(db).get(models.Destination, dest_id)
    assert dest.last_pull_error == error and dest.pull_watermarks == {"Patient": EARLY}
    assert len(searches(ehr, "ServiceRequest")) == 1  # the failed run went no further


def test_a_failure_in_the_middle_of_a_page_keeps_that_page_for_the_next_run(ehr, factory, dest_id, db):
    serve(ehr, [ehr_patient()], [ehr_referral()])
    ehr.get(f"{EHR}/Practitioner/dr-9", status=503)
    stats = run(factory, dest_id)
    assert stats.errors == ["HTTP 503"]
    assert fresh(db).get(models.Destination, dest_id).pull_watermarks == {"Patient": EARLY}


def test_a_429_pauses_the_destination_for_its_retry_after(ehr, factory, dest_id, db):
    ehr.get(f"{EHR}/Patient", status=429, headers={"Retry-After": "120"})
    run(factory, dest_id)
    assert fresh(db).get(models.Destination, dest_id).paused_until == T0 + timedelta(seconds=120)
    stats = pull(factory, dest_id, now=T0 + timedelta(seconds=60))
    assert len(ehr.calls) == 1 and stats.errors[0].startswith("paused until")


def test_a_successful_run_clears_the_last_error(ehr, factory, dest_id, db):
    ehr.get(f"{EHR}/Patient", status=503)
    run(factory, dest_id)
    ehr.replace(responses.GET, f"{EHR}/Patient", json=searchset())
    ehr.get(f"{EHR}/ServiceRequest", json=searchset())
    run(factory, dest_id)
    assert fresh(db).get(models.Destination, dest_id).last_pull_error is None


# --- loop prevention: what we pushed comes back ---


def pushed_patient(db, api, dest_id: str, **changes: Any) -> dict[str, Any]:
    """A clinic patient (and its psychiatrist) as the push engine left them at the EHR, under
    their ids their-1 and their-dr; returns the Patient the EHR now serves."""
    assert api.put("/practitioners/dr-ortiz", PSYCHIATRIST).status_code == 201
    assert api.put("/patients/pt-1", make(PATIENT, **changes)).status_code == 201
    patient_id = fhir_id(BASE, "Patient", "patients", "pt-1")
    doctor_id = fhir_id(BASE, "Practitioner", "practitioners", "dr-ortiz")
    db = fresh(db)
    for resource_type, ours, theirs in (("Patient", patient_id, "their-1"), ("Practitioner", doctor_id, "their-dr")):
        stored = db.get(models.FhirResource, (resource_type, ours))
        db.merge(models.RemoteResource(destination_id=dest_id, resource_type=resource_type, resource_id=ours,
                                       remote_id=theirs, content_hash=stored.content_hash,
                                       version_id=stored.version_id, deleted=False, updated_at=T0))
    db.commit()
    sent = json.loads(db.get(models.FhirResource, ("Patient", patient_id)).content)
    text = json.dumps(sent).replace(f"Practitioner/{doctor_id}", "Practitioner/their-dr")
    return {**json.loads(text), "id": "their-1", "meta": {**sent["meta"], "versionId": "7", "lastUpdated": LATE}}


def test_a_patient_we_pushed_and_pull_back_makes_no_new_version(ehr, factory, dest_id, db, api):
    serve(ehr, [pushed_patient(db, api, dest_id)])
    before = versions(db)
    stats = run(factory, dest_id)
    assert (stats.applied, stats.unchanged, stats.errors) == (0, 1, [])
    assert versions(db) == before
    patient = api.get("/patients/pt-1").get_json()
    assert patient["meta"]["version"] == 1 and patient["weight_kg"] == 70.0  # nothing FHIR does not carry is lost


def test_an_echo_that_maps_to_the_same_clinic_record_makes_no_new_version(ehr, factory, dest_id, db, api):
    echo = pushed_patient(db, api, dest_id, weight_kg=None)
    echo["identifier"].append({"value": "a number of theirs without a system"})  # not kept by the clinic
    serve(ehr, [echo])
    before = versions(db)
    stats = run(factory, dest_id)
    assert (stats.applied, stats.unchanged, stats.errors) == (0, 1, [])
    assert versions(db) == before
    assert fresh(db).scalar(select(func.count()).select_from(models.Patient)) == 1


def test_a_pushed_patient_changed_in_the_ehr_updates_the_same_clinic_patient(ehr, factory, dest_id, db, api):
    echo = pushed_patient(db, api, dest_id, weight_kg=None)
    echo["name"][0]["family"] = "Rowan-Pine"
    serve(ehr, [echo])
    stats = run(factory, dest_id)
    assert (stats.applied, stats.errors) == (1, [])
    assert api.get("/patients/pt-1").get_json()["name"]["family"] == "Rowan-Pine"
    assert len(clinic_patients(api)) == 1


# --- every destination ---


def test_pull_all_pulls_from_enabled_destinations_that_pull(ehr, factory, dest_id, db):
    destinations.create(db, {"name": "push-only", "url": "http://push.test/fhir"}, T0)
    destinations.create(db, {"name": "off", "url": "http://off.test/fhir", "pull": True, "enabled": False}, T0)
    db.commit()
    serve(ehr, [ehr_patient()])
    stats = pull_all(factory, now=T0)
    assert list(stats) == [dest_id] and stats[dest_id].applied == 1
    assert {urlsplit(c.request.url).netloc for c in ehr.calls} == {"ehr.test"}


# --- the bound: a hostile destination (issue 10) ---

CLINIC_MRN = f"{BASE}/mrn"
PT1_MRN = {"type": MR, "system": CLINIC_MRN, "value": "MRN-0001"}  # pt-1's clinic MRN


@pytest.fixture
def narrow(db, api) -> str:
    """A destination that receives only the patients another psychiatrist referred; pt-1 (MRN-0001,
    EHR identifier E100200) is dr-ortiz's patient, not theirs."""
    assert api.put("/practitioners/dr-ortiz", PSYCHIATRIST).status_code == 201
    assert api.put("/practitioners/dr-other", make(PSYCHIATRIST, id="dr-other", npi=None)).status_code == 201
    assert api.put("/patients/pt-1", PATIENT).status_code == 201
    dest = destinations.create(db, {"name": "narrow", "url": EHR, "pull": True,
                                    "patients": {"kind": "referred-by", "practitioner_id": "dr-other"}}, T0)
    db.commit()
    return dest.id


@pytest.mark.parametrize("identifier", [PT1_MRN,
                                        {"system": "urn:oid:2.16.840.1.113883.3.9999.1", "value": "E100200"},
                                        {"system": f"{BASE}/patients", "value": "pt-1"}])
def test_a_hostile_destination_cannot_overwrite_another_patient_found_by_identifier(ehr, factory, narrow, db, api,
                                                                                     identifier):
    before = api.get("/patients/pt-1").get_json()
    serve(ehr, [ehr_patient("h-1", family="Hijacked", identifier=[identifier])])
    stats = run(factory, narrow)
    assert (stats.applied, stats.skipped) == (0, 1)
    assert stats.errors == ["Patient/h-1: outside this destination's patient selection"]
    after = api.get("/patients/pt-1").get_json()
    assert after["name"] == before["name"] and after["meta"]["version"] == before["meta"]["version"]
    assert remote(db, narrow, "Patient", "h-1") is None


def test_a_patient_in_the_destinations_selection_is_updated(ehr, factory, db, api):
    assert api.put("/practitioners/dr-ortiz", PSYCHIATRIST).status_code == 201
    assert api.put("/patients/pt-1", PATIENT).status_code == 201
    dest = destinations.create(db, {"name": "ortiz", "url": EHR, "pull": True,
                                    "patients": {"kind": "referred-by", "practitioner_id": "dr-ortiz"}}, T0)
    db.commit()
    serve(ehr, [ehr_patient("h-1", family="Rowan-Hale", identifier=[PT1_MRN])])
    stats = run(factory, dest.id)
    assert (stats.applied, stats.errors) == (1, [])
    assert api.get("/patients/pt-1").get_json()["name"]["family"] == "Rowan-Hale"


def test_a_destination_may_update_the_patients_it_created(ehr, factory, narrow, db, api):
    serve(ehr, [ehr_patient("p-new", mrn="E-900")])
    assert run(factory, narrow).applied == 1
    ehr.reset()
    serve(ehr, [ehr_patient("p-new", mrn="E-900", family="Larch-Fir", updated=LATE)])
    stats = run(factory, narrow)
    assert (stats.applied, stats.errors) == (1, [])
    assert {p["name"]["family"] for p in clinic_patients(api)} == {"Rowan", "Larch-Fir"}
    assert remote(db, narrow, "Patient", "p-new").created_by_pull is True


def test_a_referral_cannot_be_pulled_onto_a_patient_outside_the_selection(ehr, factory, narrow, api):
    serve(ehr, [], [ehr_referral(subject="Patient/h-1")])
    ehr.get(f"{EHR}/Patient/h-1", json=ehr_patient("h-1", identifier=[PT1_MRN]))
    ehr.get(f"{EHR}/Practitioner/dr-9", json=ehr_practitioner())
    stats = run(factory, narrow)
    assert stats.errors == ["ServiceRequest/sr-1: subject Patient/h-1: outside this destination's patient selection"]
    assert api.get("/referrals").get_json()["items"] == []


def test_a_practitioner_the_destination_did_not_create_is_linked_but_never_changed(ehr, factory, dest_id, db, api):
    assert api.put("/practitioners/dr-ortiz", make(PSYCHIATRIST, npi=NPI)).status_code == 201
    before = api.get("/practitioners/dr-ortiz").get_json()
    serve(ehr, [ehr_patient()], [ehr_referral()])
    ehr.get(f"{EHR}/Practitioner/dr-9", json=ehr_practitioner())  # family "Ortiz", given "Ana", same NPI
    stats = run(factory, dest_id)
    assert stats.errors == [] and stats.applied == 2  # the patient and the referral
    after = api.get("/practitioners/dr-ortiz").get_json()
    assert after["name"] == before["name"] and after["meta"]["version"] == before["meta"]["version"]
    [referral] = api.get("/referrals").get_json()["items"]
    assert referral["referrer_id"] == "dr-ortiz"


def test_only_the_types_the_destination_receives_are_pulled(ehr, factory, db):
    dest = destinations.create(db, {"name": "patients-only", "url": EHR, "pull": True,
                                    "resource_types": ["Organization", "Practitioner", "Patient"]}, T0)
    db.commit()
    serve(ehr, [ehr_patient()], [ehr_referral()])
    stats = run(factory, dest.id)
    assert stats.applied == 1 and searches(ehr, "ServiceRequest") == []


def test_a_flood_is_cut_at_the_cap_and_the_page_kept_for_the_next_run(ehr, factory, dest_id, db):
    from service.sync.pull import MAX_RECORDS_PER_RUN

    assert MAX_RECORDS_PER_RUN == 1000
    flood = [ehr_patient(f"f-{n}", mrn=f"F-{n}", updated=LATE) for n in range(10_000)]
    serve(ehr, flood)
    stats = run(factory, dest_id, max_records=25)
    assert (stats.fetched, stats.applied) == (25, 25)
    assert stats.errors == ["the cap of 25 records per run was reached"]
    assert fresh(db).scalar(select(func.count()).select_from(models.Patient)) == 25
    dest = db.get(models.Destination, dest_id)
    assert dest.pull_watermarks.get("Patient") is None  # the cut page is read again next time
    assert dest.last_pull_error == "the cap of 25 records per run was reached"


# --- the audit trail ---


def test_a_pull_run_is_one_audit_event_naming_the_destination_and_what_it_applied(ehr, factory, dest_id, db, app):
    from service import audit

    serve(ehr, [ehr_patient()])
    run(factory, dest_id)
    assert audit.flush(app)
    [row] = fresh(db).scalars(select(models.AuditEventRow)).all()
    event = json.loads(row.content)
    assert (event["subtype"][0]["code"], event["action"], event["outcome"]) == ("search-type", "E", "0")
    assert [a["requestor"] for a in event["agent"]] == [True, False]
    assert event["agent"][1]["who"]["identifier"] == {"system": f"{BASE}/sync-destinations", "value": dest_id}
    [patient] = fresh(db).scalars(select(models.Patient)).all()
    patient_fhir = fhir_id(BASE, "Patient", "patients", patient.id)
    assert [e["what"]["reference"] for e in event["entity"]] == [f"Patient/{patient_fhir}"]
    provenance = next(json.loads(r.content) for r in fresh(db).scalars(select(models.FhirResource).where(
        models.FhirResource.resource_type == "Provenance")))
    assert provenance["agent"][0]["who"]["identifier"] == {"system": f"{BASE}/sync-destinations", "value": dest_id}
