"""Outcome scores become survey Observations (mappings/observation.py).

Golden files: tests/fixtures/observation/score-*.{input,expected}.json. Every resource mapped here
passes the R4B models, the reference-terminology check and (once, over all of them) the peer validator.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from mappings import checks, observation
from mappings.terminology import SYSTEM, local_system
from service.clinic.schemas import ObservationSchema
from tests.factories import OBSERVATION, make
from tests.fhir_checks import terminology_problems, validate_with_models, validate_with_peer
from tests.mappings.measurement_cases import BASE_URI, cases, context, load_case, synthetic_clinic

CASES = cases("score-")
CTX = context([])
SESSION_ENCOUNTER = "Encounter/"


def score(**changes: Any) -> dict[str, Any]:
    return make(OBSERVATION, **changes)


def codings(concept: dict[str, Any]) -> list[tuple[str, str]]:
    return [(c["system"], c["code"]) for c in concept.get("coding", [])]


# --- golden files ---------------------------------------------------------------------------------


def test_every_brief_case_has_a_golden_file() -> None:
    assert len(CASES) >= 11
    for name in CASES:
        assert (Path(__file__).parent.parent / "fixtures" / "observation" / f"{name}.expected.json").exists()


@pytest.mark.parametrize("name", CASES)
def test_golden_file(name: str) -> None:
    record, ctx, expected = load_case(name)
    assert observation.to_fhir(record, ctx) == expected


@pytest.mark.parametrize("name", CASES)
def test_mapping_is_deterministic(name: str) -> None:
    record, ctx, _ = load_case(name)
    assert json.dumps(observation.to_fhir(record, ctx)) == json.dumps(observation.to_fhir(json.loads(
        json.dumps(record)), ctx))


# --- code, value, interpretation ------------------------------------------------------------------


def test_a_loinc_instrument_is_coded_with_its_total_score_code_and_named_in_text() -> None:
    code = observation.to_fhir(score(), CTX)["code"]
    assert codings(code) == [(SYSTEM["loinc"], "44261-6")]
    assert code["text"] == "PHQ-9"


def test_an_instrument_without_loinc_gets_the_local_instrument_code_with_its_name_as_display() -> None:
    code = observation.to_fhir(score(instrument="madrs", score=24, items=None), CTX)["code"]
    assert code == {"coding": [{"system": local_system(BASE_URI, "instrument"), "code": "madrs",
                                "display": "MADRS"}], "text": "MADRS"}


def test_whole_number_scores_are_value_integer() -> None:
    resource = observation.to_fhir(score(score=16.0), CTX)
    assert resource["valueInteger"] == 16 and "valueQuantity" not in resource


def test_a_peg_mean_is_a_ucum_score_quantity() -> None:
    resource = observation.to_fhir(score(instrument="peg", score=6.33, items=[7, 6, 6]), CTX)
    assert resource["valueQuantity"] == {"value": 6.33, "unit": "{score}", "system": SYSTEM["ucum"],
                                         "code": "{score}"}


@pytest.mark.parametrize(("instrument", "value", "band"), [
    ("phq9", 16, "moderately-severe"), ("gad7", 3, "minimal"), ("bdi2", 22, "moderate"),
    ("qids-sr16", 21, "very-severe"), ("madrs", 24, None), ("cadss", 8, None)])
def test_the_severity_band_is_the_interpretation_where_the_reference_has_bands(
        instrument: str, value: int, band: str | None) -> None:
    resource = observation.to_fhir(score(instrument=instrument, score=value, items=None), CTX)
    if band is None:
        assert "interpretation" not in resource
    else:
        assert codings(resource["interpretation"][0]) == [(local_system(BASE_URI, "severity-band"), band)]


# --- items ---------------------------------------------------------------------------------------


def test_items_are_components_in_instrument_order_with_their_loinc_item_codes() -> None:
    components = observation.to_fhir(score(), CTX)["component"]
    assert [codings(c["code"])[0][1] for c in components][::8] == ["44250-9", "44260-8"]  # items 1 and 9
    assert [c["valueInteger"] for c in components] == OBSERVATION["items"]
    assert components[8]["code"]["text"] == "PHQ-9 item 9"


def test_items_without_loinc_codes_get_local_item_codes() -> None:
    record = score(instrument="cssrs", score=1, items=[1, 0, 0, 0, 0, 0])
    first = observation.to_fhir(record, CTX)["component"][0]
    assert first == {"code": {"coding": [{"system": local_system(BASE_URI, "instrument-item"), "code": "cssrs-1"}],
                              "text": "C-SSRS screener item 1"}, "valueInteger": 1}


def test_a_score_without_items_has_no_components() -> None:
    assert "component" not in observation.to_fhir(score(instrument="pain-nrs", score=7, items=None), CTX)


# --- safety signals, status, context ---------------------------------------------------------------


def test_phq9_item_9_above_0_is_flagged_as_a_note() -> None:
    record = score(items=[2, 2, 2, 2, 2, 2, 2, 1, 1], score=16)
    record["warnings"] = checks.observation_warnings(record)
    notes = observation.to_fhir(record, CTX)["note"]
    assert len(notes) == 1 and notes[0]["text"].startswith("Clinical check safety-signal: PHQ-9 item 9")


def test_no_warnings_no_note() -> None:
    assert "note" not in observation.to_fhir(score(), CTX)


@pytest.mark.parametrize("status", sorted(ObservationSchema().fields["status"].validators[0].choices))
def test_every_clinic_status_maps_to_the_same_observation_status(status: str) -> None:
    assert observation.to_fhir(score(status=status), CTX)["status"] == status


def test_a_session_score_refers_to_the_session_encounter_and_a_lone_score_to_none() -> None:
    in_session = observation.to_fhir(score(session_id="se-1"), CTX)
    assert in_session["encounter"]["reference"].startswith(SESSION_ENCOUNTER)
    assert "encounter" not in observation.to_fhir(score(), CTX)


def test_timing_is_a_second_category_and_the_first_is_survey() -> None:
    categories = observation.to_fhir(score(timing="post"), CTX)["category"]
    assert codings(categories[0]) == [(SYSTEM["observation-category"], "survey")]
    assert codings(categories[1]) == [(local_system(BASE_URI, "timing"), "post")]
    assert len(observation.to_fhir(score(timing=None), CTX)["category"]) == 1


def test_effective_time_keeps_its_offset() -> None:
    effective = "2026-07-01T23:59:30.250+05:30"
    assert observation.to_fhir(score(effective=effective), CTX)["effectiveDateTime"] == effective


# --- every output: profile, models, terminology, peer validator -----------------------------------


def synthetic_scores() -> list[dict[str, Any]]:
    records, ctx = synthetic_clinic()
    return [observation.to_fhir(r, ctx) for c, r in records if c == "observations"]


@pytest.fixture(scope="module")
def outputs() -> list[dict[str, Any]]:
    golden = [observation.to_fhir(r, ctx) for r, ctx, _ in map(load_case, CASES)]
    return golden + synthetic_scores()


def test_the_synthetic_clinic_has_every_score_archetype(outputs: list[dict[str, Any]]) -> None:
    statuses = {r["status"] for r in outputs}
    texts = {r["code"]["text"] for r in synthetic_scores()}
    assert statuses == {"final", "amended", "entered-in-error"}
    assert {"PHQ-9", "GAD-7", "CADSS", "Pain NRS"} <= texts
    assert any("note" in r for r in synthetic_scores())  # a PHQ-9 item 9 safety signal


def test_every_output_meets_the_us_core_screening_assessment_required_elements(
        outputs: list[dict[str, Any]]) -> None:
    survey = (SYSTEM["observation-category"], "survey")
    for r in outputs:
        assert r["meta"]["profile"] == [observation.PROFILE]
        assert [c for c in r["category"] if survey in codings(c)] == [r["category"][0]]  # exactly one
        assert r["subject"]["reference"].startswith("Patient/")
        assert len(r["effectiveDateTime"]) >= 10  # us-core-1
        assert "valueInteger" in r or r["valueQuantity"]["system"] == SYSTEM["ucum"]  # us-core-2, -3


def test_every_output_passes_the_models_and_the_terminology_check(outputs: list[dict[str, Any]]) -> None:
    for r in outputs:
        validate_with_models(r)
        assert terminology_problems(r, BASE_URI) == [], r["id"]


def test_every_output_passes_the_independent_validator(outputs: list[dict[str, Any]], tmp_path: Path) -> None:
    assert validate_with_peer(outputs, tmp_path) == []


def test_ids_are_unique(outputs: list[dict[str, Any]]) -> None:
    assert len({r["id"] for r in outputs}) == len(outputs)
