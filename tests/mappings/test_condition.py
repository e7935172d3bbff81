"""The diagnoses of a referral become US Core encounter-diagnosis Conditions: one per ICD-10-CM
code, for the patient, asserted by the referrer on the referral date, active and confirmed;
withdrawn (entered-in-error) with the referral. A course indication that no referral carries is a
problem-list Condition made from the course (mapping revision 2, item 10; reference section 12.3)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from mappings import condition, service_request
from mappings.datatypes import fhir_id
from mappings.terminology import SYSTEM
from tests.factories import COURSE, REFERRAL, make
from tests.mappings.people_cases import (
    BASE_URI,
    cases,
    check,
    context,
    load_case,
    peer_problems,
    synthetic,
    synthetic_clinic,
)

DIR = "condition"
STATUSES = ("draft", "active", "on-hold", "revoked", "completed", "entered-in-error")


def produce(given: dict, ctx) -> list[dict]:
    return condition.to_fhir(given["record"], ctx)


@pytest.mark.parametrize("case", cases(DIR))
def test_golden_case(case: str):
    given, ctx, expected = load_case(DIR, case)
    assert produce(given, ctx) == expected


def test_one_condition_per_diagnosis_in_order_keyed_by_referral_and_code():
    out = condition.to_fhir(make(REFERRAL, diagnoses=["F33.2", "F41.1", "G90.512"]), context())
    assert [c["code"]["coding"][0]["code"] for c in out] == ["F33.2", "F41.1", "G90.512"]
    assert [c["id"] for c in out] == [fhir_id(BASE_URI, "Condition", "conditions", f"rf-1:{code}")
                                      for code in ("F33.2", "F41.1", "G90.512")]
    assert out[0]["identifier"] == [{"use": "usual", "system": f"{BASE_URI}/conditions", "value": "rf-1:F33.2"}]


def test_code_is_icd10cm_with_the_reference_display_only_where_it_has_one():
    known, unknown = condition.to_fhir(make(REFERRAL, diagnoses=["F41.1", "G90.512"]), context())
    assert known["code"] == {"coding": [{"system": SYSTEM["icd10cm"], "code": "F41.1",
                                         "display": "Generalized anxiety disorder"}],
                             "text": "Generalized anxiety disorder"}
    assert unknown["code"] == {"coding": [{"system": SYSTEM["icd10cm"], "code": "G90.512"}],
                               "text": "ICD-10-CM G90.512"}


def test_subject_asserter_and_recorded_date_come_from_the_referral():
    (c,) = condition.to_fhir(REFERRAL, context())
    assert c["subject"]["identifier"]["value"] == "pt-1"
    ortiz = fhir_id(BASE_URI, "Practitioner", "practitioners", "dr-ortiz")
    assert c["asserter"]["reference"] == f"Practitioner/{ortiz}"
    assert c["recordedDate"] == "2026-01-02"


ACTIVE = {"coding": [{"system": SYSTEM["condition-clinical"], "code": "active", "display": "Active"}],
          "text": "Active"}
CONFIRMED = {"coding": [{"system": SYSTEM["condition-ver-status"], "code": "confirmed", "display": "Confirmed"}],
             "text": "Confirmed"}
ENTERED_IN_ERROR = {"coding": [{"system": SYSTEM["condition-ver-status"], "code": "entered-in-error",
                                "display": "Entered in Error"}], "text": "Entered in error"}
ENCOUNTER_DIAGNOSIS = [{"coding": [{"system": SYSTEM["condition-category"], "code": "encounter-diagnosis",
                                    "display": "Encounter Diagnosis"}], "text": "Encounter Diagnosis"}]
PROBLEM_LIST_ITEM = [{"coding": [{"system": SYSTEM["condition-category"], "code": "problem-list-item",
                                  "display": "Problem List Item"}], "text": "Problem List Item"}]


@pytest.mark.parametrize("status", STATUSES)
def test_a_referral_diagnosis_is_active_and_confirmed_unless_the_referral_was_entered_in_error(status: str):
    (c,) = condition.to_fhir(make(REFERRAL, status=status), context())
    if status == "entered-in-error":
        assert c["verificationStatus"] == ENTERED_IN_ERROR
        assert "clinicalStatus" not in c  # con-5: never with entered-in-error
    else:  # a revoked or completed referral does not make the diagnosis go away
        assert (c["clinicalStatus"], c["verificationStatus"]) == (ACTIVE, CONFIRMED)


def test_a_referral_diagnosis_is_a_us_core_encounter_diagnosis_asserted_on_the_referral_date():
    (c,) = condition.to_fhir(REFERRAL, context())
    assert c["meta"] == {"profile": [condition.PROFILE_ENCOUNTER_DIAGNOSIS]}
    assert c["category"] == ENCOUNTER_DIAGNOSIS
    assert c["extension"] == [{"url": "http://hl7.org/fhir/StructureDefinition/condition-assertedDate",
                               "valueDateTime": "2026-01-02"}]


def course_context(referral: dict | None = None):
    return context([("referrals", referral)] if referral else [])


def test_a_course_whose_referral_lists_its_indication_makes_no_condition_of_its_own():
    assert condition.for_course(COURSE, course_context(REFERRAL)) == []
    assert condition.for_course(make(COURSE, indication=None), course_context(REFERRAL)) == []


@pytest.mark.parametrize("referral", [None, make(REFERRAL, diagnoses=["F41.1"]),
                                      make(REFERRAL, status="entered-in-error")],
                         ids=["no-referral", "not-listed", "referral-entered-in-error"])
def test_a_course_indication_no_referral_carries_is_a_us_core_problem_list_condition(referral):
    course = make(COURSE, referral_id=None) if referral is None else COURSE
    (c,) = condition.for_course(course, course_context(referral))
    key = "courses/co-1:F33.2"
    assert c["id"] == fhir_id(BASE_URI, "Condition", "conditions", key)
    assert c["identifier"] == [{"use": "usual", "system": f"{BASE_URI}/conditions", "value": key}]
    assert c["meta"] == {"profile": [condition.PROFILE_PROBLEM]}
    assert (c["clinicalStatus"], c["verificationStatus"], c["category"]) == (ACTIVE, CONFIRMED, PROBLEM_LIST_ITEM)
    assert c["code"] == service_request.diagnosis_concept("F33.2")  # ICD-10-CM with the reference display
    assert c["subject"]["identifier"]["value"] == "pt-1"
    # the course says what it treats, not when or by whom it was diagnosed
    assert not {"recordedDate", "asserter", "onsetDateTime"} & set(c)


def test_a_course_entered_in_error_withdraws_its_condition():
    (c,) = condition.for_course(make(COURSE, referral_id=None, status="entered-in-error"), course_context())
    assert c["verificationStatus"] == ENTERED_IN_ERROR and "clinicalStatus" not in c


def test_the_esketamine_patient_without_a_referral_diagnosis_has_its_condition_and_every_pointer_finds_it():
    """Today's gap (issue 11, item 10): a Spravato course whose indication no referral lists."""
    from mappings import care_plan, care_team, encounter
    from tests.factories import SESSION
    from tests.mappings.treatment_cases import context as treatment_context

    course = make(COURSE, route="intranasal", indication="F32.2")
    session = make(SESSION)
    ctx = treatment_context([("referrals", REFERRAL), ("courses", course), ("sessions", session)])
    (c,) = condition.for_course(course, ctx)
    target = {"reference": f"Condition/{c['id']}", "identifier": c["identifier"][0]}
    assert care_plan.to_fhir(course, ctx)["addresses"] == [target]
    assert care_team.to_fhir(course, ctx)["reasonReference"] == [target]
    assert encounter.to_fhir(session, ctx)["reasonReference"] == [target]


def test_every_referral_condition_meets_the_us_core_required_elements():
    outputs = [c for r in synthetic("referrals") for c in condition.to_fhir(r, synthetic_clinic()[1])]
    outputs += [c for name in cases(DIR) for c in produce(*load_case(DIR, name)[:2])]
    for c in outputs:  # category (the US Core slice), code, subject (US Core Patient)
        assert c["category"] == ENCOUNTER_DIAGNOSIS
        assert c["code"]["coding"][0]["system"] == SYSTEM["icd10cm"]  # in US Core Condition Codes
        assert c["subject"]["reference"].startswith("Patient/")
        assert ("clinicalStatus" in c) is (c["verificationStatus"] != ENTERED_IN_ERROR)


def test_mapping_is_deterministic():
    first, again = condition.to_fhir(REFERRAL, context()), condition.to_fhir(dict(REFERRAL), context())
    assert json.dumps(first) == json.dumps(again)


def test_every_synthetic_referral_maps_to_its_conditions():
    ctx = synthetic_clinic()[1]
    for record in synthetic("referrals"):
        out = condition.to_fhir(record, ctx)
        assert len(out) == len(record["diagnoses"])
        for resource in out:
            check(resource)


def test_every_output_passes_the_fhir_checks(tmp_path: Path):
    outputs = [c for name in cases(DIR) for c in produce(*load_case(DIR, name)[:2])]
    outputs += [c for r in synthetic("referrals") for c in condition.to_fhir(r, synthetic_clinic()[1])]
    outputs += [c for status in ("active", "entered-in-error")
                for c in condition.for_course(make(COURSE, referral_id=None, status=status), course_context())]
    for resource in outputs:
        check(resource)
    assert peer_problems(outputs, tmp_path) == []
