"""The diagnoses of a referral as Conditions: one per ICD-10-CM code (section 6.1), asserted by
the referring psychiatrist on the referral date.

Base FHIR R4, not US Core (its Condition profiles need a ``category`` from a code system the
clinical reference does not cover). ``verificationStatus`` appears only on the Conditions of an
entered-in-error referral: the referral does not say how far each diagnosis was verified, and
R4 gives no other way to withdraw a Condition (con-5 then forbids ``clinicalStatus``, which is
never set). See docs/mappings.md (condition).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from mappings._identity import record_reference
from mappings.context import MappingContext
from mappings.datatypes import business_identifier, codeable, fhir_id
from mappings.service_request import condition_key, diagnosis_concept
from mappings.terminology import CONDITION_VER_ENTERED_IN_ERROR

__all__ = ["to_fhir"]

COLLECTION = "conditions"


def _condition(referral: Mapping[str, Any], icd10: str, ctx: MappingContext) -> dict[str, Any]:
    key = condition_key(referral["id"], icd10)
    out: dict[str, Any] = {
        "resourceType": "Condition",
        "id": fhir_id(ctx.base_uri, "Condition", COLLECTION, key),
        "identifier": [business_identifier(ctx.base_uri, COLLECTION, key)],
    }
    if referral.get("status") == "entered-in-error":
        out["verificationStatus"] = codeable([CONDITION_VER_ENTERED_IN_ERROR], "Entered in error")
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
