"""A referral becomes a US Core ServiceRequest — an order for ketamine treatment from the referring
psychiatrist (the requester), for the patient, for the reasons of its ICD-10-CM diagnoses — and maps
back; an EHR's ServiceRequest without a requester takes the patient's referrer (mapping revision 2,
item 3: Patient.generalPractitioner is only that fallback)."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest

from mappings import condition, organization, service_request
from mappings.datatypes import fhir_id
from mappings.terminology import SYSTEM
from service.clinic.schemas import ReferralSchema
from tests.factories import PATIENT, PSYCHIATRIST, REFERRAL, make
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

DIR = "servicerequest"
ORTIZ = fhir_id(BASE_URI, "Practitioner", "practitioners", "dr-ortiz")
RELATED = [("patients", PATIENT), ("practitioners", PSYCHIATRIST)]


def produce(given: dict, ctx) -> dict:
    return service_request.to_fhir(given["record"], ctx)


def mapped_fields(record: dict) -> dict:
    out = {k: v for k, v in record.items() if k not in ("meta", "warnings")}
    out.setdefault("status", "active")
    return out


@pytest.mark.parametrize("case", cases(DIR))
def test_golden_case(case: str):
    given, ctx, expected = load_case(DIR, case)
    assert produce(given, ctx) == expected


@pytest.mark.parametrize("status", service_request.STATUSES)
def test_every_clinic_status_is_the_service_request_status_of_the_same_name(status: str):
    assert service_request.to_fhir(make(REFERRAL, status=status), context())["status"] == status


def test_a_referral_is_a_us_core_order_with_a_text_only_code():
    sr = service_request.to_fhir(REFERRAL, context())
    assert sr["meta"] == {"profile": [service_request.PROFILE]}
    assert sr["intent"] == "order"
    # US Core binds code extensibly to procedure codes; none in the reference names a referral
    assert sr["code"] == {"text": "Ketamine treatment referral"}


def test_every_referral_has_the_elements_us_core_servicerequest_requires():
    """US Core 6.1: status, intent, code (1..1), subject (US Core Patient), authoredOn and requester
    (US Core Practitioner) are Must Support and always known here; the reason Conditions are US Core."""
    ctx = synthetic_clinic()[1]
    outputs = [service_request.to_fhir(r, ctx) for r in synthetic("referrals")]
    outputs += [produce(*load_case(DIR, c)[:2]) for c in cases(DIR)]
    for sr in outputs:
        assert sr["meta"]["profile"] == [service_request.PROFILE]
        assert sr["status"] in service_request.STATUSES and sr["intent"] == "order" and sr["code"]["text"]
        assert sr["subject"]["reference"].startswith("Patient/")
        assert sr["requester"]["reference"].startswith("Practitioner/")
        assert len(sr["authoredOn"]) == 10
        assert all(r["reference"].startswith("Condition/") for r in sr["reasonReference"])


def test_from_fhir_reads_the_referrer_from_the_requester_first():
    """The requester wins over the patient's (fallback) referring practitioner."""
    patient = make(PATIENT, referring_practitioner_id="dr-other")
    back = service_request.from_fhir(service_request.to_fhir(REFERRAL, context()),
                                     context([("patients", patient), ("practitioners", PSYCHIATRIST)]))
    assert back["referrer_id"] == "dr-ortiz"


def test_from_fhir_without_a_requester_falls_back_to_the_patients_referring_practitioner():
    """An EHR that names the referrer only as Patient.generalPractitioner: the Patient's reverse
    mapping stored it as the patient's referring practitioner."""
    from mappings import patient as patient_mapping

    ehr_patient = patient_mapping.to_fhir(make(PATIENT, referring_practitioner_id=None), context())
    ehr_patient["generalPractitioner"] = [{"reference": f"Practitioner/{ORTIZ}"}]
    stored = {**patient_mapping.from_fhir(ehr_patient, context([("practitioners", PSYCHIATRIST)])), "id": "pt-1"}
    assert stored["referring_practitioner_id"] == "dr-ortiz"
    sr = service_request.to_fhir(REFERRAL, context())
    del sr["requester"]
    back = service_request.from_fhir(sr, context([("patients", stored)]))
    assert back["referrer_id"] == "dr-ortiz"
    assert back == mapped_fields(REFERRAL)


def test_from_fhir_without_a_requester_or_a_referring_practitioner_names_referrer_id():
    sr = service_request.to_fhir(REFERRAL, context())
    del sr["requester"]
    with pytest.raises(ValueError, match=r"^referrer_id: the ServiceRequest has no requester"):
        service_request.from_fhir(sr, context([("patients", make(PATIENT, referring_practitioner_id=None))]))


def test_subject_requester_performer_and_authored_on():
    ctx = context()
    sr = service_request.to_fhir(REFERRAL, ctx)
    assert sr["subject"]["reference"] == f"Patient/{fhir_id(BASE_URI, 'Patient', 'patients', 'pt-1')}"
    ortiz = fhir_id(BASE_URI, "Practitioner", "practitioners", "dr-ortiz")
    assert sr["requester"]["reference"] == f"Practitioner/{ortiz}"
    assert sr["performer"] == [organization.clinic_reference(ctx)]
    assert sr["authoredOn"] == "2026-01-02"


def test_one_reason_code_and_one_condition_reference_per_diagnosis():
    ctx = context()
    record = make(REFERRAL, diagnoses=["F33.2", "G90.512"])
    sr = service_request.to_fhir(record, ctx)
    assert sr["reasonCode"] == [
        {"coding": [{"system": SYSTEM["icd10cm"], "code": "F33.2",
                     "display": "Major depressive disorder, recurrent severe without psychotic features"}],
         "text": "Major depressive disorder, recurrent severe without psychotic features"},
        {"coding": [{"system": SYSTEM["icd10cm"], "code": "G90.512"}], "text": "ICD-10-CM G90.512"},
    ]
    conditions = condition.to_fhir(record, ctx)
    assert [r["reference"] for r in sr["reasonReference"]] == [f"Condition/{c['id']}" for c in conditions]


def test_reason_notes_and_clinical_checks_are_notes():
    record = make(REFERRAL, notes="Two trials.", warnings=[{"code": "c1", "field": "f", "message": "look at this"}])
    assert service_request.to_fhir(record, context())["note"] == [
        {"text": "Reason for referral: TRD after two adequate SSRI trials"},
        {"text": "Referral notes: Two trials."},
        {"text": "Clinical check c1: look at this"}]
    assert "note" not in service_request.to_fhir(make(REFERRAL, reason=None), context())


@pytest.mark.parametrize("case", cases(DIR))
def test_golden_cases_map_back_to_the_same_record(case: str):
    given, ctx, _ = load_case(DIR, case)
    back = service_request.from_fhir(produce(given, ctx), ctx)
    assert back == mapped_fields(given["record"])
    assert ReferralSchema().validate(back) == {}


def test_from_fhir_resolves_subject_and_requester_through_the_context_without_identifiers():
    sr = service_request.to_fhir(REFERRAL, context())
    for key in ("subject", "requester"):
        sr[key].pop("identifier")
    back = service_request.from_fhir(sr, context(RELATED))
    assert (back["patient_id"], back["referrer_id"]) == ("pt-1", "dr-ortiz")


@pytest.mark.parametrize(("key", "field"), [("subject", "patient_id"), ("requester", "referrer_id")])
def test_from_fhir_rejects_references_to_records_that_are_not_ours(key: str, field: str):
    sr = service_request.to_fhir(REFERRAL, context())
    sr[key] = {"reference": f"{sr[key]['reference'].split('/')[0]}/ehr-123", "display": "someone else"}
    with pytest.raises(ValueError, match=rf"^{field}: the reference \(.*/ehr-123\) is not to one of our"):
        service_request.from_fhir(sr, context(RELATED))
    sr.pop(key)
    patient_without_referrer = [("patients", make(PATIENT, referring_practitioner_id=None)), RELATED[1]]
    with pytest.raises(ValueError, match=rf"^{field}: "):
        service_request.from_fhir(sr, context(patient_without_referrer))


def test_from_fhir_of_an_ehr_referral_reads_its_codes_date_and_notes():
    sr = service_request.to_fhir(REFERRAL, context())
    ehr = {"resourceType": "ServiceRequest", "status": "active", "intent": "order",
           "subject": sr["subject"], "requester": sr["requester"], "authoredOn": "2026-01-02T10:15:00-05:00",
           "reasonCode": [{"coding": [{"system": SYSTEM["snomed"], "code": "370143000"},
                                      {"system": SYSTEM["icd10cm"], "code": "F33.2"}]},
                          {"text": "treatment-resistant depression"},
                          {"coding": [{"system": SYSTEM["icd10cm"], "code": "F33.2"}]}],
           "note": [{"text": "Please assess for IV ketamine."}, {"text": "Clinical check x: regenerated"},
                    {"text": "Prefers mornings."}]}
    assert service_request.from_fhir(ehr, context()) == {
        "patient_id": "pt-1", "referrer_id": "dr-ortiz", "referred_on": "2026-01-02", "diagnoses": ["F33.2"],
        "notes": "Please assess for IV ketamine.\n\nPrefers mornings.", "status": "active"}


def test_an_ehr_referral_keeps_its_own_identifiers_both_ways(tmp_path):
    ehr_id = {"system": "urn:oid:2.16.840.1.113883.3.9999.8", "value": "REF-55"}
    sr = service_request.to_fhir(REFERRAL, context())
    back = service_request.from_fhir(sr | {"identifier": [*sr["identifier"], ehr_id, ehr_id, {"value": "x"}]},
                                     context())
    assert back["identifiers"] == [ehr_id]  # ours is the id; no system: dropped; each once
    again = service_request.to_fhir(REFERRAL | {"identifiers": [ehr_id]}, context())
    assert again["identifier"] == [sr["identifier"][0], ehr_id]
    assert not peer_problems([again], tmp_path)


@pytest.mark.parametrize(("change", "field"), [
    (lambda sr: sr.pop("authoredOn"), "referred_on"),
    (lambda sr: sr.update(reasonCode=[{"text": "TRD"}]), "diagnoses"),
    (lambda sr: sr.update(status="unknown"), "status"),
])
def test_from_fhir_names_the_clinic_field_it_cannot_fill(change, field: str):
    sr = copy.deepcopy(service_request.to_fhir(REFERRAL, context()))
    change(sr)
    with pytest.raises(ValueError, match=rf"^{field}: "):
        service_request.from_fhir(sr, context())


def test_mapping_is_deterministic():
    assert json.dumps(service_request.to_fhir(REFERRAL, context())) == json.dumps(
        service_request.to_fhir(dict(REFERRAL), context()))


def test_every_synthetic_referral_maps_and_maps_back():
    ctx = synthetic_clinic()[1]
    for record in synthetic("referrals"):
        resource = service_request.to_fhir(record, ctx)
        check(resource)
        assert service_request.from_fhir(resource, ctx) == mapped_fields(record)


def test_every_output_passes_the_fhir_checks(tmp_path: Path):
    outputs = [produce(*load_case(DIR, c)[:2]) for c in cases(DIR)]
    outputs += [service_request.to_fhir(r, synthetic_clinic()[1]) for r in synthetic("referrals")]
    for resource in outputs:
        check(resource)
    assert peer_problems(outputs, tmp_path) == []
