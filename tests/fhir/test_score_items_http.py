"""Questionnaire items over HTTP (mapping revision 2, items 5 and 13): a receiving EHR finds a
positive PHQ-9 item 9 by code and answer, walks panel → items → QuestionnaireResponse, and the
clinic API names a rater only as one of its practitioners."""

from __future__ import annotations

import json

import pytest
from sqlalchemy import select

from service.models import FhirResource
from tests.factories import OBSERVATION, make, seed_course

pytestmark = pytest.mark.postgres

LOINC = "http://loinc.org"
#: item 9 answered "Several days" (1): a safety signal; the other score has item 9 "Not at all" (0)
POSITIVE = make(OBSERVATION, id="ob-pos", items=[2, 2, 2, 2, 2, 2, 2, 1, 1], score=16)
ZERO = make(OBSERVATION, id="ob-zero", items=[2, 2, 2, 2, 2, 2, 2, 2, 0], score=16)


@pytest.fixture
def scores(api) -> None:
    seed_course(api)
    for body in (POSITIVE, ZERO):
        response = api.put(f"/observations/{body['id']}", body)
        assert response.status_code == 201, response.get_json()


def _search(client, auth, query: str) -> list[dict]:
    response = client.get(f"/fhir/{query}", headers=auth)
    assert response.status_code == 200, response.get_data(as_text=True)
    body = response.get_json(force=True)
    assert not [i for i in body.get("entry", []) if i["resource"]["resourceType"] == "OperationOutcome"]
    return [e["resource"] for e in body.get("entry", []) if e["search"]["mode"] == "match"]


def _identifier(resource: dict) -> str:
    ident = resource["identifier"]
    return (ident[0] if isinstance(ident, list) else ident)["value"]


def test_a_positive_item_9_is_found_by_code_and_answer_and_a_zero_one_is_not(client, auth, scores):
    positive = _search(client, auth, f"Observation?code={LOINC}|44260-8&value-concept={LOINC}|LA6569-3")
    assert [_identifier(r) for r in positive] == ["ob-pos:item-9"]
    assert positive[0]["interpretation"][0]["coding"][0]["code"] == "POS"
    # any positive answer (1, 2 or 3): a comma is an OR
    answers = ",".join(f"{LOINC}|{c}" for c in ("LA6569-3", "LA6570-1", "LA6571-9"))
    assert [_identifier(r) for r in _search(client, auth, f"Observation?code={LOINC}|44260-8&value-concept={answers}")
            ] == ["ob-pos:item-9"]
    zero = _search(client, auth, f"Observation?code={LOINC}|44260-8&value-concept={LOINC}|LA6568-5")
    assert [_identifier(r) for r in zero] == ["ob-zero:item-9"]
    assert zero[0]["interpretation"][0]["coding"][0]["code"] == "NEG"


def test_panel_items_and_total_lead_to_the_questionnaire_response(client, auth, scores):
    [panel] = _search(client, auth, f"Observation?code={LOINC}|44249-1&identifier=ob-pos:panel")
    [qr] = _search(client, auth, "QuestionnaireResponse?identifier=ob-pos&questionnaire="
                                 "https://clinic.example.org/fhir/Questionnaire/phq9")
    derived = _search(client, auth, f"Observation?derived-from=QuestionnaireResponse/{qr['id']}&_count=50")
    assert {f"Observation/{r['id']}" for r in derived} == {m["reference"] for m in panel["hasMember"]} | {
        f"Observation/{panel['id']}"}
    [total] = _search(client, auth, f"Observation?code={LOINC}|44261-6&identifier=ob-pos")
    assert [r["id"] for r in _search(client, auth, f"Observation?has-member=Observation/{total['id']}")] == [
        panel["id"]]
    patient = total["subject"]["reference"]
    assert {_identifier(r) for r in _search(client, auth, f"QuestionnaireResponse?patient={patient}&status=completed"
                                                          "&authored=2026-01-09")} == {"ob-pos", "ob-zero"}
    assert {_identifier(r) for r in _search(client, auth, f"Observation?performer={patient}&code={LOINC}|44261-6")
            } == {"ob-pos", "ob-zero"}


def test_a_rater_must_be_one_of_the_clinics_practitioners(api, scores):
    madrs = {"id": "ob-m", "patient_id": "pt-1", "instrument": "madrs", "score": 20, "items": [2] * 10,
             "effective": "2026-01-12T10:20:00-05:00", "session_id": "se-1"}
    unknown = api.put("/observations/ob-m", {**madrs, "rater_id": "dr-nobody"})
    assert unknown.status_code == 422 and "rater_id" in json.dumps(unknown.get_json())
    assert api.put("/observations/ob-m", {**madrs, "rater_id": "dr-ortiz"}).status_code == 201
    self_report = api.put("/observations/ob-pos", {**POSITIVE, "rater_id": "dr-ortiz"})
    assert self_report.status_code == 422 and "rater_id" in json.dumps(self_report.get_json())


def test_dropping_the_items_retires_the_panel_items_and_questionnaire_response(api, db, scores):
    links = api.put("/observations/ob-pos", make(POSITIVE, items=None)).get_json()["fhir"]
    assert isinstance(links["Observation"], str)  # the total alone
    db.rollback()  # end the read transaction: see the API's commits
    rows = db.scalars(select(FhirResource).where(FhirResource.source_collection == "observations",
                                                 FhirResource.source_id == "ob-pos",
                                                 FhirResource.resource_type.in_(("Observation",
                                                                                 "QuestionnaireResponse")))).all()
    live = sorted(r.resource_type for r in rows if not r.deleted)
    assert live == ["Observation"]
    assert sorted(r.resource_type for r in rows if r.deleted) == ["Observation"] * 10 + ["QuestionnaireResponse"]
