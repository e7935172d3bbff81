"""Clinic session adverse events -> FHIR R4 AdverseEvent, one per event recorded on the session.

R4 AdverseEvent has no status element, so a session entered in error yields no AdverseEvent at all
(the events of a record made in error must not be reported as having happened); one that was
already sent is superseded by the session's entered-in-error Encounter and Procedure.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from mappings.context import MappingContext
from mappings.datatypes import business_identifier, codeable, fhir_id, reference
from mappings.session_codes import GIVEN_STATUSES, adverse_event_concept
from mappings.terminology import ADVERSE_EVENT_SEVERITY

__all__ = ["to_fhir"]

Record = Mapping[str, Any]


def to_fhir(record: Record, ctx: MappingContext) -> list[dict[str, Any]]:
    """Map the adverse events of one clinic session (none for a session entered in error)."""
    if record["status"] == "entered-in-error":
        return []
    suspects = [{"instance": reference(ctx.base_uri, "MedicationAdministration", "administrations", a["id"])}
                for a in ctx.children(record["id"], "administrations") if a["status"] in GIVEN_STATUSES]
    return [_event(record, n, event, suspects, ctx)
            for n, event in enumerate(record.get("adverse_events") or [], start=1)]


def _event(session: Record, n: int, event: Record, suspects: list[dict[str, Any]],
           ctx: MappingContext) -> dict[str, Any]:
    base, key = ctx.base_uri, f"{session['id']}:{n}"
    severity = event["severity"]
    out: dict[str, Any] = {
        "resourceType": "AdverseEvent",
        "id": fhir_id(base, "AdverseEvent", "adverse-events", key),
        "identifier": business_identifier(base, "adverse-events", key),  # 0..1 in R4: not a list
        "actuality": "actual",
        "event": adverse_event_concept(event),
        "subject": reference(base, "Patient", "patients", session["patient_id"]),
        "encounter": reference(base, "Encounter", "sessions", session["id"]),
        "date": session["start"],
        "severity": codeable([ADVERSE_EVENT_SEVERITY[severity]], ADVERSE_EVENT_SEVERITY[severity].display),
    }
    if suspects:
        out["suspectEntity"] = suspects
    return out
