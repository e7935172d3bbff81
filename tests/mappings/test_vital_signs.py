"""A set of vital signs becomes one vital-signs Observation per measurement (mappings/vital_signs.py).

Golden files: tests/fixtures/observation/vitals-*.{input,expected}.json. Every resource mapped here
passes the R4B models, the reference-terminology check and (once, over all of them) the peer validator.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from mappings import checks, vital_signs
from mappings.datatypes import fhir_id, reference
from mappings.terminology import SYSTEM, local_system
from service.clinic.schemas import VitalsSchema
from tests.factories import SESSION, VITALS, make
from tests.fhir_checks import terminology_problems, validate_with_models, validate_with_peer
from tests.mappings.measurement_cases import BASE_URI, cases, context, load_case, synthetic_clinic

CASES = cases("vitals-")
CTX = context([("sessions", SESSION)])
VITAL_SIGNS = (SYSTEM["observation-category"], "vital-signs")


def vitals(**changes: Any) -> dict[str, Any]:
    return make(VITALS, **{"session_id": "se-1", **changes})


def by_kind(resources: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {r["identifier"][0]["value"].split(":", 1)[1]: r for r in resources}


def codings(concept: dict[str, Any]) -> list[tuple[str, str]]:
    return [(c["system"], c["code"]) for c in concept.get("coding", [])]


# --- golden files ---------------------------------------------------------------------------------


def test_every_brief_case_has_a_golden_file() -> None:
    assert len(CASES) >= 7
    for name in CASES:
        assert (Path(__file__).parent.parent / "fixtures" / "observation" / f"{name}.expected.json").exists()


@pytest.mark.parametrize("name", CASES)
def test_golden_file(name: str) -> None:
    record, ctx, expected = load_case(name)
    assert vital_signs.to_fhir(record, ctx) == expected


@pytest.mark.parametrize("name", CASES)
def test_mapping_is_deterministic(name: str) -> None:
    record, ctx, _ = load_case(name)
    assert json.dumps(vital_signs.to_fhir(record, ctx)) == json.dumps(vital_signs.to_fhir(json.loads(
        json.dumps(record)), ctx))


# --- one Observation per measurement ----------------------------------------------------------------


def test_one_observation_per_measurement_in_a_fixed_order_with_ids_from_the_vitals_key() -> None:
    resources = vital_signs.to_fhir(vitals(weight_kg=70.4), CTX)
    kinds = ["bp", "heart-rate", "respiratory-rate", "spo2", "temperature", "weight"]
    assert list(by_kind(resources)) == kinds
    assert [r["id"] for r in resources] == [fhir_id(BASE_URI, "Observation", "vitals", f"vs-1:{k}") for k in kinds]


def test_blood_pressure_is_the_panel_with_systolic_and_diastolic_components_and_no_value() -> None:
    bp = by_kind(vital_signs.to_fhir(vitals(), CTX))["bp"]
    assert codings(bp["code"]) == [(SYSTEM["loinc"], "85354-9")]
    assert not [k for k in bp if k.startswith("value")]
    assert [(codings(c["code"])[0][1], c["valueQuantity"]["value"], c["valueQuantity"]["code"])
            for c in bp["component"]] == [("8480-6", 122, "mm[Hg]"), ("8462-4", 78, "mm[Hg]")]


def test_spo2_carries_both_the_r4_and_the_pulse_oximetry_codes() -> None:
    spo2 = by_kind(vital_signs.to_fhir(vitals(), CTX))["spo2"]
    assert codings(spo2["code"]) == [(SYSTEM["loinc"], "2708-6"), (SYSTEM["loinc"], "59408-5")]


@pytest.mark.parametrize(("field", "kind", "loinc", "unit"), [
    ("heart_rate_bpm", "heart-rate", "8867-4", "/min"), ("respiratory_rate_bpm", "respiratory-rate", "9279-1", "/min"),
    ("spo2_pct", "spo2", "2708-6", "%"), ("temperature_c", "temperature", "8310-5", "Cel"),
    ("weight_kg", "weight", "29463-7", "kg")])
def test_each_measurement_is_a_ucum_quantity_under_its_loinc_code(field: str, kind: str, loinc: str,
                                                                  unit: str) -> None:
    record = {"id": "vs-9", "session_id": "se-1", "effective": "2026-01-12T09:05:00-05:00", field: 71.5}
    [resource] = vital_signs.to_fhir(record, CTX)
    assert codings(resource["code"])[0] == (SYSTEM["loinc"], loinc)
    assert resource["valueQuantity"] == {"value": 71.5, "unit": resource["valueQuantity"]["unit"],
                                         "system": SYSTEM["ucum"], "code": unit}
    assert resource["identifier"][0]["value"] == f"vs-9:{kind}"


def test_half_a_blood_pressure_is_refused_rather_than_dropped() -> None:
    with pytest.raises(ValueError, match="together"):
        vital_signs.to_fhir(vitals(diastolic_mmhg=None), CTX)


# --- context: patient, encounter, timing, status -------------------------------------------------------


def test_the_patient_comes_from_the_record_else_from_its_session() -> None:
    from_session = vital_signs.to_fhir(vitals(), CTX)[0]["subject"]
    from_record = vital_signs.to_fhir(vitals(patient_id="pt-7"), CTX)[0]["subject"]
    assert from_session == reference(BASE_URI, "Patient", "patients", "pt-1")
    assert from_record == reference(BASE_URI, "Patient", "patients", "pt-7")


def test_vitals_without_a_known_patient_are_refused() -> None:
    with pytest.raises(ValueError, match="patient"):
        vital_signs.to_fhir(vitals(session_id="se-unknown"), CTX)


def test_every_observation_refers_to_the_session_encounter() -> None:
    encounter = reference(BASE_URI, "Encounter", "sessions", "se-1")
    assert all(r["encounter"] == encounter for r in vital_signs.to_fhir(vitals(), CTX))


def test_timing_is_a_second_category_after_vital_signs() -> None:
    categories = vital_signs.to_fhir(vitals(), CTX)[0]["category"]
    assert codings(categories[0]) == [VITAL_SIGNS]
    assert codings(categories[1]) == [(local_system(BASE_URI, "timing"), "pre-dose")]
    assert len(vital_signs.to_fhir(vitals(timing=None), CTX)[0]["category"]) == 1


@pytest.mark.parametrize("status", sorted(VitalsSchema().fields["status"].validators[0].choices))
def test_every_clinic_status_maps_to_the_same_observation_status(status: str) -> None:
    assert {r["status"] for r in vital_signs.to_fhir(vitals(status=status), CTX)} == {status}


def test_effective_time_keeps_its_offset() -> None:
    effective = "2026-07-01T23:59:30.250+05:30"
    assert {r["effectiveDateTime"] for r in vital_signs.to_fhir(vitals(effective=effective), CTX)} == {effective}


# --- warnings ---------------------------------------------------------------------------------------


def test_a_bp_hold_warning_is_a_note_on_the_blood_pressure_only() -> None:
    record = vitals(systolic_mmhg=186, diastolic_mmhg=104, timing="during")
    record["warnings"] = checks.vitals_warnings(record)
    resources = by_kind(vital_signs.to_fhir(record, CTX))
    assert [n["text"].split(":")[0] for n in resources["bp"]["note"]] == ["Clinical check bp-hold"]
    assert not [k for k, r in resources.items() if k != "bp" and "note" in r]


def test_a_warning_naming_no_measurement_is_flagged_on_every_observation() -> None:
    record = vitals(warnings=[{"code": "other", "field": "vitals", "message": "check the set"}])
    assert all(r["note"] == [{"text": "Clinical check other: check the set"}]
               for r in vital_signs.to_fhir(record, CTX))


# --- interpretation against the clinic's thresholds (reference 12.1) --------------------------------

INTERPRETATION = SYSTEM["v3-ObservationInterpretation"]


def interpretation(element: dict[str, Any]) -> list[str]:
    return [code for c in element.get("interpretation", []) for system, code in codings(c) if system == INTERPRETATION]


@pytest.mark.parametrize(("sbp", "dbp", "panel", "systolic", "diastolic"), [
    (122, 78, "N", "N", "N"),
    (140, 90, "N", "N", "N"),  # the thresholds are "above": 140/90 itself is within
    (141, 85, "H", "H", "N"),  # only the component that crossed is H; the panel takes the worst
    (135, 95, "H", "N", "H"),
    (180, 100, "H", "H", "H"),  # at the hold threshold: still only above the review threshold
    (181, 88, "HH", "HH", "N"),
    (150, 101, "HH", "H", "HH"),
])
def test_blood_pressure_is_interpreted_per_component_and_by_its_worst_component(
        sbp: int, dbp: int, panel: str, systolic: str, diastolic: str) -> None:
    bp = by_kind(vital_signs.to_fhir(vitals(systolic_mmhg=sbp, diastolic_mmhg=dbp), CTX))["bp"]
    assert interpretation(bp) == [panel]
    assert [interpretation(c) for c in bp["component"]] == [[systolic], [diastolic]]


@pytest.mark.parametrize(("field", "kind", "value", "code"), [
    ("heart_rate_bpm", "heart-rate", 110, "N"), ("heart_rate_bpm", "heart-rate", 111, "H"),
    ("spo2_pct", "spo2", 92, "N"), ("spo2_pct", "spo2", 91, "L")])
def test_heart_rate_and_spo2_are_interpreted_against_their_alert_thresholds(field: str, kind: str, value: int,
                                                                           code: str) -> None:
    assert interpretation(by_kind(vital_signs.to_fhir(vitals(**{field: value}), CTX))[kind]) == [code]


def test_measurements_without_clinic_thresholds_carry_no_interpretation_nor_range() -> None:
    resources = by_kind(vital_signs.to_fhir(vitals(weight_kg=70.4), CTX))
    for kind in ("respiratory-rate", "temperature", "weight"):
        assert "interpretation" not in resources[kind] and "referenceRange" not in resources[kind]


def test_interpretation_displays_are_the_code_systems() -> None:
    bp = by_kind(vital_signs.to_fhir(vitals(systolic_mmhg=190, diastolic_mmhg=95), CTX))["bp"]
    assert bp["interpretation"] == [{"coding": [{"system": INTERPRETATION, "code": "HH", "display": "Critical high"}],
                                     "text": "Above the clinic's hold threshold"}]


def test_the_thresholds_are_reference_ranges_that_say_they_are_clinic_thresholds() -> None:
    resources = by_kind(vital_signs.to_fhir(vitals(), CTX))
    systolic, diastolic = resources["bp"]["component"]
    assert [(r["high"]["value"], r["high"]["code"]) for r in systolic["referenceRange"]] == [(140, "mm[Hg]"),
                                                                                              (180, "mm[Hg]")]
    assert [r["high"]["value"] for r in diastolic["referenceRange"]] == [90, 100]
    assert [r["high"]["value"] for r in resources["heart-rate"]["referenceRange"]] == [110]
    [spo2] = resources["spo2"]["referenceRange"]
    assert spo2["low"] == {"value": 92, "unit": "%", "system": SYSTEM["ucum"], "code": "%"} and "high" not in spo2
    ranges = [*systolic["referenceRange"], *diastolic["referenceRange"], *resources["heart-rate"]["referenceRange"],
              spo2]
    assert all(r["text"].startswith("Clinic threshold, not a population reference range") for r in ranges)
    assert "referenceRange" not in resources["bp"]  # the panel has no value of its own


def test_interpretation_and_the_warnings_use_the_same_thresholds() -> None:
    # a reading the checks put on hold is HH, and one they pass is not
    for sbp, dbp in ((181, 80), (175, 101), (179, 99)):
        record = vitals(systolic_mmhg=sbp, diastolic_mmhg=dbp, timing="during")
        on_hold = any(w["code"] == "bp-hold" for w in checks.vitals_warnings(record))
        assert (interpretation(by_kind(vital_signs.to_fhir(record, CTX))["bp"]) == ["HH"]) is on_hold


def test_a_reading_entered_in_error_is_not_interpreted() -> None:
    resources = vital_signs.to_fhir(vitals(systolic_mmhg=200, diastolic_mmhg=110, status="entered-in-error"), CTX)
    assert not [r for r in resources if "interpretation" in r or any("interpretation" in c
                                                                     for c in r.get("component", []))]


# --- every output: profiles, models, terminology, peer validator ----------------------------------


def synthetic_vitals() -> list[dict[str, Any]]:
    records, ctx = synthetic_clinic()
    return [o for c, r in records if c == "vitals" for o in vital_signs.to_fhir(r, ctx)]


@pytest.fixture(scope="module")
def outputs() -> list[dict[str, Any]]:
    golden = [o for r, ctx, _ in map(load_case, CASES) for o in vital_signs.to_fhir(r, ctx)]
    return golden + synthetic_vitals()


def test_the_synthetic_clinic_maps_with_its_hold_warnings(outputs: list[dict[str, Any]]) -> None:
    synthetic = synthetic_vitals()
    assert len(synthetic) > 1000
    assert any("bp-hold" in n["text"] for r in synthetic for n in r.get("note", []))


#: what each declared profile requires beyond vitalsigns: LOINC codes and the UCUM unit of the value
#: (R4 bp/heartrate/resprate/oxygensat/bodytemp/bodyweight; US Core STU 6.1+ pulse oximetry needs both codes)
REQUIRED = {"bp": ({"85354-9"}, None), "heart-rate": ({"8867-4"}, {"/min"}),
            "respiratory-rate": ({"9279-1"}, {"/min"}), "spo2": ({"2708-6", "59408-5"}, {"%"}),
            "temperature": ({"8310-5"}, {"Cel", "[degF]"}), "weight": ({"29463-7"}, {"kg", "g", "[lb_av]"})}


def test_every_output_meets_the_profiles_it_declares(outputs: list[dict[str, Any]]) -> None:
    kinds = {k.kind: k for k in vital_signs.KINDS}
    for r in outputs:
        kind = r["identifier"][0]["value"].rsplit(":", 1)[1]
        loincs, units = REQUIRED[kind]
        assert r["meta"]["profile"] == kinds[kind].profiles
        assert [c for c in r["category"] if VITAL_SIGNS in codings(c)] == [r["category"][0]]  # VSCat 1..1
        assert r["subject"]["reference"].startswith("Patient/") and len(r["effectiveDateTime"]) >= 10
        assert loincs <= {code for system, code in codings(r["code"]) if system == SYSTEM["loinc"]}
        if units is None:  # bp: no value; both components with mm[Hg]
            assert not [k for k in r if k.startswith("value")] and len(r["component"]) == 2
            quantities = [c["valueQuantity"] for c in r["component"]]
        else:
            quantities = [r["valueQuantity"]]
        for q in quantities:
            assert q["system"] == SYSTEM["ucum"] and q["code"] in (units or {"mm[Hg]"}) and "value" in q and q["unit"]


def test_every_output_passes_the_models_and_the_terminology_check(outputs: list[dict[str, Any]]) -> None:
    for r in outputs:
        validate_with_models(r)
        assert terminology_problems(r, BASE_URI) == [], r["id"]


def test_every_output_passes_the_independent_validator(outputs: list[dict[str, Any]], tmp_path: Path) -> None:
    assert validate_with_peer(outputs, tmp_path) == []


def test_the_synthetic_clinic_has_every_interpretation_the_thresholds_give(outputs: list[dict[str, Any]]) -> None:
    found = {code for r in outputs for code in interpretation(r)}
    assert {"N", "H", "HH", "L"} <= found


def test_ids_are_unique(outputs: list[dict[str, Any]]) -> None:
    assert len({r["id"] for r in outputs}) == len(outputs)
