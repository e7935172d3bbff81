"""A clinic practitioner's role as a PractitionerRole: which practitioner, for which organization,
in which clinic role. Base FHIR R4, not US Core (see docs/mappings.md (practitioner-role): US Core's
extensible role binding has NUCC codes the clinical reference does not hold)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from mappings._identity import own_id, person_meta, person_status, record_reference
from mappings.context import MappingContext
from mappings.datatypes import business_identifier, codeable, fhir_id, telecom
from mappings.organization import clinic_reference
from mappings.terminology import PRACTITIONER_ROLE_TEXT, Code, local_system

__all__ = ["from_fhir", "to_fhir"]

COLLECTION = "practitioner-roles"


def _organization(record: Mapping[str, Any], ctx: MappingContext) -> dict[str, Any]:
    """Clinic staff (no organization, or the clinic's own name) work for the clinic Organization;
    another organization (a referrer's practice) is named by display only: we hold no resource
    for it. The display is kept only where the record names the organization, so it maps back."""
    name = record.get("organization")
    if name is None or name == ctx.clinic_name:
        return clinic_reference(ctx, name)
    return {"display": name}


def to_fhir(record: Mapping[str, Any], ctx: MappingContext) -> dict[str, Any]:
    """The PractitionerRole of a clinic practitioner record (one role per practitioner)."""
    status, role = record.get("status", "active"), record["role"]
    out: dict[str, Any] = {"resourceType": "PractitionerRole",
                           "id": fhir_id(ctx.base_uri, "PractitionerRole", COLLECTION, record["id"])}
    meta = person_meta(ctx, status)
    if meta:
        out["meta"] = meta
    out |= {
        "identifier": [business_identifier(ctx.base_uri, COLLECTION, record["id"])],
        "active": status == "active",
        "practitioner": record_reference(ctx, "Practitioner", "practitioners", record["id"]),
        "organization": _organization(record, ctx),
        "code": [codeable([Code(local_system(ctx.base_uri, "practitioner-role"), role)], PRACTITIONER_ROLE_TEXT[role])],
    }
    contact = telecom(record.get("phone"), record.get("email"))
    if contact:
        out["telecom"] = contact
    return out


def from_fhir(resource: Mapping[str, Any], ctx: MappingContext) -> dict[str, Any]:
    """The fields of a clinic practitioner record that a PractitionerRole carries: ``id`` (when it
    has our business identifier), ``role`` (our practitioner-role code) and ``organization`` (the
    organization reference's display, when it has one).

    :raises ValueError: ``role`` when no coding of our practitioner-role CodeSystem is present.
    """
    if resource.get("resourceType") != "PractitionerRole":
        raise ValueError(f"resourceType: expected PractitionerRole, not {resource.get('resourceType')!r}")
    system = local_system(ctx.base_uri, "practitioner-role")
    roles = [c["code"] for cc in resource.get("code") or () for c in cc.get("coding") or ()
             if c.get("system") == system and c.get("code") in PRACTITIONER_ROLE_TEXT]
    if not roles:
        raise ValueError(f"role: no {system} coding of a clinic role in PractitionerRole.code")
    out: dict[str, Any] = {}
    clinic_id = own_id(resource.get("identifier"), ctx, COLLECTION)
    if clinic_id:
        out["id"] = clinic_id
    out["role"] = roles[0]
    display = (resource.get("organization") or {}).get("display")
    if display:
        out["organization"] = display
    out["status"] = person_status(resource, ctx)
    return out
