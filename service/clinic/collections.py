"""The collections of the clinic API: schema, table, references and index columns of each."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import date, datetime
from functools import cache
from typing import Any

from marshmallow import Schema

from mappings.checks import is_safety_signal
from service import models
from service.clinic import schemas

__all__ = ["COLLECTIONS", "Collection", "Ref"]


@dataclass(frozen=True)
class Ref:
    """A field that names another record. ``same_patient``: it must be the same patient's record."""

    field: str
    target: str  # collection name
    same_patient: bool = False


@dataclass(frozen=True)
class Collection:
    name: str
    label: str  # singular, for messages
    schema: type[Schema]
    model: type[models.ClinicRecord]
    columns: Callable[[dict[str, Any]], dict[str, Any]]
    refs: tuple[Ref, ...] = ()
    parent: str | None = None  # records nested under /<parent>/<id>/<name>
    has_patient: bool = True  # records carry a patient_id (patients themselves do not)

    def load_schema(self) -> Schema:
        """A shared instance of the schema (marshmallow schemas are reusable)."""
        return _instance(self.schema)


@cache
def _instance(schema: type[Schema]) -> Schema:
    return schema()


def _d(value: str) -> date:
    return date.fromisoformat(value)


def _t(value: str) -> datetime:
    return datetime.fromisoformat(value)


COLLECTIONS: dict[str, Collection] = {
    c.name: c
    for c in (
        Collection("practitioners", "practitioner", schemas.PractitionerSchema, models.Practitioner,
                   lambda r: {"role": r["role"], "npi": r.get("npi")}, has_patient=False),
        Collection("patients", "patient", schemas.PatientSchema, models.Patient,
                   lambda r: {"mrn": r["mrn"], "birth_date": _d(r["birth_date"]),
                              "referring_practitioner_id": r.get("referring_practitioner_id")},
                   refs=(Ref("referring_practitioner_id", "practitioners"),), has_patient=False),
        Collection("referrals", "referral", schemas.ReferralSchema, models.Referral,
                   lambda r: {"patient_id": r["patient_id"], "referrer_id": r["referrer_id"],
                              "referred_on": _d(r["referred_on"])},
                   refs=(Ref("patient_id", "patients"), Ref("referrer_id", "practitioners"))),
        Collection("courses", "course", schemas.CourseSchema, models.Course,
                   lambda r: {"patient_id": r["patient_id"], "referral_id": r.get("referral_id"),
                              "start_date": _d(r["start_date"])},
                   refs=(Ref("patient_id", "patients"), Ref("referral_id", "referrals", same_patient=True))),
        Collection("sessions", "session", schemas.SessionSchema, models.InfusionSession,
                   lambda r: {"patient_id": r["patient_id"], "course_id": r.get("course_id"),
                              "number": r.get("number"), "start": _t(r["start"])},
                   refs=(Ref("patient_id", "patients"), Ref("course_id", "courses", same_patient=True),
                         Ref("performers.practitioner_id", "practitioners"))),
        Collection("administrations", "administration", schemas.AdministrationSchema, models.Administration,
                   lambda r: {"session_id": r["session_id"], "performer_id": r.get("performer_id"),
                              "drug": r["drug"], "start": _t(r["start"])},
                   refs=(Ref("session_id", "sessions"), Ref("performer_id", "practitioners")),
                   parent="sessions"),
        Collection("observations", "outcome score", schemas.ObservationSchema, models.Observation,
                   lambda r: {"patient_id": r["patient_id"], "session_id": r.get("session_id"),
                              "instrument": r["instrument"], "effective": _t(r["effective"]),
                              "safety_signal": is_safety_signal(r)},
                   refs=(Ref("patient_id", "patients"), Ref("session_id", "sessions", same_patient=True),
                         Ref("rater_id", "practitioners"))),
        Collection("vitals", "vital-signs set", schemas.VitalsSchema, models.Vitals,
                   lambda r: {"session_id": r["session_id"], "effective": _t(r["effective"])},
                   refs=(Ref("session_id", "sessions"),), parent="sessions"),
    )
}
