"""Every resource about a patient carries meta.security labels (mapping revision 2, item 7;
reference section 12.2): confidentiality R plus the clinic's psychiatric sensitivity code, SUD and
the 42 CFR Part 2 policy on substance-use data; resources about no patient carry none."""

from __future__ import annotations

import pytest

from mappings.context import MappingContext
from mappings.resources import resources_for
from mappings.security_labels import SecurityPolicy, label, substance_use
from tests.factories import PATIENT, PSYCHIATRIST, REFERRAL, make

BASE = "https://clinic.example.org/fhir"
CONF = "http://terminology.hl7.org/CodeSystem/v3-Confidentiality"
ACT = "http://terminology.hl7.org/CodeSystem/v3-ActCode"


def _codes(resource: dict) -> list[tuple[str, str]]:
    return [(c["system"], c["code"]) for c in resource.get("meta", {}).get("security", [])]


def _patient() -> dict:
    return make(PATIENT)


def _referral(diagnoses: list[str]) -> dict:
    return make(REFERRAL, diagnoses=diagnoses)


def test_a_patient_is_restricted_and_psychiatric_by_default():
    resources = resources_for("patients", _patient(), MappingContext(BASE))
    [patient] = [r for r in resources if r["resourceType"] == "Patient"]
    assert _codes(patient) == [(CONF, "R"), (ACT, "PSY")]
    assert patient["meta"]["security"][0]["display"] == "restricted"


def test_a_depression_referral_has_no_substance_use_label():
    for resource in resources_for("referrals", _referral(["F33.2"]), MappingContext(BASE)):
        assert _codes(resource) == [(CONF, "R"), (ACT, "PSY")], resource["resourceType"]


def test_an_alcohol_dependence_diagnosis_adds_sud_and_the_part_2_policy():
    resources = resources_for("referrals", _referral(["F33.2", "F10.20"]), MappingContext(BASE))
    conditions = {r["code"]["coding"][0]["code"]: r for r in resources if r["resourceType"] == "Condition"}
    assert _codes(conditions["F10.20"]) == [(CONF, "R"), (ACT, "PSY"), (ACT, "SUD"), (ACT, "42CFRPart2")]
    assert _codes(conditions["F33.2"]) == [(CONF, "R"), (ACT, "PSY")]
    [request] = [r for r in resources if r["resourceType"] == "ServiceRequest"]
    assert (ACT, "SUD") in _codes(request)  # its reasonCode names the substance use


def test_a_clinic_that_is_no_part_2_program_sends_sud_without_the_policy_label():
    ctx = MappingContext(BASE, security=SecurityPolicy(part2_program=False))
    resources = resources_for("referrals", _referral(["F10.20"]), ctx)
    [condition] = [r for r in resources if r["resourceType"] == "Condition"]
    assert _codes(condition) == [(CONF, "R"), (ACT, "PSY"), (ACT, "SUD")]


@pytest.mark.parametrize("sensitivity,expected", [("BH", [(CONF, "V"), (ACT, "BH")]),
                                                   ("MH", [(CONF, "V"), (ACT, "MH")]),
                                                   ("none", [(CONF, "V")])])
def test_the_clinic_chooses_confidentiality_and_sensitivity(sensitivity, expected):
    ctx = MappingContext(BASE, security=SecurityPolicy("V", sensitivity))
    [patient] = [r for r in resources_for("patients", _patient(), ctx) if r["resourceType"] == "Patient"]
    assert _codes(patient) == expected


def test_resources_about_no_patient_are_not_labelled():
    for resource in resources_for("practitioners", make(PSYCHIATRIST), MappingContext(BASE)):
        assert "security" not in resource.get("meta", {}), resource["resourceType"]


def test_labels_a_resource_already_carries_are_kept_after_ours_and_one_confidentiality_wins():
    resource = {"resourceType": "Observation", "id": "o1", "subject": {"reference": "Patient/p"},
                "meta": {"profile": ["x"], "security": [{"system": CONF, "code": "N"},
                                                        {"system": ACT, "code": "HIPAAPsyNotes"}]}}
    out = label(resource, SecurityPolicy())
    assert _codes(out) == [(CONF, "R"), (ACT, "PSY"), (ACT, "HIPAAPsyNotes")]
    assert out["meta"]["profile"] == ["x"]
    assert list(out)[:3] == ["resourceType", "id", "meta"]


def test_only_icd10_f10_to_f19_count_as_substance_use():
    def condition(code: str) -> dict:
        return {"code": {"coding": [{"system": "http://hl7.org/fhir/sid/icd-10-cm", "code": code}]}}

    assert substance_use(condition("F10.20")) and substance_use(condition("F19"))
    assert not substance_use(condition("F33.2")) and not substance_use(condition("F20.0"))


def test_an_unknown_policy_value_is_refused():
    with pytest.raises(ValueError):
        SecurityPolicy("X")
    with pytest.raises(ValueError):
        SecurityPolicy(sensitivity="ETH")
