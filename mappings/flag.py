"""Clinical-check warnings of a clinic record -> FHIR R4 Flag, one per warning.

The checks of ``mappings.checks`` (bp-hold, heart-rate-high, spo2-low, dose-review,
dose-out-of-range, rems-monitoring-incomplete, safety-signal, ...) answer each write with
``warnings[]``; the resources of the record keep them as ``note`` text, which a receiver cannot
query. Each warning is also a Flag (mapping revision 2, item 6): ``code`` is the warning's code in
the clinic's ``clinical-check`` CodeSystem with the message as text; ``Flag?patient=<id>`` (R4
Flag has no ``code`` search parameter) lists a patient's flags, ``Flag?encounter=<id>`` a
session's. Base spec: US Core has no Flag profile.

A Flag's id is keyed on the record and the warning code, so re-mapping is stable, and a record
whose warning went away no longer yields the Flag (the service then retires it).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from mappings.context import MappingContext
from mappings.datatypes import business_identifier, codeable, fhir_id, reference
from mappings.organization import clinic_reference
from mappings.terminology import Code, local_system

__all__ = ["STATUS", "TIME_FIELDS", "flag_key", "mapper", "to_fhir"]

Record = Mapping[str, Any]

#: the fields that say when a record happened, by preference: a measurement's time, a dose's or
#: session's start, a referral's or course's date
TIME_FIELDS = ("effective", "start", "referred_on", "start_date")
#: R4 Flag.status (required binding FlagStatus): a record entered in error retracts its flags
STATUS = {"entered-in-error": "entered-in-error"}


def flag_key(record_id: str, code: str) -> str:
    """The clinic key of the Flag of one warning of a record."""
    return f"{record_id}:{code}"


def to_fhir(record: Record, ctx: MappingContext, collection: str) -> list[dict[str, Any]]:
    """One Flag per distinct warning code of ``record`` (a record of ``collection``), in warning order."""
    by_code: dict[str, list[str]] = {}
    for w in record.get("warnings") or []:
        by_code.setdefault(w["code"], []).append(w["message"])
    if not by_code:
        return []
    patient_id = ctx.patient_id_of(record)
    return [_flag(record, collection, code, "; ".join(messages), patient_id, ctx)
            for code, messages in by_code.items()]


def mapper(collection: str) -> Callable[[Record, MappingContext], list[dict[str, Any]]]:
    """``to_fhir`` for the records of one collection (the dispatcher's two-argument form)."""
    def flags(record: Record, ctx: MappingContext) -> list[dict[str, Any]]:
        return to_fhir(record, ctx, collection)
    return flags


def _flag(record: Record, collection: str, code: str, message: str, patient_id: str,
          ctx: MappingContext) -> dict[str, Any]:
    base, key = ctx.base_uri, flag_key(record["id"], code)
    out: dict[str, Any] = {
        "resourceType": "Flag",
        "id": fhir_id(base, "Flag", collection, key),
        "identifier": [business_identifier(base, collection, key)],
        "status": STATUS.get(record.get("status", ""), "active"),
        "code": codeable([Code(local_system(base, "clinical-check"), code)], message),
        "subject": reference(base, "Patient", "patients", patient_id),
    }
    when = next((record[f] for f in TIME_FIELDS if record.get(f)), None)
    if when:
        out["period"] = {"start": str(when)}
    session_id = record["id"] if collection == "sessions" else record.get("session_id")
    if session_id:
        out["encounter"] = reference(base, "Encounter", "sessions", session_id)
    out["author"] = clinic_reference(ctx)  # the clinic's own checks raised it
    return out

