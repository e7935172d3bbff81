"""A treatment course's care team becomes an R4 CareTeam: the referring psychiatrist (REF) and the
clinicians of its sessions, each with the v3 ParticipationType role of their clinic function
(mapping revision 2, item 3; reference section 12.1)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from mappings import care_plan, care_team
from mappings.datatypes import fhir_id
from mappings.terminology import SYSTEM
from service.clinic.schemas import CourseSchema
from tests.fhir_checks import validate_with_models, validate_with_peer
from tests.mappings.treatment_cases import (
    BASE_URI,
    cases,
    load_case,
    own_terminology_problems,
    synthetic_outputs,
    synthetic_records,
)

FOLDER = "careteam"
#: hl7.org/fhir/R4/valueset-care-team-status.html
R4_CARE_TEAM_STATUS = {"proposed", "active", "suspended", "inactive", "entered-in-error"}
V3 = SYSTEM["v3-ParticipationType"]


def roles(team: dict) -> list[tuple[str, str, str]]:
    """(v3 code, local function code or "", practitioner clinic id) of each participant."""
    out = []
    for p in team.get("participant", []):
        codings = p["role"][0]["coding"]
        local = [c["code"] for c in codings if c["system"] != V3]
        out.append((codings[0]["code"], local[0] if local else "", p["member"]["identifier"]["value"]))
    return out


@pytest.mark.parametrize("case", cases(FOLDER))
def test_golden_case(case: str):
    record, ctx, expected = load_case(FOLDER, case)
    assert care_team.to_fhir(record, ctx) == expected
    assert json.dumps(care_team.to_fhir(record, ctx)) == json.dumps(expected)


def test_the_referrer_is_first_then_each_session_clinician_once_per_function():
    record, ctx, _ = load_case(FOLDER, "reference")
    assert roles(care_team.to_fhir(record, ctx)) == [
        ("REF", "", "dr-ortiz"),
        ("ATND", "supervising", "dr-lee"),
        ("PPRF", "administering", "rn-cho"),
        ("SPRF", "monitoring", "rn-cho"),
        ("PART", "psychotherapist", "th-park"),
        ("ATND", "prescriber", "dr-lee"),  # a cancelled session's prescriber is still on the team
    ]  # dr-wrong performed only in a session entered in error


def test_the_referrer_role_is_v3_ref_with_the_reference_display():
    record, ctx, _ = load_case(FOLDER, "reference")
    first = care_team.to_fhir(record, ctx)["participant"][0]
    assert first["role"] == [{"coding": [{"system": V3, "code": "REF", "display": "referrer"}],
                              "text": "Referring psychiatrist"}]
    ortiz = fhir_id(BASE_URI, "Practitioner", "practitioners", "dr-ortiz")
    assert first["member"]["reference"] == f"Practitioner/{ortiz}"


def test_without_a_referral_the_referrer_is_the_patients_referring_practitioner():
    record, ctx, _ = load_case(FOLDER, "without-referral-patient-referrer")
    team = care_team.to_fhir(record, ctx)
    assert roles(team) == [("REF", "", "dr-ortiz")]
    assert care_team.referrer_id(record, ctx) == "dr-ortiz"


def test_an_entered_in_error_referral_names_no_referrer_and_an_unreferred_patient_none_either():
    record, ctx, _ = load_case(FOLDER, "entered-in-error-referral-no-referrer")
    team = care_team.to_fhir(record, ctx)
    assert "participant" not in team and "reasonReference" not in team
    assert team["status"] == "suspended"  # the course is on hold


def test_subject_period_reason_and_organization():
    record, ctx, _ = load_case(FOLDER, "without-referral-patient-referrer")
    team = care_team.to_fhir(record, ctx)
    assert team["subject"]["identifier"]["value"] == "pt-1"
    assert team["period"] == {"start": "2026-02-02", "end": "2026-03-01"}
    assert team["status"] == "inactive"  # completed course
    # the indication no referral carries: the course's own problem-list Condition
    assert team["reasonReference"][0]["identifier"]["value"] == "courses/co-2:F33.2"
    assert team["managingOrganization"][0]["identifier"]["value"] == "clinic"
    assert team["name"] == "Care team of the Intranasal maintenance series"


def test_every_clinic_status_has_an_r4_care_team_status():
    assert set(care_team.STATUS) == set(CourseSchema().fields["status"].validate.choices)
    assert set(care_team.STATUS.values()) <= R4_CARE_TEAM_STATUS


def test_the_care_plan_references_its_care_team():
    record, ctx, _ = load_case(FOLDER, "reference")
    plan, team = care_plan.to_fhir(record, ctx), care_team.to_fhir(record, ctx)
    assert plan["careTeam"] == [{"reference": f"CareTeam/{team['id']}", "identifier": team["identifier"][0]}]


def test_every_synthetic_course_has_a_team_with_its_referrer_and_session_staff():
    outputs = synthetic_outputs("courses", care_team.to_fhir)
    assert len(outputs) == len(synthetic_records("courses"))
    referrals = {r["id"]: r for r in synthetic_records("referrals")}
    for course, team in outputs:
        found = roles(team)
        assert found[0] == ("REF", "", referrals[course["referral_id"]]["referrer_id"])
        assert {code for code, _, _ in found[1:]} == {"ATND", "SPRF"}  # supervising physician, monitoring nurse


def test_every_output_passes_the_fhir_checks(tmp_path: Path):
    outputs = [(r, care_team.to_fhir(r, ctx)) for r, ctx, _ in (load_case(FOLDER, c) for c in cases(FOLDER))]
    outputs += synthetic_outputs("courses", care_team.to_fhir)
    for record, resource in outputs:
        validate_with_models(resource)
        assert own_terminology_problems(resource, record) == []
    assert validate_with_peer([r for _, r in outputs], tmp_path) == []
