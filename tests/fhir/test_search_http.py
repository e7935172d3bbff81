"""GET/POST search over HTTP: searchset Bundles with total and links, strict and lenient handling,
includes, and result sets the independent validator accepts."""

from __future__ import annotations

import pytest

from service.synthetic import clinic_lines
from tests.fhir_checks import validate_with_peer

pytestmark = pytest.mark.postgres


@pytest.fixture
def clinic(api) -> None:
    assert api.import_ndjson("\n".join(clinic_lines(4))).get_json()["rejected"] == 0


def _bundle(response) -> dict:
    assert response.status_code == 200, response.get_data(as_text=True)
    body = response.get_json(force=True)
    assert body["resourceType"] == "Bundle" and body["type"] == "searchset"
    return body


def test_search_by_patient_and_code_pages_through_every_match(client, auth, clinic):
    patient = _bundle(client.get("/fhir/Patient?identifier=https://clinic.example.org/fhir/patients|pt-0001",
                                 headers=auth))
    assert patient["total"] == 1
    pid = patient["entry"][0]["resource"]["id"]
    url, seen = f"/fhir/Observation?patient={pid}&code=http://loinc.org|44261-6&_count=3", []
    first = _bundle(client.get(url, headers=auth))
    while url:
        page = _bundle(client.get(url, headers=auth))
        seen += [e["resource"]["id"] for e in page.get("entry", [])]
        nxt = [link["url"] for link in page["link"] if link["relation"] == "next"]
        url = nxt[0].removeprefix("http://localhost") if nxt else None
    assert len(seen) == len(set(seen)) == first["total"] >= 7  # baseline + one per session


def test_summary_count_and_post_search(client, auth, clinic):
    counted = _bundle(client.get("/fhir/Encounter?_summary=count", headers=auth))
    assert counted["total"] == 24 and "entry" not in counted
    posted = _bundle(client.post("/fhir/Encounter/_search", data={"status": "finished", "_count": "2"},
                                 headers=auth))
    assert len(posted["entry"]) == 2 and posted["total"] == 24  # stopped early is finished too
    none = _bundle(client.post("/fhir/Encounter/_search", data={"status": "cancelled"}, headers=auth))
    assert none["total"] == 0


def test_include_adds_each_referenced_patient_once(client, auth, clinic):
    page = _bundle(client.get("/fhir/Encounter?_count=10&_include=Encounter:patient", headers=auth))
    matches = [e["resource"] for e in page["entry"] if e["search"]["mode"] == "match"]
    included = [e["resource"] for e in page["entry"] if e["search"]["mode"] == "include"]
    assert sorted(f"Patient/{p['id']}" for p in included) == sorted({m["subject"]["reference"] for m in matches})


def test_unknown_parameters_are_ignored_and_dropped_from_self_or_refused_when_strict(client, auth, clinic):
    lenient = _bundle(client.get("/fhir/Patient?foo=bar&gender=female", headers=auth))
    self_url = next(link["url"] for link in lenient["link"] if link["relation"] == "self")
    assert "foo" not in self_url and "gender=female" in self_url
    strict = client.get("/fhir/Patient?foo=bar", headers=auth | {"Prefer": "handling=strict"})
    assert strict.status_code == 400 and strict.get_json(force=True)["resourceType"] == "OperationOutcome"


def test_a_bad_value_is_a_400_outcome_naming_the_parameter(client, auth, clinic):
    response = client.get("/fhir/Observation?date=not-a-date", headers=auth)
    assert response.status_code == 400
    assert response.get_json(force=True)["issue"][0]["expression"] == ["date"]


def test_search_results_pass_the_independent_validator(client, auth, clinic, tmp_path):
    bundles = [_bundle(client.get(f"/fhir/{t}?_count=50", headers=auth)) for t in
               ("Patient", "Encounter", "Procedure", "MedicationAdministration", "Observation", "CarePlan",
                "ServiceRequest", "Condition", "Practitioner", "AdverseEvent", "Provenance", "Organization",
                "PractitionerRole", "QuestionnaireResponse")]
    assert validate_with_peer(bundles, tmp_path) == []


def test_search_needs_the_search_scope(client, db, clinic):
    from service.auth import create_token

    reader = {"Authorization": f"Bearer {create_token(db, 'r', ['system/Patient.r'])}"}
    assert client.get("/fhir/Patient", headers=reader).status_code == 403
