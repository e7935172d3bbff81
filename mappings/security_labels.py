"""Security labels (``meta.security``) on every resource about a patient (mapping revision 2, item 7).

Reference section 12.2 and the DS4P guidance it cites: one confidentiality label per labelled
resource (R4 v3-Confidentiality, default ``R`` restricted: psychiatric treatment data), the
clinic's psychiatric sensitivity code (v3-ActCode ``PSY``, ``BH`` or ``MH`` — a privacy-officer
choice, or none), and for substance-use-disorder data the ``SUD`` sensitivity plus, where the
clinic is a 42 CFR Part 2 program, the ActCode ``42CFRPart2`` policy label. Which resources are
substance-use data: those carrying an ICD-10-CM F10-F19 code (the chapter block "mental and
behavioural disorders due to psychoactive substance use"), such as a referral for alcohol
dependence (F10.20) and its Condition.

Resources not about one patient (Organization, Practitioner, PractitionerRole, Medication) stay
unlabelled: they carry no patient information.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from mappings.terminology import CONFIDENTIALITY, PART2_POLICY, SENSITIVITY, SYSTEM, Code

__all__ = ["SENSITIVITY_CHOICES", "SecurityPolicy", "is_about_patient", "label", "substance_use"]

#: clinic-policy sensitivity codes (``none``: only the confidentiality label)
SENSITIVITY_CHOICES = ("PSY", "BH", "MH", "none")

#: ICD-10-CM F10-F19: disorders due to psychoactive substance use
_SUD_ICD10 = re.compile(r"^F1\d(\.|$)")

#: resource types that are not about one patient
_SHARED_TYPES = frozenset({"Organization", "Practitioner", "PractitionerRole", "Medication", "Device"})


@dataclass(frozen=True)
class SecurityPolicy:
    """A clinic's labelling policy (settings ``KETAMINE_FHIR_CONFIDENTIALITY``, ``_SENSITIVITY``, ``_PART2``)."""

    confidentiality: str = "R"
    sensitivity: str = "PSY"
    part2_program: bool = True

    def __post_init__(self) -> None:
        if self.confidentiality not in CONFIDENTIALITY:
            raise ValueError(f"confidentiality must be one of {', '.join(CONFIDENTIALITY)}")
        if self.sensitivity not in SENSITIVITY_CHOICES:
            raise ValueError(f"sensitivity must be one of {', '.join(SENSITIVITY_CHOICES)}")

    def labels(self, sud: bool) -> list[Code]:
        """The labels of one patient resource, confidentiality first."""
        out = [CONFIDENTIALITY[self.confidentiality]]
        if self.sensitivity != "none":
            out.append(SENSITIVITY[self.sensitivity])
        if sud:
            out.append(SENSITIVITY["SUD"])
            if self.part2_program:
                out.append(PART2_POLICY)
        return out


def is_about_patient(resource: dict[str, Any]) -> bool:
    """True for the Patient and every resource whose subject, patient or target names a Patient."""
    rtype = resource["resourceType"]
    if rtype == "Patient":
        return True
    if rtype in _SHARED_TYPES:
        return False
    refs = [resource.get("subject"), resource.get("patient"), *resource.get("target", ())]
    return any(isinstance(r, dict) and str(r.get("reference", "")).startswith("Patient/") for r in refs)


#: where a resource carries a diagnosis code (Condition.code, ServiceRequest/Procedure/
#: MedicationAdministration.reasonCode): only these are read, not the whole resource (half of all
#: mapping time when every element was walked)
_DIAGNOSIS_ELEMENTS = ("code", "reasonCode")


def substance_use(resource: dict[str, Any]) -> bool:
    """True when the resource carries a substance-use-disorder diagnosis code."""
    return any(c.get("system") == SYSTEM["icd10cm"] and _SUD_ICD10.match(str(c.get("code", "")))
               for element in _DIAGNOSIS_ELEMENTS for c in _codings(resource.get(element)))


def label(resource: dict[str, Any], policy: SecurityPolicy, about_patient: bool | None = None) -> dict[str, Any]:
    """The resource with the policy's labels in ``meta.security`` (unchanged when not about a patient).

    ``about_patient`` overrides ``is_about_patient`` (a Provenance of a patient's record names
    the patient's resources, not the Patient, as its targets).

    Labels already there that the policy does not set are kept after ours (a receiver must carry
    labels forward, R4 security-labels.html), without duplicates.
    """
    if not (is_about_patient(resource) if about_patient is None else about_patient):
        return resource
    ours = [c.coding() for c in policy.labels(substance_use(resource))]
    meta = dict(resource.get("meta") or {})
    kept = [c for c in meta.get("security", ()) if _key(c) not in {_key(o) for o in ours}
            and c.get("system") != SYSTEM["v3-Confidentiality"]]  # 1..1 confidentiality
    meta["security"] = ours + kept
    out = {"resourceType": resource["resourceType"], "id": resource["id"], "meta": meta}
    out.update((k, v) for k, v in resource.items() if k not in out)
    return out


def _key(coding: dict[str, Any]) -> tuple[str, str]:
    return str(coding.get("system")), str(coding.get("code"))


def _codings(value: Any) -> Iterator[dict[str, Any]]:
    if isinstance(value, dict):
        if "system" in value and "code" in value:
            yield value
        for key, child in value.items():
            if key != "meta":
                yield from _codings(child)
    elif isinstance(value, list):
        for child in value:
            yield from _codings(child)
