"""extract_rows: what the index holds for each golden resource (tests/fixtures/<type>/*.expected.json)."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from service.fhir.search.index import extract_rows, parse_reference
from service.fhir.search.params import SEARCH_PARAMS

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures"


def golden(folder: str, case: str, index: int = 0) -> dict:
    data = json.loads((FIXTURES / folder / f"{case}.expected.json").read_text())
    return data[index] if isinstance(data, list) else data


def values(resource: dict, param: str, *columns: str) -> set:
    return {tuple(r.get(c) for c in columns) for r in extract_rows(resource) if r["param"] == param}


def every_golden_resource() -> list[dict]:
    """Every golden resource of a type the FHIR store indexes (AuditEvents live in their own
    append-only table, searched by service/fhir/audit_views.py)."""
    out = []
    for path in sorted(FIXTURES.glob("*/*.expected.json")):
        data = json.loads(path.read_text())
        out += data if isinstance(data, list) else [data]
    return [r for r in out if r["resourceType"] != "AuditEvent"]


def test_every_golden_resource_indexes_without_error_and_only_registered_params():
    for resource in every_golden_resource():
        rows = extract_rows(resource)
        assert {r["param"] for r in rows} <= set(SEARCH_PARAMS[resource["resourceType"]])
        assert ("_id", None, resource["id"]) in {(r["param"], r["token_system"], r.get("token_code")) for r in rows
                                                 if r["param"] == "_id"}


def test_patient():
    patient = golden("patient", "reference")
    assert ("urn:oid:2.16.840.1.113883.3.9999.1", "E100200") in values(patient, "identifier", "token_system",
                                                                         "token_code")
    assert values(patient, "family", "string_norm", "string_exact") == {("rowan", "Rowan")}
    assert values(patient, "given", "string_exact") == {("Avery",)}
    assert values(patient, "name", "string_exact") == {("Rowan",), ("Avery",)}
    assert values(patient, "gender", "token_system", "token_code") == {(None, "female")}
    day = datetime(1984, 3, 12, tzinfo=UTC)
    assert values(patient, "birthdate", "date_start", "date_end") == {(day, day + timedelta(days=1))}


def test_names_are_normalised_without_case_and_accents():
    patient = {**golden("patient", "reference"), "name": [{"family": "Ñúñez", "given": ["José"]}]}
    assert values(patient, "family", "string_norm", "string_exact") == {("nunez", "Ñúñez")}


def test_encounter_period_is_converted_to_utc_and_class_is_a_token():
    encounter = golden("encounter", "reference")
    assert values(encounter, "date", "date_start", "date_end") == {
        (datetime(2026, 1, 12, 14, 0, tzinfo=UTC), datetime(2026, 1, 12, 15, 30, 1, tzinfo=UTC))}
    assert values(encounter, "class", "token_system", "token_code") == {
        ("http://terminology.hl7.org/CodeSystem/v3-ActCode", "AMB")}
    assert values(encounter, "patient", "ref_type", "ref_id") == values(encounter, "subject", "ref_type", "ref_id") \
        == {("Patient", "8f7cb78d-cbc0-5872-954f-d138ea8eff3d")}
    assert values(encounter, "status", "token_code") == {("finished",)}


def test_procedure():
    procedure = golden("procedure", "reference")
    assert values(procedure, "code", "token_system", "token_code") == {("http://www.ama-assn.org/go/cpt", "96365")}
    assert values(procedure, "encounter", "ref_type", "ref_id") == {
        ("Encounter", "d70534c5-3b89-5153-abf9-01d8c9cbc2eb")}
    # the infusion's start (09:10-05:00), not the visit's (mapping revision 2)
    assert values(procedure, "date", "date_start") == {(datetime(2026, 1, 12, 14, 10, tzinfo=UTC),)}


def test_medication_administration_code_comes_from_the_medication_it_references():
    """Mapping revision 2: the dose names a standalone Medication; its code is indexed on the dose
    (``medicationReference>code``), so MedicationAdministration?code= finds every dose."""
    admin, med = golden("medicationadministration", "reference"), golden("medication", "ketamine-lot")
    assert admin["medicationReference"]["reference"] == f"Medication/{med['id']}"
    codes = {(r["token_system"], r["token_code"]) for r in extract_rows(
        admin, resolve=lambda t, i: med if (t, i) == ("Medication", med["id"]) else None) if r["param"] == "code"}
    assert codes == {("http://www.nlm.nih.gov/research/umls/rxnorm", "6130"), ("http://www.whocc.no/atc", "N01AX03")}
    assert values(admin, "code", "token_code") == set()  # nothing to resolve it with: no code, no error
    assert values(admin, "medication", "ref_type", "ref_id") == {("Medication", med["id"])}
    assert values(admin, "context", "ref_type") == {("Encounter",)}
    assert values(admin, "effective-time", "date_start") == {(datetime(2026, 1, 12, 14, 10, tzinfo=UTC),)}


def test_a_medication_is_found_by_code_and_lot_number():
    med = golden("medication", "spravato-2-device-kit-lot")
    assert ("http://hl7.org/fhir/sid/ndc", "50458-028-02") in values(med, "code", "token_system", "token_code")
    assert values(med, "lot-number", "token_system", "token_code") == {(None, "SPV2201")}


def test_observation_scores_and_vital_signs_are_numbers():
    score = golden("observation", "score-reference-phq9")
    assert values(score, "value-quantity", "number", "token_code") == {(16.0, None)}
    assert ("http://terminology.hl7.org/CodeSystem/observation-category", "survey") in values(
        score, "category", "token_system", "token_code")
    assert values(score, "encounter", "ref_id") == set()
    heart_rate = golden("observation", "vitals-reference", 1)
    assert values(heart_rate, "value-quantity", "number", "token_system", "token_code") == {
        (72.0, "http://unitsofmeasure.org", "/min")}
    blood_pressure = golden("observation", "vitals-reference", 0)
    assert values(blood_pressure, "value-quantity", "number") == set()  # the values are components


def test_service_request_condition_care_plan():
    referral = golden("servicerequest", "reference")
    assert values(referral, "authored", "date_start") == {(datetime(2026, 1, 2, tzinfo=UTC),)}
    assert values(referral, "requester", "ref_type") == {("Practitioner",)}
    assert values(referral, "status", "token_code") == {("active",)}
    condition = golden("condition", "reference")
    assert values(condition, "code", "token_code") == {("F33.2",)}
    assert values(condition, "recorded-date", "date_start") == {(datetime(2026, 1, 2, tzinfo=UTC),)}
    plan = golden("careplan", "reference")
    assert values(plan, "date", "date_start", "date_end") == {
        (datetime(2026, 1, 12, tzinfo=UTC), datetime(9999, 12, 31, tzinfo=UTC))}  # open-ended period


def test_practitioner_role_adverse_event_provenance_organization():
    assert values(golden("practitionerrole", "reference-psychiatrist"), "role", "token_code") == {("psychiatrist",)}
    assert values(golden("practitionerrole", "reference-psychiatrist"), "practitioner", "ref_type") == {
        ("Practitioner",)}
    event = golden("adverseevent", "reference-with-snomed-code")
    assert values(event, "event", "token_system", "token_code") == {("http://snomed.info/sct", "422587007")}
    # no onset recorded: the date alone, which covers the whole day (mapping revision 2)
    assert values(event, "date", "date_start", "date_end") == {(datetime(2026, 1, 12, tzinfo=UTC),
                                                                 datetime(2026, 1, 13, tzinfo=UTC))}
    provenance = golden("provenance", "referral-created")
    assert values(provenance, "target", "ref_type") == {("ServiceRequest",), ("Condition",)}
    assert values(provenance, "patient", "ref_type") == set()  # only targets that are Patients
    assert values(golden("organization", "clinic"), "name", "string_norm") == {("synthetic ketamine clinic",)}


def test_score_items_index_their_answer_concept_panel_members_derivation_and_performer():
    """Mapping revision 2, item 5: Observation?code=http://loinc.org|44260-8&value-concept=... finds item 9."""
    safety = json.loads((FIXTURES / "observation" / "score-phq9-safety-signal.expected.json").read_text())
    qr, panel, item9 = safety[1], safety[2], safety[-1]
    loinc = "http://loinc.org"
    assert values(item9, "code", "token_system", "token_code") == {(loinc, "44260-8")}
    assert values(item9, "value-concept", "token_system", "token_code") == {(loinc, "LA6569-3")}
    assert values(item9, "derived-from", "ref_type", "ref_id") == {("QuestionnaireResponse", qr["id"])}
    assert values(item9, "performer", "ref_type") == {("Patient",)}
    assert values(panel, "has-member", "ref_id") == {(r["id"],) for r in safety if r is not panel and r is not qr}
    assert values(panel, "value-concept", "token_code") == set()  # the panel has no value of its own
    assert values(qr, "questionnaire", "ref_type", "ref_id") == {("Questionnaire", "phq9")}  # a canonical
    assert values(qr, "authored", "date_start") == {(datetime(2026, 1, 15, 13, 45, tzinfo=UTC),)}
    assert values(qr, "status", "token_code") == {("completed",)}
    assert values(qr, "patient", "ref_type") == values(qr, "subject", "ref_type") == {("Patient",)}


def test_last_updated_is_the_write_time():
    when = datetime(2026, 3, 1, 12, 0, 0, 123456, tzinfo=UTC)
    rows = [r for r in extract_rows(golden("patient", "reference"), when) if r["param"] == "_lastUpdated"]
    assert rows == [{"param": "_lastUpdated", "date_start": when, "date_end": when + timedelta(microseconds=1)}]


@pytest.mark.parametrize(("text", "expected"), [
    ("Patient/p1", ("Patient", "p1")),
    ("https://x.example/fhir/Encounter/e.1/_history/2", ("Encounter", "e.1")),
    ("#medication", None),
    ("urn:uuid:1234", None),
])
def test_parse_reference(text, expected):
    assert parse_reference(text) == expected
