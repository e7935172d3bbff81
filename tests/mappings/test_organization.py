"""The clinic Organization: one per clinic, a US Core Organization named from the configuration."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from mappings import organization
from mappings.datatypes import fhir_id
from tests.mappings.people_cases import BASE_URI, cases, check, context, load_case, peer_problems

DIR = "organization"


def produce(given: dict, ctx) -> dict:
    return organization.to_fhir(ctx)


@pytest.mark.parametrize("case", cases(DIR))
def test_golden_case(case: str):
    given, ctx, expected = load_case(DIR, case)
    assert produce(given, ctx) == expected


def test_is_an_active_us_core_organization_with_the_clinic_name():
    org = organization.to_fhir(context(clinic_name="Riverbend Ketamine Center"))
    assert org["meta"] == {"profile": [organization.PROFILE]}
    assert org["active"] is True
    assert org["name"] == "Riverbend Ketamine Center"


def test_id_and_business_identifier_come_from_the_organization_clinic_key():
    org = organization.to_fhir(context())
    assert org["id"] == fhir_id(BASE_URI, "Organization", "organization", "clinic")
    assert org["identifier"] == [{"use": "usual", "system": f"{BASE_URI}/organization", "value": "clinic"}]


def test_clinic_reference_points_at_it_and_carries_its_identifier():
    ctx = context()
    org = organization.to_fhir(ctx)
    ref = organization.clinic_reference(ctx)
    assert ref == {"reference": f"Organization/{org['id']}", "identifier": org["identifier"][0]}
    assert organization.clinic_reference(ctx, "Clinic")["display"] == "Clinic"


def test_mapping_is_deterministic():
    assert json.dumps(organization.to_fhir(context())) == json.dumps(organization.to_fhir(context()))


def test_every_output_passes_the_fhir_checks(tmp_path: Path):
    outputs = [organization.to_fhir(context()), organization.to_fhir(context(clinic_name="Other clinic"))]
    for resource in outputs:
        check(resource)
    assert peer_problems(outputs, tmp_path) == []
