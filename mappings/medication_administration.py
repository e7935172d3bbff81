"""Clinic administration -> FHIR R4 MedicationAdministration: one ketamine or esketamine dose.

Base spec (US Core has no MedicationAdministration profile). R4 MedicationAdministration has no
lot number, so a dose with ``lot_number`` names its drug through a contained Medication that
carries ``batch.lotNumber`` (lot tracing for recalls and the Spravato REMS form, reference 9.3);
a dose without one uses ``medicationCodeableConcept``.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any

from mappings.clinical import ESKETAMINE_DEVICE_MG
from mappings.context import MappingContext
from mappings.datatypes import business_identifier, codeable, fhir_id, quantity, reference
from mappings.session_codes import course_of, indication_reason, record_notes
from mappings.terminology import (
    ESKETAMINE,
    KETAMINE,
    ROUTE_LABEL,
    ROUTE_TEXT,
    ROUTES,
    SPRAVATO,
    SPRAVATO_KIT_NDC,
    Code,
)

__all__ = ["CONTAINED_MEDICATION_ID", "METHOD_TEXT", "STATUS", "medication_concept", "to_fhir"]

Record = Mapping[str, Any]

#: clinic administration status -> R4 MedicationAdministration status (same codes)
STATUS = {s: s for s in ("completed", "not-done", "stopped", "in-progress", "entered-in-error")}
#: dosage.method is text only: the reference verified no SNOMED method code (section 3)
METHOD_TEXT = {"iv": "IV infusion", "im": "IM injection", "intranasal": "Nasal spray",
               "subcutaneous": "Subcutaneous injection"}
#: local id of the contained Medication (referenced as "#medication")
CONTAINED_MEDICATION_ID = "medication"


def to_fhir(record: Record, ctx: MappingContext) -> dict[str, Any]:
    """Map one clinic administration to its MedicationAdministration."""
    base, aid = ctx.base_uri, record["id"]
    session_id = record.get("session_id")
    contained, medication = _medication(record)
    out: dict[str, Any] = {
        "resourceType": "MedicationAdministration",
        "id": fhir_id(base, "MedicationAdministration", "administrations", aid),
        **contained,
        "identifier": [business_identifier(base, "administrations", aid)],
    }
    if session_id:
        out["partOf"] = [reference(base, "Procedure", "sessions", session_id)]
    out["status"] = STATUS[record["status"]]
    reason = _status_reason(record, ctx)
    if reason:
        out["statusReason"] = [{"text": reason}]
    out.update(medication)
    out["subject"] = reference(base, "Patient", "patients", _patient_id(record, ctx))
    if session_id:
        out["context"] = reference(base, "Encounter", "sessions", session_id)
    out.update(_effective(record))
    if record.get("performer_id"):
        out["performer"] = [{"actor": reference(base, "Practitioner", "practitioners", record["performer_id"])}]
    if session_id:
        out.update(indication_reason(course_of(ctx.lookup("sessions", session_id), ctx), ctx))
    notes = record_notes(record)
    if notes:
        out["note"] = notes
    out["dosage"] = _dosage(record)
    return out


def _status_reason(record: Record, ctx: MappingContext) -> str | None:
    """The dose's own reason, else, for a dose stopped or not given, its session's stop reason
    (an infusion stopped at the hold threshold: the receiver sees why on the dose too)."""
    if record.get("status_reason"):
        return record["status_reason"]
    if record["status"] in ("stopped", "not-done") and record.get("session_id"):
        session = ctx.lookup("sessions", record["session_id"])
        return session.get("stop_reason") if session else None
    return None


def medication_concept(record: Record) -> dict[str, Any]:
    """RxNorm ketamine (6130), or esketamine nasal spray (2201623) plus Spravato (2201625) and the
    Spravato kit NDC for a 2- or 3-device dose (reference sections 0 and 2.2); text names the product."""
    product = record.get("product")
    if record["drug"] == "ketamine":
        codes: list[Code | None] = [KETAMINE]
        text = "Ketamine"
    else:
        spravato = "spravato" in (product or "").lower()
        codes = [ESKETAMINE, SPRAVATO if spravato else None, SPRAVATO_KIT_NDC.get(record.get("device_count") or 0)]
        text = "Esketamine nasal spray"
    return codeable(codes, f"{text} ({product})" if product else text)


def _medication(record: Record) -> tuple[dict[str, Any], dict[str, Any]]:
    """(``contained``, ``medication[x]``): a contained Medication with the lot when there is one."""
    concept = medication_concept(record)
    if not record.get("lot_number"):
        return {}, {"medicationCodeableConcept": concept}
    medication = {"resourceType": "Medication", "id": CONTAINED_MEDICATION_ID, "code": concept,
                  "batch": {"lotNumber": record["lot_number"]}}
    return {"contained": [medication]}, {"medicationReference": {"reference": f"#{CONTAINED_MEDICATION_ID}"}}


def _patient_id(record: Record, ctx: MappingContext) -> str:
    patient_id = record.get("patient_id") or (ctx.session_patient_id(record["session_id"])
                                              if record.get("session_id") else None)
    if not patient_id:
        raise ValueError(f"administration {record['id']!r}: no patient_id and no known session to take it from")
    return patient_id


def _effective(record: Record) -> dict[str, Any]:
    if record.get("end"):
        return {"effectivePeriod": {"start": record["start"], "end": record["end"]}}
    return {"effectiveDateTime": record["start"]}


def _dosage(record: Record) -> dict[str, Any]:
    route = record["route"]
    dosage: dict[str, Any] = {
        "text": dosage_text(record),
        "route": codeable([ROUTES[route]], ROUTE_TEXT[route]),
    }
    if route in METHOD_TEXT:
        dosage["method"] = {"text": METHOD_TEXT[route]}
    dosage["dose"] = quantity(record["dose_mg"], "mg")
    if record.get("rate_mg_per_kg_per_h"):
        dosage["rateQuantity"] = quantity(record["rate_mg_per_kg_per_h"], "mg/kg/h")
    return dosage


def dosage_text(record: Record) -> str:
    """E.g. "0.5 mg/kg (35 mg at 70 kg) IV over 40 min" or "84 mg: 3 devices of 28 mg"."""
    mg, devices = record["dose_mg"], record.get("device_count")
    if devices:
        return f"{mg:g} mg: {devices} device{'s' if devices > 1 else ''} of {ESKETAMINE_DEVICE_MG} mg"
    weight = record.get("weight_kg")
    if record.get("dose_mg_per_kg"):
        text = f"{record['dose_mg_per_kg']:g} mg/kg ({mg:g} mg" + (f" at {weight:g} kg)" if weight else ")")
    else:
        text = f"{mg:g} mg" + (f" (weight {weight:g} kg)" if weight else "")
    label = ROUTE_LABEL[record["route"]]
    text += f" {label if label.isupper() else label.lower()}"
    minutes = _minutes(record["start"], record.get("end"))
    if record["route"] == "iv" and minutes:
        text += f" over {minutes:g} min"
    return text


def _minutes(start: str, end: str | None) -> float | None:
    if not end:
        return None
    return round((datetime.fromisoformat(end) - datetime.fromisoformat(start)).total_seconds() / 60, 1)
