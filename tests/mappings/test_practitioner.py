"""A clinic practitioner becomes a US Core Practitioner (the person: identifiers, name, work
contacts, active) and maps back, given the clinic role its PractitionerRole carries."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from mappings import practitioner
from mappings.terminology import SYSTEM
from service.clinic.schemas import PractitionerSchema
from tests.factories import NURSE, PSYCHIATRIST, make
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

DIR = "practitioner"
EIE_TAG = {"system": f"{BASE_URI}/CodeSystem/record-status", "code": "entered-in-error"}


def produce(given: dict, ctx) -> dict:
    return practitioner.to_fhir(given["record"], ctx)


def mapped_fields(record: dict) -> dict:
    """What a Practitioner carries back: everything but role (passed in) and organization (on the
    PractitionerRole); status defaults to active as in the clinic schema."""
    out = {k: v for k, v in record.items() if k not in ("organization", "meta", "warnings")}
    out.setdefault("status", "active")
    return out


@pytest.mark.parametrize("case", cases(DIR))
def test_golden_case(case: str):
    given, ctx, expected = load_case(DIR, case)
    assert produce(given, ctx) == expected


def test_identifiers_are_ours_then_the_npi():
    p = practitioner.to_fhir(PSYCHIATRIST, context())
    assert p["identifier"] == [{"use": "usual", "system": f"{BASE_URI}/practitioners", "value": "dr-ortiz"},
                               {"system": SYSTEM["npi"], "value": PSYCHIATRIST["npi"]}]
    assert p["meta"]["profile"] == [practitioner.PROFILE]


def test_a_practitioner_without_npi_has_only_our_identifier_and_is_still_us_core():
    p = practitioner.to_fhir(NURSE, context())
    assert [i["system"] for i in p["identifier"]] == [f"{BASE_URI}/practitioners"]
    assert p["meta"]["profile"] == [practitioner.PROFILE]


def test_name_is_the_official_human_name_and_contacts_are_work_telecom():
    p = practitioner.to_fhir(make(PSYCHIATRIST, phone="+1 555 0100", email="ortiz@example.org"), context())
    assert p["name"] == [{"use": "official", "family": "Ortiz", "given": ["Lena"], "prefix": ["Dr."]}]
    assert p["telecom"] == [{"system": "phone", "value": "+1 555 0100", "use": "work"},
                            {"system": "email", "value": "ortiz@example.org", "use": "work"}]
    assert "telecom" not in practitioner.to_fhir(NURSE, context())


@pytest.mark.parametrize(("status", "active", "tagged"), [
    ("active", True, False), ("inactive", False, False), ("entered-in-error", False, True)])
def test_status_becomes_active_and_entered_in_error_is_tagged(status: str, active: bool, tagged: bool):
    p = practitioner.to_fhir(make(NURSE, status=status), context())
    assert p["active"] is active
    assert (p["meta"].get("tag") == [EIE_TAG]) is tagged


def test_a_record_without_status_is_active():
    assert practitioner.to_fhir(make(NURSE, status=None), context())["active"] is True


@pytest.mark.parametrize("case", cases(DIR))
def test_golden_cases_map_back_to_the_same_record(case: str):
    given, ctx, _ = load_case(DIR, case)
    record = given["record"]
    back = practitioner.from_fhir(produce(given, ctx), ctx, role=record["role"])
    assert back == mapped_fields(record)
    assert PractitionerSchema().validate(back) == {}


def test_from_fhir_needs_the_role_from_the_caller():
    p = practitioner.to_fhir(PSYCHIATRIST, context())
    with pytest.raises(ValueError, match=r"^role: a Practitioner does not carry the clinic role"):
        practitioner.from_fhir(p, context())
    with pytest.raises(ValueError, match=r"^role: 'surgeon' is not one of"):
        practitioner.from_fhir(p, context(), role="surgeon")


def test_from_fhir_of_a_foreign_practitioner_has_no_id_and_reads_the_npi_and_first_contacts():
    foreign = {"resourceType": "Practitioner", "id": "ehr-77",
               "identifier": [{"system": "https://ehr.example.org/staff", "value": "S-77"},
                              {"system": SYSTEM["npi"], "value": "1234500068"}],
               "name": [{"use": "usual", "family": "Nick"},
                        {"use": "official", "family": "Okafor", "given": ["Chidi"]}],
               "telecom": [{"system": "fax", "value": "+1 555 0199"}, {"system": "phone", "value": "+1 555 0100"},
                           {"system": "phone", "value": "+1 555 0101"}]}
    assert practitioner.from_fhir(foreign, context(), role="anesthesiologist") == {
        "name": {"family": "Okafor", "given": ["Chidi"]}, "role": "anesthesiologist", "npi": "1234500068",
        "phone": "+1 555 0100", "status": "active"}


def test_from_fhir_rejects_what_is_not_a_named_practitioner():
    with pytest.raises(ValueError, match=r"^name:"):
        practitioner.from_fhir({"resourceType": "Practitioner", "name": [{"given": ["X"]}]}, context(), role="nurse")
    with pytest.raises(ValueError, match=r"^resourceType:"):
        practitioner.from_fhir({"resourceType": "Patient"}, context(), role="nurse")


def test_mapping_is_deterministic():
    assert json.dumps(practitioner.to_fhir(PSYCHIATRIST, context())) == json.dumps(
        practitioner.to_fhir(dict(PSYCHIATRIST), context()))


def test_every_synthetic_practitioner_maps_and_maps_back():
    ctx = synthetic_clinic()[1]
    for record in synthetic("practitioners"):
        resource = practitioner.to_fhir(record, ctx)
        check(resource)
        assert practitioner.from_fhir(resource, ctx, role=record["role"]) == mapped_fields(record)


def test_every_output_passes_the_fhir_checks(tmp_path: Path):
    outputs = [produce(*load_case(DIR, c)[:2]) for c in cases(DIR)]
    outputs += [practitioner.to_fhir(r, synthetic_clinic()[1]) for r in synthetic("practitioners")]
    for resource in outputs:
        check(resource)
    assert peer_problems(outputs, tmp_path) == []
