"""marshmallow schemas of the clinic API contract (shared/design/clinic-api.md).

Loading a body validates it (unknown fields rejected, strict JSON types) and checks the rules one
record can check alone; rules that need other records live in ``service.clinic.store``.
"""

from __future__ import annotations

from datetime import UTC, date, datetime
from typing import Any

from marshmallow import RAISE, Schema, ValidationError, fields, validate, validates, validates_schema

from mappings.clinical import (
    DOSE_CONSISTENCY_TOLERANCE_MG,
    DOSE_CONSISTENCY_TOLERANCE_PCT,
    ESKETAMINE_DEVICE_MG,
    INSTRUMENTS,
    SELF_REPORT,
)
from service.clinic.fields import (
    WHITE_SPACE,
    AwareDateTime,
    FullMatch,
    Icd10Code,
    Id,
    StrictBool,
    StrictFloat,
    StrictInt,
    Text,
    luhn_npi_valid,
)

__all__ = [
    "AdministrationSchema",
    "CourseSchema",
    "ObservationSchema",
    "PatientSchema",
    "PractitionerSchema",
    "ReferralSchema",
    "SessionSchema",
    "VitalsSchema",
]

OneOf = validate.OneOf
Range = validate.Range


def _range(lo: float, hi: float, *, min_inclusive: bool = True) -> validate.Range:
    return Range(min=lo, max=hi, min_inclusive=min_inclusive)


def _email() -> fields.Email:
    return fields.Email(validate=validate.Length(max=254))


def _phone() -> fields.String:
    return fields.String(validate=FullMatch(r"^\+?[0-9 ()./-]{3,32}$", error="Not a phone number."))


_NOT_URI = WHITE_SPACE + r"\x00-\x1f\x7f"


def _uri() -> fields.String:
    return fields.String(validate=[validate.Length(max=255),
                                  # no white space and no control character (they are not storable)
                                  FullMatch(rf"^(https?://[^{_NOT_URI}/]+[^{_NOT_URI}]*"
                                            rf"|urn:[a-z0-9][a-z0-9-]*:[^{_NOT_URI}]+)$",
                                            error="Must be an absolute URI (http(s)://... or urn:...).")])


class StrictSchema(Schema):
    """Unknown fields are errors at every level (the contract: never silently dropped)."""

    class Meta:
        unknown = RAISE


class RecordSchema(StrictSchema):
    """Fields every record has."""

    id = Id()
    # read-only bookkeeping the API adds to responses
    meta = fields.Dict(dump_only=True)


class HumanNameSchema(StrictSchema):
    family = Text(100, required=True)
    given = fields.List(Text(100), validate=validate.Length(max=5))
    prefix = fields.List(Text(20), validate=validate.Length(max=3))
    suffix = fields.List(Text(20), validate=validate.Length(max=3))


class IdentifierSchema(StrictSchema):
    system = _uri()
    value = Text(255, required=True)


NPI_ERROR = "Not a valid NPI: 10 digits with a Luhn check digit."
PRACTITIONER_ROLES = ("psychiatrist", "anesthesiologist", "physician", "nurse", "psychotherapist")
PERSON_STATUSES = ("active", "inactive", "entered-in-error")


class PractitionerSchema(RecordSchema):
    name = fields.Nested(HumanNameSchema, required=True)
    role = fields.String(required=True, validate=OneOf(PRACTITIONER_ROLES))
    # the pattern documents the digits (and checks them first); the Luhn check digit is checked below
    npi = fields.String(validate=FullMatch(r"^[0-9]{10}$", error=NPI_ERROR))
    organization = Text(200)
    phone = _phone()
    email = _email()
    status = fields.String(validate=OneOf(PERSON_STATUSES), load_default="active")

    @validates("npi")
    def _npi(self, value: str, **_: Any) -> None:
        if not luhn_npi_valid(value):
            raise ValidationError(NPI_ERROR)


class PatientSchema(RecordSchema):
    mrn = Text(64, required=True)
    name = fields.Nested(HumanNameSchema, required=True)
    # the pattern documents the 1900-or-later rule for the OpenAPI document (the validator checks it)
    birth_date = fields.Date(required=True, metadata={"pattern": r"^(19|[2-9][0-9])[0-9]{2}-"})
    sex = fields.String(required=True, validate=OneOf(("female", "male", "other", "unknown")))
    phone = _phone()
    email = _email()
    weight_kg = StrictFloat(validate=_range(0, 500, min_inclusive=False))
    height_cm = StrictFloat(validate=_range(0, 300, min_inclusive=False))
    #: the day weight_kg and height_cm were measured: their vital-signs Observations need it (revision 2)
    body_measured_on = fields.Date()
    referring_practitioner_id = Id()
    identifiers = fields.List(fields.Nested(IdentifierSchema), validate=validate.Length(max=20))
    status = fields.String(validate=OneOf(PERSON_STATUSES), load_default="active")

    @validates("birth_date")
    def _birth_date(self, value: date, **_: Any) -> None:
        if value > datetime.now(UTC).date():
            raise ValidationError("Must not be in the future.")
        if value.year < 1900:
            raise ValidationError("Must be 1900-01-01 or later.")

    @validates("body_measured_on")
    def _body_measured_on(self, value: date, **_: Any) -> None:
        if value > datetime.now(UTC).date():
            raise ValidationError("Must not be in the future.")

    @validates_schema
    def _identifiers(self, data: dict, **_: Any) -> None:
        check_identifiers(data)


def check_identifiers(data: dict) -> None:
    """A record's EHR identifiers: each with its system, each system|value once. (Run as a schema
    validator, so it only sees identifiers whose fields all loaded.)"""
    value = data.get("identifiers") or []
    keys = [(i.get("system"), i["value"]) for i in value]
    if len(keys) != len(set(keys)):
        raise ValidationError("Each system|value may appear once.", "identifiers")
    if any(i.get("system") is None for i in value):
        raise ValidationError("Each identifier needs its system (an absolute URI).", "identifiers")


class ReferralSchema(RecordSchema):
    patient_id = Id(required=True)
    referrer_id = Id(required=True)
    referred_on = fields.Date(required=True)
    diagnoses = fields.List(Icd10Code(), required=True, validate=validate.Length(min=1, max=12))
    reason = Text(1000)
    notes = Text(10000)
    #: the referring EHR's own identifiers of the referral (system + value)
    identifiers = fields.List(fields.Nested(IdentifierSchema), validate=validate.Length(max=20))
    status = fields.String(load_default="active", validate=OneOf(
        ("draft", "active", "on-hold", "revoked", "completed", "entered-in-error")))

    @validates("diagnoses")
    def _unique(self, value: list[str], **_: Any) -> None:
        if len(value) != len(set(value)):
            raise ValidationError("Each diagnosis may appear once.")

    @validates_schema
    def _identifiers(self, data: dict, **_: Any) -> None:
        check_identifiers(data)


class CourseSchema(RecordSchema):
    patient_id = Id(required=True)
    kind = fields.String(required=True, validate=OneOf(("induction", "maintenance")))
    route = fields.String(required=True, validate=OneOf(("iv", "im", "intranasal")))
    planned_sessions = StrictInt(required=True, validate=_range(1, 100))
    start_date = fields.Date(required=True)
    end_date = fields.Date()
    referral_id = Id()
    indication = Icd10Code()
    target_dose_mg_per_kg = StrictFloat(validate=_range(0, 5, min_inclusive=False))
    sessions_per_week = StrictFloat(validate=_range(0, 7, min_inclusive=False))
    status = fields.String(load_default="active", validate=OneOf(
        ("draft", "active", "on-hold", "completed", "stopped", "entered-in-error")))

    @validates_schema
    def _dates(self, data: dict, **_: Any) -> None:
        if data.get("end_date") and data["end_date"] < data["start_date"]:
            raise ValidationError("Must not be before start_date.", "end_date")


class PerformerSchema(StrictSchema):
    practitioner_id = Id(required=True)
    function = fields.String(required=True, validate=OneOf(
        ("prescriber", "administering", "monitoring", "psychotherapist", "supervising")))


#: R4 AdverseEvent.outcome (required binding, reference section 12.7)
ADVERSE_EVENT_OUTCOMES = ("resolved", "recovering", "ongoing", "resolvedWithSequelae", "fatal", "unknown")


class AdverseEventSchema(StrictSchema):
    text = Text(1000, required=True)
    severity = fields.String(required=True, validate=OneOf(("mild", "moderate", "severe")))
    code = fields.String(validate=FullMatch(r"^[1-9][0-9]{5,17}$", error="Not a SNOMED CT concept id."))
    onset = AwareDateTime()  # when it happened (mapping revision 2); not before the session's start
    serious = StrictBool()  # the clinician's seriousness judgement, where made (not the severity)
    outcome = fields.String(validate=OneOf(ADVERSE_EVENT_OUTCOMES))
    recorded = AwareDateTime()  # when the clinic recorded it (AdverseEvent.recordedDate); not before onset


SESSION_STATUSES = ("planned", "in-progress", "completed", "stopped-early", "cancelled", "entered-in-error")


class SessionSchema(RecordSchema):
    patient_id = Id(required=True)
    start = AwareDateTime(required=True)
    status = fields.String(required=True, validate=OneOf(SESSION_STATUSES))
    course_id = Id()
    number = StrictInt(validate=_range(1, 1000))
    kind = fields.String(validate=OneOf(("induction", "booster", "maintenance")))
    end = AwareDateTime()
    location = Text(200)
    performers = fields.List(fields.Nested(PerformerSchema), validate=validate.Length(max=20))
    psychotherapy = StrictBool()
    #: minutes of psychotherapy with the patient (mapping revision 2: its CPT code, reference 12.4)
    psychotherapy_minutes = StrictInt(validate=_range(1, 600), metadata={"description": (
        "Minutes of psychotherapy with the patient in this session; only with psychotherapy: true, and not "
        "longer than the session. Codes its FHIR Procedure: CPT 90832 (16-37 min), 90834 (38-52), 90837 (53+); "
        "none under 16 minutes.")})
    adverse_events = fields.List(fields.Nested(AdverseEventSchema), validate=validate.Length(max=50))
    stop_reason = Text(1000)
    notes = Text(10000)

    @validates_schema
    def _times(self, data: dict, **_: Any) -> None:
        if data.get("end") and data["end"] < data["start"]:
            raise ValidationError("Must not be before start.", "end")
        for n, event in enumerate(data.get("adverse_events") or ()):
            if event.get("onset") and event["onset"] < data["start"]:
                raise ValidationError({"adverse_events": {n: {"onset": ["Must not be before start."]}}})
            if event.get("recorded") and event["recorded"] < (event.get("onset") or data["start"]):
                raise ValidationError({"adverse_events": {n: {"recorded": ["Must not be before onset or start."]}}})
        keys = [(p["practitioner_id"], p["function"]) for p in data.get("performers", [])]
        if len(keys) != len(set(keys)):
            raise ValidationError("Each practitioner_id and function pair may appear once.", "performers")
        self._psychotherapy_minutes(data)

    @staticmethod
    def _psychotherapy_minutes(data: dict) -> None:
        minutes = data.get("psychotherapy_minutes")
        if minutes is None:
            return
        if data.get("psychotherapy") is not True:
            raise ValidationError("Only with psychotherapy: true.", "psychotherapy_minutes")
        if data.get("end") and minutes * 60 > (data["end"] - data["start"]).total_seconds():
            raise ValidationError("Must not be longer than the session (start to end).", "psychotherapy_minutes")


class AdministrationSchema(RecordSchema):
    session_id = Id()  # from the URL on /sessions/<id>/administrations; required in /import
    drug = fields.String(required=True, validate=OneOf(("ketamine", "esketamine")))
    route = fields.String(required=True, validate=OneOf(
        ("iv", "im", "intranasal", "subcutaneous", "oral", "sublingual")))
    dose_mg = StrictFloat(required=True, validate=_range(0, 1000, min_inclusive=False))
    start = AwareDateTime(required=True)
    status = fields.String(required=True, validate=OneOf(
        ("completed", "not-done", "stopped", "in-progress", "entered-in-error")))
    status_reason = Text(1000)
    dose_mg_per_kg = StrictFloat(validate=_range(0, 20, min_inclusive=False))
    weight_kg = StrictFloat(validate=_range(0, 500, min_inclusive=False))
    rate_mg_per_kg_per_h = StrictFloat(validate=_range(0, 50, min_inclusive=False))
    end = AwareDateTime()
    product = Text(100)
    device_count = StrictInt(validate=_range(1, 10))
    lot_number = Text(64)
    performer_id = Id()

    @validates_schema
    def _consistency(self, data: dict, **_: Any) -> None:
        errors: dict[str, list[str]] = {}
        if data.get("end") and data["end"] < data["start"]:
            errors["end"] = ["Must not be before start."]
        if data["drug"] == "esketamine" and data["route"] != "intranasal":
            errors["route"] = ["Esketamine (Spravato) is given by the intranasal route only."]
        if data.get("device_count") is not None:
            if data["drug"] != "esketamine":
                errors["device_count"] = ["Only for esketamine nasal-spray devices."]
            elif data["device_count"] * ESKETAMINE_DEVICE_MG != data["dose_mg"]:
                errors["dose_mg"] = [f"{data['device_count']} device(s) of {ESKETAMINE_DEVICE_MG} mg make "
                                     f"{data['device_count'] * ESKETAMINE_DEVICE_MG} mg, not {data['dose_mg']:g} mg."]
        per_kg, weight = data.get("dose_mg_per_kg"), data.get("weight_kg")
        if per_kg is not None and weight is not None:
            expected = per_kg * weight
            tolerance = max(DOSE_CONSISTENCY_TOLERANCE_MG, expected * DOSE_CONSISTENCY_TOLERANCE_PCT / 100)
            if abs(data["dose_mg"] - expected) > tolerance:
                errors.setdefault("dose_mg", []).append(
                    f"{data['dose_mg']:g} mg does not match dose_mg_per_kg x weight_kg = {expected:.1f} mg.")
        if errors:
            raise ValidationError(errors)


class ObservationSchema(RecordSchema):
    patient_id = Id(required=True)
    instrument = fields.String(required=True, validate=OneOf(sorted(INSTRUMENTS)))
    score = StrictFloat(required=True)
    effective = AwareDateTime(required=True)
    session_id = Id()
    timing = fields.String(validate=OneOf(("baseline", "pre", "post", "follow-up")))
    items = fields.List(StrictInt(), validate=validate.Length(max=60))
    #: the practitioner who rated a clinician-rated instrument (Observation.performer); a
    #: self-report instrument's performer is the patient, so it has none
    rater_id = Id()
    status = fields.String(load_default="final", validate=OneOf(("final", "amended", "entered-in-error")))

    @validates_schema
    def _score(self, data: dict, **_: Any) -> None:
        inst = INSTRUMENTS.get(data.get("instrument", ""))
        if inst is not None and inst.key in SELF_REPORT and data.get("rater_id"):
            raise ValidationError(f"{inst.name} is a self-report instrument: the patient answers it, so it has no "
                                  "rater.", "rater_id")
        if inst is None or "score" not in data:
            return
        score = data["score"]
        if not inst.min_score <= score <= inst.max_score:
            raise ValidationError(f"{inst.name} scores run from {inst.min_score:g} to {inst.max_score:g}.", "score")
        if inst.integer_score and score != int(score):
            raise ValidationError(f"{inst.name} scores are whole numbers.", "score")
        items = data.get("items")
        if items:
            _check_items(inst, items, score)


def _check_items(inst: Any, items: list[int], score: float) -> None:
    if inst.items is not None and len(items) != inst.items:
        raise ValidationError(f"{inst.name} has {inst.items} items; {len(items)} given.", "items")
    hi = inst.item_max
    bad = [i for i, v in enumerate(items) if v < inst.item_min or (hi is not None and v > hi)]
    if bad:
        raise ValidationError(f"{inst.name} items score {inst.item_min} to {hi}; item(s) {bad} out of range.",
                              "items")
    derived = sum(items) if inst.scoring == "sum" else sum(items) / len(items) if inst.scoring == "mean" else None
    if derived is not None and abs(derived - score) > 0.05:
        raise ValidationError(f"The items give {derived:g}, not {score:g}.", "score")


class VitalsSchema(RecordSchema):
    session_id = Id()  # from the URL on /sessions/<id>/vitals; required in /import
    effective = AwareDateTime(required=True)
    timing = fields.String(validate=OneOf(("pre-dose", "during", "post-dose", "discharge")))
    systolic_mmhg = StrictInt(validate=_range(40, 300))
    diastolic_mmhg = StrictInt(validate=_range(20, 200))
    heart_rate_bpm = StrictInt(validate=_range(20, 250))
    respiratory_rate_bpm = StrictInt(validate=_range(2, 80))
    spo2_pct = StrictInt(validate=_range(50, 100))
    temperature_c = StrictFloat(validate=_range(30, 45))
    weight_kg = StrictFloat(validate=_range(0, 500, min_inclusive=False))
    status = fields.String(load_default="final", validate=OneOf(("final", "amended", "entered-in-error")))

    MEASUREMENTS = ("systolic_mmhg", "diastolic_mmhg", "heart_rate_bpm", "respiratory_rate_bpm", "spo2_pct",
                    "temperature_c", "weight_kg")

    @validates_schema
    def _measurements(self, data: dict, **_: Any) -> None:
        if not any(data.get(m) is not None for m in self.MEASUREMENTS):
            raise ValidationError(f"At least one of {', '.join(self.MEASUREMENTS)} is required.")
        sbp, dbp = data.get("systolic_mmhg"), data.get("diastolic_mmhg")
        if (sbp is None) != (dbp is None):
            raise ValidationError("Blood pressure needs both systolic_mmhg and diastolic_mmhg.",
                                  "systolic_mmhg" if sbp is None else "diastolic_mmhg")
        if sbp is not None and dbp >= sbp:
            raise ValidationError("Must be below systolic_mmhg.", "diastolic_mmhg")
