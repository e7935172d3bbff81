"""A treatment session becomes a US Core Procedure: the infusion, injection or nasal dosing, coded
CPT 96365 (IV), CPT 96372 (IM), HCPCS G2082/G2083 (esketamine up to / over 56 mg) or a local code
(others); psychotherapy in it becomes a Procedure of its own, CPT-coded by its minutes."""

from __future__ import annotations

from datetime import datetime

import pytest

from mappings import encounter, procedure
from mappings.session_codes import GIVEN_STATUSES, esketamine_dose_mg, procedure_key
from service.clinic.schemas import SESSION_STATUSES
from tests.mappings.treatment_cases import (
    golden_outputs,
    load_case,
    snomed_codings,
    synthetic_clinic,
    synthetic_outputs,
    synthetic_records,
)

FOLDER = "procedure"
#: hl7.org/fhir/R4/valueset-event-status.html
R4_EVENT_STATUS = {"preparation", "in-progress", "not-done", "on-hold", "stopped", "completed", "entered-in-error",
                   "unknown"}


@pytest.fixture(scope="module")
def golden() -> list[tuple[str, dict, dict]]:
    return list(golden_outputs(FOLDER, procedure.to_fhir))


@pytest.fixture(scope="module")
def synthetic() -> list[tuple[dict, dict]]:
    return synthetic_outputs("sessions", procedure.to_fhir)


def test_every_synthetic_session_maps_to_one_procedure(synthetic):
    assert len(synthetic) == len(synthetic_records("sessions"))
    assert {r["status"] for _, r in synthetic} == {"completed", "stopped", "not-done"}
    # a cancelled Spravato session has no dose recorded: intranasal-dosing, not a guessed G-code
    assert {r["code"]["coding"][0]["code"] for _, r in synthetic} == {"96365", "G2082", "G2083", "96372",
                                                                      "intranasal-dosing"}


def test_every_clinic_status_has_an_r4_status():
    assert set(procedure.STATUS) == set(SESSION_STATUSES)
    assert set(procedure.STATUS.values()) <= R4_EVENT_STATUS


def test_us_core_7_a_completed_or_in_progress_procedure_says_when_it_was_performed(golden, synthetic):
    for resource in [r for _, _, r in golden] + [r for _, r in synthetic]:
        assert resource["meta"]["profile"] == [procedure.PROFILE]
        if resource["status"] in ("completed", "in-progress"):
            assert resource["performedPeriod"]["start"]
        if resource["status"] in ("preparation", "not-done"):
            assert "performedPeriod" not in resource  # not performed


@pytest.mark.parametrize(("route", "esketamine_mg", "key"), [
    ("iv", None, "iv-infusion"),
    ("intranasal", 28, "esketamine-56"),
    ("intranasal", 56, "esketamine-56"),
    ("intranasal", 56.5, "esketamine-84"),
    ("intranasal", 84, "esketamine-84"),
    ("intranasal", None, "intranasal-dosing"),
    ("im", None, "im-injection"),
    ("oral", None, "ketamine-administration"),
    (None, None, "ketamine-administration"),
])
def test_the_code_follows_the_route_and_the_esketamine_dose(route, esketamine_mg, key):
    assert procedure_key(route, esketamine_mg) == key


def test_the_esketamine_dose_counts_what_was_given_and_falls_back_on_what_was_booked():
    def dose(mg, status):
        return {"drug": "esketamine", "dose_mg": mg, "status": status}

    assert esketamine_dose_mg([dose(56, "completed"), dose(28, "completed")]) == 84
    assert esketamine_dose_mg([dose(56, "completed"), dose(28, "not-done")]) == 56
    assert esketamine_dose_mg([dose(84, "not-done")]) == 84
    assert esketamine_dose_mg([dose(84, "entered-in-error")]) is None
    assert esketamine_dose_mg([{"drug": "ketamine", "dose_mg": 35, "status": "completed"}]) is None


def test_stopped_early_says_why_and_lists_the_complication():
    record, ctx, _ = load_case(FOLDER, "stopped-early")
    resource = procedure.to_fhir(record, ctx)
    assert resource["status"] == "stopped"
    assert resource["statusReason"] == {"text": "Blood pressure above hold threshold"}
    # coded from its text with the reference's SNOMED CT finding (section 12.7), the text kept
    assert resource["complication"] == [{"coding": [{"system": "http://snomed.info/sct", "code": "24184005",
                                                     "display": "Finding of increased blood pressure"}],
                                         "text": "Transient hypertension"}]


def test_notes_and_clinical_check_warnings_become_annotations():
    record, ctx, _ = load_case(FOLDER, "esketamine-3-devices")
    notes = procedure.to_fhir(record, ctx)["note"]
    assert notes[0]["text"].startswith("Clinical check rems-monitoring-incomplete: ")
    record, ctx, _ = load_case(FOLDER, "psychotherapy")
    resource = procedure.to_fhir(record, ctx)
    assert resource["note"] == [{"text": record["notes"]}]
    assert resource["category"]["coding"][0]["code"] == "ketamine-assisted-psychotherapy"


def test_a_clinic_supplied_snomed_code_passes_through_to_the_complication():
    record, ctx, _ = load_case("adverseevent", "reference-with-snomed-code")
    resource = procedure.to_fhir(record, ctx)
    assert snomed_codings(resource["complication"]) == {"422587007"}
    assert resource["complication"][0]["text"] == "Nausea"


def _instant(value: str) -> datetime:
    return datetime.fromisoformat(value)


def _given(record: dict, ctx) -> list[dict]:
    return [a for a in ctx.children(record["id"], "administrations") if a["status"] in GIVEN_STATUSES]


def test_an_infusion_or_injection_is_performed_exactly_while_the_drug_is_given_inside_the_visit():
    """Mapping revision 2: CPT 96365 ("up to 1 hour") and 96372 bill the dosing, so performedPeriod
    is the first given dose's start to the last one's end, never the whole visit, and lies inside
    the Encounter's period. Esketamine (G2082/G2083 include 2 h of observation) keeps the visit."""
    records, ctx = synthetic_clinic()
    checked = 0
    for collection, record in records:
        if collection != "sessions" or record["status"] in ("planned", "cancelled", "entered-in-error"):
            continue
        performed = procedure.to_fhir(record, ctx)["performedPeriod"]
        visit = encounter.to_fhir(record, ctx)["period"]
        assert _instant(visit["start"]) <= _instant(performed["start"])
        if "end" in performed and "end" in visit:
            assert _instant(performed["end"]) <= _instant(visit["end"])
        given = _given(record, ctx)
        if given and given[0]["drug"] == "ketamine":
            assert performed["start"] == min(given, key=lambda a: _instant(a["start"]))["start"]
            assert performed.get("end") == max((a["end"] for a in given), key=_instant)
            checked += 1
        else:
            assert performed == visit
    assert checked > 50


def test_the_golden_iv_infusion_lasts_the_infusion_not_the_two_hour_visit():
    record, ctx, _ = load_case(FOLDER, "reference")
    assert procedure.to_fhir(record, ctx)["performedPeriod"] == {"start": "2026-01-12T09:10:00-05:00",
                                                                 "end": "2026-01-12T09:50:00-05:00"}
    assert encounter.to_fhir(record, ctx)["period"] == {"start": "2026-01-12T09:00:00-05:00",
                                                        "end": "2026-01-12T10:30:00-05:00"}


# --- CPT 96372 and psychotherapy Procedures (mapping revision 2, item 12) -------------------------

CPT = "http://www.ama-assn.org/go/cpt"


def test_an_im_session_is_cpt_96372_with_its_edition_and_no_display():
    """Reference 12.4: CPT carries system, code and version; the AMA's wording never (text instead)."""
    record, ctx, _ = load_case(FOLDER, "im-booster")
    code = procedure.to_fhir(record, ctx)["code"]
    assert code == {"coding": [{"system": CPT, "version": "2026", "code": "96372"}], "text": "IM ketamine injection"}
    # the Encounter says the same, next to its local encounter type
    assert encounter.to_fhir(record, ctx)["type"][0]["coding"][0] == code["coding"][0]


def test_every_cpt_coding_names_its_edition_and_has_no_display(synthetic):
    for _, resource in synthetic:
        for coding in resource["code"]["coding"]:
            if coding["system"] == CPT:
                assert coding["version"] == "2026" and "display" not in coding


@pytest.mark.parametrize(("minutes", "cpt"), [
    (None, None), (1, None), (15, None), (16, "90832"), (37, "90832"), (38, "90834"), (52, "90834"),
    (53, "90837"), (90, "90837"),
])
def test_psychotherapy_is_coded_by_its_minutes_and_not_at_all_under_16(minutes, cpt):
    """Reference 12.4: 90832 16-37 min, 90834 38-52, 90837 53 and more; under 16 minutes no
    psychotherapy code applies, so only the local code and the text say what it was."""
    concept = procedure.psychotherapy_concept(minutes, "https://clinic.example.org/fhir")
    codes = [(c["system"], c["code"]) for c in concept["coding"]]
    local = ("https://clinic.example.org/fhir/CodeSystem/procedure", "ketamine-assisted-psychotherapy")
    assert codes == ([(CPT, cpt), local] if cpt else [local])
    if minutes is not None:
        assert f"{minutes} min" in concept["text"]
    if minutes is not None and cpt is None:
        assert "no psychotherapy CPT code" in concept["text"]


def test_psychotherapy_is_its_own_procedure_in_the_session_by_its_therapist():
    record, ctx, _ = load_case("psychotherapy", "reference-45-minutes")
    [therapy] = procedure.psychotherapy(record, ctx)
    dosing = procedure.to_fhir(record, ctx)
    assert therapy["id"] != dosing["id"]
    assert therapy["identifier"] == [{"use": "usual", "system": "https://clinic.example.org/fhir/psychotherapy",
                                      "value": record["id"]}]
    assert therapy["code"]["coding"][0] == {"system": CPT, "version": "2026", "code": "90834"}
    assert therapy["encounter"] == dosing["encounter"] and therapy["status"] == "completed"
    assert [p["actor"]["identifier"]["value"] for p in therapy["performer"]] == ["th-nolan"]
    # the clinic records how long, not when: the visit
    assert therapy["performedPeriod"] == {"start": record["start"], "end": record["end"]}


def test_a_session_without_psychotherapy_has_no_psychotherapy_procedure_and_a_planned_one_no_time():
    record, ctx, _ = load_case("psychotherapy", "no-psychotherapy")
    assert procedure.psychotherapy(record, ctx) == []
    record, ctx, _ = load_case("psychotherapy", "planned")
    [therapy] = procedure.psychotherapy(record, ctx)
    assert therapy["status"] == "preparation" and "performedPeriod" not in therapy
