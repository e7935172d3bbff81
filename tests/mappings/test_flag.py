"""Each clinical-check warning of a record becomes an R4 Flag (mappings/flag.py): coded in the
clinic's clinical-check CodeSystem, about the patient, in the session's Encounter, from the
record's time; the notes stay on the record's own resources."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from mappings import checks, flag
from mappings.datatypes import fhir_id, reference
from mappings.organization import clinic_reference
from mappings.resources import MAPPED_TYPES, resources_for
from mappings.terminology import local_system
from tests.factories import ADMINISTRATION, COURSE, OBSERVATION, PATIENT, REFERRAL, SESSION, VITALS, make
from tests.fhir_checks import terminology_problems, validate_with_models, validate_with_peer
from tests.mappings.measurement_cases import BASE_URI, context, synthetic_clinic

CTX = context([("sessions", SESSION), ("patients", PATIENT)])
FIXTURES = Path(__file__).resolve().parent.parent / "fixtures" / "flag"
CASES = sorted(p.name.removesuffix(".input.json") for p in FIXTURES.glob("*.input.json"))
CHECKS = local_system(BASE_URI, "clinical-check")
BP_HOLD = {"code": "bp-hold", "field": "systolic_mmhg",
           "message": "BP 186/104 mmHg is above 180/100: hold or stop dosing and notify the prescriber"}


def held_vitals(**changes: Any) -> dict[str, Any]:
    record = make(VITALS, session_id="se-1", systolic_mmhg=186, diastolic_mmhg=104, timing="during", **changes)
    record["warnings"] = checks.vitals_warnings(record)
    return record


def load_case(name: str) -> tuple[str, dict[str, Any], Any, Any]:
    """(collection, record, context, expected Flags) of a golden case under tests/fixtures/flag/."""
    given = json.loads((FIXTURES / f"{name}.input.json").read_text())
    related = [(c, r) for c, rs in given["related"].items() for r in rs]
    expected = json.loads((FIXTURES / f"{name}.expected.json").read_text())
    return given["collection"], given["record"], context(related), expected


@pytest.mark.parametrize("name", CASES)
def test_golden_file(name: str) -> None:
    collection, record, ctx, expected = load_case(name)
    assert flag.to_fhir(record, ctx, collection) == expected


def test_the_golden_cases_cover_each_kind_of_warning() -> None:
    assert len(CASES) >= 5
    codes = {f["code"]["coding"][0]["code"] for name in CASES for f in load_case(name)[3]}
    assert codes == {"bp-hold", "heart-rate-high", "rems-monitoring-incomplete", "dose-out-of-range", "safety-signal"}


def test_a_bp_hold_is_a_flag_coded_in_the_clinical_check_codesystem() -> None:
    [resource] = flag.to_fhir(held_vitals(), CTX, "vitals")
    assert resource == {
        "resourceType": "Flag",
        "id": fhir_id(BASE_URI, "Flag", "vitals", "vs-1:bp-hold"),
        "identifier": [{"use": "usual", "system": f"{BASE_URI}/vitals", "value": "vs-1:bp-hold"}],
        "status": "active",
        "code": {"coding": [{"system": CHECKS, "code": "bp-hold"}], "text": BP_HOLD["message"]},
        "subject": reference(BASE_URI, "Patient", "patients", "pt-1"),
        "period": {"start": VITALS["effective"]},
        "encounter": reference(BASE_URI, "Encounter", "sessions", "se-1"),
        "author": clinic_reference(CTX),
    }


def test_one_flag_per_warning_in_warning_order() -> None:
    record = held_vitals(heart_rate_bpm=120, spo2_pct=90)
    codes = [f["code"]["coding"][0]["code"] for f in flag.to_fhir(record, CTX, "vitals")]
    assert codes == ["bp-hold", "heart-rate-high", "spo2-low"]


def test_a_record_without_warnings_has_no_flag() -> None:
    assert flag.to_fhir(make(VITALS, session_id="se-1"), CTX, "vitals") == []
    assert flag.to_fhir(make(VITALS, session_id="se-1", warnings=[]), CTX, "vitals") == []


def test_two_warnings_of_one_code_are_one_flag_with_both_messages() -> None:
    record = make(VITALS, session_id="se-1", warnings=[{"code": "x", "field": "f", "message": "one"},
                                                       {"code": "x", "field": "g", "message": "two"}])
    [resource] = flag.to_fhir(record, CTX, "vitals")
    assert resource["code"]["text"] == "one; two"


def test_the_flag_id_is_keyed_on_the_record_and_the_warning_code() -> None:
    ids = {flag.to_fhir(held_vitals(id=vid), CTX, "vitals")[0]["id"] for vid in ("vs-1", "vs-2")}
    assert len(ids) == 2
    assert flag.to_fhir(held_vitals(), CTX, "vitals") == flag.to_fhir(held_vitals(), CTX, "vitals")
    # the same record id in another collection is another Flag
    adm = make(ADMINISTRATION, session_id="se-1", id="vs-1", warnings=[dict(BP_HOLD)])
    assert flag.to_fhir(adm, CTX, "administrations")[0]["id"] != flag.to_fhir(held_vitals(), CTX, "vitals")[0]["id"]


@pytest.mark.parametrize(("collection", "record", "start", "encounter"), [
    ("administrations", make(ADMINISTRATION, session_id="se-1"), ADMINISTRATION["start"], "se-1"),
    ("sessions", SESSION, SESSION["start"], "se-1"),
    ("observations", OBSERVATION, OBSERVATION["effective"], None),
    ("observations", make(OBSERVATION, session_id="se-1"), OBSERVATION["effective"], "se-1"),
])
def test_period_start_is_the_records_time_and_encounter_its_session(collection: str, record: dict[str, Any],
                                                                    start: str, encounter: str | None) -> None:
    [resource] = flag.to_fhir({**record, "warnings": [dict(BP_HOLD)]}, CTX, collection)
    assert resource["period"] == {"start": start}
    assert resource.get("encounter") == (reference(BASE_URI, "Encounter", "sessions", encounter) if encounter else None)
    assert resource["subject"] == reference(BASE_URI, "Patient", "patients", "pt-1")


def test_a_record_entered_in_error_retracts_its_flags() -> None:
    record = make(VITALS, session_id="se-1", status="entered-in-error", warnings=[dict(BP_HOLD)])
    assert flag.to_fhir(record, CTX, "vitals")[0]["status"] == "entered-in-error"


def test_a_flag_without_a_known_patient_is_refused() -> None:
    with pytest.raises(ValueError, match="patient"):
        flag.to_fhir(make(VITALS, session_id="se-unknown", warnings=[dict(BP_HOLD)]), CTX, "vitals")


def test_the_dispatcher_adds_the_flags_after_the_records_resources_and_keeps_the_notes() -> None:
    out = resources_for("vitals", held_vitals(), CTX)
    assert out[-1]["resourceType"] == "Flag" and "Flag" in MAPPED_TYPES
    assert all(r["resourceType"] == "Observation" for r in out[:-1])
    bp = next(r for r in out if r["identifier"][0]["value"] == "vs-1:bp")
    assert [n["text"] for n in bp["note"]] == [f"Clinical check bp-hold: {BP_HOLD['message']}"]


@pytest.mark.parametrize("collection", ["administrations", "observations", "sessions", "vitals", "referrals"])
def test_every_collection_whose_records_carry_warnings_yields_flags(collection: str) -> None:
    record = {"administrations": make(ADMINISTRATION, session_id="se-1"), "observations": OBSERVATION,
              "sessions": SESSION, "vitals": make(VITALS, session_id="se-1"), "referrals": REFERRAL}[collection]
    ctx = context([("sessions", SESSION), ("patients", PATIENT), ("courses", COURSE), ("referrals", REFERRAL)])
    out = resources_for(collection, {**record, "warnings": [dict(BP_HOLD)]}, ctx)
    assert [r["code"]["coding"][0]["code"] for r in out if r["resourceType"] == "Flag"] == ["bp-hold"]


# --- every Flag of the synthetic clinic and of REMS, dose and safety warnings --------------------------


@pytest.fixture(scope="module")
def outputs() -> list[dict[str, Any]]:
    records, ctx = synthetic_clinic()
    out = [f for c, r in records for f in resources_for(c, r, ctx) if f["resourceType"] == "Flag"]
    sessions = [r for c, r in records if c == "sessions"]
    warnings = [  # the other checks, on real records of the clinic
        ("sessions", {**sessions[0], "warnings": [checks._warn("rems-monitoring-incomplete", "vitals",
                                                               "esketamine REMS monitoring incomplete: missing "
                                                               "pulse oximetry")]}),
        ("administrations", {**next(r for c, r in records if c == "administrations"),
                             "warnings": [checks._warn("dose-out-of-range", "dose_mg_per_kg",
                                                       "1.10 mg/kg is at or above 1.0 mg/kg")]}),
    ]
    golden = [f for name in CASES for f in load_case(name)[3]]
    return out + [f for c, r in warnings for f in flag.to_fhir(r, ctx, c)] + golden


def test_the_synthetic_clinic_flags_its_bp_holds_and_safety_signals(outputs: list[dict[str, Any]]) -> None:
    codes = {f["code"]["coding"][0]["code"] for f in outputs}
    assert {"bp-hold", "safety-signal", "rems-monitoring-incomplete", "dose-out-of-range"} <= codes


def test_every_flag_passes_the_models_the_terminology_check_and_the_validator(outputs: list[dict[str, Any]],
                                                                             tmp_path: Path) -> None:
    for f in outputs:
        validate_with_models(f)
        assert terminology_problems(f, BASE_URI) == [], f["id"]
    assert validate_with_peer(outputs, tmp_path) == []
