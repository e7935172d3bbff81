"""Which FHIR resources each clinic record becomes: the one dispatcher over the resource modules."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from mappings import (
    adverse_event,
    body_measurement,
    care_plan,
    care_team,
    condition,
    encounter,
    flag,
    medication,
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
from mappings.security_labels import label

__all__ = ["MAPPED_TYPES", "clinic_organization", "resources_for"]

Record = Mapping[str, Any]
Mapper = Callable[[Record, MappingContext], dict[str, Any] | list[dict[str, Any]]]

#: collection -> the mappers of its records, in output order
_MAPPERS: dict[str, tuple[Mapper, ...]] = {
    "practitioners": (practitioner.to_fhir, practitioner_role.to_fhir),
    "patients": (patient.to_fhir, body_measurement.patient_measurements),
    "referrals": (service_request.to_fhir, condition.to_fhir),
    # targets first: the indication's Condition (when no referral carries it), the CareTeam, the CarePlan
    "courses": (condition.for_course, care_team.to_fhir, care_plan.to_fhir),
    "sessions": (encounter.to_fhir, procedure.to_fhir, procedure.psychotherapy, adverse_event.to_fhir),
    # the dose's Medication first (a reference's target before its source); shared by every dose
    # of that product and lot, so the service stores it apart (service/fhir_store.py)
    "administrations": (medication.to_fhir, medication_administration.to_fhir, body_measurement.dose_weight),
    "observations": (observation.to_fhir,),
    "vitals": (vital_signs.to_fhir,),
}
#: the clinical-check warnings of every clinical record are also Flags, after its other resources
for _collection in ("referrals", "courses", "sessions", "administrations", "observations", "vitals"):
    _MAPPERS[_collection] += (flag.mapper(_collection),)

#: every resource type the service emits
MAPPED_TYPES = (
    "Organization", "Practitioner", "PractitionerRole", "Patient", "ServiceRequest", "Condition", "CarePlan",
    "CareTeam", "Encounter", "Procedure", "AdverseEvent", "Medication", "MedicationAdministration", "Observation",
    "Provenance", "Flag", "QuestionnaireResponse",
)


def resources_for(collection: str, record: Record, ctx: MappingContext) -> list[dict[str, Any]]:
    """All FHIR resources one clinic record maps to (deterministic order), security-labelled."""
    out: list[dict[str, Any]] = []
    for mapper in _MAPPERS[collection]:
        produced = mapper(record, ctx)
        out.extend(produced if isinstance(produced, list) else [produced])
    return [label(resource, ctx.security) for resource in out]


def clinic_organization(ctx: MappingContext) -> dict[str, Any]:
    """The clinic's own Organization, which every write's Provenance names."""
    return organization.to_fhir(ctx)
