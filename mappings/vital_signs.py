"""Vital-sign records (``/sessions/<id>/vitals``) to FHIR R4 vital-signs Observations.

One clinic record holds a set of measurements taken at one time; FHIR wants one Observation per
vital sign (R4 observation-vitalsigns), with blood pressure as the 85354-9 panel whose systolic and
diastolic values are components (clinical reference section 8). Codes, UCUM units and texts come
from ``mappings.terminology``; warnings (bp-hold, spo2-low, ...) become notes on the Observation of
the measurement they are about (and Flags: mappings/flag.py).

Measurements the clinic has thresholds for (blood pressure, heart rate, SpO2: reference 0 and 9.5)
carry ``interpretation`` from v3-ObservationInterpretation (reference 12.1: H above a review
threshold, HH above the hold threshold, L below the SpO2 alert, N within) and the thresholds as
``referenceRange``, whose text says they are the clinic's thresholds, not population reference
ranges. Blood pressure: on the component that crossed, and the worst of both on the Observation.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from mappings.checks import DEFAULT as THRESHOLDS
from mappings.context import MappingContext
from mappings.datatypes import business_identifier, codeable, fhir_id, quantity, reference
from mappings.terminology import (
    OBSERVATION_CATEGORY,
    UCUM,
    VITALS,
    VITALS_INTERPRETATION,
    VITALS_TEXT,
    VITALS_UNIT,
    Code,
    local_system,
)

__all__ = ["KINDS", "LIMITS", "STATUS", "TIMING_TEXT", "Limit", "VitalKind", "interpretation_code", "to_fhir"]

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


@dataclass(frozen=True)
class Limit:
    """One clinic threshold of a measurement: beyond it (``above`` or below) the value is ``code``."""

    value: int
    above: bool
    code: str  # v3-ObservationInterpretation: H, HH or L
    rule: str  # what the clinic does beyond it (referenceRange.text)


#: clinic thresholds per measurement (mappings.clinical.Thresholds defaults, reference 0 and 9.5);
#: strict comparisons, as the checks: SBP 180 is H, SBP 181 HH. Most severe last.
LIMITS: dict[str, tuple[Limit, ...]] = {
    "systolic_mmhg": (
        Limit(THRESHOLDS.pre_dose_sbp_review, True, "H", "review before dosing"),
        Limit(THRESHOLDS.hold_sbp, True, "HH", "hold or stop dosing and notify the prescriber")),
    "diastolic_mmhg": (
        Limit(THRESHOLDS.pre_dose_dbp_review, True, "H", "review before dosing"),
        Limit(THRESHOLDS.hold_dbp, True, "HH", "hold or stop dosing and notify the prescriber")),
    "heart_rate_bpm": (Limit(THRESHOLDS.max_heart_rate, True, "H", "tachycardia alert"),),
    "spo2_pct": (Limit(THRESHOLDS.min_spo2, False, "L", "low oxygen saturation alert"),),
}
#: severity order of the interpretation codes, to pick the worst of the BP components
_SEVERITY = ("N", "L", "H", "LL", "HH")
_INTERPRETATION_TEXT = {"N": "Within the clinic's thresholds", "H": "Above the clinic's review threshold",
                        "HH": "Above the clinic's hold threshold", "L": "Below the clinic's alert threshold"}


def interpretation_code(field: str, value: float) -> str | None:
    """H, HH, L or N for a measurement with clinic thresholds; None for one without."""
    if field not in LIMITS:
        return None
    crossed = [lim.code for lim in LIMITS[field] if (value > lim.value if lim.above else value < lim.value)]
    return crossed[-1] if crossed else "N"


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
        "subject": reference(ctx.base_uri, "Patient", "patients", ctx.patient_id_of(record)),
    }
    if record.get("session_id"):
        out["encounter"] = reference(ctx.base_uri, "Encounter", "sessions", record["session_id"])
    out["effectiveDateTime"] = record["effective"]
    if kind.kind == "bp":
        # R4 bp profile: no top-level value; systolic and diastolic are the components
        out.update(_bp_value_and_components(record, notes))
    else:
        out["valueQuantity"] = _measurement(record, kind.fields[0])
        out.update(_interpretation(record, [kind.fields[0]]))
        if notes:
            out["note"] = notes
        out.update(_reference_range(kind.fields[0]))
    return out


def _bp_value_and_components(record: Record, notes: list[dict[str, str]]) -> dict[str, Any]:
    # R4 element order: interpretation, note, (referenceRange), component
    out: dict[str, Any] = _interpretation(record, ["systolic_mmhg", "diastolic_mmhg"])
    if notes:
        out["note"] = notes
    out["component"] = [
        {"code": codeable([VITALS[f]], VITALS_TEXT[f]), "valueQuantity": _measurement(record, f),
         **_interpretation(record, [f]), **_reference_range(f)}
        for f in ("systolic_mmhg", "diastolic_mmhg")
    ]
    return out


def _interpretation(record: Record, fields: list[str]) -> dict[str, Any]:
    """``interpretation``: the worst code of the fields; none for a measurement without thresholds or
    a record entered in error (a retracted reading must not turn up in a search for critical values)."""
    codes = [c for f in fields if (c := interpretation_code(f, record[f])) is not None]
    if not codes or record.get("status") == "entered-in-error":
        return {}
    worst = max(codes, key=_SEVERITY.index)
    return {"interpretation": [codeable([VITALS_INTERPRETATION[worst]], _INTERPRETATION_TEXT[worst])]}


def _reference_range(field: str) -> dict[str, Any]:
    """The clinic's thresholds of a measurement as ``referenceRange`` (high for an upper limit, low for
    a lower one), each text saying it is a clinic threshold and not a reference range (reference 12.1)."""
    ranges = []
    for lim in LIMITS.get(field, ()):
        unit = VITALS_UNIT[field]
        side = "above" if lim.above else "below"
        text = (f"Clinic threshold, not a population reference range: {side} {lim.value} {UCUM[unit]} is "
                f"{VITALS_INTERPRETATION[lim.code].display} ({lim.code}): {lim.rule}")
        ranges.append({"high" if lim.above else "low": quantity(lim.value, unit), "text": text})
    return {"referenceRange": ranges} if ranges else {}


def _measurement(record: Record, field: str) -> dict[str, Any]:
    return quantity(record[field], VITALS_UNIT[field])


def _categories(record: Record, ctx: MappingContext) -> list[dict[str, Any]]:
    """``vital-signs`` (the profiles' VSCat slice), plus the clinic's timing code when given."""
    out = [codeable([OBSERVATION_CATEGORY["vital-signs"]], "Vital signs")]
    timing = record.get("timing")
    if timing:
        out.append(codeable([Code(local_system(ctx.base_uri, "timing"), timing)], TIMING_TEXT[timing]))
    return out


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
