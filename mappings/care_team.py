"""Clinic treatment course -> FHIR R4 CareTeam: who refers, attends, doses, monitors and treats.

Mapping revision 2, item 3: the referring psychiatrist is not the patient's primary care provider
(R4 Patient.generalPractitioner), so the referrer is a participant here with the v3
ParticipationType role REF (reference section 12.1), and the course's clinicians are the
performers of its sessions with the role their clinic function has on the Encounter (ATND, PPRF,
SPRF, PART: ``terminology.PARTICIPANT_FUNCTION_TYPE``) next to the local function code.

Base R4, not US Core CareTeam: its ``participant.role`` is bound (extensible) to a SNOMED CT /
NUCC value set whose codes the clinical reference does not hold.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from mappings._identity import record_reference
from mappings.care_plan import plan_title
from mappings.context import MappingContext
from mappings.datatypes import business_identifier, codeable, fhir_id, period
from mappings.organization import clinic_reference
from mappings.session_codes import indication_condition, participant_type
from mappings.terminology import PARTICIPATION_TYPE, REFERRER_TEXT

__all__ = ["STATUS", "referrer_id", "to_fhir"]

Record = Mapping[str, Any]

#: clinic course status -> R4 CareTeamStatus (a course that ended leaves its team inactive)
STATUS = {
    "draft": "proposed",
    "active": "active",
    "on-hold": "suspended",
    "completed": "inactive",
    "stopped": "inactive",
    "entered-in-error": "entered-in-error",
}


def to_fhir(record: Record, ctx: MappingContext) -> dict[str, Any]:
    """Map one clinic course to its CareTeam (CarePlan.careTeam references it)."""
    base, cid = ctx.base_uri, record["id"]
    out: dict[str, Any] = {
        "resourceType": "CareTeam",
        "id": fhir_id(base, "CareTeam", "courses", cid),
        "identifier": [business_identifier(base, "courses", cid)],
        "status": STATUS[record.get("status", "active")],
        "name": f"Care team of the {plan_title(record)}",
        "subject": record_reference(ctx, "Patient", "patients", record["patient_id"]),
        "period": period(record["start_date"], record.get("end_date")),
    }
    participants = _participants(record, ctx)
    if participants:
        out["participant"] = participants
    condition = indication_condition(record, ctx)
    if condition:
        out["reasonReference"] = [condition]
    out["managingOrganization"] = [clinic_reference(ctx)]
    return out


def referrer_id(course: Record, ctx: MappingContext) -> str | None:
    """The course's referrer: its referral's (unless entered in error), else the patient's
    ``referring_practitioner_id``; None when neither names one."""
    referral = ctx.lookup("referrals", course["referral_id"]) if course.get("referral_id") else None
    if referral and referral.get("status") != "entered-in-error":
        return str(referral["referrer_id"])
    patient = ctx.lookup("patients", course["patient_id"])
    return (patient or {}).get("referring_practitioner_id")


def _participants(course: Record, ctx: MappingContext) -> list[dict[str, Any]]:
    """The referrer first, then each (practitioner, function) of the course's sessions once, in the
    order the sessions name them; sessions entered in error do not count."""
    out = []
    referrer = referrer_id(course, ctx)
    if referrer:
        out.append({"role": [codeable([PARTICIPATION_TYPE["REF"]], REFERRER_TEXT)],
                    "member": record_reference(ctx, "Practitioner", "practitioners", referrer)})
    seen: set[tuple[str, str]] = set()
    for session in ctx.children(course["id"], "sessions"):
        if session.get("status") == "entered-in-error":
            continue
        for performer in session.get("performers") or ():
            key = (performer["practitioner_id"], performer["function"])
            if key not in seen:
                seen.add(key)
                out.append({"role": [participant_type(performer["function"], ctx.base_uri)],
                            "member": record_reference(ctx, "Practitioner", "practitioners", key[0])})
    return out
