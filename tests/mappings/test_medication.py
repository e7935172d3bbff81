"""The drug of a dose becomes a standalone US Core Medication, one per product and lot, that every
dose of that product and lot names by reference (mapping revision 2, item 9)."""

from __future__ import annotations

import pytest

from mappings import medication
from mappings.context import MappingContext
from mappings.resources import resources_for
from tests.factories import ADMINISTRATION, make
from tests.mappings.treatment_cases import BASE_URI, golden_outputs, synthetic_outputs

FOLDER = "medication"
RXNORM, NDC, ATC = "http://www.nlm.nih.gov/research/umls/rxnorm", "http://hl7.org/fhir/sid/ndc", "http://www.whocc.no/atc"
CTX = MappingContext(BASE_URI)


def _codes(resource: dict) -> list[tuple[str, str]]:
    return [(c["system"], c["code"]) for c in resource["code"]["coding"]]


def test_every_medication_claims_us_core_and_has_its_required_code():
    outputs = [r for _, _, r in golden_outputs(FOLDER, medication.to_fhir)] + \
        [r for _, r in synthetic_outputs("administrations", medication.to_fhir)]
    assert len(outputs) > 50
    for resource in outputs:
        assert resource["meta"] == {"profile": [medication.PROFILE]}  # no patient: no security labels either
        assert resource["code"]["coding"] and resource["code"]["text"]
        assert "subject" not in resource and "patient" not in str(resource).lower()


def test_ketamine_is_the_rxnorm_ingredient_with_its_atc_class_and_the_lot():
    resource = medication.to_fhir(make(ADMINISTRATION, lot_number="KX-1", product="Ketalar 10 mg/mL"), CTX)
    assert _codes(resource) == [(RXNORM, "6130"), (ATC, "N01AX03")]
    assert resource["code"]["text"] == "Ketamine (Ketalar 10 mg/mL)"
    assert resource["batch"] == {"lotNumber": "KX-1"}


@pytest.mark.parametrize(("devices", "codes"), [
    (2, [(RXNORM, "2201623"), (RXNORM, "2201625"), (NDC, "50458-028-02"), (ATC, "N06AX27")]),
    (3, [(RXNORM, "2201623"), (RXNORM, "2201625"), (NDC, "50458-028-03"), (ATC, "N06AX27")]),
    (1, [(RXNORM, "2201623"), (RXNORM, "2201625"), (ATC, "N06AX27")]),  # no kit NDC for one device
    (None, [(RXNORM, "2201623"), (RXNORM, "2201625"), (ATC, "N06AX27")]),
])
def test_spravato_names_the_brand_the_kit_of_its_device_count_and_the_antidepressant_atc(devices, codes):
    """Reference 2.2 and 12.8: N06AX27, never N01AX14 (esketamine as an anaesthetic)."""
    dose = {"drug": "esketamine", "route": "intranasal", "dose_mg": 28.0 * (devices or 2),
            "product": "spravato-28mg-device", "device_count": devices}
    assert [(c["system"], c["code"]) for c in medication.medication_concept(dose)["coding"]] == codes


def test_esketamine_not_named_spravato_has_no_brand_code():
    concept = medication.medication_concept({"drug": "esketamine", "route": "intranasal", "dose_mg": 56.0})
    assert concept == {"coding": [{"system": RXNORM, "code": "2201623", "display": "esketamine Nasal Spray"},
                                  {"system": ATC, "code": "N06AX27", "display": "esketamine"}],
                       "text": "Esketamine nasal spray"}


def test_a_dose_without_a_lot_names_the_product_alone():
    resource = medication.to_fhir(make(ADMINISTRATION, lot_number=None), CTX)
    assert "batch" not in resource
    assert resource["identifier"] == [{"use": "usual", "system": f"{BASE_URI}/medications", "value": "ketamine///"}]


def test_doses_of_one_product_and_lot_share_one_medication_whoever_gets_them():
    first = make(ADMINISTRATION, id="ad-1", patient_id="pt-1", lot_number="KX-1", dose_mg=35.0)
    other = make(ADMINISTRATION, id="ad-9", patient_id="pt-2", lot_number="KX-1", dose_mg=42.0, status="stopped")
    assert medication.to_fhir(first, CTX) == medication.to_fhir(other, CTX)
    assert medication.medication_reference(first, CTX) == medication.medication_reference(other, CTX)


@pytest.mark.parametrize("changes", [
    {"lot_number": "KX-2"},
    {"product": "Ketalar 50 mg/mL"},
    {"drug": "esketamine", "route": "intranasal", "dose_mg": 56.0, "device_count": 2},
])
def test_another_lot_product_or_kit_is_another_medication(changes):
    base = make(ADMINISTRATION, lot_number="KX-1", product="Ketalar 10 mg/mL")
    assert medication.to_fhir(make(base, **changes), CTX)["id"] != medication.to_fhir(base, CTX)["id"]


def test_the_key_cannot_be_forged_by_a_slash_in_a_product_name():
    one = {"drug": "ketamine", "product": "A/B", "lot_number": "C"}
    two = {"drug": "ketamine", "product": "A", "lot_number": "B/C"}
    assert medication.medication_key(one) != medication.medication_key(two)


def test_an_administration_maps_to_its_medication_first_then_the_dose_that_names_it():
    ctx = MappingContext(BASE_URI, lookup=lambda c, i: {"id": i, "patient_id": "pt-1"} if c == "sessions" else None)
    out = resources_for("administrations", make(ADMINISTRATION, session_id="se-1", lot_number="KX-1"), ctx)
    med, dose = out[0], out[1]
    assert (med["resourceType"], dose["resourceType"]) == ("Medication", "MedicationAdministration")
    assert dose["medicationReference"]["reference"] == f"Medication/{med['id']}"
    assert "security" not in med.get("meta", {})  # not about a patient: no labels
