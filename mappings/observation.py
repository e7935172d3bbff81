"""Outcome-score records (``/observations``) to FHIR R4 Observation (category ``survey``).

One record is one instrument's total score, with its item scores as components. Codes follow the
clinical reference section 7: the LOINC total-score code where it has one, else the clinic's own
``instrument`` CodeSystem (section 0: never an invented LOINC code). The severity band of the score
(section 7.2) is the ``interpretation``; safety signals (PHQ-9 item 9, positive C-SSRS) arrive as
the record's ``warnings`` and become ``note`` entries.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from mappings.clinical import INSTRUMENTS, Instrument, band_for
from mappings.context import MappingContext
from mappings.datatypes import business_identifier, codeable, fhir_id, quantity, reference
from mappings.terminology import (
    INSTRUMENT_CODES,
    INSTRUMENT_ITEM_CODES,
    OBSERVATION_CATEGORY,
    SYSTEM,
    Code,
    local_system,
)

__all__ = ["PROFILE", "STATUS", "TIMING_TEXT", "to_fhir", "warning_notes"]

Record = Mapping[str, Any]

#: US Core (STU 6.1+) Observation Screening Assessment. Every mapped score meets its required
#: elements: status, exactly one ``survey`` category, code (binding only preferred, so local
#: instrument codes are allowed), subject = Patient, effectiveDateTime to the second, and a value
#: (us-core-2) in UCUM where it is a Quantity (us-core-3).
PROFILE = "http://hl7.org/fhir/us/core/StructureDefinition/us-core-observation-screening-assessment"

#: clinic status -> Observation.status (required binding: ObservationStatus)
STATUS = {"final": "final", "amended": "amended", "entered-in-error": "entered-in-error"}

#: CodeableConcept.text of the clinic's ``timing`` codes of a score
TIMING_TEXT = {
    "baseline": "Baseline",
    "pre": "Before the session",
    "post": "After the session",
    "follow-up": "Follow-up",
}


def to_fhir(record: Record, ctx: MappingContext) -> dict[str, Any]:
    """Map one outcome-score record to an Observation."""
    inst = INSTRUMENTS[record["instrument"]]
    out: dict[str, Any] = {
        "resourceType": "Observation",
        "id": fhir_id(ctx.base_uri, "Observation", "observations", record["id"]),
        "meta": {"profile": [PROFILE]},
        "identifier": [business_identifier(ctx.base_uri, "observations", record["id"])],
        "status": STATUS[record.get("status", "final")],
        "category": _categories(record, ctx),
        "code": _code(inst, ctx),
        "subject": reference(ctx.base_uri, "Patient", "patients", record["patient_id"]),
    }
    if record.get("session_id"):
        out["encounter"] = reference(ctx.base_uri, "Encounter", "sessions", record["session_id"])
    out["effectiveDateTime"] = record["effective"]
    out.update(_value(inst, record["score"]))
    interpretation = _interpretation(inst, record["score"], ctx)
    if interpretation:
        out["interpretation"] = [interpretation]
    notes = warning_notes(record)
    if notes:
        out["note"] = notes
    if record.get("items"):
        out["component"] = [_item(inst, n, value, ctx) for n, value in enumerate(record["items"], start=1)]
    return out


def warning_notes(record: Record) -> list[dict[str, str]]:
    """The record's clinical-check warnings as Annotation notes (contract: flagged, never dropped)."""
    return [{"text": f"Clinical check {w['code']}: {w['message']}"} for w in record.get("warnings") or []]


def _categories(record: Record, ctx: MappingContext) -> list[dict[str, Any]]:
    """``survey`` (reference section 8.1), plus the clinic's timing code when the record has one."""
    out = [codeable([OBSERVATION_CATEGORY["survey"]], "Survey")]
    timing = record.get("timing")
    if timing:
        out.append(codeable([Code(local_system(ctx.base_uri, "timing"), timing)], TIMING_TEXT[timing]))
    return out


def _code(inst: Instrument, ctx: MappingContext) -> dict[str, Any]:
    """LOINC total-score code (section 7.1), else the local instrument code with the name as display."""
    loinc = INSTRUMENT_CODES.get(inst.key)
    code = loinc or Code(local_system(ctx.base_uri, "instrument"), inst.key, inst.name)
    return codeable([code], inst.name)


def _value(inst: Instrument, score: float) -> dict[str, Any]:
    """valueInteger for whole-number instruments; a UCUM ``{score}`` Quantity for a mean (PEG)."""
    if inst.integer_score:
        return {"valueInteger": int(score)}
    return {"valueQuantity": quantity(score, "{score}")}


def _interpretation(inst: Instrument, score: float, ctx: MappingContext) -> dict[str, Any] | None:
    """The severity band (section 7.2) as a local ``severity-band`` code, where the reference has bands."""
    band = band_for(inst.key, score)
    if band is None:
        return None
    text = f"{band.label} ({inst.name} {band.low:g}-{band.high:g})"
    return codeable([Code(local_system(ctx.base_uri, "severity-band"), band.code)], text)


def _item(inst: Instrument, n: int, value: int, ctx: MappingContext) -> dict[str, Any]:
    """One item score: the LOINC item code where section 7.1 lists it, else a local item code."""
    loinc_items = INSTRUMENT_ITEM_CODES.get(inst.key, ())
    if n <= len(loinc_items):
        code = Code(SYSTEM["loinc"], loinc_items[n - 1])
    else:
        code = Code(local_system(ctx.base_uri, "instrument-item"), f"{inst.key}-{n}")
    return {"code": codeable([code], f"{inst.name} item {n}"), "valueInteger": int(value)}
