"""A whole synthetic clinic, covering every archetype, maps to FHIR that an independent validator
accepts in full — and the service stores exactly what the dry run maps."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest

from service.mapfile import map_lines
from service.synthetic import clinic_lines
from tests.fhir_checks import terminology_problems, validate_with_models, validate_with_peer

BASE = "https://clinic.example.org/fhir"
PATIENTS = 24  # archetypes cycle every 8 patients; edge cases every 9-13: 24 covers them all


@pytest.fixture(scope="module")
def clinic() -> list[dict]:
    result = map_lines(clinic_lines(PATIENTS), BASE, "Synthetic Ketamine Clinic")
    assert result.errors == []
    return result.resources


def test_the_independent_validator_accepts_every_resource(clinic, tmp_path: Path):
    assert validate_with_peer(clinic, tmp_path) == []


def test_every_resource_parses_with_the_r4b_models(clinic):
    for resource in clinic:
        validate_with_models(resource)


def test_no_code_system_or_display_is_missing_from_the_clinical_reference(clinic):
    problems = {p for r in clinic for p in terminology_problems(r, BASE)}
    assert problems == set()


def test_ids_are_unique_and_every_reference_resolves(clinic):
    keys = [f"{r['resourceType']}/{r['id']}" for r in clinic]
    assert len(keys) == len(set(keys))

    def refs(value):
        if isinstance(value, dict):
            for k, v in value.items():
                if k == "reference" and isinstance(v, str) and not v.startswith("#"):
                    yield v
                else:
                    yield from refs(v)
        elif isinstance(value, list):
            for v in value:
                yield from refs(v)

    dangling = {ref for r in clinic for ref in refs(r)} - set(keys)
    assert dangling == set()


def test_every_archetype_is_covered(clinic):
    types = Counter(r["resourceType"] for r in clinic)
    assert set(types) >= {"Organization", "Practitioner", "PractitionerRole", "Patient", "ServiceRequest",
                          "Condition", "CarePlan", "Encounter", "Procedure", "AdverseEvent",
                          "MedicationAdministration", "Observation"}
    codes = {c["code"] for r in clinic for key in ("code", "type") for cc in
             ([r[key]] if isinstance(r.get(key), dict) else r.get(key) or []) for c in cc.get("coding", [])}
    assert {"96365", "G2082", "G2083"} <= codes  # IV, esketamine 56 mg and 84 mg sessions
    statuses = {(r["resourceType"], r.get("status")) for r in clinic}
    assert {("Procedure", "stopped"), ("Procedure", "not-done"), ("Encounter", "cancelled"),
            ("MedicationAdministration", "stopped"), ("Observation", "entered-in-error")} <= statuses


def test_mapping_is_deterministic_byte_for_byte(clinic):
    again = map_lines(clinic_lines(PATIENTS), BASE, "Synthetic Ketamine Clinic").resources
    assert json.dumps(again) == json.dumps(clinic)


def test_the_transaction_bundle_of_the_clinic_is_valid_too(clinic, tmp_path: Path):
    from mappings.bundle import transaction_bundle

    bundle = transaction_bundle(clinic)
    assert len(bundle["entry"]) == len(clinic)
    path = tmp_path / "bundle.json"
    path.write_text(json.dumps(bundle))
    import subprocess

    from tests.fhir_checks import peer_fhir

    result = subprocess.run([str(peer_fhir() / "validate.sh"), str(path)], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout[-3000:]
