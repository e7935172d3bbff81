"""The item scores of an outcome-score record (``/observations`` with ``items``) to FHIR R4
QuestionnaireResponse: the form as answered (US Core 6.1 QuestionnaireResponse profile).

The QuestionnaireResponse is the source of truth of the form; ``mappings.observation`` derives the
searchable panel, item and total-score Observations from the same record and points them at it
(``derivedFrom``, reference section 10.2). Each item's ``linkId`` is its LOINC item code where the
reference lists one (section 7.1), else the local item code; PHQ/GAD answers are the LOINC answer
codes (``valueCoding``), other instruments' answers the item score (``valueInteger``).

``questionnaire``: neither the reference nor US Core 6.1 gives a canonical for the LOINC forms (US
Core's PHQ-9 example points at its own example Questionnaire), so the canonical is the clinic's
own, ``<base URI>/Questionnaire/<instrument>``. The service serves no Questionnaire resource.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from mappings.clinical import INSTRUMENTS, SELF_REPORT, Instrument
from mappings.context import MappingContext
from mappings.datatypes import business_identifier, fhir_id, reference
from mappings.terminology import INSTRUMENT_ITEM_CODES, PHQ_GAD_ANSWERS, PHQ_GAD_INSTRUMENTS, SYSTEM, Code, local_system

__all__ = ["PROFILE", "STATUS", "answer_code", "item_code", "item_text", "questionnaire_url", "reference_to",
           "to_fhir"]

Record = Mapping[str, Any]

#: US Core (STU 6.1) QuestionnaireResponse: questionnaire, status, subject = Patient, authored
PROFILE = "http://hl7.org/fhir/us/core/StructureDefinition/us-core-questionnaireresponse"

#: clinic score status -> QuestionnaireResponse.status (required binding QuestionnaireResponseStatus)
STATUS = {"final": "completed", "amended": "amended", "entered-in-error": "entered-in-error"}


def to_fhir(record: Record, ctx: MappingContext) -> dict[str, Any]:
    """The QuestionnaireResponse of a score record with items (a ValueError without items)."""
    if not record.get("items"):
        raise ValueError("items: a QuestionnaireResponse needs the item scores")
    inst = INSTRUMENTS[record["instrument"]]
    out: dict[str, Any] = {
        "resourceType": "QuestionnaireResponse",
        "id": fhir_id(ctx.base_uri, "QuestionnaireResponse", "observations", record["id"]),
        "meta": {"profile": [PROFILE]},
        "identifier": business_identifier(ctx.base_uri, "observations", record["id"]),  # 0..1 in R4
        "questionnaire": questionnaire_url(inst, ctx),
        "status": STATUS[record.get("status", "final")],
        "subject": reference(ctx.base_uri, "Patient", "patients", record["patient_id"]),
    }
    if record.get("session_id"):
        out["encounter"] = reference(ctx.base_uri, "Encounter", "sessions", record["session_id"])
    out["authored"] = record["effective"]
    if record.get("rater_id"):  # the clinician who put the questions and recorded the answers
        out["author"] = reference(ctx.base_uri, "Practitioner", "practitioners", record["rater_id"])
    if inst.key in SELF_REPORT:  # the patient answered
        out["source"] = reference(ctx.base_uri, "Patient", "patients", record["patient_id"])
    out["item"] = [_item(inst, n, value, ctx) for n, value in enumerate(record["items"], start=1)]
    return out


def reference_to(record: Record, ctx: MappingContext) -> dict[str, Any]:
    """A reference to the QuestionnaireResponse of ``record`` (its business identifier included)."""
    return reference(ctx.base_uri, "QuestionnaireResponse", "observations", record["id"])


def questionnaire_url(inst: Instrument, ctx: MappingContext) -> str:
    """The clinic-local canonical of the instrument's form."""
    return f"{ctx.base_uri.rstrip('/')}/Questionnaire/{inst.key}"


def item_code(inst: Instrument, n: int, ctx: MappingContext) -> Code:
    """Item ``n`` (from 1): its LOINC item code where section 7.1 lists it, else a local item code."""
    loinc_items = INSTRUMENT_ITEM_CODES.get(inst.key, ())
    if n <= len(loinc_items):
        return Code(SYSTEM["loinc"], loinc_items[n - 1])
    return Code(local_system(ctx.base_uri, "instrument-item"), f"{inst.key}-{n}")


def item_text(inst: Instrument, n: int) -> str:
    return f"{inst.name} item {n}"


def answer_code(inst: Instrument, value: int) -> Code | None:
    """The LOINC answer code of a PHQ/GAD item score (section 7.1); None for other instruments."""
    if inst.key in PHQ_GAD_INSTRUMENTS and 0 <= value < len(PHQ_GAD_ANSWERS):
        return PHQ_GAD_ANSWERS[value]
    return None


def _item(inst: Instrument, n: int, value: int, ctx: MappingContext) -> dict[str, Any]:
    answer = answer_code(inst, int(value))
    return {"linkId": item_code(inst, n, ctx).code, "text": item_text(inst, n),
            "answer": [{"valueCoding": answer.coding()} if answer else {"valueInteger": int(value)}]}
