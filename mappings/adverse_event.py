"""Clinic session adverse events -> FHIR R4 AdverseEvent, one per event recorded on the session.

R4 AdverseEvent has no status element, so a session entered in error yields no AdverseEvent at all
(the events of a record made in error must not be reported as having happened); one that was
already sent is superseded by the session's entered-in-error Encounter and Procedure.

``date`` is when the event happened (mapping revision 2; it was the session start, which lies
before the dose that caused it): the clinic's ``onset``, else, for a blood-pressure event, the
first vital sign at or after the first dose that crossed the hold threshold, else the session's
date alone.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any

from mappings.checks import DEFAULT
from mappings.context import MappingContext
from mappings.datatypes import business_identifier, codeable, fhir_id, reference
from mappings.session_codes import GIVEN_STATUSES, adverse_event_concept
from mappings.terminology import (
    ADVERSE_EVENT_CODES,
    ADVERSE_EVENT_OUTCOME,
    ADVERSE_EVENT_SERIOUSNESS,
    ADVERSE_EVENT_SEVERITY,
    Code,
)

__all__ = ["to_fhir"]

Record = Mapping[str, Any]

_BP_CODE = ADVERSE_EVENT_CODES["increased-blood-pressure"].code


def to_fhir(record: Record, ctx: MappingContext) -> list[dict[str, Any]]:
    """Map the adverse events of one clinic session (none for a session entered in error)."""
    if record["status"] == "entered-in-error":
        return []
    given = [a for a in ctx.children(record["id"], "administrations") if a["status"] in GIVEN_STATUSES]
    return [_event(record, n, event, given, ctx)
            for n, event in enumerate(record.get("adverse_events") or [], start=1)]


def _event(session: Record, n: int, event: Record, given: list[Record], ctx: MappingContext) -> dict[str, Any]:
    base, key = ctx.base_uri, f"{session['id']}:{n}"
    severity = event["severity"]
    concept = adverse_event_concept(event)
    when = _when(session, event, concept, given, ctx)
    out: dict[str, Any] = {
        "resourceType": "AdverseEvent",
        "id": fhir_id(base, "AdverseEvent", "adverse-events", key),
        "identifier": business_identifier(base, "adverse-events", key),  # 0..1 in R4: not a list
        "actuality": "actual",
        "event": concept,
        "subject": reference(base, "Patient", "patients", session["patient_id"]),
        "encounter": reference(base, "Encounter", "sessions", session["id"]),
        "date": when,
    }
    if event.get("recorded"):
        out["recordedDate"] = event["recorded"]
    if "serious" in event:
        out["seriousness"] = _concept(ADVERSE_EVENT_SERIOUSNESS["serious" if event["serious"] else "non-serious"])
    out["severity"] = _concept(ADVERSE_EVENT_SEVERITY[severity])
    if event.get("outcome"):
        out["outcome"] = _concept(ADVERSE_EVENT_OUTCOME[event["outcome"]])
    # a dose started after the event cannot have caused it
    suspects = [a for a in given if len(when) == 10 or _instant(a["start"]) <= _instant(when)]
    if suspects:
        out["suspectEntity"] = [{"instance": reference(base, "MedicationAdministration", "administrations", a["id"])}
                                for a in suspects]
    return out


def _concept(code: Code) -> dict[str, Any]:
    return codeable([code], code.display)


def _when(session: Record, event: Record, concept: dict[str, Any], given: list[Record],
          ctx: MappingContext) -> str:
    if event.get("onset"):
        return event["onset"]
    if given and any(c.get("code") == _BP_CODE for c in concept.get("coding", ())):
        first_dose = min(_instant(a["start"]) for a in given)
        for vitals in ctx.children(session["id"], "vitals"):
            if vitals.get("status") != "entered-in-error" and _over_hold(vitals) \
                    and _instant(vitals["effective"]) >= first_dose:
                return vitals["effective"]
    return session["start"][:10]  # the date alone: no time is known


def _over_hold(vitals: Record) -> bool:
    sbp, dbp = vitals.get("systolic_mmhg"), vitals.get("diastolic_mmhg")
    return (sbp is not None and sbp > DEFAULT.hold_sbp) or (dbp is not None and dbp > DEFAULT.hold_dbp)


def _instant(value: str) -> datetime:
    return datetime.fromisoformat(value.replace("Z", "+00:00"))
