"""Clinic session -> FHIR R4 Procedure (US Core Procedure): the infusion, injection or nasal dosing.

Billing-relevant codes (CPT 96365 and 96372, HCPCS G2082/G2083) sit here and on the Encounter;
both come from mappings/session_codes.py so they always agree. Psychotherapy in a session is a
Procedure of its own (``psychotherapy``, mapping revision 2), coded CPT 90832/90834/90837 by the
minutes the clinic records (reference 12.4).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from mappings.context import MappingContext
from mappings.datatypes import business_identifier, codeable, fhir_id, period, reference
from mappings.session_codes import (
    SessionFacts,
    administered_period,
    adverse_event_concept,
    course_of,
    indication_reason,
    local_code,
    participant_function,
    procedure_concept,
    record_notes,
    session_facts,
)
from mappings.terminology import LOCAL_PROCEDURES, PSYCHOTHERAPY_CPT

__all__ = ["PROFILE", "PSYCHOTHERAPY_COLLECTION", "STATUS", "psychotherapy", "psychotherapy_concept", "to_fhir"]

PROFILE = "http://hl7.org/fhir/us/core/StructureDefinition/us-core-procedure"

#: clinic session status -> R4 EventStatus
STATUS = {
    "planned": "preparation",
    "in-progress": "in-progress",
    "completed": "completed",
    "stopped-early": "stopped",
    "cancelled": "not-done",
    "entered-in-error": "entered-in-error",
}
#: sessions whose Procedure has no performed[x]: not (yet) performed
_NOT_PERFORMED = ("planned", "cancelled")
_PSYCHOTHERAPY = "ketamine-assisted-psychotherapy"
#: procedures whose code covers the whole visit, not the dosing alone
_WHOLE_VISIT = ("esketamine-56", "esketamine-84")
#: the business-identifier collection of psychotherapy Procedures (key: the session id)
PSYCHOTHERAPY_COLLECTION = "psychotherapy"


def to_fhir(record: Mapping[str, Any], ctx: MappingContext) -> dict[str, Any]:
    """Map one clinic session to its Procedure."""
    base, sid = ctx.base_uri, record["id"]
    facts = session_facts(record, ctx)
    out: dict[str, Any] = {
        "resourceType": "Procedure",
        "id": fhir_id(base, "Procedure", "sessions", sid),
        "meta": {"profile": [PROFILE]},
        "identifier": [business_identifier(base, "sessions", sid)],
    }
    if record.get("course_id"):
        out["basedOn"] = [reference(base, "CarePlan", "courses", record["course_id"])]
    out["status"] = STATUS[record["status"]]
    if record.get("stop_reason"):
        out["statusReason"] = {"text": record["stop_reason"]}
    if record.get("psychotherapy"):
        out["category"] = codeable([local_code(base, "procedure", _PSYCHOTHERAPY)], LOCAL_PROCEDURES[_PSYCHOTHERAPY])
    out["code"] = procedure_concept(facts.procedure, base)
    out["subject"] = reference(base, "Patient", "patients", record["patient_id"])
    out["encounter"] = reference(base, "Encounter", "sessions", sid)
    if record["status"] not in _NOT_PERFORMED:
        out["performedPeriod"] = _performed(record, facts)
    if record.get("performers"):
        out["performer"] = [_performer(p, base) for p in record["performers"]]
    out.update(indication_reason(facts.course, ctx))
    if record.get("adverse_events"):
        out["complication"] = [adverse_event_concept(e) for e in record["adverse_events"]]
    notes = record_notes(record, record.get("notes"))
    if notes:
        out["note"] = notes
    return out


def _performed(record: Mapping[str, Any], facts: SessionFacts) -> dict[str, str]:
    """CPT 96365 ("up to 1 hour") and 96372 bill the infusion or injection itself: the dosing
    period (the visit stays the Encounter's). HCPCS G2082/G2083 include the 2 h observation after
    esketamine (reference section 4): the visit. No recorded dose: the visit."""
    dosing = administered_period(facts.administrations) if facts.procedure not in _WHOLE_VISIT else None
    return dosing or period(record["start"], record.get("end"))


def _performer(performer: Mapping[str, Any], base: str) -> dict[str, Any]:
    return {
        "function": participant_function(performer["function"], base),
        "actor": reference(base, "Practitioner", "practitioners", performer["practitioner_id"]),
    }


def psychotherapy(record: Mapping[str, Any], ctx: MappingContext) -> list[dict[str, Any]]:
    """The session's psychotherapy as its own Procedure (none when the session has none): what was
    done, by whom, and its CPT code when the clinic records the minutes."""
    if not record.get("psychotherapy"):
        return []
    base, sid = ctx.base_uri, record["id"]
    out: dict[str, Any] = {
        "resourceType": "Procedure",
        "id": fhir_id(base, "Procedure", PSYCHOTHERAPY_COLLECTION, sid),
        "meta": {"profile": [PROFILE]},
        "identifier": [business_identifier(base, PSYCHOTHERAPY_COLLECTION, sid)],
    }
    if record.get("course_id"):
        out["basedOn"] = [reference(base, "CarePlan", "courses", record["course_id"])]
    out["status"] = STATUS[record["status"]]
    out["category"] = codeable([local_code(base, "procedure", _PSYCHOTHERAPY)], LOCAL_PROCEDURES[_PSYCHOTHERAPY])
    out["code"] = psychotherapy_concept(record.get("psychotherapy_minutes"), base)
    out["subject"] = reference(base, "Patient", "patients", record["patient_id"])
    out["encounter"] = reference(base, "Encounter", "sessions", sid)
    if record["status"] not in _NOT_PERFORMED:
        # the clinic records how long, not when: within the visit
        out["performedPeriod"] = period(record["start"], record.get("end"))
    therapists = [p for p in record.get("performers") or () if p["function"] == "psychotherapist"]
    if therapists:
        out["performer"] = [_performer(p, base) for p in therapists]
    out.update(indication_reason(course_of(record, ctx), ctx))
    return [out]


def psychotherapy_concept(minutes: int | None, base_uri: str) -> dict[str, Any]:
    """The local psychotherapy code, plus CPT 90832 (16-37 min), 90834 (38-52) or 90837 (53+)
    when the minutes are known (reference 12.4). Under 16 minutes no psychotherapy code applies,
    so none is sent; the text says so."""
    local = local_code(base_uri, "procedure", _PSYCHOTHERAPY)
    text = LOCAL_PROCEDURES[_PSYCHOTHERAPY]
    if minutes is None:
        return codeable([local], text)
    cpt = next(((code, paraphrase) for lowest, code, paraphrase in PSYCHOTHERAPY_CPT if minutes >= lowest), None)
    if cpt is None:
        return codeable([local], f"{text}, {minutes} min (under 16 minutes: no psychotherapy CPT code applies)")
    return codeable([cpt[0], local], f"{text}, {minutes} min ({cpt[1].lower()})")
