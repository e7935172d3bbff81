"""A clinic patient becomes a US Core Patient — our identifier, the clinic MRN and the EHR's
identifiers; name, gender, birth date, contacts and active — and maps back to the same clinic
record. The referring psychiatrist is not the general practitioner (the PCP in R4; mapping
revision 2, item 3); an EHR's generalPractitioner that is one of ours is still read as the referrer."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest

from mappings import patient
from mappings.context import MappingContext
from mappings.datatypes import fhir_id
from mappings.terminology import IDENTIFIER_TYPE_MR
from service.clinic.schemas import PatientSchema
from tests.factories import PATIENT, PSYCHIATRIST, make
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

DIR = "patient"
EHR = {"system": "urn:oid:2.16.840.1.113883.3.9999.1", "value": "E100200"}
MR_TYPE = {"coding": [IDENTIFIER_TYPE_MR.coding()], "text": "MRN"}
ORTIZ = fhir_id(BASE_URI, "Practitioner", "practitioners", "dr-ortiz")


def produce(given: dict, ctx) -> dict:
    return patient.to_fhir(given["record"], ctx)


#: clinic fields a Patient does not carry: weight and height are Observations, the referrer is on the
#: ServiceRequest and the CareTeam
NOT_ON_THE_PATIENT = ("weight_kg", "height_cm", "body_measured_on", "referring_practitioner_id")


def mapped_fields(record: dict) -> dict:
    """What a Patient carries back: all but NOT_ON_THE_PATIENT; status defaults."""
    out = {k: v for k, v in record.items() if k not in (*NOT_ON_THE_PATIENT, "meta", "warnings")}
    out.setdefault("status", "active")
    return out


@pytest.mark.parametrize("case", cases(DIR))
def test_golden_case(case: str):
    given, ctx, expected = load_case(DIR, case)
    assert produce(given, ctx) == expected


def test_identifiers_are_ours_then_the_clinic_mrn_then_the_ehr_ones():
    p = patient.to_fhir(PATIENT, context())
    assert p["identifier"] == [
        {"use": "usual", "system": f"{BASE_URI}/patients", "value": "pt-1"},
        {"use": "official", "type": MR_TYPE, "system": f"{BASE_URI}/mrn", "value": "MRN-0001"},
        EHR,
    ]
    assert p["meta"] == {"profile": [patient.PROFILE]}


def test_a_patient_without_ehr_identifiers_has_ours_and_the_mrn():
    p = patient.to_fhir(make(PATIENT, identifiers=None), context())
    assert [i["system"] for i in p["identifier"]] == [f"{BASE_URI}/patients", f"{BASE_URI}/mrn"]


@pytest.mark.parametrize("sex", ["female", "male", "other", "unknown"])
def test_gender_is_the_clinic_sex(sex: str):
    assert patient.to_fhir(make(PATIENT, sex=sex), context())["gender"] == sex


@pytest.mark.parametrize(("status", "active"), [("active", True), ("inactive", False), ("entered-in-error", False)])
def test_status_becomes_active_and_entered_in_error_is_tagged(status: str, active: bool):
    p = patient.to_fhir(make(PATIENT, status=status), context())
    assert p["active"] is active
    tag = {"system": f"{BASE_URI}/CodeSystem/record-status", "code": "entered-in-error"}
    assert (p["meta"].get("tag") == [tag]) is (status == "entered-in-error")


def test_contacts_have_no_use_because_the_clinic_does_not_record_it():
    p = patient.to_fhir(make(PATIENT, phone="+1 555 0142", email="a@example.com"), context())
    assert p["telecom"] == [{"system": "phone", "value": "+1 555 0142"}, {"system": "email", "value": "a@example.com"}]


def test_the_referring_psychiatrist_is_not_emitted_as_the_general_practitioner():
    """R4 Patient.generalPractitioner is the primary care provider; the clinic records none."""
    assert PATIENT["referring_practitioner_id"] == "dr-ortiz"
    p = patient.to_fhir(PATIENT, context())
    assert "generalPractitioner" not in p
    assert "dr-ortiz" not in json.dumps(p) and ORTIZ not in json.dumps(p)


def with_general_practitioner(resource: dict) -> dict:
    """The Patient as an EHR sends it: its generalPractitioner is one of our Practitioners."""
    return {**resource, "generalPractitioner": [{"reference": f"Practitioner/{ORTIZ}", "identifier": {
        "use": "usual", "system": f"{BASE_URI}/practitioners", "value": "dr-ortiz"}}]}


def test_from_fhir_reads_a_general_practitioner_that_is_ours_as_the_fallback_referrer():
    p = with_general_practitioner(patient.to_fhir(PATIENT, context()))
    assert patient.from_fhir(p, context())["referring_practitioner_id"] == "dr-ortiz"
    assert "referring_practitioner_id" not in patient.from_fhir(patient.to_fhir(PATIENT, context()), context())


def test_weight_and_height_are_not_on_the_patient():
    p = json.dumps(patient.to_fhir(make(PATIENT, weight_kg=81.5, height_cm=172.0), context()))
    assert "81.5" not in p and "172" not in p


@pytest.mark.parametrize("case", cases(DIR))
def test_golden_cases_map_back_to_the_same_record(case: str):
    given, ctx, _ = load_case(DIR, case)
    back = patient.from_fhir(produce(given, ctx), ctx)
    assert back == mapped_fields(given["record"])
    assert PatientSchema().validate(back) == {}


def test_from_fhir_prefers_our_mrn_to_the_ehr_one():
    p = patient.to_fhir(PATIENT, context())
    p["identifier"].insert(0, {"type": MR_TYPE, "system": "https://ehr.example.org/mrn", "value": "EHR-9"})
    assert patient.from_fhir(p, context())["mrn"] == "MRN-0001"


def test_from_fhir_of_an_ehr_patient_takes_its_mr_identifier_as_mrn_and_keeps_it():
    ehr = {"resourceType": "Patient", "identifier": [
        {"system": "https://ehr.example.org/ssn", "value": "000-00-0000"},
        {"type": MR_TYPE, "system": "https://ehr.example.org/mrn", "value": "EHR-9"},
        {"value": "no-system"}, {"system": "https://ehr.example.org/ssn", "value": "000-00-0000"}],
        "name": [{"family": "Elm"}], "gender": "female", "birthDate": "1970-05-06"}
    assert patient.from_fhir(ehr, context()) == {
        "mrn": "EHR-9", "name": {"family": "Elm"}, "birth_date": "1970-05-06", "sex": "female",
        "identifiers": [{"system": "https://ehr.example.org/ssn", "value": "000-00-0000"},
                        {"system": "https://ehr.example.org/mrn", "value": "EHR-9"}],
        "status": "active"}


def without_identifier_in_references(resource: dict) -> dict:
    out = copy.deepcopy(resource)
    for ref in out.get("generalPractitioner", []):
        ref.pop("identifier")
    return out


def test_from_fhir_resolves_the_general_practitioner_through_the_context_when_it_has_no_identifier():
    related = [("practitioners", PSYCHIATRIST)]
    bare = without_identifier_in_references(with_general_practitioner(patient.to_fhir(PATIENT, context())))
    assert patient.from_fhir(bare, context(related))["referring_practitioner_id"] == "dr-ortiz"
    # a context that cannot look up FHIR ids leaves it out, as for any practitioner not ours
    assert "referring_practitioner_id" not in patient.from_fhir(bare, context(related, by_fhir_id=False))


def test_from_fhir_ignores_general_practitioners_that_are_not_our_practitioners():
    p = patient.to_fhir(make(PATIENT, referring_practitioner_id=None), context())
    p["generalPractitioner"] = [
        {"reference": "Organization/x"},
        {"reference": "Practitioner/not-ours", "identifier": {"system": "https://ehr.example.org/staff", "value": "1"}},
        {"display": "Dr. Nobody"}]
    assert "referring_practitioner_id" not in patient.from_fhir(p, context([("practitioners", PSYCHIATRIST)]))


def test_from_fhir_does_not_trust_a_lookup_answer_that_maps_to_another_id():
    def lookup(collection: str, record_id: str):
        return PSYCHIATRIST if collection == "Practitioner" else None

    ctx = context()
    liar = MappingContext(base_uri=ctx.base_uri, lookup=lookup)
    p = patient.to_fhir(make(PATIENT, referring_practitioner_id=None), ctx)
    p["generalPractitioner"] = [{"reference": "Practitioner/some-other-id"}]
    assert "referring_practitioner_id" not in patient.from_fhir(p, liar)


@pytest.mark.parametrize(("change", "field"), [
    (lambda p: p.update(identifier=[i for i in p["identifier"] if "type" not in i]), "mrn"),
    (lambda p: p.update(name=[{"given": ["Avery"]}]), "name"),
    (lambda p: p.update(birthDate="1984-03"), "birth_date"),
    (lambda p: p.pop("gender"), "sex"),
])
def test_from_fhir_names_the_clinic_field_it_cannot_fill(change, field: str):
    p = patient.to_fhir(PATIENT, context())
    change(p)
    with pytest.raises(ValueError, match=rf"^{field}: "):
        patient.from_fhir(p, context())


def test_mapping_is_deterministic():
    assert json.dumps(patient.to_fhir(PATIENT, context())) == json.dumps(patient.to_fhir(dict(PATIENT), context()))


def test_every_synthetic_patient_maps_and_maps_back():
    ctx = synthetic_clinic()[1]
    for record in synthetic("patients"):
        resource = patient.to_fhir(record, ctx)
        check(resource)
        assert patient.from_fhir(resource, ctx) == mapped_fields(record)


def test_every_output_passes_the_fhir_checks(tmp_path: Path):
    outputs = [produce(*load_case(DIR, c)[:2]) for c in cases(DIR)]
    outputs += [patient.to_fhir(r, synthetic_clinic()[1]) for r in synthetic("patients")]
    for resource in outputs:
        check(resource)
    assert peer_problems(outputs, tmp_path) == []
