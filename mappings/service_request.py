"""A psychiatrist's referral for ketamine treatment as a US Core ServiceRequest, and back.

US Core 6.1 ServiceRequest (mapping revision 2, item 13): status, intent, code, subject (a US Core
Patient), authoredOn and requester (the referring psychiatrist, a US Core Practitioner) are always
there. ``code`` is text only: its binding (US Core Procedure Codes) is extensible and no code in
the clinical reference names a referral for a treatment course (section 10.2). No ``category``
(no code of the US Core ServiceRequest category value set fits) and no ``occurrence[x]`` (a referral
does not say when): both Must Support, neither recorded. The diagnoses are ``reasonCode``
(ICD-10-CM, section 6.1) and ``reasonReference`` to the US Core Conditions of ``mappings.condition``.
See docs/mappings.md (service-request).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from mappings._identity import other_identifiers, own_id, record_reference, required_reference
from mappings.context import MappingContext
from mappings.datatypes import business_identifier, codeable, fhir_id
from mappings.organization import clinic_reference
from mappings.terminology import ICD10CM_DISPLAY, REFERRAL_TEXT, SYSTEM, Code

__all__ = ["NOTES_PREFIX", "PROFILE", "REASON_PREFIX", "STATUSES", "condition_key", "diagnosis_concept", "from_fhir",
           "to_fhir"]

PROFILE = "http://hl7.org/fhir/us/core/StructureDefinition/us-core-servicerequest"
COLLECTION = "referrals"
#: clinic referral statuses; each is the ServiceRequest status of the same name (request-status)
STATUSES = ("draft", "active", "on-hold", "revoked", "completed", "entered-in-error")
#: the clinic's ``reason`` and ``notes`` are both ServiceRequest.note entries, told apart by these
REASON_PREFIX = "Reason for referral: "
NOTES_PREFIX = "Referral notes: "
_CHECK_PREFIX = "Clinical check "


def diagnosis_concept(icd10: str) -> dict[str, Any]:
    """An ICD-10-CM CodeableConcept; the display only where the reference quotes one."""
    display = ICD10CM_DISPLAY.get(icd10)
    return codeable([Code(SYSTEM["icd10cm"], icd10, display)], display or f"ICD-10-CM {icd10}")


def condition_key(referral_id: str, icd10: str) -> str:
    """The clinic key of the Condition of one diagnosis of a referral."""
    return f"{referral_id}:{icd10}"


def _notes(record: Mapping[str, Any]) -> list[dict[str, str]]:
    out = []
    if record.get("reason"):
        out.append({"text": REASON_PREFIX + record["reason"]})
    if record.get("notes"):
        out.append({"text": NOTES_PREFIX + record["notes"]})
    out += [{"text": f"{_CHECK_PREFIX}{w['code']}: {w['message']}"} for w in record.get("warnings") or ()]
    return out


def to_fhir(record: Mapping[str, Any], ctx: MappingContext) -> dict[str, Any]:
    """The ServiceRequest of a clinic referral record."""
    rid, status = record["id"], record.get("status", "active")
    if status not in STATUSES:
        raise ValueError(f"status: {status!r} is not one of {', '.join(STATUSES)}")
    out: dict[str, Any] = {
        "resourceType": "ServiceRequest",
        "id": fhir_id(ctx.base_uri, "ServiceRequest", COLLECTION, rid),
        "meta": {"profile": [PROFILE]},
        # the EHR's own identifiers of a referral it sent stay on it: pushing it back must not strip them
        "identifier": [business_identifier(ctx.base_uri, COLLECTION, rid),
                       *({"system": i["system"], "value": i["value"]} for i in record.get("identifiers") or ())],
        "status": status,
        "intent": "order",
        "code": codeable(text=REFERRAL_TEXT),
        "subject": record_reference(ctx, "Patient", "patients", record["patient_id"]),
        "authoredOn": record["referred_on"],
        "requester": record_reference(ctx, "Practitioner", "practitioners", record["referrer_id"]),
        "performer": [clinic_reference(ctx)],
        "reasonCode": [diagnosis_concept(code) for code in record["diagnoses"]],
        "reasonReference": [record_reference(ctx, "Condition", "conditions", condition_key(rid, code))
                            for code in record["diagnoses"]],
    }
    notes = _notes(record)
    if notes:
        out["note"] = notes
    return out


def _diagnoses(resource: Mapping[str, Any]) -> list[str]:
    codes = [c["code"] for cc in resource.get("reasonCode") or () for c in cc.get("coding") or ()
             if c.get("system") == SYSTEM["icd10cm"] and c.get("code")]
    if not codes:
        raise ValueError("diagnoses: no ICD-10-CM coding in ServiceRequest.reasonCode")
    return list(dict.fromkeys(codes))


def _texts(resource: Mapping[str, Any]) -> dict[str, str]:
    """``reason`` and ``notes`` from the notes: ours by their prefix; any other note (not a clinical
    check, which is regenerated on write) is part of ``notes``."""
    reason, notes = [], []
    for note in resource.get("note") or ():
        text = note.get("text") or ""
        if text.startswith(REASON_PREFIX):
            reason.append(text[len(REASON_PREFIX):])
        elif text.startswith(NOTES_PREFIX):
            notes.append(text[len(NOTES_PREFIX):])
        elif text and not text.startswith(_CHECK_PREFIX):
            notes.append(text)
    out = {}
    if reason:
        out["reason"] = "\n\n".join(reason)
    if notes:
        out["notes"] = "\n\n".join(notes)
    return out


def _referrer(resource: Mapping[str, Any], patient_id: str, ctx: MappingContext) -> str:
    """The requester; without one, the patient's referring practitioner. A requester that is not one
    of ours stays an error: the patient's practitioner may be someone else."""
    if resource.get("requester") is None:
        patient = ctx.lookup("patients", patient_id) or {}
        if patient.get("referring_practitioner_id"):
            return str(patient["referring_practitioner_id"])
        raise ValueError("referrer_id: the ServiceRequest has no requester, and its patient no referring "
                         "practitioner (Patient.generalPractitioner) that is one of our Practitioners")
    return required_reference(resource["requester"], ctx, "Practitioner", "practitioners", "referrer_id")


def from_fhir(resource: Mapping[str, Any], ctx: MappingContext) -> dict[str, Any]:
    """A clinic referral record from a ServiceRequest.

    The patient and the referrer must be our Patient and Practitioner (see ``mappings._identity``).
    The referrer is the ``requester``; only a ServiceRequest without one falls back to the patient's
    referring practitioner (read from an EHR Patient's ``generalPractitioner``, which in R4 is the
    primary care provider: mapping revision 2, item 3).

    :raises ValueError: naming the clinic field that cannot be filled (``patient_id``,
        ``referrer_id``, ``referred_on``, ``diagnoses``, ``status``).
    """
    if resource.get("resourceType") != "ServiceRequest":
        raise ValueError(f"resourceType: expected ServiceRequest, not {resource.get('resourceType')!r}")
    out: dict[str, Any] = {}
    clinic_id = own_id(resource.get("identifier"), ctx, COLLECTION)
    if clinic_id:
        out["id"] = clinic_id
    out["patient_id"] = required_reference(resource.get("subject"), ctx, "Patient", "patients", "patient_id")
    out["referrer_id"] = _referrer(resource, out["patient_id"], ctx)
    if not resource.get("authoredOn"):
        raise ValueError("referred_on: the ServiceRequest has no authoredOn")
    out["referred_on"] = resource["authoredOn"][:10]  # the date part, as written where it was authored
    out["diagnoses"] = _diagnoses(resource)
    out |= _texts(resource)
    if resource.get("status") not in STATUSES:
        raise ValueError(f"status: {resource.get('status')!r} is not a clinic referral status ({', '.join(STATUSES)})")
    out["status"] = resource["status"]
    ours = business_identifier(ctx.base_uri, COLLECTION, "")["system"]
    others = other_identifiers(resource.get("identifier"), {ours})
    if others:
        out["identifiers"] = others
    return out
