"""A treatment session becomes a US Core Encounter: the ambulatory visit, typed by what was given."""

from __future__ import annotations

import pytest

from mappings import encounter, procedure
from service.clinic.schemas import SESSION_STATUSES
from tests.mappings.treatment_cases import (
    cases,
    golden_outputs,
    load_case,
    synthetic_outputs,
    synthetic_records,
)
from tests.mappings.treatment_cases import context as treatment_context  # the name ``context`` reads as a fixture

FOLDER = "encounter"
#: hl7.org/fhir/R4/valueset-encounter-status.html
R4_ENCOUNTER_STATUS = {"planned", "arrived", "triaged", "in-progress", "onleave", "finished", "cancelled",
                       "entered-in-error", "unknown"}


@pytest.fixture(scope="module")
def golden() -> list[tuple[str, dict, dict]]:
    return list(golden_outputs(FOLDER, encounter.to_fhir))


@pytest.fixture(scope="module")
def synthetic() -> list[tuple[dict, dict]]:
    return synthetic_outputs("sessions", encounter.to_fhir)


def test_every_synthetic_session_maps_to_one_encounter(synthetic):
    assert len(synthetic) == len(synthetic_records("sessions"))
    assert {r["status"] for _, r in synthetic} == {"finished", "cancelled"}
    types = {c["code"] for _, r in synthetic for c in r["type"][0]["coding"]}
    assert {"96365", "G2082", "G2083", "96372", "ketamine-iv-induction", "ketamine-im-induction",
            "esketamine-session"} <= types


def test_every_clinic_status_has_an_r4_status():
    assert set(encounter.STATUS) == set(SESSION_STATUSES)
    assert set(encounter.STATUS.values()) <= R4_ENCOUNTER_STATUS
    assert encounter.STATUS["stopped-early"] == "finished"  # the visit ended; the Procedure says stopped


def test_us_core_mandatory_elements_are_always_there(golden, synthetic):
    for resource in [r for _, _, r in golden] + [r for _, r in synthetic]:
        assert resource["meta"]["profile"] == [encounter.PROFILE]
        assert resource["status"] and resource["class"]["code"] == "AMB"
        assert resource["type"] and resource["subject"]["reference"].startswith("Patient/")


@pytest.mark.parametrize("case", cases(FOLDER))
def test_the_encounter_type_carries_the_same_code_as_the_sessions_procedure(case):
    record, ctx, _ = load_case(FOLDER, case)
    assert encounter.to_fhir(record, ctx)["type"][0]["coding"][0] == procedure.to_fhir(record, ctx)["code"]["coding"][0]


def test_psychotherapy_adds_a_second_type():
    record, ctx, _ = load_case(FOLDER, "psychotherapy")
    types = encounter.to_fhir(record, ctx)["type"]
    assert [t["coding"][-1]["code"] for t in types] == ["ketamine-iv-induction", "ketamine-assisted-psychotherapy"]


def test_a_session_without_course_has_no_referral_or_reason_and_keeps_its_offset():
    record, ctx, _ = load_case(FOLDER, "without-course-offset")
    resource = encounter.to_fhir(record, ctx)
    assert "basedOn" not in resource and "reasonReference" not in resource and "reasonCode" not in resource
    assert resource["period"] == {"start": "2026-02-03T14:00:00+01:00", "end": "2026-02-03T15:30:00+01:00"}
    assert resource["type"][0]["coding"][-1]["code"] == "ketamine-iv-session"  # route from the dose


def test_a_planned_intranasal_session_does_not_guess_the_drug():
    record, ctx, _ = load_case(FOLDER, "esketamine-planned")
    assert [c["code"] for c in encounter.to_fhir(record, ctx)["type"][0]["coding"]] == [
        "intranasal-dosing", "intranasal-session"]


V3 = "http://terminology.hl7.org/CodeSystem/v3-ParticipationType"


def test_each_participant_type_is_the_v3_participation_type_next_to_the_local_function():
    """Mapping revision 2, item 12 (reference section 12.1): R4 binds Encounter.participant.type to
    v3-ParticipationType (extensible); the clinic's function stays as the second coding."""
    record, ctx, _ = load_case(FOLDER, "psychotherapy")
    found = [[(c["system"].rsplit("/", 1)[-1], c["code"], c.get("display")) for c in p["type"][0]["coding"]]
             for p in encounter.to_fhir(record, ctx)["participant"]]
    local = "participant-function"
    assert [f[0][:2] for f in found] == [("v3-ParticipationType", "PPRF"), ("v3-ParticipationType", "ATND"),
                                         ("v3-ParticipationType", "PART")]
    assert [f[1][:2] for f in found] == [(local, "administering"), (local, "supervising"), (local, "psychotherapist")]
    assert [f[0][2] for f in found] == ["primary performer", "attender", "Participation"]


def test_every_function_has_a_v3_participation_type(synthetic):
    from mappings.terminology import PARTICIPANT_FUNCTION_TYPE, PARTICIPANT_FUNCTIONS

    assert set(PARTICIPANT_FUNCTION_TYPE) == set(PARTICIPANT_FUNCTIONS)
    for _, resource in synthetic:
        for participant in resource.get("participant", []):
            (concept,) = participant["type"]
            assert concept["coding"][0]["system"] == V3
            assert concept["coding"][0]["code"] in {"ATND", "PPRF", "SPRF", "PART"}


def test_the_reason_is_always_a_reference_to_a_us_core_condition(synthetic):
    """Mapping revision 2, item 13: reasonReference reaches a US Core Condition, also where no
    referral lists the indication (the course's own problem-list Condition)."""
    record, ctx, _ = load_case(FOLDER, "reference")
    course = ctx.lookup("courses", record["course_id"])
    unlisted = treatment_context([*[("referrals", r) for r in [ctx.lookup("referrals", course["referral_id"])]],
                                  ("courses", {**course, "indication": "F41.1"}), ("sessions", record)])
    resource = encounter.to_fhir(record, unlisted)
    assert "reasonCode" not in resource
    assert resource["reasonReference"][0]["identifier"]["value"] == f"courses/{course['id']}:F41.1"
    for session, enc in synthetic:
        if session.get("course_id"):
            assert enc["reasonReference"][0]["reference"].startswith("Condition/")
