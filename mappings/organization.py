"""The clinic's own Organization: the employer of its staff, the performer of referrals and the
agent of every Provenance. One per clinic, keyed ``("organization", "clinic")``."""

from __future__ import annotations

from typing import Any

from mappings._identity import record_reference
from mappings.context import MappingContext
from mappings.datatypes import business_identifier, fhir_id

__all__ = ["CLINIC_KEY", "PROFILE", "clinic_reference", "to_fhir"]

#: US Core Organization (STU 6.1): needs ``active`` and ``name``, both always present here
PROFILE = "http://hl7.org/fhir/us/core/StructureDefinition/us-core-organization"
COLLECTION, CLINIC_KEY = "organization", "clinic"


def to_fhir(ctx: MappingContext) -> dict[str, Any]:
    """The clinic Organization (its name comes from the service configuration)."""
    return {
        "resourceType": "Organization",
        "id": fhir_id(ctx.base_uri, "Organization", COLLECTION, CLINIC_KEY),
        "meta": {"profile": [PROFILE]},
        "identifier": [business_identifier(ctx.base_uri, COLLECTION, CLINIC_KEY)],
        "active": True,
        "name": ctx.clinic_name,
    }


def clinic_reference(ctx: MappingContext, display: str | None = None) -> dict[str, Any]:
    """A reference to the clinic Organization."""
    return record_reference(ctx, "Organization", COLLECTION, CLINIC_KEY, display)
