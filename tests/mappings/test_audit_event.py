"""The AuditEvent of one access (mappings/audit_event.py): golden cases, the codes, the caps, and the
three FHIR checks (R4B models, FHIR-core terminology only, the independent validator)."""

from __future__ import annotations

import base64
from pathlib import Path
from typing import Any

import pytest

from mappings import audit_event, organization
from mappings.audit_event import MAX_ENTITIES, Agent, AuditFacts
from tests.mappings.people_cases import BASE_URI, cases, check, context, load_case, peer_problems

DIR = "auditevent"
NOW = "2026-02-01T09:30:00.000Z"


def facts_of(given: dict[str, Any]) -> AuditFacts:
    raw = dict(given["facts"])
    raw["agents"] = [Agent(**a) for a in raw["agents"]]
    raw["records"] = [tuple(r) for r in raw.get("records", ())]
    return AuditFacts(**raw)


def produce(given: dict[str, Any], ctx) -> dict[str, Any]:
    return audit_event.to_fhir(facts_of(given), ctx)


@pytest.mark.parametrize("case", cases(DIR))
def test_golden_case(case: str):
    given, ctx, expected = load_case(DIR, case)
    assert produce(given, ctx) == expected


def facts(**changes: Any) -> AuditFacts:
    base: dict[str, Any] = {"event_id": "e-1", "recorded": NOW, "subtype": "read", "action": "R", "outcome": "0",
                            "agents": [Agent("api-tokens", "ehr", "ehr")]}
    return AuditFacts(**(base | changes))


def test_a_rest_interaction_has_the_rest_type_its_subtype_and_the_clinic_as_observer():
    event = audit_event.to_fhir(facts(resources=["Observation/o-1"]), context())
    assert event["type"] == {"system": "http://terminology.hl7.org/CodeSystem/audit-event-type", "code": "rest",
                             "display": "RESTful Operation"}
    assert event["subtype"] == [{"system": "http://hl7.org/fhir/restful-interaction", "code": "read"}]
    assert event["source"] == {"observer": organization.clinic_reference(context())}
    assert event["agent"] == [{"who": {"identifier": {"system": f"{BASE_URI}/api-tokens", "value": "ehr"},
                                       "display": "ehr"}, "name": "ehr", "requestor": True}]
    assert event["entity"][0]["what"] == {"reference": "Observation/o-1"}


def test_the_query_is_kept_as_sent_in_base64():
    event = audit_event.to_fhir(facts(subtype="search-type", action="E", query="name=Larch&_count=5"), context())
    [query] = [e for e in event["entity"] if e["role"]["code"] == "24"]
    assert base64.b64decode(query["query"]).decode() == "name=Larch&_count=5" and "what" not in query


def test_entities_are_capped_and_the_total_is_said():
    refs = [f"Observation/o-{n}" for n in range(MAX_ENTITIES + 50)]
    event = audit_event.to_fhir(facts(subtype="search-type", action="E", resources=refs), context())
    assert len(event["entity"]) == MAX_ENTITIES
    assert event["entity"][0]["description"] == f"{MAX_ENTITIES + 50} resources or records; the first 100 are listed"


def test_a_patient_is_listed_once_in_the_patient_role():
    event = audit_event.to_fhir(facts(resources=["Patient/p-1", "Observation/o-1"], patients=["p-1"]), context())
    assert [(e["what"]["reference"], e["role"]["code"]) for e in event["entity"]] == [("Patient/p-1", "1"),
                                                                                       ("Observation/o-1", "4")]


@pytest.mark.parametrize(("changes", "message"), [
    ({"subtype": "frobnicate"}, "^subtype"), ({"action": "X"}, "^action"), ({"outcome": "12"}, "^action/outcome"),
    ({"agents": []}, "^agents"), ({"recorded": "2026-02-01"}, "^recorded"),
])
def test_what_cannot_make_a_valid_audit_event_is_refused(changes: dict[str, Any], message: str):
    with pytest.raises(ValueError, match=message):
        audit_event.to_fhir(facts(**changes), context())


@pytest.mark.parametrize(("status", "outcome"), [(200, "0"), (304, "0"), (403, "4"), (404, "4"), (503, "8")])
def test_the_outcome_of_an_http_status(status: int, outcome: str):
    assert audit_event.outcome_of(status) == outcome


def test_every_output_passes_the_fhir_checks(tmp_path: Path):
    outputs = [produce(*load_case(DIR, c)[:2]) for c in cases(DIR)]
    outputs.append(audit_event.to_fhir(facts(records=[("sessions", "se-1")], query="x=1", subtype="search-type",
                                             action="E"), context()))
    for resource in outputs:
        check(resource)
    assert peer_problems(outputs, tmp_path) == []
