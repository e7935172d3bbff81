"""Weight and height become US Core 6.1 body-weight / body-height vital-signs Observations
(mappings/body_measurement.py): the patient's, on the day they were measured, and each dose's
weight at the dose start, which the dose's MedicationAdministration.supportingInformation names."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from mappings import body_measurement, medication_administration
from mappings.datatypes import fhir_id, reference
from mappings.resources import resources_for
from mappings.terminology import SYSTEM
from tests.factories import ADMINISTRATION, PATIENT, SESSION, make
from tests.fhir_checks import terminology_problems, validate_with_models, validate_with_peer
from tests.mappings.measurement_cases import BASE_URI, cases, context, load_case, synthetic_clinic

CTX = context([("sessions", SESSION), ("patients", PATIENT)])
SD = "http://hl7.org/fhir/StructureDefinition/"
US_CORE = "http://hl7.org/fhir/us/core/StructureDefinition/"
CASES = cases("body-")
#: the body-measurement mapper of each source collection
MAPPER = {"patients": body_measurement.patient_measurements, "administrations": body_measurement.dose_weight}


def measured_patient(**changes: Any) -> dict[str, Any]:
    return make(PATIENT, **{"height_cm": 168.0, "body_measured_on": "2026-01-02", **changes})


def codes(resource: dict[str, Any]) -> list[tuple[str, str]]:
    return [(c["system"], c["code"]) for c in resource["code"]["coding"]]


def golden(name: str) -> tuple[Any, Any]:
    """(what the mapper gives, what the golden file holds) of tests/fixtures/observation/<name>."""
    record, ctx, expected = load_case(name)
    collection = "patients" if "mrn" in record else "administrations"
    return MAPPER[collection](record, ctx), expected


@pytest.mark.parametrize("name", CASES)
def test_golden_file(name: str) -> None:
    produced, expected = golden(name)
    assert produced == expected and len(CASES) >= 2


def test_a_patients_weight_and_height_are_us_core_body_weight_and_height_observations() -> None:
    weight, height = body_measurement.patient_measurements(measured_patient(), CTX)
    assert codes(weight) == [(SYSTEM["loinc"], "29463-7")] and codes(height) == [(SYSTEM["loinc"], "8302-2")]
    assert weight["valueQuantity"] == {"value": 70, "unit": "kg", "system": SYSTEM["ucum"], "code": "kg"}
    assert height["valueQuantity"] == {"value": 168, "unit": "cm", "system": SYSTEM["ucum"], "code": "cm"}
    assert weight["meta"]["profile"] == [f"{SD}vitalsigns", f"{SD}bodyweight", f"{US_CORE}us-core-body-weight"]
    assert height["meta"]["profile"] == [f"{SD}vitalsigns", f"{SD}bodyheight", f"{US_CORE}us-core-body-height"]
    for r in (weight, height):
        assert r["category"] == [{"coding": [{"system": SYSTEM["observation-category"], "code": "vital-signs"}],
                                  "text": "Vital signs"}]
        assert (r["status"], r["effectiveDateTime"]) == ("final", "2026-01-02")
        assert r["subject"] == reference(BASE_URI, "Patient", "patients", "pt-1") and "encounter" not in r
    assert weight["id"] == fhir_id(BASE_URI, "Observation", "patients", "pt-1:body-weight")
    assert height["identifier"] == [{"use": "usual", "system": f"{BASE_URI}/patients", "value": "pt-1:body-height"}]


def test_without_the_day_they_were_measured_no_observation_is_dated_by_guess() -> None:
    assert body_measurement.patient_measurements(measured_patient(body_measured_on=None), CTX) == []


def test_either_measurement_alone_is_mapped() -> None:
    [height] = body_measurement.patient_measurements(measured_patient(weight_kg=None), CTX)
    assert codes(height) == [(SYSTEM["loinc"], "8302-2")]
    assert body_measurement.patient_measurements(measured_patient(weight_kg=None, height_cm=None), CTX) == []


def test_a_patient_entered_in_error_retracts_the_measurements() -> None:
    out = body_measurement.patient_measurements(measured_patient(status="entered-in-error"), CTX)
    assert {r["status"] for r in out} == {"entered-in-error"}


def test_the_patient_record_yields_its_patient_then_its_measurements() -> None:
    out = resources_for("patients", measured_patient(), CTX)
    assert [r["resourceType"] for r in out] == ["Patient", "Observation", "Observation"]


# --- each dose's weight ----------------------------------------------------------------------------------


def dose(**changes: Any) -> dict[str, Any]:
    return make(ADMINISTRATION, session_id="se-1", **changes)


def test_a_doses_weight_is_a_body_weight_observation_at_the_dose_start_in_its_session() -> None:
    [weight] = body_measurement.dose_weight(dose(), CTX)
    assert weight["id"] == fhir_id(BASE_URI, "Observation", "administrations", "ad-1:body-weight")
    assert (weight["effectiveDateTime"], weight["valueQuantity"]["value"]) == (ADMINISTRATION["start"], 70)
    assert weight["encounter"] == reference(BASE_URI, "Encounter", "sessions", "se-1")
    assert weight["subject"] == reference(BASE_URI, "Patient", "patients", "pt-1")
    assert weight["meta"]["profile"][-1] == f"{US_CORE}us-core-body-weight"


def test_the_administration_points_at_its_weight_observation() -> None:
    [weight] = body_measurement.dose_weight(dose(), CTX)
    administration = medication_administration.to_fhir(dose(), CTX)
    assert [r["reference"] for r in administration["supportingInformation"]] == [f"Observation/{weight['id']}"]
    assert administration["supportingInformation"][0]["identifier"] == weight["identifier"][0]


def test_a_dose_without_a_weight_has_neither_observation_nor_supporting_information() -> None:
    assert body_measurement.dose_weight(dose(weight_kg=None), CTX) == []
    assert "supportingInformation" not in medication_administration.to_fhir(dose(weight_kg=None), CTX)


def test_a_dose_entered_in_error_retracts_its_weight() -> None:
    [weight] = body_measurement.dose_weight(dose(status="entered-in-error"), CTX)
    assert weight["status"] == "entered-in-error"


def test_the_administration_record_yields_the_dose_then_its_weight() -> None:
    types = [r["resourceType"] for r in resources_for("administrations", dose(), CTX)]
    assert types.index("MedicationAdministration") < types.index("Observation")


# --- every output: models, terminology, validator ---------------------------------------------------------


@pytest.fixture(scope="module")
def outputs() -> list[dict[str, Any]]:
    records, ctx = synthetic_clinic()
    out = [o for c, r in records if c == "patients" for o in body_measurement.patient_measurements(r, ctx)]
    out += [o for c, r in records if c == "administrations" for o in body_measurement.dose_weight(r, ctx)]
    out += [o for name in CASES for o in golden(name)[1]]
    return out + body_measurement.patient_measurements(measured_patient(status="entered-in-error"), CTX)


def test_the_synthetic_clinic_has_weights_and_heights_of_patients_and_doses(outputs: list[dict[str, Any]]) -> None:
    synthetic = [r for r in outputs if r["identifier"][0]["value"].startswith(("pt-0", "se-0"))]
    keys = [r["identifier"][0]["value"].rsplit(":", 1)[1] for r in synthetic]
    assert keys.count("body-height") >= 20 and keys.count("body-weight") >= 100
    assert len({r["id"] for r in synthetic}) == len(synthetic)


def test_every_output_passes_the_models_the_terminology_check_and_the_validator(outputs: list[dict[str, Any]],
                                                                               tmp_path: Path) -> None:
    for r in outputs:
        validate_with_models(r)
        assert terminology_problems(r, BASE_URI) == [], r["id"]
    assert validate_with_peer(outputs, tmp_path) == []
