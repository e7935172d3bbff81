"""Map once, at write time: every write stores its FHIR resources, versions them only when they
change, and answers their links; the service stores exactly what the dry run maps."""

from __future__ import annotations

import json

import pytest
from sqlalchemy import select

from service.mapfile import map_lines
from service.models import FhirResource, FhirResourceVersion
from service.synthetic import clinic_lines
from tests.factories import ADMINISTRATION, COURSE, OBSERVATION, PATIENT, REFERRAL, SESSION, make, seed_course
from tests.fhir_checks import validate_with_peer

pytestmark = pytest.mark.postgres


def _stored(db) -> dict[tuple[str, str], dict]:
    return {(r.resource_type, r.id): json.loads(r.content)
            for r in db.scalars(select(FhirResource).where(FhirResource.deleted.is_(False)))}


def test_a_write_answers_the_links_of_its_fhir_resources(api):
    seed_course(api)
    body = api.put("/sessions/se-1/administrations/ad-1", ADMINISTRATION).get_json()
    assert body["fhir"]["MedicationAdministration"].startswith("MedicationAdministration/")
    session = api.get("/sessions/se-1").get_json()
    assert set(session["fhir"]) >= {"Encounter", "Procedure"}
    assert api.put("/sessions/se-1/administrations/ad-1", ADMINISTRATION).get_json()["fhir"] == body["fhir"]


def test_an_unchanged_mapping_makes_no_new_version_and_a_change_does(api, db):
    seed_course(api)
    api.put("/patients/pt-1", PATIENT)
    patient_ref = api.get("/patients/pt-1").get_json()["fhir"]["Patient"]
    rtype, rid = patient_ref.split("/")
    assert db.get(FhirResource, (rtype, rid)).version_id == 1
    api.put("/patients/pt-1", make(PATIENT, phone="+1 555 0100"))
    db.rollback()  # end the read transaction: see the API's commits
    stored = db.get(FhirResource, (rtype, rid))
    assert stored.version_id == 2
    assert json.loads(stored.content)["meta"]["versionId"] == "2"
    versions = db.scalars(select(FhirResourceVersion.version_id).where(FhirResourceVersion.id == rid)).all()
    assert sorted(versions) == [1, 2]


def test_a_dose_changes_its_sessions_procedure(api, db):
    seed_course(api)
    procedure_ref = api.get("/sessions/se-1").get_json()["fhir"]["Procedure"]
    before = db.get(FhirResource, tuple(procedure_ref.split("/"))).version_id
    api.put("/sessions/se-1/administrations/ad-1", ADMINISTRATION)
    db.rollback()  # end the read transaction: see the API's commits
    assert db.get(FhirResource, tuple(procedure_ref.split("/"))).version_id >= before


def test_a_removed_adverse_event_is_retired(api, db):
    seed_course(api)
    with_event = make(SESSION, adverse_events=[{"text": "Nausea", "severity": "mild"}])
    ae_ref = api.put("/sessions/se-1", with_event).get_json()["fhir"]["AdverseEvent"]
    api.put("/sessions/se-1", SESSION)
    db.rollback()  # end the read transaction: see the API's commits
    assert db.get(FhirResource, tuple(ae_ref.split("/"))).deleted is True


def test_a_clinical_check_warning_is_a_flag_retired_when_the_warning_goes_away(api, db):
    seed_course(api)
    held = {"id": "vs-9", "effective": "2026-01-12T09:22:00-05:00", "timing": "during",
            "systolic_mmhg": 186, "diastolic_mmhg": 104}
    body = api.put("/sessions/se-1/vitals/vs-9", held).get_json()
    assert [w["code"] for w in body["warnings"]] == ["bp-hold"]
    flag_ref = body["fhir"]["Flag"]
    stored = json.loads(db.get(FhirResource, tuple(flag_ref.split("/"))).content)
    assert (stored["status"], stored["code"]["coding"][0]["code"]) == ("active", "bp-hold")
    calm = api.put("/sessions/se-1/vitals/vs-9", make(held, systolic_mmhg=130, diastolic_mmhg=80)).get_json()
    assert calm["warnings"] == [] and "Flag" not in calm["fhir"]
    db.rollback()  # end the read transaction: see the API's commits
    assert db.get(FhirResource, tuple(flag_ref.split("/"))).deleted is True
    again = api.put("/sessions/se-1/vitals/vs-9", held).get_json()
    assert again["fhir"]["Flag"] == flag_ref  # the same id: the Flag of this record's bp-hold


def test_entered_in_error_maps_to_the_fhir_status(api, db):
    seed_course(api)
    links = api.put("/observations/ob-1", OBSERVATION).get_json()["fhir"]
    api.put("/observations/ob-1", make(OBSERVATION, status="entered-in-error"))
    db.rollback()  # end the read transaction: see the API's commits
    # the total, the panel and the items, and the QuestionnaireResponse of the items
    refs = [*links["Observation"], links["QuestionnaireResponse"]]
    assert len(refs) == 12
    for ref in refs:
        assert json.loads(db.get(FhirResource, tuple(ref.split("/"))).content)["status"] == "entered-in-error"


def test_every_write_has_a_provenance(api, db):
    seed_course(api)
    provenance = db.scalars(select(FhirResource).where(FhirResource.resource_type == "Provenance")).all()
    assert len(provenance) == 6  # seed_course makes six writes


def test_the_service_stores_what_the_dry_run_maps_and_the_validator_accepts_it(api, db, tmp_path):
    lines = list(clinic_lines(10))
    report = api.import_ndjson("\n".join(lines)).get_json()
    assert report["rejected"] == 0
    stored = _stored(db)
    dry = {(r["resourceType"], r["id"]): r for r in map_lines(lines, "https://clinic.example.org/fhir",
                                                               "Ketamine clinic").resources}
    for key, resource in dry.items():
        served = dict(stored[key])
        meta = {k: v for k, v in served.pop("meta").items() if k not in ("versionId", "lastUpdated")}
        if meta:
            served["meta"] = meta
        assert served == resource, key
    assert validate_with_peer(stored.values(), tmp_path) == []


def test_a_line_rolled_back_in_its_savepoint_keeps_the_earlier_lines_provenance_and_index(api, db):
    from tests.factories import NURSE, PSYCHIATRIST

    lines = [json.dumps({"type": "practitioners", "record": PSYCHIATRIST}),
             json.dumps({"type": "practitioners", "record": NURSE}),
             json.dumps({"type": "patients", "record": PATIENT}),
             # the MRN clash is found inside the line's SAVEPOINT, which is rolled back
             json.dumps({"type": "patients", "record": make(PATIENT, id="pt-2")})]
    report = api.import_ndjson("\n".join(lines)).get_json()
    assert report["accepted"] == 3 and report["errors"][0]["status"] == 409
    db.rollback()
    provenance = db.scalars(select(FhirResource).where(FhirResource.resource_type == "Provenance")).all()
    assert len(provenance) == 3
    from service.models import FhirSearchIndex

    assert db.scalar(select(FhirSearchIndex.resource_id).where(FhirSearchIndex.resource_type == "Patient")
                     .limit(1)) is not None


# --- shared Medications (mapping revision 2, item 9) ----------------------------------------------

def _second_patient(api) -> None:
    """A second patient with a session of her own (same nurse, same course pattern)."""
    from tests.factories import COURSE, PATIENT, REFERRAL

    for path, body in (("/patients/pt-2", make(PATIENT, id="pt-2", mrn="MRN-0002", identifiers=None)),
                       ("/referrals/rf-2", make(REFERRAL, id="rf-2", patient_id="pt-2")),
                       ("/courses/co-2", make(COURSE, id="co-2", patient_id="pt-2", referral_id="rf-2")),
                       ("/sessions/se-2", make(SESSION, id="se-2", patient_id="pt-2", course_id="co-2"))):
        assert api.put(path, body).status_code in (200, 201), path


def _medications(db) -> list[FhirResource]:
    db.rollback()  # end the read transaction: see the API's commits
    return list(db.scalars(select(FhirResource).where(FhirResource.resource_type == "Medication")))


def test_two_patients_doses_of_one_lot_share_one_medication_that_no_dose_retires(api, db):
    seed_course(api)
    _second_patient(api)
    first = api.put("/sessions/se-1/administrations/ad-1", make(ADMINISTRATION, lot_number="KX-7")).get_json()
    other = api.put("/sessions/se-2/administrations/ad-2", make(ADMINISTRATION, id="ad-2", lot_number="KX-7",
                                                                   dose_mg=36.0, dose_mg_per_kg=None)).get_json()
    [med] = _medications(db)
    assert (med.version_id, med.deleted, med.patient_id) == (1, False, None)  # not in any Patient compartment
    assert (med.source_collection, med.source_id) == ("medications", med.id)
    assert json.loads(med.content)["batch"] == {"lotNumber": "KX-7"}
    for body in (first, other):
        stored = json.loads(db.get(FhirResource, tuple(body["fhir"]["MedicationAdministration"].split("/"))).content)
        assert stored["medicationReference"]["reference"] == f"Medication/{med.id}"
        assert "Medication" not in body["fhir"]  # the record's own resources only, as GET answers them
    # one dose made in error, the other moved to another lot: the Medication stays, unchanged
    api.put("/sessions/se-1/administrations/ad-1", make(ADMINISTRATION, lot_number="KX-7", status="entered-in-error"))
    api.put("/sessions/se-2/administrations/ad-2", make(ADMINISTRATION, id="ad-2", lot_number="KX-8", dose_mg=36.0,
                                                        dose_mg_per_kg=None))
    by_lot = {json.loads(m.content)["batch"]["lotNumber"]: m for m in _medications(db)}
    assert set(by_lot) == {"KX-7", "KX-8"}
    assert (by_lot["KX-7"].version_id, by_lot["KX-7"].deleted) == (1, False)
    versions = db.scalars(select(FhirResourceVersion.version_id).where(FhirResourceVersion.id == by_lot["KX-7"].id))
    assert list(versions) == [1]


def test_doses_of_one_lot_in_one_import_store_one_medication(api, db):
    seed_course(api)
    lines = [json.dumps({"type": "administrations", "record": make(ADMINISTRATION, id=f"ad-{n}", session_id="se-1",
                                                                   lot_number="KX-9")}) for n in (1, 2, 3)]
    report = api.import_ndjson("\n".join(lines)).get_json()
    assert report["rejected"] == 0
    [med] = _medications(db)
    assert med.version_id == 1


def test_medication_administration_code_search_finds_every_dose_through_its_medication(api, db, client, auth):
    """R4's medications-code reads an inline medicationCodeableConcept only; here every dose names a
    Medication, and the search resolves it, so the RxNorm or ATC code finds the doses."""
    seed_course(api)
    _second_patient(api)
    api.put("/sessions/se-1/administrations/ad-1", make(ADMINISTRATION, lot_number="KX-7"))
    api.put("/sessions/se-2/administrations/ad-2", make(ADMINISTRATION, id="ad-2", lot_number=None))
    for code in ("http://www.nlm.nih.gov/research/umls/rxnorm|6130", "http://www.whocc.no/atc|N01AX03"):
        bundle = client.get(f"/fhir/MedicationAdministration?code={code}", headers=auth).get_json()
        assert bundle["total"] == 2, code
    assert client.get("/fhir/MedicationAdministration?code=http://www.whocc.no/atc|N06AX27",
                      headers=auth).get_json()["total"] == 0
    meds = client.get("/fhir/Medication?lot-number=KX-7", headers=auth).get_json()
    assert [e["resource"]["batch"]["lotNumber"] for e in meds["entry"]] == ["KX-7"]


def _team_referrers(db, ref: str) -> list[str]:
    db.rollback()  # end the read transaction: see the API's commits
    team = json.loads(db.get(FhirResource, tuple(ref.split("/"))).content)
    return [p["member"]["identifier"]["value"] for p in team.get("participant", [])
            if p["role"][0]["coding"][0]["code"] == "REF"]


def test_a_course_care_team_follows_the_referrer_of_its_referral_else_of_its_patient(api, db):
    """Mapping revision 2, item 3: a course without a referral takes the patient's referring
    practitioner, and a patient write re-maps the CareTeams of the patient's courses."""
    seed_course(api)
    assert _team_referrers(db, api.get("/courses/co-1").get_json()["fhir"]["CareTeam"]) == ["dr-ortiz"]
    links = api.put("/courses/co-2", make(COURSE, id="co-2", referral_id=None)).get_json()["fhir"]
    assert set(links) >= {"Condition", "CareTeam", "CarePlan"}  # its indication is on no referral
    assert _team_referrers(db, links["CareTeam"]) == ["dr-ortiz"]
    api.put("/patients/pt-1", make(PATIENT, referring_practitioner_id="rn-cho"))
    assert _team_referrers(db, links["CareTeam"]) == ["rn-cho"]
    assert _team_referrers(db, api.get("/courses/co-1").get_json()["fhir"]["CareTeam"]) == ["dr-ortiz"]


def test_a_course_condition_is_retired_once_its_referral_lists_the_indication(api, db):
    seed_course(api)
    links = api.put("/courses/co-1", make(COURSE, indication="F41.1")).get_json()["fhir"]
    own = db.get(FhirResource, tuple(links["Condition"].split("/")))
    assert not own.deleted
    api.put("/referrals/rf-1", make(REFERRAL, diagnoses=["F33.2", "F41.1"]))
    db.rollback()
    assert db.get(FhirResource, tuple(links["Condition"].split("/"))).deleted
    plan = json.loads(db.get(FhirResource, tuple(links["CarePlan"].split("/"))).content)
    assert plan["addresses"][0]["identifier"]["value"] == "rf-1:F41.1"


def test_a_medication_needs_its_own_scope_or_a_wildcard_as_any_type_does(api, db, client):
    """SMART scopes here are system scopes per type (service/fhir/scopes.py): a Medication is not
    patient data, but a client granted only doses gets no Medication, neither read nor _include'd."""
    from service.auth import create_token

    seed_course(api)
    ref = api.put("/sessions/se-1/administrations/ad-1", ADMINISTRATION).get_json()["fhir"]["MedicationAdministration"]
    db.rollback()  # end the read transaction: see the API's commits
    med = json.loads(db.get(FhirResource, tuple(ref.split("/"))).content)["medicationReference"]["reference"]
    doses = "system/MedicationAdministration.rs"
    doses_only = {"Authorization": f"Bearer {create_token(db, 'doses', [doses])}"}
    with_meds = {"Authorization": f"Bearer {create_token(db, 'meds', [doses, 'system/Medication.rs'])}"}
    assert client.get(f"/fhir/{med}", headers=doses_only).status_code == 403
    bundle = client.get("/fhir/MedicationAdministration?_include=MedicationAdministration:medication",
                        headers=doses_only).get_json()
    assert [e["resource"]["resourceType"] for e in bundle["entry"]] == ["MedicationAdministration"]
    assert client.get(f"/fhir/{med}", headers=with_meds).status_code == 200
    bundle = client.get("/fhir/MedicationAdministration?_include=MedicationAdministration:medication",
                        headers=with_meds).get_json()
    assert [e["resource"]["resourceType"] for e in bundle["entry"]] == ["MedicationAdministration", "Medication"]
