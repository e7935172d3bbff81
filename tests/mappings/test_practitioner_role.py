"""A clinic practitioner's role becomes a PractitionerRole: the practitioner, the organization
(the clinic for its staff, a display for another practice) and the clinic role as a local code."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from mappings import organization, practitioner, practitioner_role
from mappings.datatypes import fhir_id
from tests.factories import NURSE, PSYCHIATRIST, make
from tests.mappings.people_cases import (
    BASE_URI,
    CLINIC_NAME,
    cases,
    check,
    context,
    load_case,
    peer_problems,
    synthetic,
    synthetic_clinic,
)

DIR = "practitionerrole"
ROLE_SYSTEM = f"{BASE_URI}/CodeSystem/practitioner-role"


def produce(given: dict, ctx) -> dict:
    return practitioner_role.to_fhir(given["record"], ctx)


@pytest.mark.parametrize("case", cases(DIR))
def test_golden_case(case: str):
    given, ctx, expected = load_case(DIR, case)
    assert produce(given, ctx) == expected


def test_is_base_fhir_with_its_own_id_and_identifier_and_points_at_the_practitioner():
    ctx = context()
    role = practitioner_role.to_fhir(PSYCHIATRIST, ctx)
    assert "meta" not in role  # not US Core: see docs/mappings.md (practitioner-role)
    assert role["id"] == fhir_id(BASE_URI, "PractitionerRole", "practitioner-roles", "dr-ortiz")
    assert role["identifier"] == [{"use": "usual", "system": f"{BASE_URI}/practitioner-roles", "value": "dr-ortiz"}]
    assert role["practitioner"]["reference"] == f"Practitioner/{practitioner.to_fhir(PSYCHIATRIST, ctx)['id']}"


@pytest.mark.parametrize("role", ["psychiatrist", "anesthesiologist", "physician", "nurse", "psychotherapist"])
def test_code_is_the_clinic_role_in_the_local_code_system_with_text(role: str):
    out = practitioner_role.to_fhir(make(NURSE, role=role), context())
    assert out["code"] == [{"coding": [{"system": ROLE_SYSTEM, "code": role}], "text": role.capitalize()}]


def test_clinic_staff_work_for_the_clinic_organization():
    ctx = context()
    assert practitioner_role.to_fhir(NURSE, ctx)["organization"] == organization.clinic_reference(ctx)
    named = practitioner_role.to_fhir(make(NURSE, organization=CLINIC_NAME), ctx)["organization"]
    assert named == organization.clinic_reference(ctx, CLINIC_NAME)


def test_another_organization_is_named_by_display_only():
    assert practitioner_role.to_fhir(PSYCHIATRIST, context())["organization"] == {"display": "Riverside Psychiatry"}


@pytest.mark.parametrize(("status", "active"), [("active", True), ("inactive", False), ("entered-in-error", False)])
def test_status_becomes_active(status: str, active: bool):
    out = practitioner_role.to_fhir(make(NURSE, status=status), context())
    assert out["active"] is active
    assert ("meta" in out) is (status == "entered-in-error")


@pytest.mark.parametrize("case", cases(DIR))
def test_from_fhir_gives_back_role_organization_and_status(case: str):
    given, ctx, _ = load_case(DIR, case)
    record = given["record"]
    expected = {"id": record["id"], "role": record["role"], "status": record.get("status", "active")}
    if "organization" in record:
        expected["organization"] = record["organization"]
    assert practitioner_role.from_fhir(produce(given, ctx), ctx) == expected


def test_from_fhir_needs_our_role_code():
    foreign = {"resourceType": "PractitionerRole",
               "code": [{"coding": [{"system": "http://nucc.org/provider-taxonomy", "code": "2084P0800X"}]}]}
    with pytest.raises(ValueError, match=r"^role: no .*/CodeSystem/practitioner-role coding"):
        practitioner_role.from_fhir(foreign, context())


def test_mapping_is_deterministic():
    assert json.dumps(practitioner_role.to_fhir(PSYCHIATRIST, context())) == json.dumps(
        practitioner_role.to_fhir(dict(PSYCHIATRIST), context()))


def test_every_synthetic_practitioner_has_a_role_for_the_right_organization():
    ctx = synthetic_clinic()[1]
    for record in synthetic("practitioners"):
        out = practitioner_role.to_fhir(record, ctx)
        check(out)
        clinic_staff = record["organization"] == CLINIC_NAME
        assert ("reference" in out["organization"]) is clinic_staff


def test_every_output_passes_the_fhir_checks(tmp_path: Path):
    outputs = [produce(*load_case(DIR, c)[:2]) for c in cases(DIR)]
    outputs += [practitioner_role.to_fhir(r, synthetic_clinic()[1]) for r in synthetic("practitioners")]
    for resource in outputs:
        check(resource)
    assert peer_problems(outputs, tmp_path) == []
