"""What a treatment session (and its course) is coded as and what it treats, decided in one place.

Encounter.type, Procedure.code and CarePlan.activity.detail.code must agree, and Encounter,
Procedure and MedicationAdministration link the course indication the same way; so that logic
lives here, not in each resource module. Codes: clinical reference sections 0, 4 and 5.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from mappings.clinical import ESKETAMINE_SESSION_DOSES_MG
from mappings.context import MappingContext
from mappings.datatypes import codeable, period, reference
from mappings.terminology import (
    ADVERSE_EVENT_CODES,
    ENCOUNTER_TYPES,
    LOCAL_PROCEDURES,
    PARTICIPANT_FUNCTION_TYPE,
    PARTICIPANT_FUNCTIONS,
    PARTICIPATION_TYPE,
    PROCEDURE_CODES,
    PROCEDURE_TEXT,
    ROUTE_LABEL,
    SYSTEM,
    Code,
    local_system,
)

__all__ = [
    "GIVEN_STATUSES",
    "SessionFacts",
    "administered_period",
    "adverse_event_concept",
    "course_condition_key",
    "course_of",
    "encounter_type_concept",
    "encounter_type_key",
    "esketamine_dose_mg",
    "indication_condition",
    "indication_key",
    "indication_reason",
    "local_code",
    "participant_function",
    "participant_type",
    "procedure_concept",
    "procedure_key",
    "record_notes",
    "session_facts",
]

Record = Mapping[str, Any]

#: administration statuses under which the drug was (at least partly) given
GIVEN_STATUSES = ("completed", "stopped", "in-progress")
#: HCPCS G2082 covers "up to 56 mg" of esketamine, G2083 more (section 4)
_G2082_MAX_MG = ESKETAMINE_SESSION_DOSES_MG[0]
_ROUTE_PROCEDURE = {"iv": "iv-infusion", "im": "im-injection", "intranasal": "intranasal-dosing"}


@dataclass(frozen=True)
class SessionFacts:
    """A session's course, its administrations (entered-in-error ones left out) and its codes."""

    course: Record | None
    administrations: tuple[Record, ...]
    procedure: str  #: key of PROCEDURE_CODES (standard code) or LOCAL_PROCEDURES (local code)
    encounter_type: str  #: key of ENCOUNTER_TYPES


def course_of(session: Record | None, ctx: MappingContext) -> Record | None:
    """The session's course record, when it has one and the context knows it."""
    course_id = session.get("course_id") if session else None
    return ctx.lookup("courses", course_id) if course_id else None


def esketamine_dose_mg(administrations: Iterable[Record]) -> float | None:
    """The session's esketamine dose: the sum of the doses given, else of the doses not given
    (a cancelled session still names the service it was booked for); None when no esketamine."""
    esketamine = [a for a in administrations if a["drug"] == "esketamine" and a["status"] != "entered-in-error"]
    counted = [a for a in esketamine if a["status"] in GIVEN_STATUSES] or esketamine
    return sum(float(a["dose_mg"]) for a in counted) if counted else None


def procedure_key(route: str | None, esketamine_mg: float | None = None) -> str:
    """CPT 96365 for IV, HCPCS G2082/G2083 for esketamine (<= 56 mg / > 56 mg), else a local code."""
    if esketamine_mg is not None:
        return "esketamine-56" if esketamine_mg <= _G2082_MAX_MG else "esketamine-84"
    return _ROUTE_PROCEDURE.get(route or "", "ketamine-administration")


def encounter_type_key(procedure: str, route: str | None, kind: str | None, drug_known: bool) -> str:
    """The local encounter-type code: esketamine-session, ketamine-<route>-<kind>, or a generic one."""
    if procedure in ("esketamine-56", "esketamine-84"):
        return "esketamine-session"
    if route == "intranasal" and not drug_known:
        return "intranasal-session"  # ketamine or esketamine: no dose recorded yet
    if route in ROUTE_LABEL:
        return f"ketamine-{route}-{kind or 'session'}"
    return "ketamine-session"


def session_facts(session: Record, ctx: MappingContext, course: Record | None = None) -> SessionFacts:
    """Course, administrations and codes of one session (route from the course, else the doses).

    ``course``: the session's course when the caller already holds it (the CarePlan mapping).
    """
    course = course or course_of(session, ctx)
    doses = tuple(a for a in ctx.children(session["id"], "administrations") if a["status"] != "entered-in-error")
    route = course["route"] if course else (doses[0]["route"] if doses else None)
    procedure = procedure_key(route, esketamine_dose_mg(doses))
    kind = session.get("kind") or (course.get("kind") if course else None)
    return SessionFacts(course, doses, procedure, encounter_type_key(procedure, route, kind, bool(doses)))


def administered_period(doses: Iterable[Record]) -> dict[str, str] | None:
    """When the drug was given: from the first given dose's start to the last one's end (no end
    while any given dose has none); None when no dose was given. CPT 96365 bills the infusion
    itself ("up to 1 hour"), not the visit around it (R4 Procedure.performed[x])."""
    given = [a for a in doses if a["status"] in GIVEN_STATUSES]
    if not given:
        return None
    start = min(given, key=lambda a: _instant(a["start"]))["start"]
    ends = [a.get("end") for a in given]
    end = max(ends, key=_instant) if all(ends) else None
    return period(start, end)


def _instant(value: str) -> datetime:
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


def local_code(base_uri: str, system_name: str, code: str) -> Code:
    """A code of one of the clinic's CodeSystems."""
    return Code(local_system(base_uri, system_name), code)


def procedure_concept(key: str, base_uri: str, extra: Sequence[Code] = ()) -> dict[str, Any]:
    """The CodeableConcept of a procedure key: the standard code and its text, or a local code."""
    if key in PROCEDURE_CODES:
        return codeable([PROCEDURE_CODES[key], *extra], PROCEDURE_TEXT[key])
    return codeable([local_code(base_uri, "procedure", key), *extra], LOCAL_PROCEDURES[key])


def participant_function(function: str, base_uri: str) -> dict[str, Any]:
    """A session performer's function (clinic API ``performers[].function``) as a local concept."""
    return codeable([local_code(base_uri, "participant-function", function)], PARTICIPANT_FUNCTIONS[function])


def participant_type(function: str, base_uri: str) -> dict[str, Any]:
    """A session performer's function as its v3 ParticipationType code (R4 binds
    Encounter.participant.type to that code system, section 12.1) next to the local function code."""
    v3 = PARTICIPATION_TYPE[PARTICIPANT_FUNCTION_TYPE[function]]
    return codeable([v3, local_code(base_uri, "participant-function", function)], PARTICIPANT_FUNCTIONS[function])


def encounter_type_concept(facts: SessionFacts, base_uri: str) -> dict[str, Any]:
    """Encounter.type: the procedure code plus the local encounter-type code (section 5)."""
    local = local_code(base_uri, "encounter-type", facts.encounter_type)
    concept = procedure_concept(facts.procedure, base_uri, [local])
    return {**concept, "text": ENCOUNTER_TYPES[facts.encounter_type]}


def course_condition_key(course: Record) -> str:
    """The clinic key (``conditions`` collection) of the Condition a course makes of its own
    indication. ``/`` never occurs in a clinic id, so it cannot meet a referral's ``<id>:<code>``."""
    return f"courses/{course['id']}:{course['indication']}"


def indication_key(course: Record | None, ctx: MappingContext) -> str | None:
    """The clinic key of the Condition of the course indication: the referral's Condition when the
    course's referral (not entered in error) lists that diagnosis, else the course's own
    (``mappings.condition.for_course`` makes it); None without an indication."""
    if not course or not course.get("indication"):
        return None
    referral = ctx.lookup("referrals", course["referral_id"]) if course.get("referral_id") else None
    if referral and referral.get("status") != "entered-in-error" and course["indication"] in referral["diagnoses"]:
        return f"{course['referral_id']}:{course['indication']}"
    return course_condition_key(course)


def indication_condition(course: Record | None, ctx: MappingContext) -> dict[str, str] | None:
    """A reference to the (US Core) Condition of the course indication, if it has one."""
    key = indication_key(course, ctx)
    return reference(ctx.base_uri, "Condition", "conditions", key) if key else None


def indication_reason(course: Record | None, ctx: MappingContext) -> dict[str, list[dict[str, Any]]]:
    """``reasonReference`` to the (US Core) Condition of the course indication, else nothing: since
    mapping revision 2 every indication has a Condition (the referral's, else the course's own)."""
    condition = indication_condition(course, ctx)
    return {"reasonReference": [condition]} if condition else {}


#: an adverse event's free text -> a reference code (section 12.7); the first match wins
_EVENT_TEXT_CODES = (
    (re.compile(r"blood pressure|hypertens|\bBP\b", re.I), "increased-blood-pressure"),
    (re.compile(r"nause", re.I), "nausea"),
    (re.compile(r"vomit|emesis", re.I), "vomiting"),
    (re.compile(r"drows|sedat|somnolen", re.I), "drowsy"),
)


def adverse_event_concept(event: Record) -> dict[str, Any]:
    """A clinic adverse event: its SNOMED CT code when given (clinic-supplied, passed through),
    else the reference code its text names (none for dissociation: section 12.7); text always."""
    if event.get("code"):
        return codeable([Code(SYSTEM["snomed"], event["code"])], event["text"])
    key = next((k for pattern, k in _EVENT_TEXT_CODES if pattern.search(event["text"])), None)
    return codeable([ADVERSE_EVENT_CODES[key] if key else None], event["text"])


def record_notes(record: Record, *texts: str | None) -> list[dict[str, str]]:
    """Annotations: the given free texts, then one per clinical-check warning of the record."""
    notes = [{"text": t} for t in texts if t]
    notes += [{"text": f"Clinical check {w['code']}: {w['message']}"} for w in record.get("warnings") or []]
    return notes
