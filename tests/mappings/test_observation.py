"""Outcome scores become survey Observations, and scores with items a QuestionnaireResponse, a
panel Observation and one Observation per item (mappings/observation.py, questionnaire_response.py).

Golden files: tests/fixtures/observation/score-*.{input,expected}.json (a list: the total-score
Observation first). Every resource mapped here passes the R4B models, the reference-terminology
check and (once, over all of them) the peer validator.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from marshmallow import ValidationError

from mappings import checks, observation, questionnaire_response
from mappings.datatypes import fhir_id
from mappings.terminology import SYSTEM, local_system
from service.clinic.schemas import ObservationSchema
from tests.factories import OBSERVATION, make
from tests.fhir_checks import terminology_problems, validate_with_models, validate_with_peer
from tests.mappings.measurement_cases import BASE_URI, cases, context, load_case, synthetic_clinic

CASES = cases("score-")
CTX = context([])
SESSION_ENCOUNTER = "Encounter/"
LOINC = SYSTEM["loinc"]
INTERPRETATION = "http://terminology.hl7.org/CodeSystem/v3-ObservationInterpretation"
PHQ9_ITEMS = ["44250-9", "44255-8", "44259-0", "44254-1", "44251-7", "44258-2", "44252-5", "44253-3", "44260-8"]
#: a MADRS with its items, rated by a practitioner
MADRS = {"id": "ob-m", "patient_id": "pt-1", "instrument": "madrs", "score": 20, "items": [2] * 10,
         "effective": "2026-01-12T10:20:00-05:00", "rater_id": "dr-ortiz"}


def score(**changes: Any) -> dict[str, Any]:
    return make(OBSERVATION, **changes)


def total(record: dict[str, Any]) -> dict[str, Any]:
    """The total-score Observation of a record (always the first resource)."""
    return observation.to_fhir(record, CTX)[0]


def by_kind(record: dict[str, Any]) -> dict[str, Any]:
    """The resources of a record with items: total, QuestionnaireResponse, panel, items."""
    out = observation.to_fhir(record, CTX)
    return {"total": out[0], "qr": out[1], "panel": out[2], "items": out[3:]}


def codings(concept: dict[str, Any]) -> list[tuple[str, str]]:
    return [(c["system"], c["code"]) for c in concept.get("coding", [])]


def key(resource: dict[str, Any]) -> str:
    return f"{resource['resourceType']}/{resource['id']}"


# --- golden files ---------------------------------------------------------------------------------


def test_every_brief_case_has_a_golden_file() -> None:
    assert len(CASES) >= 14
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


# --- the total score: code, value, interpretation --------------------------------------------------


def test_a_loinc_instrument_is_coded_with_its_total_score_code_and_named_in_text() -> None:
    code = total(score())["code"]
    assert codings(code) == [(LOINC, "44261-6")]
    assert code["text"] == "PHQ-9"


def test_an_instrument_without_loinc_gets_the_local_instrument_code_with_its_name_as_display() -> None:
    code = total(score(instrument="madrs", score=24, items=None))["code"]
    assert code == {"coding": [{"system": local_system(BASE_URI, "instrument"), "code": "madrs",
                                "display": "MADRS"}], "text": "MADRS"}


def test_whole_number_scores_are_value_integer() -> None:
    resource = total(score(score=16.0))
    assert resource["valueInteger"] == 16 and "valueQuantity" not in resource


def test_a_peg_mean_is_a_ucum_score_quantity() -> None:
    resource = total(score(instrument="peg", score=6.33, items=[7, 6, 6]))
    assert resource["valueQuantity"] == {"value": 6.33, "unit": "{score}", "system": SYSTEM["ucum"],
                                         "code": "{score}"}


@pytest.mark.parametrize(("instrument", "value", "band"), [
    ("phq9", 16, "moderately-severe"), ("gad7", 3, "minimal"), ("bdi2", 22, "moderate"),
    ("qids-sr16", 21, "very-severe"), ("madrs", 24, None), ("cadss", 8, None)])
def test_the_severity_band_is_the_interpretation_where_the_reference_has_bands(
        instrument: str, value: int, band: str | None) -> None:
    resource = total(score(instrument=instrument, score=value, items=None))
    if band is None:
        assert "interpretation" not in resource
    else:
        assert codings(resource["interpretation"][0]) == [(local_system(BASE_URI, "severity-band"), band)]


def test_the_total_keeps_its_id_and_identifier_when_items_are_sent() -> None:
    with_items, without = total(score()), total(score(items=None))
    assert with_items["id"] == without["id"] == fhir_id(BASE_URI, "Observation", "observations", "ob-1")
    assert with_items["identifier"] == without["identifier"] == [
        {"use": "usual", "system": f"{BASE_URI}/observations", "value": "ob-1"}]


# --- a score without items -------------------------------------------------------------------------


def test_a_score_without_items_is_one_observation_with_no_components_and_no_derivation() -> None:
    out = observation.to_fhir(score(instrument="pain-nrs", score=7, items=None), CTX)
    assert [r["resourceType"] for r in out] == ["Observation"]
    assert not {"component", "hasMember", "derivedFrom"} & set(out[0])
    assert observation.to_fhir(score(items=[]), CTX) == observation.to_fhir(score(items=None), CTX)


# --- a score with items: QuestionnaireResponse, panel, item Observations ---------------------------


def test_items_give_the_total_a_questionnaire_response_a_panel_and_one_observation_per_item() -> None:
    out = observation.to_fhir(score(), CTX)
    assert [r["resourceType"] for r in out] == ["Observation", "QuestionnaireResponse"] + ["Observation"] * 10
    parts = by_kind(score())
    assert [codings(i["code"])[0] for i in parts["items"]] == [(LOINC, c) for c in PHQ9_ITEMS]
    assert [i["code"]["text"] for i in parts["items"]][::8] == ["PHQ-9 item 1", "PHQ-9 item 9"]


def test_the_total_no_longer_repeats_the_items_as_components() -> None:
    """US Core 6.1 screening assessments: each question-answer pair is its own Observation under
    the panel's hasMember; components as well would send every answer twice."""
    assert "component" not in total(score())


@pytest.mark.parametrize(("instrument", "items", "value", "panel"), [
    ("phq9", [2, 2, 2, 2, 2, 2, 2, 2, 0], 16, (LOINC, "44249-1")),
    ("gad7", [2, 2, 2, 1, 2, 2, 1], 12, (LOINC, "69737-5")),
    ("pcl5", [1] * 20, 20, (LOINC, "101697-1")),
    ("phq2", [1, 2], 3, (LOINC, "55757-9")),
    ("cssrs", [1, 0, 0, 0, 0, 0], 1, (LOINC, "93373-9")),
    ("madrs", [2] * 10, 20, (local_system(BASE_URI, "instrument-panel"), "madrs"))])
def test_the_panel_has_the_instruments_panel_code_or_a_local_one(
        instrument: str, items: list[int], value: int, panel: tuple[str, str]) -> None:
    resource = by_kind(score(instrument=instrument, items=items, score=value))["panel"]
    assert codings(resource["code"]) == [panel]
    assert resource["identifier"][0]["value"] == "ob-1:panel"


def test_the_panel_has_no_value_and_lists_every_item_in_order_then_the_total() -> None:
    parts = by_kind(score())
    panel = parts["panel"]
    assert not [k for k in panel if k.startswith("value")]
    assert [m["reference"] for m in panel["hasMember"]] == [key(i) for i in parts["items"]] + [key(parts["total"])]
    assert panel["hasMember"][-1]["identifier"]["value"] == "ob-1"


def test_total_panel_and_items_all_derive_from_the_questionnaire_response() -> None:
    parts = by_kind(score())
    qr = key(parts["qr"])
    for resource in [parts["total"], parts["panel"], *parts["items"]]:
        assert [d["reference"] for d in resource["derivedFrom"]] == [qr]


def test_phq_and_gad_item_answers_are_loinc_answer_codes() -> None:
    items = by_kind(score(items=[0, 1, 2, 3, 0, 0, 0, 0, 0], score=6))["items"]
    assert [codings(i["valueCodeableConcept"]) for i in items[:4]] == [
        [(LOINC, "LA6568-5")], [(LOINC, "LA6569-3")], [(LOINC, "LA6570-1")], [(LOINC, "LA6571-9")]]
    assert items[3]["valueCodeableConcept"]["text"] == "Nearly every day"
    gad = by_kind(score(instrument="gad7", items=[3, 0, 0, 0, 0, 0, 0], score=3))["items"]
    assert codings(gad[0]["code"]) == [(LOINC, "69725-0")]
    assert codings(gad[0]["valueCodeableConcept"]) == [(LOINC, "LA6571-9")]


def test_other_instruments_items_are_integers_with_loinc_or_local_item_codes() -> None:
    peg = by_kind(score(instrument="peg", score=6.33, items=[7, 6, 6]))["items"]
    assert [(codings(i["code"]), i["valueInteger"]) for i in peg] == [
        ([(LOINC, "75893-8")], 7), ([(LOINC, "91145-3")], 6), ([(LOINC, "91146-1")], 6)]
    madrs = by_kind(MADRS)["items"]
    assert codings(madrs[0]["code"]) == [(local_system(BASE_URI, "instrument-item"), "madrs-1")]
    assert madrs[0]["valueInteger"] == 2 and "valueCodeableConcept" not in madrs[0]


def test_ids_and_identifiers_of_panel_and_items_come_from_the_record_id() -> None:
    parts = by_kind(score())
    assert parts["panel"]["id"] == fhir_id(BASE_URI, "Observation", "observations", "ob-1:panel")
    assert [i["identifier"][0]["value"] for i in parts["items"]] == [f"ob-1:item-{n}" for n in range(1, 10)]
    assert parts["items"][8]["id"] == fhir_id(BASE_URI, "Observation", "observations", "ob-1:item-9")


def test_every_part_shares_status_subject_encounter_time_and_categories() -> None:
    record = score(session_id="se-1", status="amended", timing="post")
    parts = observation.to_fhir(record, CTX)
    observations = [r for r in parts if r["resourceType"] == "Observation"]
    for field in ("status", "subject", "encounter", "effectiveDateTime", "category", "performer"):
        assert len({json.dumps(r[field]) for r in observations}) == 1, field
    assert observations[0]["status"] == "amended"


# --- the QuestionnaireResponse ---------------------------------------------------------------------


def test_the_questionnaire_response_is_the_form_as_answered() -> None:
    qr = by_kind(score(session_id="se-1"))["qr"]
    assert qr["meta"]["profile"] == [questionnaire_response.PROFILE]
    assert qr["questionnaire"] == f"{BASE_URI}/Questionnaire/phq9"  # clinic-local: no LOINC-form canonical
    assert qr["status"] == "completed"
    assert qr["subject"]["reference"].startswith("Patient/")
    assert qr["encounter"]["reference"].startswith(SESSION_ENCOUNTER)
    assert qr["authored"] == OBSERVATION["effective"]
    assert qr["identifier"] == {"use": "usual", "system": f"{BASE_URI}/observations", "value": "ob-1"}
    assert [i["linkId"] for i in qr["item"]] == PHQ9_ITEMS
    assert qr["item"][0]["answer"] == [{"valueCoding": {"system": LOINC, "code": "LA6570-1",
                                                        "display": "More than half the days"}}]


def test_questionnaire_response_answers_of_other_instruments_are_integers_with_local_link_ids() -> None:
    qr = by_kind(MADRS)["qr"]
    assert qr["questionnaire"] == f"{BASE_URI}/Questionnaire/madrs"
    assert qr["item"][0] == {"linkId": "madrs-1", "text": "MADRS item 1", "answer": [{"valueInteger": 2}]}


@pytest.mark.parametrize(("status", "expected"), [
    ("final", "completed"), ("amended", "amended"), ("entered-in-error", "entered-in-error")])
def test_questionnaire_response_status(status: str, expected: str) -> None:
    assert by_kind(score(status=status))["qr"]["status"] == expected


def test_questionnaire_response_source_is_the_patient_of_a_self_report_and_author_the_rater() -> None:
    phq = by_kind(score())["qr"]
    assert phq["source"] == phq["subject"] and "author" not in phq
    madrs = by_kind(MADRS)["qr"]
    assert madrs["author"]["identifier"]["value"] == "dr-ortiz" and "source" not in madrs


def test_no_questionnaire_response_without_items() -> None:
    with pytest.raises(ValueError, match="items"):
        questionnaire_response.to_fhir(score(items=None), CTX)


# --- safety items (item 6) ------------------------------------------------------------------------


def interpretation(resource: dict[str, Any]) -> list[tuple[str, str]]:
    return [c for i in resource.get("interpretation", []) for c in codings(i)]


def test_a_positive_phq9_item_9_is_pos_and_a_zero_one_neg_and_other_items_have_none() -> None:
    positive = by_kind(score(items=[2, 2, 2, 2, 2, 2, 2, 1, 1], score=16))["items"]
    assert interpretation(positive[8]) == [(INTERPRETATION, "POS")]
    assert positive[8]["interpretation"][0]["coding"][0]["display"] == "Positive"
    assert [interpretation(i) for i in positive[:8]] == [[]] * 8
    zero = by_kind(score())["items"]
    assert interpretation(zero[8]) == [(INTERPRETATION, "NEG")]


def test_every_c_ssrs_item_is_pos_for_yes_and_neg_for_no() -> None:
    items = by_kind(score(instrument="cssrs", score=2, items=[1, 1, 0, 0, 0, 0]))["items"]
    assert [interpretation(i)[0][1] for i in items] == ["POS", "POS", "NEG", "NEG", "NEG", "NEG"]


def test_the_total_keeps_the_severity_band_and_the_panel_has_no_interpretation() -> None:
    parts = by_kind(score(items=[2, 2, 2, 2, 2, 2, 2, 1, 1], score=16))
    assert interpretation(parts["total"]) == [(local_system(BASE_URI, "severity-band"), "moderately-severe")]
    assert "interpretation" not in parts["panel"]


def test_phq9_item_9_above_0_is_flagged_as_a_note_on_the_total() -> None:
    record = score(items=[2, 2, 2, 2, 2, 2, 2, 1, 1], score=16)
    record["warnings"] = checks.observation_warnings(record)
    notes = total(record)["note"]
    assert len(notes) == 1 and notes[0]["text"].startswith("Clinical check safety-signal: PHQ-9 item 9")


def test_no_warnings_no_note() -> None:
    assert "note" not in total(score())


# --- performer (item 13) --------------------------------------------------------------------------


@pytest.mark.parametrize("instrument", ["phq9", "gad7", "pcl5", "phq2", "pain-nrs", "bdi2", "qids-sr16", "peg"])
def test_a_self_report_score_is_performed_by_the_patient(instrument: str) -> None:
    resource = total(score(instrument=instrument, score=3, items=None))
    assert resource["performer"] == [resource["subject"]]


@pytest.mark.parametrize("instrument", ["madrs", "hamd17", "cadss", "cssrs"])
def test_a_clinician_rated_score_is_performed_by_the_rater_the_record_names(instrument: str) -> None:
    resource = total(score(instrument=instrument, score=1, items=None, rater_id="dr-ortiz"))
    assert [p["reference"] for p in resource["performer"]] == [
        f"Practitioner/{fhir_id(BASE_URI, 'Practitioner', 'practitioners', 'dr-ortiz')}"]
    assert "performer" not in total(score(instrument=instrument, score=1, items=None))


def test_every_part_of_a_rated_score_names_the_rater() -> None:
    for resource in observation.to_fhir(MADRS, CTX):
        if resource["resourceType"] == "Observation":
            assert resource["performer"][0]["identifier"]["value"] == "dr-ortiz"


def test_the_schema_takes_a_rater_for_a_clinician_rated_score_and_refuses_one_for_a_self_report() -> None:
    assert ObservationSchema().load(MADRS)["rater_id"] == "dr-ortiz"
    with pytest.raises(ValidationError) as error:
        ObservationSchema().load(score(rater_id="dr-ortiz"))
    assert "rater_id" in error.value.messages


# --- status, context ------------------------------------------------------------------------------


@pytest.mark.parametrize("status", sorted(ObservationSchema().fields["status"].validators[0].choices))
def test_every_clinic_status_maps_to_the_same_observation_status(status: str) -> None:
    observations = [r for r in observation.to_fhir(score(status=status), CTX) if r["resourceType"] == "Observation"]
    assert {r["status"] for r in observations} == {status}


def test_a_session_score_refers_to_the_session_encounter_and_a_lone_score_to_none() -> None:
    in_session = total(score(session_id="se-1"))
    assert in_session["encounter"]["reference"].startswith(SESSION_ENCOUNTER)
    assert "encounter" not in total(score())


def test_timing_is_a_second_category_and_the_first_is_survey() -> None:
    categories = total(score(timing="post"))["category"]
    assert codings(categories[0]) == [(SYSTEM["observation-category"], "survey")]
    assert codings(categories[1]) == [(local_system(BASE_URI, "timing"), "post")]
    assert len(total(score(timing=None))["category"]) == 1


def test_effective_time_keeps_its_offset() -> None:
    effective = "2026-07-01T23:59:30.250+05:30"
    assert total(score(effective=effective))["effectiveDateTime"] == effective


# --- every output: profile, models, terminology, peer validator, invariants -----------------------


def synthetic_records() -> list[list[dict[str, Any]]]:
    """The resources of each synthetic score record."""
    records, ctx = synthetic_clinic()
    return [observation.to_fhir(r, ctx) for c, r in records if c == "observations"]


def per_record() -> list[list[dict[str, Any]]]:
    golden = [observation.to_fhir(r, ctx) for r, ctx, _ in map(load_case, CASES)]
    return golden + synthetic_records() + [observation.to_fhir(MADRS, CTX)]


@pytest.fixture(scope="module")
def records() -> list[list[dict[str, Any]]]:
    return per_record()


@pytest.fixture(scope="module")
def outputs(records: list[list[dict[str, Any]]]) -> list[dict[str, Any]]:
    return [r for out in records for r in out]


def test_the_synthetic_clinic_has_every_score_archetype(outputs: list[dict[str, Any]]) -> None:
    synthetic = [r for out in synthetic_records() for r in out]
    totals = [out[0] for out in synthetic_records()]
    assert {r["status"] for r in outputs if r["resourceType"] == "Observation"} == {
        "final", "amended", "entered-in-error"}
    assert {"PHQ-9", "GAD-7", "CADSS", "Pain NRS"} <= {r["code"]["text"] for r in totals}
    assert any("note" in r for r in totals)  # a PHQ-9 item 9 safety signal
    assert {"PHQ-9 panel", "GAD-7 panel"} <= {r["code"]["text"] for r in synthetic if "hasMember" in r}
    assert any(interpretation(r) == [(INTERPRETATION, "POS")] for r in synthetic)
    cadss = [r for r in totals if r["code"]["text"] == "CADSS"]
    assert cadss and all(r["performer"][0]["reference"].startswith("Practitioner/") for r in cadss)


def test_every_item_observation_is_reachable_from_its_panels_has_member(records: list[list[dict[str, Any]]]) -> None:
    for out in records:
        panels = [r for r in out if "hasMember" in r]
        members = {m["reference"] for p in panels for m in p["hasMember"]}
        observations = {key(r) for r in out if r["resourceType"] == "Observation"}
        assert len(panels) == (1 if len(out) > 1 else 0)
        if panels:  # every item and the total, each once
            assert observations - {key(panels[0])} == members
            assert len(panels[0]["hasMember"]) == len(members)


def test_every_has_member_and_derived_from_resolves_to_a_resource_of_the_same_record(
        records: list[list[dict[str, Any]]]) -> None:
    for out in records:
        mine = {key(r) for r in out}
        links = {ref["reference"] for r in out for ref in r.get("hasMember", []) + r.get("derivedFrom", [])}
        assert links <= mine
        qrs = [r for r in out if r["resourceType"] == "QuestionnaireResponse"]
        assert len(qrs) == (1 if len(out) > 1 else 0)


def test_every_observation_meets_the_us_core_screening_assessment_required_elements(
        outputs: list[dict[str, Any]]) -> None:
    survey = (SYSTEM["observation-category"], "survey")
    for r in (r for r in outputs if r["resourceType"] == "Observation"):
        assert r["meta"]["profile"] == [observation.PROFILE]
        assert [c for c in r["category"] if survey in codings(c)] == [r["category"][0]]  # exactly one
        assert r["subject"]["reference"].startswith("Patient/")
        assert len(r["effectiveDateTime"]) >= 10  # us-core-1
        values = [k for k in r if k.startswith("value")]
        assert values or r["hasMember"]  # us-core-2
        assert "valueQuantity" not in r or r["valueQuantity"]["system"] == SYSTEM["ucum"]  # us-core-3


def test_every_questionnaire_response_meets_the_us_core_required_elements(outputs: list[dict[str, Any]]) -> None:
    qrs = [r for r in outputs if r["resourceType"] == "QuestionnaireResponse"]
    assert qrs
    for r in qrs:
        assert r["meta"]["profile"] == [questionnaire_response.PROFILE]
        assert r["questionnaire"].startswith(f"{BASE_URI}/Questionnaire/")
        assert r["status"] in ("completed", "amended", "entered-in-error")
        assert r["subject"]["reference"].startswith("Patient/") and r["authored"]
        assert all(i["linkId"] and len(i["answer"]) == 1 for i in r["item"])


def test_every_output_passes_the_models_and_the_terminology_check(outputs: list[dict[str, Any]]) -> None:
    for r in outputs:
        validate_with_models(r)
        assert terminology_problems(r, BASE_URI) == [], r["id"]


def test_every_output_passes_the_independent_validator(outputs: list[dict[str, Any]], tmp_path: Path) -> None:
    assert validate_with_peer(outputs, tmp_path) == []


def test_ids_are_unique(outputs: list[dict[str, Any]]) -> None:
    assert len({key(r) for r in outputs}) == len(outputs)
