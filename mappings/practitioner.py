"""A clinic practitioner as a US Core Practitioner, and back.

The clinic role and organization live on the PractitionerRole (``mappings.practitioner_role``);
a Practitioner holds the person: identifiers (ours and the NPI), name, work telecom and
``active``. See docs/mappings.md (practitioner).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from mappings._identity import first_telecom, own_id, person_meta, person_status
from mappings.context import MappingContext
from mappings.datatypes import business_identifier, fhir_id, human_name, name_from_fhir, telecom
from mappings.terminology import PRACTITIONER_ROLE_TEXT, SYSTEM

__all__ = ["PROFILE", "from_fhir", "to_fhir"]

#: US Core Practitioner (STU 6.1): needs identifier and name, always present here
PROFILE = "http://hl7.org/fhir/us/core/StructureDefinition/us-core-practitioner"
COLLECTION = "practitioners"


def to_fhir(record: Mapping[str, Any], ctx: MappingContext) -> dict[str, Any]:
    """The Practitioner of a clinic practitioner record."""
    status = record.get("status", "active")
    identifiers = [business_identifier(ctx.base_uri, COLLECTION, record["id"])]
    if record.get("npi"):
        identifiers.append({"system": SYSTEM["npi"], "value": record["npi"]})
    out: dict[str, Any] = {
        "resourceType": "Practitioner",
        "id": fhir_id(ctx.base_uri, "Practitioner", COLLECTION, record["id"]),
        "meta": person_meta(ctx, status, PROFILE),
        "identifier": identifiers,
        "active": status == "active",
        "name": [human_name(record["name"])],
    }
    contact = telecom(record.get("phone"), record.get("email"))
    if contact:
        out["telecom"] = contact
    return out


def from_fhir(resource: Mapping[str, Any], ctx: MappingContext, role: str | None = None) -> dict[str, Any]:
    """A clinic practitioner record from a Practitioner.

    A Practitioner does not say which clinic role the person has (that is the PractitionerRole's
    ``code``; ``practitioner_role.from_fhir`` reads it), so the caller passes ``role``; there is no
    default. ``organization`` is likewise on the PractitionerRole. ``id`` is set only when the
    resource carries our business identifier.

    :raises ValueError: naming the clinic field that cannot be filled (``role``, ``name``).
    """
    if resource.get("resourceType") != "Practitioner":
        raise ValueError(f"resourceType: expected Practitioner, not {resource.get('resourceType')!r}")
    if role is None:
        raise ValueError("role: a Practitioner does not carry the clinic role; pass role= "
                         "(practitioner_role.from_fhir reads it from the PractitionerRole)")
    if role not in PRACTITIONER_ROLE_TEXT:
        raise ValueError(f"role: {role!r} is not one of {', '.join(PRACTITIONER_ROLE_TEXT)}")
    out: dict[str, Any] = {}
    clinic_id = own_id(resource.get("identifier"), ctx, COLLECTION)
    if clinic_id:
        out["id"] = clinic_id
    name = name_from_fhir(resource.get("name"))
    if name is None:
        raise ValueError("name: the Practitioner has no name with a family name")
    out["name"], out["role"] = name, role
    npi = next((i["value"] for i in resource.get("identifier") or ()
                if i.get("system") == SYSTEM["npi"] and i.get("value")), None)
    contacts = (("phone", first_telecom(resource, "phone")), ("email", first_telecom(resource, "email")))
    for key, value in (("npi", npi), *contacts):
        if value:
            out[key] = value
    out["status"] = person_status(resource, ctx)
    return out
