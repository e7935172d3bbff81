"""The diagnoses of a referral become Conditions: one per ICD-10-CM code, for the patient,
asserted by the referrer on the referral date; withdrawn (entered-in-error) with the referral."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from mappings import condition
from mappings.datatypes import fhir_id
from mappings.terminology import SYSTEM
from tests.factories import REFERRAL, make
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


@pytest.mark.parametrize("status", STATUSES)
def test_only_an_entered_in_error_referral_sets_a_verification_status_and_none_sets_clinical_status(status: str):
    (c,) = condition.to_fhir(make(REFERRAL, status=status), context())
    assert "clinicalStatus" not in c  # con-5: never with entered-in-error; unknown otherwise
    if status == "entered-in-error":
        assert c["verificationStatus"] == {"coding": [{"system": SYSTEM["condition-ver-status"],
                                                       "code": "entered-in-error", "display": "Entered in Error"}],
                                           "text": "Entered in error"}
    else:
        assert "verificationStatus" not in c


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
    for resource in outputs:
        check(resource)
    assert peer_problems(outputs, tmp_path) == []
