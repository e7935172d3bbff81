"""Diagnoses as US Core Conditions (mapping revision 2, item 10; reference sections 6.1 and 12.3).

- Each diagnosis of a referral: one Condition per ICD-10-CM code, asserted by the referring
  psychiatrist on the referral date, category ``encounter-diagnosis``, profile US Core Condition
  Encounter Diagnosis.
- A course indication that its referral does not list (or a course without a referral): one
  Condition made from the course, category ``problem-list-item`` (the problem the course treats),
  profile US Core Condition Problems and Health Concerns. A listed indication is the referral's
  Condition (``session_codes.indication_key`` decides; Encounter, Procedure, CarePlan and
  MedicationAdministration point at the same one).

``clinicalStatus`` is ``active`` and ``verificationStatus`` ``confirmed`` (a diagnosis the
referrer or the treating clinic made); a record entered in error withdraws its Conditions with
``verificationStatus = entered-in-error`` and no ``clinicalStatus`` (R4 con-5). Both profiles need
category, code (ICD-10-CM is in US Core Condition Codes) and subject (a US Core Patient), always
present here; onset and abatement are Must Support but the clinic does not record them.
See docs/mappings.md (condition).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from mappings._identity import record_reference
from mappings.context import MappingContext
from mappings.datatypes import business_identifier, codeable, fhir_id
from mappings.service_request import condition_key, diagnosis_concept
from mappings.session_codes import course_condition_key, indication_key
from mappings.terminology import (
    CONDITION_CATEGORY,
    CONDITION_CLINICAL_ACTIVE,
    CONDITION_VER_CONFIRMED,
    CONDITION_VER_ENTERED_IN_ERROR,
)

__all__ = ["PROFILE_ENCOUNTER_DIAGNOSIS", "PROFILE_PROBLEM", "for_course", "to_fhir"]

COLLECTION = "conditions"
PROFILE_ENCOUNTER_DIAGNOSIS = "http://hl7.org/fhir/us/core/StructureDefinition/us-core-condition-encounter-diagnosis"
PROFILE_PROBLEM = "http://hl7.org/fhir/us/core/StructureDefinition/us-core-condition-problems-health-concerns"
#: the core extension US Core lists as Must Support for the date the diagnosis was asserted
ASSERTED_DATE = "http://hl7.org/fhir/StructureDefinition/condition-assertedDate"


def _head(key: str, profile: str, ctx: MappingContext) -> dict[str, Any]:
    return {"resourceType": "Condition", "id": fhir_id(ctx.base_uri, "Condition", COLLECTION, key),
            "meta": {"profile": [profile]}}


def _statuses(entered_in_error: bool, category: str) -> dict[str, Any]:
    """clinicalStatus, verificationStatus and the US Core category slice, in R4 element order."""
    out: dict[str, Any] = {}
    if entered_in_error:
        out["verificationStatus"] = codeable([CONDITION_VER_ENTERED_IN_ERROR], "Entered in error")
    else:
        out["clinicalStatus"] = codeable([CONDITION_CLINICAL_ACTIVE], "Active")
        out["verificationStatus"] = codeable([CONDITION_VER_CONFIRMED], "Confirmed")
    code = CONDITION_CATEGORY[category]
    out["category"] = [codeable([code], code.display)]
    return out


def _condition(referral: Mapping[str, Any], icd10: str, ctx: MappingContext) -> dict[str, Any]:
    key = condition_key(referral["id"], icd10)
    out = _head(key, PROFILE_ENCOUNTER_DIAGNOSIS, ctx)
    out["extension"] = [{"url": ASSERTED_DATE, "valueDateTime": referral["referred_on"]}]
    out["identifier"] = [business_identifier(ctx.base_uri, COLLECTION, key)]
    out |= _statuses(referral.get("status") == "entered-in-error", "encounter-diagnosis")
    out |= {
        "code": diagnosis_concept(icd10),
        "subject": record_reference(ctx, "Patient", "patients", referral["patient_id"]),
        "recordedDate": referral["referred_on"],
        "asserter": record_reference(ctx, "Practitioner", "practitioners", referral["referrer_id"]),
    }
    return out


def to_fhir(referral: Mapping[str, Any], ctx: MappingContext) -> list[dict[str, Any]]:
    """One Condition per diagnosis of a clinic referral record, in the referral's order."""
    return [_condition(referral, icd10, ctx) for icd10 in referral["diagnoses"]]


def for_course(course: Mapping[str, Any], ctx: MappingContext) -> list[dict[str, Any]]:
    """The problem-list Condition of a course's indication when no Condition of its referral
    carries it (none otherwise, and none without an indication).

    No ``recordedDate``, ``asserter`` or onset: the course record says what it treats, not when or
    by whom that diagnosis was made."""
    if not course.get("indication") or indication_key(course, ctx) != course_condition_key(course):
        return []
    key = course_condition_key(course)
    out = _head(key, PROFILE_PROBLEM, ctx)
    out["identifier"] = [business_identifier(ctx.base_uri, COLLECTION, key)]
    out |= _statuses(course.get("status") == "entered-in-error", "problem-list-item")
    out["code"] = diagnosis_concept(course["indication"])
    out["subject"] = record_reference(ctx, "Patient", "patients", course["patient_id"])
    return [out]
