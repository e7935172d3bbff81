"""How a clinic record is recognised in FHIR, in both directions.

Outbound, references to our own resources carry the target's business identifier next to the
relative reference (``Reference.identifier``, FHIR R4 references.html#Reference): our ids are
uuid5 hashes that cannot be turned back into clinic ids, and a receiving server that re-hosts our
resources under its own ids (see ``mappings.bundle``) keeps the identifier.

Inbound, a reference counts as one of OUR records only when

1. its ``identifier`` has our business-identifier system for the collection
   (``<base URI>/<collection>``): its value is the clinic id; or
2. the context resolves its literal id: ``ctx.lookup("<ResourceType>", "<FHIR id>")`` returns the
   clinic record whose resource has that id (a service that stores what it mapped can answer this),
   and recomputing ``fhir_id`` from that record's id gives the same FHIR id.

Anything else is not ours (``None``); callers of required fields turn that into a ``ValueError``
that names the clinic field.

Patient, Practitioner and PractitionerRole have no status element: ``active`` carries
active/inactive, and a ``meta.tag`` from the clinic's ``record-status`` CodeSystem marks a record
made in error (``active`` is then false as well, for receivers that ignore tags).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from typing import Any

from mappings.context import MappingContext
from mappings.datatypes import business_identifier, fhir_id, reference
from mappings.terminology import RECORD_STATUS_ENTERED_IN_ERROR, local_system

__all__ = [
    "PERSON_STATUSES",
    "first_telecom",
    "other_identifiers",
    "own_id",
    "person_meta",
    "person_status",
    "record_reference",
    "required_reference",
    "resolve_reference",
]

#: clinic statuses of practitioners and patients (service/clinic/schemas.py PERSON_STATUSES)
PERSON_STATUSES = ("active", "inactive", "entered-in-error")

# "Type/id", "Type/id/_history/v" or an absolute URL ending so (FHIR R4 Reference.reference)
_LITERAL = re.compile(r"(?:^|/)(?P<type>[A-Z][A-Za-z]+)/(?P<id>[A-Za-z0-9\-.]{1,64})(?:/_history/[^/]+)?$")


def _system(ctx: MappingContext, collection: str) -> str:
    return business_identifier(ctx.base_uri, collection, "")["system"]


def record_reference(ctx: MappingContext, resource_type: str, collection: str, clinic_id: str,
                     display: str | None = None) -> dict[str, Any]:
    """A reference to the resource of another clinic record (with its business identifier)."""
    return reference(ctx.base_uri, resource_type, collection, clinic_id, display)


def own_id(identifiers: Iterable[Mapping[str, Any]] | None, ctx: MappingContext, collection: str) -> str | None:
    """The clinic id in our business identifier of ``collection``, if the list has one."""
    system = _system(ctx, collection)
    return next((i["value"] for i in identifiers or () if i.get("system") == system and i.get("value")), None)


def other_identifiers(identifiers: Iterable[Mapping[str, Any]] | None, ours: set[str]) -> list[dict[str, str]]:
    """Identifiers whose system is not one of ``ours`` (an EHR's), as clinic ``{system, value}``;
    ones without a system are dropped (the clinic API requires it), each system|value once."""
    out: list[dict[str, str]] = []
    for i in identifiers or ():
        item = {"system": i.get("system"), "value": i.get("value")}
        if item["system"] and item["value"] and item["system"] not in ours and item not in out:
            out.append(item)
    return out


def _lookup_by_fhir_id(ctx: MappingContext, resource_type: str, collection: str, literal: str) -> str | None:
    try:
        record = ctx.lookup(resource_type, literal)
    except KeyError:  # a context that knows clinic collections only: it cannot resolve FHIR ids
        return None
    if not record or not record.get("id"):
        return None
    # trust the context's answer only if that record really maps to this id
    return record["id"] if fhir_id(ctx.base_uri, resource_type, collection, record["id"]) == literal else None


def resolve_reference(ref: Mapping[str, Any] | None, ctx: MappingContext, resource_type: str,
                      collection: str) -> str | None:
    """The clinic id of the record a Reference points at, or None when it is not one of ours."""
    if not ref:
        return None
    ident = ref.get("identifier") or {}
    if ident.get("system") == _system(ctx, collection) and ident.get("value"):
        return str(ident["value"])
    match = _LITERAL.search(ref.get("reference") or "")
    if match is None or match["type"] != resource_type:
        return None
    return _lookup_by_fhir_id(ctx, resource_type, collection, match["id"])


def required_reference(ref: Mapping[str, Any] | None, ctx: MappingContext, resource_type: str, collection: str,
                       field: str) -> str:
    """Like ``resolve_reference``, but a reference that is missing or not ours is a ValueError."""
    found = resolve_reference(ref, ctx, resource_type, collection)
    if found is None:
        where = (ref or {}).get("reference") or (ref or {}).get("identifier") or "nothing"
        raise ValueError(f"{field}: the reference ({where}) is not to one of our {resource_type} resources "
                         f"(no {_system(ctx, collection)} identifier, and the context cannot resolve it)")
    return found


def person_meta(ctx: MappingContext, status: str, profile: str | None = None) -> dict[str, Any] | None:
    """``meta`` of a Patient/Practitioner/PractitionerRole: its profile and the entered-in-error tag."""
    if status not in PERSON_STATUSES:
        raise ValueError(f"status: {status!r} is not one of {', '.join(PERSON_STATUSES)}")
    meta: dict[str, Any] = {}
    if profile:
        meta["profile"] = [profile]
    if status == "entered-in-error":
        meta["tag"] = [{"system": local_system(ctx.base_uri, "record-status"), "code": RECORD_STATUS_ENTERED_IN_ERROR}]
    return meta or None


def person_status(resource: Mapping[str, Any], ctx: MappingContext) -> str:
    """The clinic status of a Patient/Practitioner/PractitionerRole (absent ``active`` means active)."""
    system = local_system(ctx.base_uri, "record-status")
    tags = (resource.get("meta") or {}).get("tag") or []
    if any(t.get("system") == system and t.get("code") == RECORD_STATUS_ENTERED_IN_ERROR for t in tags):
        return "entered-in-error"
    return "inactive" if resource.get("active") is False else "active"


def first_telecom(resource: Mapping[str, Any], system: str) -> str | None:
    """The value of the first ContactPoint of ``system`` (phone, email) of a person resource."""
    return next((t["value"] for t in resource.get("telecom") or () if t.get("system") == system and t.get("value")),
                None)
