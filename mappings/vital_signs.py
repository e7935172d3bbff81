"""Vital-sign records (``/sessions/<id>/vitals``) to FHIR R4 vital-signs Observations.

One clinic record holds a set of measurements taken at one time; FHIR wants one Observation per
vital sign (R4 observation-vitalsigns), with blood pressure as the 85354-9 panel whose systolic and
diastolic values are components (clinical reference section 8). Codes, UCUM units and texts come
from ``mappings.terminology``; warnings (bp-hold, spo2-low, ...) become notes on the Observation of
the measurement they are about.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from mappings.context import MappingContext
from mappings.datatypes import business_identifier, codeable, fhir_id, quantity, reference
from mappings.terminology import OBSERVATION_CATEGORY, VITALS, VITALS_TEXT, VITALS_UNIT, Code, local_system

__all__ = ["KINDS", "STATUS", "TIMING_TEXT", "VitalKind", "to_fhir"]

Record = Mapping[str, Any]

_FHIR_SD = "http://hl7.org/fhir/StructureDefinition/"
_US_CORE_SD = "http://hl7.org/fhir/us/core/StructureDefinition/"


@dataclass(frozen=True)
class VitalKind:
    """One kind of vital-sign Observation: the clinic fields it carries and what it conforms to."""

    kind: str  # the key suffix: f"{vitals_id}:{kind}"
    fields: tuple[str, ...]  # clinic fields; several only for the BP panel (as components)
    codes: tuple[str, ...]  # keys of terminology.VITALS for Observation.code
    base_profile: str  # R4 core profile derived from vitalsigns
    us_core_profile: str

    @property
    def profiles(self) -> list[str]:
        """The R4 vitalsigns profile, its specific child and the US Core (STU 6.1+) profile."""
        return [f"{_FHIR_SD}vitalsigns", f"{_FHIR_SD}{self.base_profile}", f"{_US_CORE_SD}{self.us_core_profile}"]


#: in output order. SpO2 carries both 2708-6 (R4 oxygensat) and 59408-5 (US Core pulse oximetry).
KINDS = (
    VitalKind("bp", ("systolic_mmhg", "diastolic_mmhg"), ("bp_panel",), "bp", "us-core-blood-pressure"),
    VitalKind("heart-rate", ("heart_rate_bpm",), ("heart_rate_bpm",), "heartrate", "us-core-heart-rate"),
    VitalKind("respiratory-rate", ("respiratory_rate_bpm",), ("respiratory_rate_bpm",), "resprate",
              "us-core-respiratory-rate"),
    VitalKind("spo2", ("spo2_pct",), ("spo2_pct", "spo2_pulse_ox"), "oxygensat", "us-core-pulse-oximetry"),
    VitalKind("temperature", ("temperature_c",), ("temperature_c",), "bodytemp", "us-core-body-temperature"),
    VitalKind("weight", ("weight_kg",), ("weight_kg",), "bodyweight", "us-core-body-weight"),
)

#: clinic status -> Observation.status (required binding: ObservationStatus)
STATUS = {"final": "final", "amended": "amended", "entered-in-error": "entered-in-error"}

#: CodeableConcept.text of the clinic's ``timing`` codes of a vitals set
TIMING_TEXT = {
    "pre-dose": "Before the dose",
    "during": "During dosing",
    "post-dose": "After the dose",
    "discharge": "At discharge",
}


def to_fhir(record: Record, ctx: MappingContext) -> list[dict[str, Any]]:
    """Map one vitals record to one Observation per measurement present (in ``KINDS`` order)."""
    present = [k for k in KINDS if _present(record, k)]
    notes = _notes_by_kind(record, present)
    return [_observation(record, k, notes[k.kind], ctx) for k in present]


def _present(record: Record, kind: VitalKind) -> bool:
    values = [record.get(f) is not None for f in kind.fields]
    if any(values) and not all(values):
        # never a half panel: the BP profiles need both components, and the contract requires both
        raise ValueError(f"vitals {record.get('id')}: {' and '.join(kind.fields)} must be given together")
    return all(values)


def _observation(record: Record, kind: VitalKind, notes: list[dict[str, str]],
                 ctx: MappingContext) -> dict[str, Any]:
    key = f"{record['id']}:{kind.kind}"
    out: dict[str, Any] = {
        "resourceType": "Observation",
        "id": fhir_id(ctx.base_uri, "Observation", "vitals", key),
        "meta": {"profile": kind.profiles},
        "identifier": [business_identifier(ctx.base_uri, "vitals", key)],
        "status": STATUS[record.get("status", "final")],
        "category": _categories(record, ctx),
        "code": codeable([VITALS[c] for c in kind.codes], VITALS_TEXT[kind.codes[0]]),
        "subject": reference(ctx.base_uri, "Patient", "patients", _patient_id(record, ctx)),
    }
    if record.get("session_id"):
        out["encounter"] = reference(ctx.base_uri, "Encounter", "sessions", record["session_id"])
    out["effectiveDateTime"] = record["effective"]
    if kind.kind == "bp":
        # R4 bp profile: no top-level value; systolic and diastolic are the components
        out.update(_bp_value_and_components(record, notes))
    else:
        out["valueQuantity"] = _measurement(record, kind.fields[0])
        if notes:
            out["note"] = notes
    return out


def _bp_value_and_components(record: Record, notes: list[dict[str, str]]) -> dict[str, Any]:
    out: dict[str, Any] = {"note": notes} if notes else {}
    out["component"] = [
        {"code": codeable([VITALS[f]], VITALS_TEXT[f]), "valueQuantity": _measurement(record, f)}
        for f in ("systolic_mmhg", "diastolic_mmhg")
    ]
    return out


def _measurement(record: Record, field: str) -> dict[str, Any]:
    return quantity(record[field], VITALS_UNIT[field])


def _categories(record: Record, ctx: MappingContext) -> list[dict[str, Any]]:
    """``vital-signs`` (the profiles' VSCat slice), plus the clinic's timing code when given."""
    out = [codeable([OBSERVATION_CATEGORY["vital-signs"]], "Vital signs")]
    timing = record.get("timing")
    if timing:
        out.append(codeable([Code(local_system(ctx.base_uri, "timing"), timing)], TIMING_TEXT[timing]))
    return out


def _patient_id(record: Record, ctx: MappingContext) -> str:
    """The record's patient_id (the service adds it), else its session's patient."""
    patient_id = record.get("patient_id") or (
        ctx.session_patient_id(record["session_id"]) if record.get("session_id") else None)
    if not patient_id:
        raise ValueError(f"vitals {record.get('id')}: no patient_id and no session to find it from")
    return patient_id


def _notes_by_kind(record: Record, present: list[VitalKind]) -> dict[str, list[dict[str, str]]]:
    """Each warning on the Observation of the field it names; a warning naming no measurement
    present goes on every Observation of the set, so that none is dropped."""
    notes: dict[str, list[dict[str, str]]] = {k.kind: [] for k in present}
    for w in record.get("warnings") or []:
        note = {"text": f"Clinical check {w['code']}: {w['message']}"}
        targets = [k.kind for k in present if w.get("field") in k.fields] or list(notes)
        for kind in targets:
            notes[kind].append(dict(note))
    return notes
