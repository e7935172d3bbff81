"""Outcome-score records (``/observations``) to FHIR R4 Observations (category ``survey``).

A record is one instrument's total score, optionally with its item scores. Without items it is one
Observation: the total score. With items it follows US Core 6.1 screening assessments (reference
sections 7 and 10.2): the total-score Observation, the form as a QuestionnaireResponse
(``mappings.questionnaire_response``), a panel Observation (the instrument's panel code) whose
``hasMember`` lists one Observation per item and the total, all ``derivedFrom`` the
QuestionnaireResponse. Items are no longer ``component``s of the total: US Core models each
question-answer pair as its own Observation grouped by ``hasMember``, and sending both would
duplicate every answer.

Codes follow the clinical reference section 7: LOINC where it has a code, else the clinic's own
CodeSystems (section 0: never an invented LOINC code). The severity band of the total (section 7.2)
is its ``interpretation``; a safety item (PHQ-9 item 9, C-SSRS items) carries POS or NEG (section
12.1); the record's ``warnings`` (safety signals) become ``note`` entries on the total.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from mappings import questionnaire_response
from mappings.clinical import CLINICIAN_RATED, INSTRUMENTS, SAFETY_ITEMS, SELF_REPORT, Instrument, band_for
from mappings.context import MappingContext
from mappings.datatypes import business_identifier, codeable, fhir_id, quantity, reference
from mappings.questionnaire_response import answer_code, item_code, item_text
from mappings.terminology import (
    INSTRUMENT_CODES,
    INSTRUMENT_PANEL_CODES,
    OBSERVATION_CATEGORY,
    SCREENING_INTERPRETATION,
    Code,
    local_system,
)

__all__ = ["PROFILE", "STATUS", "TIMING_TEXT", "item_key", "panel_key", "performer", "score_observation", "to_fhir",
           "warning_notes"]

Record = Mapping[str, Any]

#: US Core (STU 6.1+) Observation Screening Assessment. Every mapped score meets its required
#: elements: status, exactly one ``survey`` category, code (binding only preferred, so local
#: instrument codes are allowed), subject = Patient, effectiveDateTime to the second, and a value
#: or (a panel) hasMember (us-core-2), in UCUM where it is a Quantity (us-core-3).
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


def to_fhir(record: Record, ctx: MappingContext) -> list[dict[str, Any]]:
    """Map one outcome-score record: the total-score Observation first, then (with items) the
    QuestionnaireResponse, the panel Observation and one Observation per item."""
    total = score_observation(record, ctx)
    if not record.get("items"):
        return [total]
    items = [_item_observation(record, n, value, ctx) for n, value in enumerate(record["items"], start=1)]
    return [total, questionnaire_response.to_fhir(record, ctx), _panel(record, items, ctx), *items]


def score_observation(record: Record, ctx: MappingContext) -> dict[str, Any]:
    """The total-score Observation (id and identifier from the record id, as before revision 2)."""
    inst = INSTRUMENTS[record["instrument"]]
    out = _common(record, record["id"], _code(inst, ctx), ctx)
    out.update(_value(inst, record["score"]))
    interpretation = _interpretation(inst, record["score"], ctx)
    if interpretation:
        out["interpretation"] = [interpretation]
    notes = warning_notes(record)
    if notes:
        out["note"] = notes
    if record.get("items"):
        out["derivedFrom"] = [questionnaire_response.reference_to(record, ctx)]
    return out


def panel_key(record: Record) -> str:
    """The clinic key of a record's panel Observation (``<id>:panel``; clinic ids hold no ``:``)."""
    return f"{record['id']}:panel"


def item_key(record: Record, n: int) -> str:
    """The clinic key of the Observation of item ``n`` (from 1): ``<id>:item-<n>``."""
    return f"{record['id']}:item-{n}"


def performer(record: Record, ctx: MappingContext) -> list[dict[str, Any]]:
    """Who answered: the patient for a self-report instrument; the rater the record names for a
    clinician-rated one or a C-SSRS given by a clinician; else nobody is asserted."""
    key = record["instrument"]
    if key in SELF_REPORT:
        return [reference(ctx.base_uri, "Patient", "patients", record["patient_id"])]
    if record.get("rater_id") and (key in CLINICIAN_RATED or key == "cssrs"):
        return [reference(ctx.base_uri, "Practitioner", "practitioners", record["rater_id"])]
    return []


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


def _common(record: Record, key: str, code: dict[str, Any], ctx: MappingContext) -> dict[str, Any]:
    """What the total, panel and item Observations of a record share, in R4 element order."""
    out: dict[str, Any] = {
        "resourceType": "Observation",
        "id": fhir_id(ctx.base_uri, "Observation", "observations", key),
        "meta": {"profile": [PROFILE]},
        "identifier": [business_identifier(ctx.base_uri, "observations", key)],
        "status": STATUS[record.get("status", "final")],
        "category": _categories(record, ctx),
        "code": code,
        "subject": reference(ctx.base_uri, "Patient", "patients", record["patient_id"]),
    }
    if record.get("session_id"):
        out["encounter"] = reference(ctx.base_uri, "Encounter", "sessions", record["session_id"])
    out["effectiveDateTime"] = record["effective"]
    who = performer(record, ctx)
    if who:
        out["performer"] = who
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


def _panel(record: Record, items: list[dict[str, Any]], ctx: MappingContext) -> dict[str, Any]:
    """The panel: no value of its own (US Core: the panel's value SHOULD be empty); hasMember lists
    the item Observations in instrument order, then the total score."""
    inst = INSTRUMENTS[record["instrument"]]
    panel = INSTRUMENT_PANEL_CODES.get(inst.key) or Code(local_system(ctx.base_uri, "instrument-panel"), inst.key)
    out = _common(record, panel_key(record), codeable([panel], f"{inst.name} panel"), ctx)
    out["hasMember"] = [*(_ref_to(item) for item in items),
                        reference(ctx.base_uri, "Observation", "observations", record["id"])]
    out["derivedFrom"] = [questionnaire_response.reference_to(record, ctx)]
    return out


def _item_observation(record: Record, n: int, value: int, ctx: MappingContext) -> dict[str, Any]:
    """Item ``n``: its code, the answer (LOINC answer code for PHQ/GAD items, so that
    ``value-concept`` finds it; else the item score) and POS/NEG on a safety item."""
    inst = INSTRUMENTS[record["instrument"]]
    out = _common(record, item_key(record, n), codeable([item_code(inst, n, ctx)], item_text(inst, n)), ctx)
    answer = answer_code(inst, int(value))
    if answer:
        out["valueCodeableConcept"] = codeable([answer], answer.display)
    else:
        out["valueInteger"] = int(value)
    if n in SAFETY_ITEMS.get(inst.key, ()):
        flag = SCREENING_INTERPRETATION["POS" if value > 0 else "NEG"]
        out["interpretation"] = [codeable([flag], f"{flag.display} safety item ({item_text(inst, n)})")]
    out["derivedFrom"] = [questionnaire_response.reference_to(record, ctx)]
    return out


def _ref_to(resource: dict[str, Any]) -> dict[str, Any]:
    """A reference to an Observation built here, with its business identifier."""
    return {"reference": f"Observation/{resource['id']}", "identifier": resource["identifier"][0]}
