"""Builders of FHIR R4 datatypes shared by every resource mapping (Identifier, Reference, ...)."""

from __future__ import annotations

import uuid
from collections.abc import Iterable
from typing import Any

from mappings.terminology import SYSTEM, UCUM, Code

__all__ = [
    "business_identifier",
    "codeable",
    "fhir_id",
    "human_name",
    "name_from_fhir",
    "period",
    "quantity",
    "reference",
    "telecom",
]


def fhir_id(base_uri: str, resource_type: str, collection: str, clinic_id: str) -> str:
    """A stable FHIR id: uuid5 of the clinic, resource type, collection and clinic id.

    Clinic ids may hold ``_`` (not allowed in FHIR ids) and one record can yield several
    resources (a session: Encounter and Procedure), hence a hash, never the clinic id itself.
    """
    return str(uuid.uuid5(uuid.NAMESPACE_URL, f"{base_uri.rstrip('/')}/{collection}/{clinic_id}#{resource_type}"))


def business_identifier(base_uri: str, collection: str, clinic_id: str, **extra: Any) -> dict[str, Any]:
    """``{system: <clinic base URI>/<collection>, value: <clinic id>}``: what outbound writes are
    conditional on, so that a retry or re-sync never duplicates."""
    return {"use": "usual", "system": f"{base_uri.rstrip('/')}/{collection}", "value": clinic_id, **extra}


def reference(base_uri: str, resource_type: str, collection: str, clinic_id: str,
              display: str | None = None) -> dict[str, Any]:
    """A relative reference to the resource another clinic record maps to, with that resource's
    business identifier: our ids are uuid5 hashes a receiver cannot turn back into clinic ids, and
    a server that re-hosts our resources under its own ids keeps the identifier (R4 Reference)."""
    out: dict[str, Any] = {"reference": f"{resource_type}/{fhir_id(base_uri, resource_type, collection, clinic_id)}",
                           "identifier": business_identifier(base_uri, collection, clinic_id)}
    if display:
        out["display"] = display
    return out


def codeable(codes: Iterable[Code | None] = (), text: str | None = None) -> dict[str, Any]:
    """A CodeableConcept of the given codings (None skipped) and text; never empty."""
    out: dict[str, Any] = {}
    codings = [c.coding() for c in codes if c is not None]
    if codings:
        out["coding"] = codings
    if text:
        out["text"] = text
    if not out:
        raise ValueError("a CodeableConcept needs a coding or a text")
    return out


def quantity(value: float, unit_code: str) -> dict[str, Any]:
    """A UCUM Quantity; whole numbers stay integers so the JSON is stable (35, not 35.0)."""
    if unit_code not in UCUM:
        raise KeyError(f"UCUM unit {unit_code!r} is not in the terminology table")
    number: float | int = int(value) if float(value).is_integer() else round(float(value), 4)
    return {"value": number, "unit": UCUM[unit_code], "system": SYSTEM["ucum"], "code": unit_code}


def period(start: str | None, end: str | None = None) -> dict[str, str]:
    out = {}
    if start:
        out["start"] = start
    if end:
        out["end"] = end
    return out


def human_name(name: dict[str, Any], use: str = "official") -> dict[str, Any]:
    """Clinic ``{family, given[], prefix[], suffix[]}`` to HumanName."""
    out: dict[str, Any] = {"use": use, "family": name["family"]}
    for key in ("given", "prefix", "suffix"):
        if name.get(key):
            out[key] = list(name[key])
    return out


def name_from_fhir(names: list[dict[str, Any]] | None) -> dict[str, Any] | None:
    """The official (else first) HumanName as a clinic name."""
    if not names:
        return None
    chosen = next((n for n in names if n.get("use") == "official"), names[0])
    if not chosen.get("family"):
        return None
    out: dict[str, Any] = {"family": chosen["family"]}
    for key in ("given", "prefix", "suffix"):
        if chosen.get(key):
            out[key] = list(chosen[key])
    return out


def telecom(phone: str | None, email: str | None) -> list[dict[str, str]]:
    out = []
    if phone:
        out.append({"system": "phone", "value": phone, "use": "work"})
    if email:
        out.append({"system": "email", "value": email, "use": "work"})
    return out
