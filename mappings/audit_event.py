"""One AuditEvent per access to patient data (issue 10): who, what, when, and how it ended.

Pure: the service (service/audit.py) gathers the facts of an access into an :class:`AuditFacts`
and this module turns them into an R4 AuditEvent. Codes are FHIR-core (mappings/terminology.py,
"audit_event"): ``type`` is ``rest`` (a login is DICOM 110114/110122), ``subtype`` the
restful-interaction code, ``action`` C/R/U/D/E and ``outcome`` 0/4/8 (AuditEvent's own required
code lists). The observer (``source.observer``) is the clinic Organization.

No PHI beyond references: agents are named by their identifier (a token's name, a SMART
client's id and name, a destination's id and name, under ``<base>/<kind>`` systems), entities by
references and business identifiers. ``entity.query`` holds the query the client sent (base64, R4
AuditEvent.entity.query): that is data, which is why AuditEvents are served only to the explicit
``system/AuditEvent.rs`` scope.
"""

from __future__ import annotations

import base64
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from mappings.context import MappingContext
from mappings.datatypes import business_identifier
from mappings.organization import clinic_reference
from mappings.terminology import (
    AUDIT_ENTITY_PERSON,
    AUDIT_ENTITY_SYSTEM_OBJECT,
    AUDIT_ROLE_DOMAIN_RESOURCE,
    AUDIT_ROLE_PATIENT,
    AUDIT_ROLE_QUERY,
    AUDIT_SUBTYPE_LOGIN,
    AUDIT_TYPE_LOGIN,
    AUDIT_TYPE_REST,
    RESTFUL_INTERACTIONS,
    SYSTEM,
)

__all__ = ["ACTIONS", "AGENT_KINDS", "MAX_ENTITIES", "OUTCOMES", "Agent", "AuditFacts", "agent_system", "outcome_of",
           "to_fhir"]

#: AuditEvent.action (required binding AuditEventAction)
ACTIONS = ("C", "R", "U", "D", "E")
#: AuditEvent.outcome (required binding AuditEventOutcome): success, minor (4xx), serious (5xx) failure
OUTCOMES = ("0", "4", "8")
#: who can be an agent; all but ``service`` and ``unknown`` are identified under ``<base>/<kind>``
AGENT_KINDS = ("api-tokens", "smart-clients", "sync-destinations", "service", "unknown")
#: at most this many resource (and as many patient) entities per event; the total is in a description
MAX_ENTITIES = 100
_REF = re.compile(r"[A-Z][A-Za-z]{1,63}/[A-Za-z0-9\-.]{1,64}")
_INSTANT = re.compile(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d+)?(Z|[+-]\d{2}:\d{2})")


@dataclass(frozen=True)
class Agent:
    """One participant: ``kind`` (one of :data:`AGENT_KINDS`), its identifier value and display name."""

    kind: str
    value: str | None = None
    name: str | None = None
    requestor: bool = True


@dataclass(frozen=True)
class AuditFacts:
    """What one access did. ``resources``: FHIR references (``Type/id``) served or written;
    ``records``: clinic records ``(collection, id)``; ``patients``: FHIR ids of the patients whose data
    it touched; ``total``: how many resources and records it touched before any cap."""

    event_id: str
    recorded: str
    subtype: str
    action: str
    outcome: str
    agents: Sequence[Agent]
    resources: Sequence[str] = ()
    records: Sequence[tuple[str, str]] = ()
    patients: Sequence[str] = ()
    query: str | None = None
    total: int | None = None
    login: bool = False


def outcome_of(status: int) -> str:
    """AuditEvent.outcome of an HTTP status: 0 below 400, 4 for 4xx, 8 for 5xx."""
    return "0" if status < 400 else "4" if status < 500 else "8"


def agent_system(base_uri: str, kind: str) -> str:
    """The identifier system of an agent kind: ``<base>/api-tokens``, ``<base>/smart-clients``, ..."""
    return f"{base_uri.rstrip('/')}/{kind}"


def _agent(agent: Agent, ctx: MappingContext) -> dict[str, Any]:
    out: dict[str, Any] = {}
    if agent.kind == "service":
        out["who"] = clinic_reference(ctx)
    elif agent.kind != "unknown" and agent.value:
        who: dict[str, Any] = {"identifier": {"system": agent_system(ctx.base_uri, agent.kind), "value": agent.value}}
        if agent.name:
            who["display"] = agent.name
        out["who"] = who
    if agent.name:
        out["name"] = agent.name
    elif agent.kind == "unknown":
        out["name"] = "unauthenticated client"
    out["requestor"] = agent.requestor
    return out


def _entity(what: dict[str, Any], patient: bool) -> dict[str, Any]:
    return {"what": what, "type": (AUDIT_ENTITY_PERSON if patient else AUDIT_ENTITY_SYSTEM_OBJECT).coding(),
            "role": (AUDIT_ROLE_PATIENT if patient else AUDIT_ROLE_DOMAIN_RESOURCE).coding()}


def _entities(facts: AuditFacts, ctx: MappingContext) -> list[dict[str, Any]]:
    patients = list(dict.fromkeys(facts.patients))
    out = [_entity({"reference": f"Patient/{p}"}, True) for p in patients[:MAX_ENTITIES]]
    refs = [r for r in dict.fromkeys(facts.resources) if _REF.fullmatch(r)
            and not (r.startswith("Patient/") and r[8:] in patients)]
    listed = [_entity({"reference": r}, False) for r in refs[:MAX_ENTITIES]]
    room = MAX_ENTITIES - len(listed)
    listed += [_entity({"identifier": business_identifier(ctx.base_uri, c, i)}, False)
               for c, i in list(dict.fromkeys(facts.records))[:max(room, 0)]]
    total = facts.total if facts.total is not None else len(refs) + len(facts.records)
    if listed and total > len(listed):
        listed[0]["description"] = f"{total} resources or records; the first {len(listed)} are listed"
    out += listed
    if facts.query:
        out.append({"type": AUDIT_ENTITY_SYSTEM_OBJECT.coding(), "role": AUDIT_ROLE_QUERY.coding(),
                    "query": base64.b64encode(facts.query.encode()).decode()})
    return out


def to_fhir(facts: AuditFacts, ctx: MappingContext) -> dict[str, Any]:
    """The AuditEvent of one access.

    :raises ValueError: an unknown subtype, action or outcome, no agent, or ``recorded`` not an instant
    """
    if not facts.login and facts.subtype not in RESTFUL_INTERACTIONS:
        raise ValueError(f"subtype: {facts.subtype!r} is not a restful-interaction code")
    if facts.action not in ACTIONS or facts.outcome not in OUTCOMES:
        raise ValueError(f"action/outcome: {facts.action!r}/{facts.outcome!r}")
    if not facts.agents or any(a.kind not in AGENT_KINDS for a in facts.agents):
        raise ValueError("agents: at least one agent of a known kind")
    if not _INSTANT.fullmatch(facts.recorded):
        raise ValueError(f"recorded: {facts.recorded!r} is not an instant")
    subtype = AUDIT_SUBTYPE_LOGIN.coding() if facts.login else {"system": SYSTEM["restful-interaction"],
                                                                 "code": facts.subtype}
    out: dict[str, Any] = {
        "resourceType": "AuditEvent",
        "id": facts.event_id,
        "meta": {"versionId": "1", "lastUpdated": facts.recorded},
        "type": (AUDIT_TYPE_LOGIN if facts.login else AUDIT_TYPE_REST).coding(),
        "subtype": [subtype],
        "action": facts.action,
        "recorded": facts.recorded,
        "outcome": facts.outcome,
        "agent": [_agent(a, ctx) for a in facts.agents],
        "source": {"observer": clinic_reference(ctx)},
    }
    entities = _entities(facts, ctx)
    if entities:
        out["entity"] = entities
    return out
