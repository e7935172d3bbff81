"""A ketamine or esketamine dose becomes an R4 MedicationAdministration (base spec: US Core has no
profile for it), linked to its session's Encounter (context) and Procedure (partOf)."""

from __future__ import annotations

import pytest

from mappings import medication
from mappings import medication_administration as ma
from mappings.context import MappingContext
from service.clinic.schemas import AdministrationSchema
from tests.factories import ADMINISTRATION, make
from tests.mappings.treatment_cases import (
    BASE_URI,
    golden_outputs,
    load_case,
    synthetic_outputs,
    synthetic_records,
)

FOLDER = "medicationadministration"
#: hl7.org/fhir/R4/valueset-medication-admin-status.html
R4_STATUS = {"in-progress", "not-done", "on-hold", "completed", "entered-in-error", "stopped", "unknown"}


@pytest.fixture(scope="module")
def golden() -> list[tuple[str, dict, dict]]:
    return list(golden_outputs(FOLDER, ma.to_fhir))


@pytest.fixture(scope="module")
def synthetic() -> list[tuple[dict, dict]]:
    return synthetic_outputs("administrations", ma.to_fhir)


def test_every_synthetic_administration_maps(synthetic):
    assert len(synthetic) == len(synthetic_records("administrations"))
    assert {r["status"] for _, r in synthetic} == {"completed", "stopped"}
    assert all("meta" not in r for _, r in synthetic)  # base spec: no profile claimed


def test_every_clinic_status_maps_one_to_one():
    assert set(ma.STATUS) == set(AdministrationSchema().fields["status"].validate.choices)
    assert all(k == v for k, v in ma.STATUS.items()) and set(ma.STATUS.values()) <= R4_STATUS


def test_every_dose_names_the_medication_of_its_product_and_lot_by_reference(golden):
    """Mapping revision 2: no contained Medication (it could not be searched nor shared); the
    reference carries the Medication's identifier and, for a receiver without Medications, the
    product and lot as display."""
    for _, record, resource in golden:
        assert "contained" not in resource and "medicationCodeableConcept" not in resource
        ref = resource["medicationReference"]
        key = medication.medication_key(record)
        assert ref["reference"] == f"Medication/{medication.to_fhir(record, MappingContext(BASE_URI))['id']}"
        assert ref["identifier"] == {"use": "usual", "system": f"{BASE_URI}/medications", "value": key}
        assert ref["display"].endswith(f", lot {record['lot_number']}") if record.get("lot_number") else \
            ", lot" not in ref["display"]


def test_a_spravato_dose_reads_the_product_and_lot_in_its_reference():
    record, ctx, _ = load_case(FOLDER, "esketamine-2-devices")
    assert ma.to_fhir(record, ctx)["medicationReference"]["display"] == \
        "Esketamine nasal spray (spravato-28mg-device), lot SPV2201"


@pytest.mark.parametrize(("changes", "text"), [
    ({}, "0.5 mg/kg (35 mg at 70 kg) IV over 40 min"),
    ({"weight_kg": None}, "0.5 mg/kg (35 mg) IV over 40 min"),
    ({"dose_mg_per_kg": None, "weight_kg": None}, "35 mg IV over 40 min"),
    ({"dose_mg_per_kg": None}, "35 mg (weight 70 kg) IV over 40 min"),
    ({"end": None}, "0.5 mg/kg (35 mg at 70 kg) IV"),
    ({"route": "im", "end": "2026-01-12T09:11:00-05:00"}, "0.5 mg/kg (35 mg at 70 kg) IM"),
    ({"drug": "esketamine", "route": "intranasal", "dose_mg": 84.0, "device_count": 3}, "84 mg: 3 devices of 28 mg"),
    ({"route": "intranasal", "dose_mg_per_kg": None, "weight_kg": None}, "35 mg intranasal"),
])
def test_the_dosage_text_reads_like_the_chart(changes, text):
    assert ma.dosage_text(make(ADMINISTRATION, **changes)) == text


def test_the_patient_comes_from_the_session_when_the_record_lacks_it():
    record, ctx, _ = load_case(FOLDER, "patient-from-session-offset")
    assert "patient_id" not in record
    assert ma.to_fhir(record, ctx)["subject"] == ma.to_fhir({**record, "patient_id": "pt-5"}, ctx)["subject"]


def test_an_administration_with_no_patient_anywhere_is_refused():
    with pytest.raises(ValueError, match="no patient_id"):
        ma.to_fhir(make(ADMINISTRATION, session_id="se-unknown"), MappingContext(BASE_URI))


def test_without_an_end_the_time_is_a_datetime_kept_with_its_offset():
    record, ctx, _ = load_case(FOLDER, "not-done")
    resource = ma.to_fhir(record, ctx)
    assert resource["effectiveDateTime"] == record["start"] == "2026-01-22T09:10:00-05:00"
    assert resource["statusReason"] == [{"text": record["status_reason"]}]


def test_missing_weight_is_flagged_as_a_note_and_no_mg_per_kg_is_invented():
    record, ctx, _ = load_case(FOLDER, "missing-weight")
    resource = ma.to_fhir(record, ctx)
    assert resource["note"] == [{"text": "Clinical check dose-unchecked: no weight on the administration or the "
                                         "patient: the mg/kg dose cannot be checked"}]
    assert resource["dosage"]["text"] == "40 mg IV over 40 min" and "rateQuantity" not in resource["dosage"]


def test_a_dose_stopped_with_its_session_carries_the_sessions_stop_reason():
    """Mapping revision 2: the stop reason is on the MedicationAdministration too (statusReason),
    the dose's own reason first."""
    record, ctx, _ = load_case(FOLDER, "stopped")
    assert ma.to_fhir(record, ctx)["statusReason"] == [{"text": "Infusion stopped at 12 min: BP 186/104 mmHg"}]
    bare = {k: v for k, v in record.items() if k != "status_reason"}
    assert ma.to_fhir(bare, ctx)["statusReason"] == [{"text": "Blood pressure above hold threshold"}]
    completed = {**bare, "status": "completed"}
    assert "statusReason" not in ma.to_fhir(completed, ctx)


# --- weight-based dosing as data (mapping revision 2, item 8) -----------------------------------------


def _dosage(**changes):
    ctx = MappingContext(BASE_URI, lookup=lambda c, i: {"id": i, "patient_id": "pt-1"} if c == "sessions" else None)
    return ma.to_fhir(make(ADMINISTRATION, session_id="se-1", **changes), ctx)["dosage"]


def test_a_weight_based_infusion_without_a_recorded_rate_is_a_mg_per_kg_per_minutes_rate_ratio():
    dosage = _dosage(rate_mg_per_kg_per_h=None)  # 0.5 mg/kg from 09:10 to 09:50
    assert dosage["dose"] == {"value": 35, "unit": "mg", "system": "http://unitsofmeasure.org", "code": "mg"}
    assert dosage["rateRatio"] == {
        "numerator": {"value": 0.5, "unit": "mg/kg", "system": "http://unitsofmeasure.org", "code": "mg/kg"},
        "denominator": {"value": 40, "unit": "min", "system": "http://unitsofmeasure.org", "code": "min"}}
    assert "rateQuantity" not in dosage


def test_a_recorded_rate_stays_the_rate_quantity():
    dosage = _dosage()
    assert dosage["rateQuantity"]["code"] == "mg/kg/h" and "rateRatio" not in dosage


@pytest.mark.parametrize("changes", [
    {"route": "im", "end": None},  # a bolus: mg/kg is no rate; the dose stays mg, the weight is referenced
    {"status": "stopped"},  # the recorded mg/kg need not have run over the recorded minutes
    {"end": None},  # no duration
    {"dose_mg_per_kg": None},  # dosed in mg: mg/kg is never computed here
])
def test_no_rate_ratio_where_mg_per_kg_over_the_minutes_is_no_true_rate(changes):
    dosage = _dosage(rate_mg_per_kg_per_h=None, **changes)
    assert "rateRatio" not in dosage and "rateQuantity" not in dosage and dosage["dose"]["code"] == "mg"
