"""What every treatment mapping (CarePlan, Encounter, Procedure, MedicationAdministration,
AdverseEvent) must do: match its golden files exactly, map byte-identically twice, and emit only
resources the R4B models, the clinical reference's terminology and the independent validator accept."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from mappings import adverse_event, care_plan, care_team, encounter, medication, medication_administration, procedure
from tests.fhir_checks import validate_with_models, validate_with_peer
from tests.mappings.treatment_cases import cases, golden_outputs, load_case, own_terminology_problems, synthetic_outputs

#: fixture folder, mapper, the synthetic clinic's collection it maps
MAPPINGS = {
    "careplan": (care_plan.to_fhir, "courses"),
    "careteam": (care_team.to_fhir, "courses"),
    "encounter": (encounter.to_fhir, "sessions"),
    "procedure": (procedure.to_fhir, "sessions"),
    "medicationadministration": (medication_administration.to_fhir, "administrations"),
    "medication": (medication.to_fhir, "administrations"),
    "psychotherapy": (procedure.psychotherapy, "sessions"),
    "adverseevent": (adverse_event.to_fhir, "sessions"),
}
GOLDEN = [(folder, case) for folder in MAPPINGS for case in cases(folder)]


@pytest.mark.parametrize("folder,case", GOLDEN)
def test_each_golden_case_maps_exactly_to_its_expected_file(folder, case):
    record, ctx, expected = load_case(folder, case)
    assert MAPPINGS[folder][0](record, ctx) == expected


@pytest.mark.parametrize("folder,case", GOLDEN)
def test_mapping_twice_gives_byte_identical_json(folder, case):
    record, ctx, _ = load_case(folder, case)
    mapper = MAPPINGS[folder][0]
    assert json.dumps(mapper(record, ctx)) == json.dumps(mapper(record, ctx))


def _outputs(folder: str) -> list[tuple[dict, dict]]:
    mapper, collection = MAPPINGS[folder]
    golden = [(record, resource) for _, record, resource in golden_outputs(folder, mapper)]
    return golden + synthetic_outputs(collection, mapper)


@pytest.mark.parametrize("folder", MAPPINGS)
def test_every_output_parses_with_the_r4b_models_and_uses_only_reference_codes(folder):
    for record, resource in _outputs(folder):
        validate_with_models(resource)
        assert own_terminology_problems(resource, record) == []


def test_the_independent_validator_accepts_every_output(tmp_path: Path):
    resources = [resource for folder in MAPPINGS for _, resource in _outputs(folder)]
    assert validate_with_peer(resources, tmp_path) == []
