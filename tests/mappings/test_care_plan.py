"""A treatment course becomes a US Core CarePlan: the planned series, one activity per planned
session, with a generated narrative, the assess-plan category and the course's CareTeam."""

from __future__ import annotations

import pytest

from mappings import care_plan
from mappings.datatypes import fhir_id
from mappings.terminology import SYSTEM
from service.clinic.schemas import SESSION_STATUSES, CourseSchema
from tests.mappings.treatment_cases import (
    BASE_URI,
    golden_outputs,
    load_case,
    synthetic_outputs,
    synthetic_records,
)

FOLDER = "careplan"
#: R4 value sets (hl7.org/fhir/R4/valueset-request-status.html, valueset-care-plan-activity-status.html)
R4_REQUEST_STATUS = {"draft", "active", "on-hold", "revoked", "completed", "entered-in-error", "unknown"}
R4_ACTIVITY_STATUS = {"not-started", "scheduled", "in-progress", "on-hold", "completed", "cancelled", "stopped",
                      "unknown", "entered-in-error"}


@pytest.fixture(scope="module")
def golden() -> list[tuple[str, dict, dict]]:
    return list(golden_outputs(FOLDER, care_plan.to_fhir))


@pytest.fixture(scope="module")
def synthetic() -> list[tuple[dict, dict]]:
    return synthetic_outputs("courses", care_plan.to_fhir)


def test_every_synthetic_course_maps_to_one_care_plan_with_an_activity_per_planned_session(synthetic):
    assert len(synthetic) == len(synthetic_records("courses")) == 24
    for course, plan in synthetic:
        assert len(plan["activity"]) == course["planned_sessions"]
    statuses = {a["detail"]["status"] for _, plan in synthetic for a in plan["activity"]}
    assert {"completed", "stopped", "cancelled"} <= statuses  # stopped-early and cancelled sessions


def test_every_clinic_status_has_an_r4_status():
    assert set(care_plan.STATUS) == set(CourseSchema().fields["status"].validate.choices)
    assert set(care_plan.STATUS.values()) <= R4_REQUEST_STATUS
    assert set(care_plan.ACTIVITY_STATUS) == set(SESSION_STATUSES)
    assert set(care_plan.ACTIVITY_STATUS.values()) <= R4_ACTIVITY_STATUS


def test_a_stopped_course_is_revoked_and_its_unheld_sessions_cancelled():
    record, ctx, _ = load_case(FOLDER, "stopped-im-course-without-referral")
    plan = care_plan.to_fhir(record, ctx)
    assert plan["status"] == "revoked"
    assert {a["detail"]["status"] for a in plan["activity"]} == {"cancelled"}


def test_the_referral_is_supporting_info_because_r4_careplan_based_on_takes_only_careplans(golden):
    for _, record, plan in golden:
        assert "basedOn" not in plan
        if record.get("referral_id"):
            assert plan["supportingInfo"][0]["reference"].startswith("ServiceRequest/")


def test_the_indication_condition_is_the_referrals_when_it_lists_it_else_the_courses_own():
    listed, ctx, _ = load_case(FOLDER, "reference")
    assert care_plan.to_fhir(listed, ctx)["addresses"][0]["identifier"]["value"] == "rf-1:F33.2"
    not_listed, ctx, _ = load_case(FOLDER, "entered-in-error-indication-not-in-referral")
    key = f"courses/{not_listed['id']}:{not_listed['indication']}"
    assert care_plan.to_fhir(not_listed, ctx)["addresses"] == [{
        "reference": f"Condition/{fhir_id(BASE_URI, 'Condition', 'conditions', key)}",
        "identifier": {"use": "usual", "system": f"{BASE_URI}/conditions", "value": key}}]
    without, ctx, _ = load_case(FOLDER, "missing-weight-without-indication")
    assert "addresses" not in care_plan.to_fhir(without, ctx)


def test_every_care_plan_meets_us_core_careplan(golden, synthetic):
    """US Core 6.1 CarePlan: status, intent, category assess-plan (1..1 slice), subject (US Core
    Patient); text.status (generated or additional) and text.div are Must Support (section 12.3)."""
    assess_plan = [{"coding": [{"system": SYSTEM["us-core-careplan-category"], "code": "assess-plan",
                                "display": "Assessment and Plan of Treatment"}],
                    "text": "Assessment and Plan of Treatment"}]
    for plan in [r for _, _, r in golden] + [r for _, r in synthetic]:
        assert plan["meta"]["profile"] == [care_plan.PROFILE]
        assert plan["category"] == assess_plan
        assert plan["status"] in R4_REQUEST_STATUS and plan["intent"] == "plan"
        assert plan["subject"]["reference"].startswith("Patient/")
        assert plan["text"]["status"] == "generated"
        assert plan["text"]["div"].startswith('<div xmlns="http://www.w3.org/1999/xhtml">')
        assert plan["careTeam"][0]["reference"].startswith("CareTeam/")


def test_the_narrative_summarises_the_plan_from_its_own_elements():
    record, ctx, _ = load_case(FOLDER, "every-session-status")
    plan = care_plan.to_fhir(record, ctx)
    div = plan["text"]["div"]
    assert f"<p><b>{plan['title']}</b></p>" in div and f"<p>{plan['description']}.</p>" in div
    assert f"Status: {plan['status']}; from {plan['period']['start']}" in div
    assert ("<p>8 planned sessions: 1 cancelled, 2 completed, 1 entered-in-error, 1 in-progress, "
            "1 not-started, 1 scheduled, 1 stopped.</p>") in div


def test_the_narrative_escapes_what_it_quotes():
    from mappings.care_plan import _narrative

    plan = {"title": "A <b> & c", "description": "d", "status": "active", "period": {"start": "2026-01-01"},
            "activity": [{"detail": {"status": "scheduled"}}]}
    assert "A &lt;b&gt; &amp; c" in _narrative(plan)["div"]
    assert "1 planned session: 1 scheduled" in _narrative(plan)["div"]


def test_each_session_status_shows_on_its_activity_with_the_encounter_as_outcome():
    record, ctx, _ = load_case(FOLDER, "every-session-status")
    activities = care_plan.to_fhir(record, ctx)["activity"]
    assert [a["detail"]["status"] for a in activities] == [
        "completed", "entered-in-error", "stopped", "cancelled", "completed", "in-progress", "scheduled", "not-started"]
    assert "outcomeReference" not in activities[1]  # no link to a session entered in error
    assert all("outcomeReference" in a for a in activities[2:7])
    assert [a["detail"]["description"] for a in activities[:2]] == ["Session 1 of 8", "Session 2 of 8"]


def test_activities_are_coded_like_their_sessions_g2082_and_g2083_for_esketamine():
    record, ctx, _ = load_case(FOLDER, "esketamine-2-and-3-devices")
    codes = [a["detail"]["code"]["coding"][0]["code"] for a in care_plan.to_fhir(record, ctx)["activity"]]
    assert codes[0] == "G2082" and codes[2] == "G2083"
    assert set(codes[1:2] + codes[3:]) == {"intranasal-dosing"}  # not held yet: dose unknown


def test_no_activity_has_both_a_reference_and_a_detail_cpl_3(golden, synthetic):
    for plan in [r for _, _, r in golden] + [r for _, r in synthetic]:
        assert all(not ("reference" in a and "detail" in a) for a in plan["activity"])


def test_each_activity_is_one_session_with_its_own_date_never_a_repeating_schedule(golden, synthetic):
    """Mapping revision 2: "2 a week" on every single-session activity read as N x twice a week.
    The rate is the plan's description; an activity carries its session's date once it has one."""
    for _, record, plan in golden:
        assert len(plan["activity"]) == record["planned_sessions"]
    for record, plan in synthetic:
        sessions = care_plan.sessions_by_number(s for s in synthetic_records("sessions")
                                                if s.get("course_id") == record["id"])
        for n, activity in enumerate(plan["activity"], start=1):
            detail = activity["detail"]
            assert "scheduledTiming" not in detail
            if n in sessions and sessions[n]["status"] != "entered-in-error":
                assert detail["scheduledPeriod"]["start"] == sessions[n]["start"]
            else:
                assert "scheduledPeriod" not in detail
        if record.get("sessions_per_week"):
            assert f"{record['sessions_per_week']:g} per week" in plan["description"]
