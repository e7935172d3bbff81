"""Clinic treatment course -> US Core CarePlan: the planned series, one activity per session.

US Core 6.1 CarePlan (reference section 12.3) needs status, intent, category ``assess-plan`` and a
US Core Patient subject, and has ``text`` (status and div) as Must Support: a generated narrative
summarises the plan from its own elements (mapping revision 2, item 13: Procedure.basedOn must
reach a US Core CarePlan). ``careTeam`` is the course's CareTeam (mappings/care_team.py).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping
from html import escape
from typing import Any

from mappings.context import MappingContext
from mappings.datatypes import business_identifier, codeable, fhir_id, period, reference
from mappings.session_codes import (
    indication_condition,
    procedure_concept,
    procedure_key,
    record_notes,
    session_facts,
)
from mappings.terminology import CAREPLAN_ASSESS_PLAN, ROUTE_LABEL

__all__ = ["ACTIVITY_STATUS", "PROFILE", "STATUS", "plan_title", "sessions_by_number", "to_fhir"]

PROFILE = "http://hl7.org/fhir/us/core/StructureDefinition/us-core-careplan"
_XHTML = "http://www.w3.org/1999/xhtml"

Record = Mapping[str, Any]

#: clinic course status -> R4 RequestStatus (a stopped course is revoked: ended before completion)
STATUS = {
    "draft": "draft",
    "active": "active",
    "on-hold": "on-hold",
    "completed": "completed",
    "stopped": "revoked",
    "entered-in-error": "entered-in-error",
}
#: clinic session status -> R4 CarePlanActivityStatus (numbers without a session: _unrecorded_status)
ACTIVITY_STATUS = {
    "planned": "scheduled",
    "in-progress": "in-progress",
    "completed": "completed",
    "stopped-early": "stopped",
    "cancelled": "cancelled",
    "entered-in-error": "entered-in-error",
}
_ROUTE_PHRASE = {"iv": "IV ketamine", "im": "IM ketamine", "intranasal": "intranasal"}


def to_fhir(record: Record, ctx: MappingContext) -> dict[str, Any]:
    """Map one clinic course to its CarePlan."""
    base, cid = ctx.base_uri, record["id"]
    sessions = sessions_by_number(ctx.children(cid, "sessions"))
    out: dict[str, Any] = {
        "resourceType": "CarePlan",
        "id": fhir_id(base, "CarePlan", "courses", cid),
        "meta": {"profile": [PROFILE]},
        "text": None,  # filled in last, from the finished plan
        "identifier": [business_identifier(base, "courses", cid)],
        "status": STATUS[record.get("status", "active")],
        "intent": "plan",
        "category": [codeable([CAREPLAN_ASSESS_PLAN], CAREPLAN_ASSESS_PLAN.display)],
        "title": plan_title(record),
        "description": _description(record),
        "subject": reference(base, "Patient", "patients", record["patient_id"]),
        "period": period(record["start_date"], record.get("end_date")),
        "careTeam": [reference(base, "CareTeam", "courses", cid)],
    }
    condition = indication_condition(record, ctx)
    if condition:
        out["addresses"] = [condition]
    if record.get("referral_id"):
        # R4 CarePlan.basedOn may only reference a CarePlan: the referral is supporting information
        out["supportingInfo"] = [reference(base, "ServiceRequest", "referrals", record["referral_id"])]
    total = record["planned_sessions"]
    out["activity"] = [_activity(n, record, sessions.get(n), ctx) for n in range(1, total + 1)]
    notes = record_notes(record)
    if notes:
        out["note"] = notes
    out["text"] = _narrative(out)
    return out


def _narrative(plan: Mapping[str, Any]) -> dict[str, str]:
    """``text`` (status ``generated``): title, description, status, period and the activities by
    status, all taken from the plan's own elements (R4 narrative.html: generated)."""
    when = plan["period"].get("start", "")
    if plan["period"].get("end"):
        when += f" to {plan['period']['end']}"
    counts = Counter(a["detail"]["status"] for a in plan["activity"])
    sessions = ", ".join(f"{n} {status}" for status, n in sorted(counts.items()))
    rows = [f"<p><b>{escape(plan['title'])}</b></p>", f"<p>{escape(plan['description'])}.</p>",
            f"<p>Status: {plan['status']}; from {escape(when)}.</p>",
            f"<p>{_planned(len(plan['activity']))}: {escape(sessions)}.</p>"]
    return {"status": "generated", "div": f'<div xmlns="{_XHTML}">{"".join(rows)}</div>'}


def sessions_by_number(sessions: Iterable[Record]) -> dict[int, Record]:
    """The course's sessions by number; a valid session wins over one entered in error."""
    out: dict[int, Record] = {}
    for session in sessions:
        number = session.get("number")
        if number is not None and (number not in out or out[number]["status"] == "entered-in-error"):
            out[number] = session
    return out


def _activity(n: int, course: Record, session: Record | None, ctx: MappingContext) -> dict[str, Any]:
    """Session n of the plan: its code, status and schedule, and its Encounter once held."""
    held = session if session is not None and session["status"] != "entered-in-error" else None
    key = session_facts(held, ctx, course).procedure if held else procedure_key(course["route"])
    detail: dict[str, Any] = {
        "code": procedure_concept(key, ctx.base_uri),
        "status": ACTIVITY_STATUS[session["status"]] if session else _unrecorded_status(course),
    }
    if held and held.get("stop_reason"):
        detail["statusReason"] = {"text": held["stop_reason"]}
    if session is not None and session["status"] != "entered-in-error":
        # this one session's date; the course's rate (n a week) is the plan's description, not
        # each activity's: a Timing repeat here would read as N x "twice a week" (revision 2)
        detail["scheduledPeriod"] = period(session["start"], session.get("end"))
    detail["description"] = f"Session {n} of {course['planned_sessions']}"
    activity: dict[str, Any] = {}
    if held:
        activity["outcomeReference"] = [reference(ctx.base_uri, "Encounter", "sessions", held["id"])]
    activity["detail"] = detail
    return activity


def _unrecorded_status(course: Record) -> str:
    """A number without a session is still to come (not-started), unless the course is over:
    a completed or stopped course will never hold it (cancelled: "withdrawn")."""
    return "cancelled" if course.get("status") in ("completed", "stopped") else "not-started"


def _planned(n: int) -> str:
    return f"{n} planned session{'s' if n != 1 else ''}"


def plan_title(course: Record) -> str:
    """E.g. "IV ketamine induction series" (CarePlan.title; the CareTeam's name uses it too)."""
    label = ROUTE_LABEL[course["route"]]
    drug = " ketamine" if course["route"] != "intranasal" else ""
    return f"{label}{drug} {course['kind']} series"


def _description(course: Record) -> str:
    """E.g. "Induction series: 6 IV ketamine sessions, 2 per week, target dose 0.5 mg/kg"."""
    parts = [f"{course['kind'].capitalize()} series: {course['planned_sessions']} "
             f"{_ROUTE_PHRASE[course['route']]} session{'s' if course['planned_sessions'] > 1 else ''}"]
    if course.get("sessions_per_week"):
        parts.append(f"{course['sessions_per_week']:g} per week")
    if course.get("target_dose_mg_per_kg"):
        parts.append(f"target dose {course['target_dose_mg_per_kg']:g} mg/kg")
    return ", ".join(parts)
