"""Body weight and height -> FHIR R4 vital-signs Observations (US Core 6.1 Body Weight / Body Height).

Two sources (mapping revision 2, item 8):

- a patient's ``weight_kg`` and ``height_cm``, measured on ``body_measured_on``: one 29463-7 body
  weight (kg) and one 8302-2 body height (cm) Observation. R4 vitalsigns requires ``effective[x]``,
  and the clinic's Patient record has no other time for them, so without ``body_measured_on`` no
  Observation is made rather than one dated by guess;
- each dose's ``weight_kg`` (the weight its mg/kg was dosed on): a body-weight Observation at the
  dose start in the session's Encounter, which the dose's ``MedicationAdministration
  .supportingInformation`` references (``dose_weight_reference``).

Codes and units: reference section 8 (LOINC 29463-7 kg, 8302-2 cm).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from mappings.context import MappingContext
from mappings.datatypes import business_identifier, codeable, fhir_id, quantity, reference
from mappings.terminology import OBSERVATION_CATEGORY, VITALS, VITALS_TEXT, VITALS_UNIT
from mappings.vital_signs import VitalKind

__all__ = ["HEIGHT", "WEIGHT", "dose_weight", "dose_weight_reference", "patient_measurements"]

Record = Mapping[str, Any]

WEIGHT = VitalKind("body-weight", ("weight_kg",), ("weight_kg",), "bodyweight", "us-core-body-weight")
HEIGHT = VitalKind("body-height", ("height_cm",), ("height_cm",), "bodyheight", "us-core-body-height")


def patient_measurements(record: Record, ctx: MappingContext) -> list[dict[str, Any]]:
    """The body weight and height Observations of a clinic patient (weight first; either may be absent)."""
    measured = record.get("body_measured_on")
    if not measured:
        return []
    status = "entered-in-error" if record.get("status") == "entered-in-error" else "final"
    return [_observation(ctx, "patients", f"{record['id']}:{kind.kind}", kind, record[kind.fields[0]],
                         str(measured), record["id"], None, status)
            for kind in (WEIGHT, HEIGHT) if record.get(kind.fields[0]) is not None]


def dose_weight(record: Record, ctx: MappingContext) -> list[dict[str, Any]]:
    """The body-weight Observation of an administration's ``weight_kg`` (none without one)."""
    if record.get("weight_kg") is None:
        return []
    status = "entered-in-error" if record["status"] == "entered-in-error" else "final"
    return [_observation(ctx, "administrations", _dose_key(record["id"]), WEIGHT, record["weight_kg"],
                         record["start"], ctx.patient_id_of(record), record.get("session_id"), status)]


def dose_weight_reference(record: Record, ctx: MappingContext) -> dict[str, Any] | None:
    """The reference to a dose's body-weight Observation, or None when the dose records no weight."""
    if record.get("weight_kg") is None:
        return None
    return reference(ctx.base_uri, "Observation", "administrations", _dose_key(record["id"]))


def _dose_key(administration_id: str) -> str:
    return f"{administration_id}:{WEIGHT.kind}"


def _observation(ctx: MappingContext, collection: str, key: str, kind: VitalKind, value: float, effective: str,
                 patient_id: str, session_id: str | None, status: str) -> dict[str, Any]:
    base, field = ctx.base_uri, kind.fields[0]
    out: dict[str, Any] = {
        "resourceType": "Observation",
        "id": fhir_id(base, "Observation", collection, key),
        "meta": {"profile": kind.profiles},
        "identifier": [business_identifier(base, collection, key)],
        "status": status,
        "category": [codeable([OBSERVATION_CATEGORY["vital-signs"]], "Vital signs")],
        "code": codeable([VITALS[field]], VITALS_TEXT[field]),
        "subject": reference(base, "Patient", "patients", patient_id),
    }
    if session_id:
        out["encounter"] = reference(base, "Encounter", "sessions", session_id)
    out["effectiveDateTime"] = effective
    out["valueQuantity"] = quantity(value, VITALS_UNIT[field])
    return out

