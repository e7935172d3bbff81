"""A ketamine or esketamine dose becomes an R4 MedicationAdministration (base spec: US Core has no
profile for it), linked to its session's Encounter (context) and Procedure (partOf)."""

from __future__ import annotations

import pytest

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


def test_a_lot_number_needs_a_contained_medication_because_r4_administration_has_no_lot(golden):
    for _, record, resource in golden:
        if record.get("lot_number"):
            contained = resource["contained"][0]
            assert contained["batch"] == {"lotNumber": record["lot_number"]}
            assert resource["medicationReference"] == {"reference": f"#{contained['id']}"}  # dom-3
            assert "medicationCodeableConcept" not in resource
        else:
            assert "contained" not in resource and "medicationReference" not in resource
            assert resource["medicationCodeableConcept"]["coding"]


@pytest.mark.parametrize(("devices", "codes"), [
    (2, ["2201623", "2201625", "50458-028-02"]),
    (3, ["2201623", "2201625", "50458-028-03"]),
    (1, ["2201623", "2201625"]),  # no kit NDC for one device
    (None, ["2201623", "2201625"]),
])
def test_spravato_names_the_brand_and_the_kit_of_its_device_count(devices, codes):
    dose = {"drug": "esketamine", "route": "intranasal", "dose_mg": 28.0 * (devices or 2),
            "product": "spravato-28mg-device", "device_count": devices}
    assert [c["code"] for c in ma.medication_concept(dose)["coding"]] == codes


def test_esketamine_not_named_spravato_has_no_brand_code():
    concept = ma.medication_concept({"drug": "esketamine", "route": "intranasal", "dose_mg": 56.0})
    assert concept == {"coding": [{"system": "http://www.nlm.nih.gov/research/umls/rxnorm", "code": "2201623",
                                   "display": "esketamine Nasal Spray"}], "text": "Esketamine nasal spray"}


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
