"""run_search against a clinic written through the clinic API: each parameter finds what it should
and nothing else, and paging neither skips nor repeats a match while resources change between pages."""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import select

from service.fhir.outcomes import FhirError
from service.fhir.search import apply_elements, parse_search, run_search
from service.models import FhirResource
from service.synthetic import clinic_records
from tests.factories import ADMINISTRATION, OBSERVATION, PATIENT, SESSION, VITALS, make, seed_course

pytestmark = pytest.mark.postgres

PT2 = make(PATIENT, id="pt-2", mrn="MRN-0002", name={"family": "Núñez", "given": ["José"]}, birth_date="1990-07-01",
           sex="male", identifiers=[{"system": "urn:oid:2.16.840.1.113883.3.9999.1", "value": "E100300"}])
SE2 = make(SESSION, id="se-2", number=2, start="2026-01-15T09:00:00-05:00", end="2026-01-15T10:30:00-05:00",
           adverse_events=[{"text": "Nausea", "severity": "mild", "code": "422587007"}])
# scores without items: one Observation each (items add a panel, item Observations and a
# QuestionnaireResponse: tests/fhir/test_score_items_http.py)
OB1 = make(OBSERVATION, items=None)
OB2 = make(OBSERVATION, id="ob-2", patient_id="pt-2", score=5, items=None,
           effective="2026-02-01T10:00:00-05:00")
VITALS_ALL = ["vs-1:bp", "vs-1:heart-rate", "vs-1:respiratory-rate", "vs-1:spo2", "vs-1:temperature"]
# the dose's weight is a body-weight vital sign of the session too (mapping revision 2, item 8)
SESSION_VITALS = ["ad-1:body-weight", *VITALS_ALL]


def label(content: str) -> str:
    """The clinic id in a resource's business identifier (the resource id for Provenance)."""
    resource = json.loads(content)
    identifier = resource.get("identifier")
    if isinstance(identifier, list):
        identifier = identifier[0]
    return identifier["value"] if identifier else resource["id"]


@pytest.fixture
def ids(api, db) -> dict[str, str]:
    """Write a small clinic; answer ``{"Patient:pt-1": <FHIR id>, ...}``."""
    seed_course(api)
    for path, body in (("/sessions/se-1/administrations/ad-1", ADMINISTRATION), ("/sessions/se-1/vitals/vs-1", VITALS),
                       ("/observations/ob-1", OB1), ("/patients/pt-2", PT2), ("/observations/ob-2", OB2),
                       ("/sessions/se-2", SE2)):
        response = api.put(path, body)
        assert response.status_code in (200, 201), response.get_json()
    return {f"{r.resource_type}:{label(r.content)}": r.id for r in db.scalars(select(FhirResource))}


def find(db, rtype: str, *params: tuple[str, str], strict: bool = True, **kw) -> list[str]:
    result = run_search(db, parse_search(rtype, list(params), strict), None, **kw)
    return [label(r.content) for r in result.resources]


CASES = [
    ("Patient", [("_id", "{Patient:pt-1}")], ["pt-1"]),
    ("Patient", [("identifier", "urn:oid:2.16.840.1.113883.3.9999.1|E100300")], ["pt-2"]),
    ("Patient", [("identifier", "E100200")], ["pt-1"]),
    ("Patient", [("identifier", "https://clinic.example.org/fhir/mrn|")], ["pt-1", "pt-2"]),
    ("Patient", [("identifier", "|E100200")], []),
    ("Patient", [("name", "row")], ["pt-1"]),
    ("Patient", [("name", "JOS")], ["pt-2"]),
    ("Patient", [("name", "nunez")], ["pt-2"]),
    ("Patient", [("name", "owa")], []),
    ("Patient", [("name:contains", "owa")], ["pt-1"]),
    ("Patient", [("name:exact", "Rowan")], ["pt-1"]),
    ("Patient", [("name:exact", "rowan")], []),
    ("Patient", [("family", "Rowan")], ["pt-1"]),
    ("Patient", [("given", "Avery")], ["pt-1"]),
    ("Patient", [("given", "Rowan")], []),
    ("Patient", [("birthdate", "1984-03-12")], ["pt-1"]),
    ("Patient", [("birthdate", "lt1985")], ["pt-1"]),
    ("Patient", [("birthdate", "ge1990-07")], ["pt-2"]),
    ("Patient", [("gender", "male")], ["pt-2"]),
    ("Patient", [("gender", "male,female")], ["pt-1", "pt-2"]),
    ("Patient", [("gender", "male"), ("family", "Rowan")], []),
    ("Encounter", [("patient", "{Patient:pt-1}")], ["se-1", "se-2"]),
    ("Encounter", [("patient", "Patient/{Patient:pt-2}")], []),
    ("Encounter", [("subject", "https://ehr.example.org/fhir/Patient/{Patient:pt-1}")], ["se-1", "se-2"]),
    ("Encounter", [("date", "2026-01-12")], ["se-1"]),
    ("Encounter", [("date", "gt2026-01-13")], ["se-2"]),
    ("Encounter", [("status", "finished")], ["se-1", "se-2"]),
    ("Encounter", [("class", "http://terminology.hl7.org/CodeSystem/v3-ActCode|AMB")], ["se-1", "se-2"]),
    ("Encounter", [("identifier", "https://clinic.example.org/fhir/sessions|se-2")], ["se-2"]),
    ("Procedure", [("patient", "{Patient:pt-1}"), ("date", "lt2026-01-13")], ["se-1"]),
    ("Procedure", [("code", "http://www.ama-assn.org/go/cpt|96365")], ["se-1", "se-2"]),
    ("Procedure", [("status", "in-progress")], []),
    ("Procedure", [("status", "completed"), ("encounter", "Encounter/{Encounter:se-2}")], ["se-2"]),
    ("MedicationAdministration", [("patient", "{Patient:pt-1}"), ("status", "completed")], ["ad-1"]),
    ("MedicationAdministration", [("effective-time", "2026-01-12")], ["ad-1"]),
    ("MedicationAdministration", [("effective-time", "2026-01-13")], []),
    ("MedicationAdministration", [("context", "Encounter/{Encounter:se-1}")], ["ad-1"]),
    ("MedicationAdministration", [("context", "{Encounter:se-2}")], []),
    ("MedicationAdministration", [("code", "http://www.nlm.nih.gov/research/umls/rxnorm|6130")], ["ad-1"]),
    ("Observation", [("patient", "{Patient:pt-2}")], ["ob-2"]),
    ("Observation", [("subject", "Patient/{Patient:pt-1}"), ("category", "vital-signs")], SESSION_VITALS),
    ("Observation", [("code", "http://loinc.org|44261-6")], ["ob-1", "ob-2"]),
    ("Observation", [("code", "http://loinc.org|8867-4,http://loinc.org|44261-6")],
     ["ob-1", "ob-2", "vs-1:heart-rate"]),
    ("Observation", [("category", "http://terminology.hl7.org/CodeSystem/observation-category|survey")],
     ["ob-1", "ob-2"]),
    ("Observation", [("code", "http://loinc.org|44261-6"), ("date", "ge2026-01-10")], ["ob-2"]),
    ("Observation", [("encounter", "Encounter/{Encounter:se-1}")], SESSION_VITALS),
    ("Observation", [("encounter:missing", "true")], ["ob-1", "ob-2"]),
    ("Observation", [("value-quantity", "16")], ["ob-1"]),
    ("Observation", [("value-quantity", "lt10")], ["ob-2"]),
    ("Observation", [("value-quantity", "72|http://unitsofmeasure.org|/min")], ["vs-1:heart-rate"]),
    ("Observation", [("value-quantity", "72|http://unitsofmeasure.org|mm[Hg]")], []),
    ("Observation", [("value-quantity:missing", "true")], ["vs-1:bp"]),
    ("ServiceRequest", [("patient", "{Patient:pt-1}"), ("subject", "{Patient:pt-1}"), ("status", "active")], ["rf-1"]),
    ("ServiceRequest", [("authored", "2026-01-02"), ("requester", "Practitioner/{Practitioner:dr-ortiz}")], ["rf-1"]),
    ("ServiceRequest", [("identifier", "https://clinic.example.org/fhir/referrals|rf-1")], ["rf-1"]),
    ("ServiceRequest", [("requester", "Practitioner/{Practitioner:rn-cho}")], []),
    ("CarePlan", [("patient", "{Patient:pt-1}"), ("subject", "{Patient:pt-1}"), ("status", "active")], ["co-1"]),
    ("CarePlan", [("date", "ge2026-03-01")], ["co-1"]),  # the course's period is open-ended
    ("CarePlan", [("date", "lt2026-01-12")], []),
    ("CarePlan", [("category:missing", "true")], []),
    ("CarePlan", [("category", "http://hl7.org/fhir/us/core/CodeSystem/careplan-category|assess-plan")], ["co-1"]),
    ("Condition", [("patient", "{Patient:pt-1}"), ("code", "http://hl7.org/fhir/sid/icd-10-cm|F33.2")], ["rf-1:F33.2"]),
    ("Condition", [("recorded-date", "2026-01-02"), ("subject", "{Patient:pt-1}")], ["rf-1:F33.2"]),
    ("Condition", [("recorded-date", "2026-01-03")], []),
    ("Practitioner", [("identifier", "http://hl7.org/fhir/sid/us-npi|1987654328")], ["dr-ortiz"]),
    ("Practitioner", [("name", "cho")], ["rn-cho"]),
    ("Practitioner", [("family", "Ortiz"), ("given", "Lena")], ["dr-ortiz"]),
    ("PractitionerRole", [("practitioner", "Practitioner/{Practitioner:dr-ortiz}")], ["dr-ortiz"]),
    ("PractitionerRole", [("role", "nurse")], ["rn-cho"]),
    ("AdverseEvent", [("subject", "Patient/{Patient:pt-1}"), ("date", "2026-01-15")], ["se-2:1"]),
    ("AdverseEvent", [("event", "http://snomed.info/sct|422587007"), ("seriousness:missing", "true")], ["se-2:1"]),
    ("AdverseEvent", [("date", "2026-01-12")], []),
    ("Organization", [("name", "ketamine"), ("identifier", "https://clinic.example.org/fhir/organization|clinic")],
     ["clinic"]),
]


@pytest.mark.parametrize("rtype", sorted({c[0] for c in CASES}))
def test_each_parameter_finds_what_it_should_and_nothing_else(db, ids, rtype):
    for case_type, params, expected in CASES:
        if case_type == rtype:
            query = [(k, re.sub(r"\{([^}]+)\}", lambda m: ids[m.group(1)], v)) for k, v in params]
            assert sorted(find(db, rtype, *query)) == sorted(expected), params


def test_provenance_by_target_and_patient(db, ids):
    assert len(find(db, "Provenance", ("target", f"ServiceRequest/{ids['ServiceRequest:rf-1']}"))) == 1
    assert len(find(db, "Provenance", ("patient", ids["Patient:pt-2"]))) == 1  # pt-2's own write
    assert find(db, "Provenance", ("recorded", "lt2000")) == []


@pytest.mark.parametrize(("prefix", "expected"), [
    ("eq", SESSION_VITALS), ("ne", ["ob-1", "ob-2"]), ("gt", ["ob-2"]), ("lt", ["ob-1"]),
    ("ge", [*SESSION_VITALS, "ob-2"]), ("le", ["ob-1", *SESSION_VITALS]), ("sa", ["ob-2"]), ("eb", ["ob-1"]),
])
def test_date_prefixes(db, ids, prefix, expected):
    assert sorted(find(db, "Observation", ("date", f"{prefix}2026-01-12"))) == sorted(expected)


def test_ap_is_ten_percent_of_the_gap_to_now(db, ids):
    """The vitals were taken 2026-01-12T14:05Z; ``ap`` a few days off still finds them, ``ap`` a year before
    does not (10 % of the gap to now, at least a day)."""
    now = datetime.now(UTC)
    assert set(VITALS_ALL) <= set(find(db, "Observation", ("date", "ap2026-01-12T14:05:00Z")))
    far = (datetime(2026, 1, 12, tzinfo=UTC) - (now - datetime(2026, 1, 12, tzinfo=UTC)) * 2).date().isoformat()
    assert find(db, "Observation", ("date", f"ap{far}")) == []


def test_last_updated(db, ids):
    since = (datetime.now(UTC) - timedelta(hours=1)).isoformat(timespec="seconds")
    assert sorted(find(db, "Patient", ("_lastUpdated", f"gt{since}"))) == ["pt-1", "pt-2"]
    assert find(db, "Patient", ("_lastUpdated", "lt2000-01-01")) == []


def test_sort_on_dates_ascending_and_descending(db, ids):
    ascending = find(db, "Observation", ("_sort", "date"))
    assert ascending[0] == "ob-1" and ascending[-1] == "ob-2" and sorted(ascending[1:-1]) == SESSION_VITALS
    descending = find(db, "Observation", ("_sort", "-date,_lastUpdated"))
    assert descending[0] == "ob-2" and descending[-1] == "ob-1"
    assert find(db, "Encounter", ("_sort", "-date")) == ["se-2", "se-1"]


def test_include_and_revinclude(db, ids):
    request = parse_search("Observation", [("code", "http://loinc.org|44261-6"), ("_include", "Observation:patient"),
                                           ("_include", "Observation:encounter")], True)
    result = run_search(db, request)
    assert sorted(label(r.content) for r in result.included) == ["pt-1", "pt-2"]
    assert result.total == 2
    result = run_search(db, parse_search("MedicationAdministration", [
        ("_include", "MedicationAdministration:context"), ("_include", "MedicationAdministration:patient")], True))
    assert sorted((r.resource_type, label(r.content)) for r in result.included) == [("Encounter", "se-1"),
                                                                                      ("Patient", "pt-1")]
    result = run_search(db, parse_search("Observation", [("patient", ids["Patient:pt-1"]),
                                                         ("_include", "Observation:patient")], True))
    assert [label(r.content) for r in result.included] == ["pt-1"]  # once, however many matches name it
    result = run_search(db, parse_search("Patient", [("_id", ids["Patient:pt-2"]),
                                                     ("_revinclude", "Provenance:target")], True))
    assert [r.resource_type for r in result.included] == ["Provenance"]
    assert ids["Patient:pt-2"] in result.included[0].content


def test_summary_count_and_total(db, ids):
    result = run_search(db, parse_search("Observation", [("_summary", "count")], True))
    assert (result.total, result.resources) == (8, [])
    result = run_search(db, parse_search("Observation", [("_total", "none"), ("_count", "2")], True))
    assert result.total is None and len(result.resources) == 2 and result.next


def test_elements_keep_the_named_top_level_elements(db, ids):
    request = parse_search("Patient", [("_id", ids["Patient:pt-1"]), ("_elements", "gender,birthDate")], True)
    (row,) = run_search(db, request).resources
    shaped = apply_elements(json.loads(row.content), request.elements)
    assert set(shaped) == {"resourceType", "id", "meta", "gender", "birthDate"}
    assert shaped["meta"]["tag"][-1]["code"] == "SUBSETTED"


def test_lenient_search_ignores_unknown_parameters(db, ids):
    assert find(db, "Patient", ("gender", "male"), ("colour", "blue"), strict=False) == ["pt-2"]


def test_a_deleted_resource_never_matches_but_an_earlier_page_snapshot_still_sees_it(api, db, ids):
    request = parse_search("Observation", [("encounter", ids["Encounter:se-1"]), ("_count", "1")], True)
    first = run_search(db, request)
    assert first.total == 6
    response = api.put("/sessions/se-1/vitals/vs-1", make(VITALS, temperature_c=None))  # retires the temperature
    assert response.status_code == 200
    db.rollback()  # end the read transaction: see the write
    assert "vs-1:temperature" not in find(db, "Observation", ("encounter", ids["Encounter:se-1"]))
    assert find(db, "Observation", ("_id", ids["Observation:vs-1:temperature"])) == []
    seen, token = [label(r.content) for r in first.resources], first.next
    while token:
        page = run_search(db, request, token)
        seen += [label(r.content) for r in page.resources]
        token = page.next
    assert sorted(seen) == SESSION_VITALS  # the snapshot of the first page


def test_page_tokens_are_checked(db, ids):
    request = parse_search("Observation", [("_count", "2")], True)
    token = run_search(db, request).next
    flipped = token[:-1] + ("A" if token[-1] != "A" else "B")  # always a different signature
    for bad in ("nonsense", flipped, token.replace(".", "x.")):
        with pytest.raises(FhirError) as err:
            run_search(db, request, bad)
        assert (err.value.status, err.value.expression) == (400, ["_page_token"])
    with pytest.raises(FhirError) as err:  # a token of another search
        run_search(db, parse_search("Observation", [("_count", "3")], True), token)
    assert err.value.status == 400
    with pytest.raises(FhirError) as err:
        run_search(db, request, token, now=datetime.now(UTC) + timedelta(hours=2))
    assert err.value.status == 410


def test_previous_walks_back_to_the_first_page(db, ids):
    request = parse_search("Observation", [("_count", "3"), ("_sort", "-date")], True)
    first = run_search(db, request)
    second = run_search(db, request, first.next)
    assert first.previous is None and second.previous
    back = run_search(db, request, second.previous)
    assert [r.id for r in back.resources] == [r.id for r in first.resources]
    assert back.previous is None and back.next


def test_paging_is_stable_under_concurrent_writes(api, db):
    """Three pages with writes in between: a served match moved to the end, an unserved one moved before
    the cursor, a new match, a changed value — every snapshot match exactly once, in its snapshot version."""
    records = list(clinic_records(2))
    assert api.import_ndjson("\n".join(json.dumps({"type": k, "record": r}) for k, r in records)).status_code == 200
    phq9 = {r["id"]: r for k, r in records if k == "observations" and r["instrument"] == "phq9"}
    request = parse_search("Observation", [("code", "http://loinc.org|44261-6"), ("_sort", "date"), ("_count", "5")],
                           True)
    expected = run_search(db, parse_search("Observation", [("code", "http://loinc.org|44261-6"), ("_count", "1000")],
                                           True))
    assert 10 < expected.total <= 15

    def move(record_id: str, effective: str) -> None:
        assert api.put(f"/observations/{record_id}", {**phq9[record_id], "effective": effective}).status_code == 200

    served, pages, token = [], 0, None
    while True:
        page = run_search(db, request, token)
        pages += 1
        served += [r for r in page.resources]
        assert page.total == expected.total
        if not page.next:
            break
        token = page.next
        unserved = [i for i in phq9 if i not in {label(r.content) for r in served}]
        move(label(served[-1].content), "2026-06-30T10:00:00-04:00")  # served: would come again at the end
        move(unserved[-1], "2025-06-01T10:00:00-04:00")              # unserved: would jump before the cursor
        api.put(f"/observations/new-{pages}", {**phq9[unserved[0]], "id": f"new-{pages}"})
        db.rollback()  # end the read transaction: see the writes
    assert pages == 3
    served_ids = [r.id for r in served]
    assert len(served_ids) == len(set(served_ids))
    assert sorted(served_ids) == sorted(r.id for r in expected.resources)
    assert {r.id: r.content for r in served} == {r.id: r.content for r in expected.resources}  # snapshot versions
    moved = find(db, "Observation", ("code", "http://loinc.org|44261-6"), ("date", "2026-06-30"))
    assert len(moved) == 2  # a new search sees the writes
