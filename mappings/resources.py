"""Which FHIR resources each clinic record becomes: the one dispatcher over the resource modules."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from mappings import (
    adverse_event,
    care_plan,
    condition,
    encounter,
    medication_administration,
    observation,
    organization,
    patient,
    practitioner,
    practitioner_role,
    procedure,
    service_request,
    vital_signs,
)
from mappings.context import MappingContext

__all__ = ["MAPPED_TYPES", "clinic_organization", "resources_for"]

Record = Mapping[str, Any]
Mapper = Callable[[Record, MappingContext], dict[str, Any] | list[dict[str, Any]]]

#: collection -> the mappers of its records, in output order
_MAPPERS: dict[str, tuple[Mapper, ...]] = {
    "practitioners": (practitioner.to_fhir, practitioner_role.to_fhir),
    "patients": (patient.to_fhir,),
    "referrals": (service_request.to_fhir, condition.to_fhir),
    "courses": (care_plan.to_fhir,),
    "sessions": (encounter.to_fhir, procedure.to_fhir, adverse_event.to_fhir),
    "administrations": (medication_administration.to_fhir,),
    "observations": (observation.to_fhir,),
    "vitals": (vital_signs.to_fhir,),
}

#: every resource type the service emits
MAPPED_TYPES = (
    "Organization", "Practitioner", "PractitionerRole", "Patient", "ServiceRequest", "Condition", "CarePlan",
    "Encounter", "Procedure", "AdverseEvent", "MedicationAdministration", "Observation", "Provenance",
)


def resources_for(collection: str, record: Record, ctx: MappingContext) -> list[dict[str, Any]]:
    """All FHIR resources one clinic record maps to (deterministic order)."""
    out: list[dict[str, Any]] = []
    for mapper in _MAPPERS[collection]:
        produced = mapper(record, ctx)
        out.extend(produced if isinstance(produced, list) else [produced])
    return out


def clinic_organization(ctx: MappingContext) -> dict[str, Any]:
    """The clinic's own Organization, which every write's Provenance names."""
    return organization.to_fhir(ctx)
