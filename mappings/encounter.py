"""Clinic session -> FHIR R4 Encounter (US Core Encounter): the visit in which a dose is given.

The Procedure of the same session (mappings/procedure.py) carries what was done, why it stopped,
complications and notes; R4 Encounter has no ``note`` element.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from mappings.context import MappingContext
from mappings.datatypes import business_identifier, codeable, fhir_id, period, reference
from mappings.session_codes import (
    SessionFacts,
    encounter_type_concept,
    indication_reason,
    local_code,
    participant_type,
    session_facts,
)
from mappings.terminology import ENCOUNTER_CLASS_AMB, ENCOUNTER_TYPES

__all__ = ["PROFILE", "STATUS", "to_fhir"]

PROFILE = "http://hl7.org/fhir/us/core/StructureDefinition/us-core-encounter"

#: clinic session status -> R4 EncounterStatus (a session stopped early still ended: finished)
STATUS = {
    "planned": "planned",
    "in-progress": "in-progress",
    "completed": "finished",
    "stopped-early": "finished",
    "cancelled": "cancelled",
    "entered-in-error": "entered-in-error",
}


def to_fhir(record: Mapping[str, Any], ctx: MappingContext) -> dict[str, Any]:
    """Map one clinic session to its Encounter."""
    base, sid = ctx.base_uri, record["id"]
    facts = session_facts(record, ctx)
    out: dict[str, Any] = {
        "resourceType": "Encounter",
        "id": fhir_id(base, "Encounter", "sessions", sid),
        "meta": {"profile": [PROFILE]},
        "identifier": [business_identifier(base, "sessions", sid)],
        "status": STATUS[record["status"]],
        "class": ENCOUNTER_CLASS_AMB.coding(),
        "type": _types(record, facts, base),
        "subject": reference(base, "Patient", "patients", record["patient_id"]),
    }
    if facts.course and facts.course.get("referral_id"):
        out["basedOn"] = [reference(base, "ServiceRequest", "referrals", facts.course["referral_id"])]
    if record.get("performers"):
        out["participant"] = [_participant(p, base) for p in record["performers"]]
    out["period"] = period(record["start"], record.get("end"))
    out.update(indication_reason(facts.course, ctx))
    if record.get("location"):
        out["location"] = [{"location": {"display": record["location"]}}]
    out["serviceProvider"] = reference(base, "Organization", "organization", "clinic")
    return out


def _types(record: Mapping[str, Any], facts: SessionFacts, base: str) -> list[dict[str, Any]]:
    """The session type, plus ketamine-assisted psychotherapy as a second type when flagged."""
    types = [encounter_type_concept(facts, base)]
    if record.get("psychotherapy"):
        key = "ketamine-assisted-psychotherapy"
        types.append(codeable([local_code(base, "encounter-type", key)], ENCOUNTER_TYPES[key]))
    return types


def _participant(performer: Mapping[str, Any], base: str) -> dict[str, Any]:
    return {
        # the v3 ParticipationType code R4 binds here (section 12.1), next to the local function
        "type": [participant_type(performer["function"], base)],
        "individual": reference(base, "Practitioner", "practitioners", performer["practitioner_id"]),
    }
