"""Clinic administration -> FHIR R4 MedicationAdministration: one ketamine or esketamine dose.

Base spec (US Core has no MedicationAdministration profile). Every dose names its drug by
reference to the standalone Medication of its product and lot (mappings/medication.py, mapping
revision 2): R4 MedicationAdministration has no lot number, and a contained Medication could be
neither searched (``MedicationAdministration?code=``) nor shared by the doses of one lot.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any

from mappings.body_measurement import dose_weight_reference
from mappings.clinical import ESKETAMINE_DEVICE_MG
from mappings.context import MappingContext
from mappings.datatypes import business_identifier, codeable, fhir_id, quantity, reference
from mappings.medication import medication_reference
from mappings.session_codes import course_of, indication_reason, record_notes
from mappings.terminology import ROUTE_LABEL, ROUTE_TEXT, ROUTES

__all__ = ["METHOD_TEXT", "STATUS", "to_fhir"]

Record = Mapping[str, Any]

#: clinic administration status -> R4 MedicationAdministration status (same codes)
STATUS = {s: s for s in ("completed", "not-done", "stopped", "in-progress", "entered-in-error")}
#: dosage.method is text only: the reference verified no SNOMED method code (section 3)
METHOD_TEXT = {"iv": "IV infusion", "im": "IM injection", "intranasal": "Nasal spray",
               "subcutaneous": "Subcutaneous injection"}


def to_fhir(record: Record, ctx: MappingContext) -> dict[str, Any]:
    """Map one clinic administration to its MedicationAdministration."""
    base, aid = ctx.base_uri, record["id"]
    session_id = record.get("session_id")
    out: dict[str, Any] = {
        "resourceType": "MedicationAdministration",
        "id": fhir_id(base, "MedicationAdministration", "administrations", aid),
        "identifier": [business_identifier(base, "administrations", aid)],
    }
    if session_id:
        out["partOf"] = [reference(base, "Procedure", "sessions", session_id)]
    out["status"] = STATUS[record["status"]]
    reason = _status_reason(record, ctx)
    if reason:
        out["statusReason"] = [{"text": reason}]
    out["medicationReference"] = medication_reference(record, ctx)
    out["subject"] = reference(base, "Patient", "patients", ctx.patient_id_of(record))
    if session_id:
        out["context"] = reference(base, "Encounter", "sessions", session_id)
    weight = dose_weight_reference(record, ctx)
    if weight:  # the body-weight Observation the mg/kg dose was calculated on (revision 2)
        out["supportingInformation"] = [weight]
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
    elif _weight_based_infusion(record):
        # the mg/kg given over the infusion's minutes: a rate (R4 rate[x], "e.g. 500 ml per 2 hours")
        dosage["rateRatio"] = {"numerator": quantity(record["dose_mg_per_kg"], "mg/kg"),
                               "denominator": quantity(_minutes(record["start"], record["end"]), "min")}
    return dosage


def _weight_based_infusion(record: Record) -> bool:
    """A completed IV infusion dosed in mg/kg over a known time: its mg/kg per minutes is a true rate.
    Not a bolus (IM, nasal: no duration to divide by), nor a stopped infusion (its recorded mg/kg
    need not have run over the recorded minutes)."""
    return (record["route"] == "iv" and record["status"] == "completed" and bool(record.get("dose_mg_per_kg"))
            and bool(_minutes(record["start"], record.get("end"))))


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
