"""Map once, at write time: every write stores its FHIR resources, versions them only when they
change, and answers their links; the service stores exactly what the dry run maps."""

from __future__ import annotations

import json

import pytest
from sqlalchemy import select

from service.mapfile import map_lines
from service.models import FhirResource, FhirResourceVersion
from service.synthetic import clinic_lines
from tests.factories import ADMINISTRATION, OBSERVATION, PATIENT, SESSION, make, seed_course
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


def test_entered_in_error_maps_to_the_fhir_status(api, db):
    seed_course(api)
    ref = api.put("/observations/ob-1", OBSERVATION).get_json()["fhir"]["Observation"]
    api.put("/observations/ob-1", make(OBSERVATION, status="entered-in-error"))
    db.rollback()  # end the read transaction: see the API's commits
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
