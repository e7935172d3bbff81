"""EHR writes over FHIR: create and update of Patient, Practitioner and ServiceRequest.

An EHR's resource goes through the reverse mapping (mappings/<type>.from_fhir) into a clinic
record and is stored by the same code as a clinic API write, so it is visible in the clinic API
and maps back to FHIR like any other record; the resource served afterwards is that mapping.

Conditional create (``If-None-Exist``) and conditional update (``PUT Type?identifier=...``) match
on identifiers only (as Google's and Azure's FHIR services do), because identifiers are what the
database keeps unique: our business identifier (the clinic id, a primary key), the clinic MRN,
EHR identifiers (unique system|value) and NPIs. Two identical conditional creates racing each
other therefore cannot both insert: the loser hits the constraint, finds the winner's record and
answers it (200), which is what the spec asks of a conditional create that finds a match.
"""

from __future__ import annotations

import hashlib
import json
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl

from flask import Request, Response, request
from pydantic import ValidationError
from sqlalchemy import select, text
from sqlalchemy.exc import IntegrityError, OperationalError
from sqlalchemy.orm import Session

from mappings import patient, practitioner, service_request
from mappings.datatypes import fhir_id
from service import fhir_store, models
from service.audit import note
from service.clinic.collections import COLLECTIONS
from service.clinic.store import put_record
from service.db import is_lock_contention
from service.errors import ServiceError
from service.fhir.http import resource_response
from service.fhir.outcomes import FhirError, operation_outcome
from service.urls import external

__all__ = ["FHIR_CONTENT", "WRITABLE", "WriteOutcome", "create", "create_resource", "shows_resource", "take_write_lock",
           "update", "update_resource", "validate_structure"]

FHIR_CONTENT = {"application/fhir+json", "application/json", "application/json+fhir"}


@dataclass(frozen=True)
class Writable:
    collection: str
    from_fhir: Callable[[dict[str, Any], Any, Any], dict[str, Any]]


def _practitioner(resource: dict[str, Any], ctx: Any, existing: dict[str, Any] | None) -> dict[str, Any]:
    # A Practitioner does not carry its clinic role: keep the stored one; an EHR that sends a
    # practitioner it refers from creates a referring psychiatrist (documented in README).
    role = existing["role"] if existing else "psychiatrist"
    record = practitioner.from_fhir(resource, ctx, role=role)
    if existing and existing.get("organization") and "organization" not in record:
        record["organization"] = existing["organization"]
    return record


#: clinic fields a FHIR Patient does not carry (they feed weight-based dosing): an EHR's update keeps them
PATIENT_CLINIC_ONLY = ("weight_kg", "height_cm", "body_measured_on")


def _patient(resource: dict[str, Any], ctx: Any, existing: dict[str, Any] | None) -> dict[str, Any]:
    record = patient.from_fhir(resource, ctx)
    for key in PATIENT_CLINIC_ONLY:
        if existing and key in existing:
            record[key] = existing[key]
    # our Patients carry no generalPractitioner (it is the PCP, not the referrer: mapping revision 2),
    # so an update without one keeps the stored referring practitioner
    if existing and existing.get("referring_practitioner_id") and "referring_practitioner_id" not in record:
        record["referring_practitioner_id"] = existing["referring_practitioner_id"]
    return record


WRITABLE = {
    "Patient": Writable("patients", _patient),
    "Practitioner": Writable("practitioners", _practitioner),
    "ServiceRequest": Writable("referrals", lambda r, ctx, _existing: service_request.from_fhir(r, ctx)),
}


def _body(req: Request, resource_type: str) -> dict[str, Any]:
    if req.mimetype not in FHIR_CONTENT:
        raise FhirError(415, "not-supported", f"send FHIR JSON (Content-Type application/fhir+json), "
                        f"not {req.mimetype or 'nothing'}")
    try:
        body = json.loads(req.get_data(), parse_constant=_no_constant)
    except (ValueError, RecursionError, UnicodeDecodeError) as exc:
        raise FhirError(400, "invalid", f"the body is not valid JSON: {exc}") from None
    if not isinstance(body, dict) or body.get("resourceType") != resource_type:
        raise FhirError(400, "invalid", f"the body must be a {resource_type} resource",
                        [f"{resource_type}.resourceType"])
    validate_structure(body)
    return body


def _no_constant(name: str) -> None:
    raise ValueError(f"{name} is not JSON")


def validate_structure(body: dict[str, Any]) -> None:
    """Inbound FHIR is checked against the R4 structure (fhir.resources R4B models) at runtime."""
    from fhir.resources.R4B import get_fhir_model_class

    try:
        get_fhir_model_class(body["resourceType"]).model_validate(body)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first.get("loc", ()))
        raise FhirError(400, "structure", f"{body['resourceType']} is not valid R4: {first.get('msg')} at {where}",
                        [f"{body['resourceType']}.{where}"] if where else None) from None
    except (KeyError, TypeError, ValueError) as exc:  # fhir.resources: unknown contained resourceType
        raise FhirError(400, "structure", f"{body['resourceType']} is not valid R4: {exc!r}") from None


def _identifier_criteria(query: str, expression: str) -> tuple[str | None, str]:
    """``identifier=system|value`` (or a bare value): the only criteria conditional writes take."""
    params = parse_qsl(query, keep_blank_values=True)
    if len(params) != 1 or params[0][0] != "identifier" or not params[0][1]:
        raise FhirError(412 if expression == "If-None-Exist" else 400, "not-supported",
                        "conditional create and update match on a single identifier=system|value",
                        [expression])
    system, sep, value = params[0][1].partition("|")
    if sep and not (system and value):
        # "system|" (any value) or "|value" (no system) would match nothing and create a duplicate
        raise FhirError(400, "invalid", "conditional writes need a whole identifier: identifier=system|value "
                        "(or a bare value)", [expression])
    return (system, value) if sep else (None, system)


def _matches(db: Session, resource_type: str, system: str | None, value: str) -> list[str]:
    """Clinic ids of the records of ``resource_type`` that carry the identifier."""
    writable = WRITABLE[resource_type]
    coll = COLLECTIONS[writable.collection]
    base = db.info["base_uri"]
    found: set[str] = set()
    if system in (None, f"{base}/{writable.collection}") and db.get(coll.model, value) is not None:
        found.add(value)
    if resource_type == "Patient":
        if system in (None, f"{base}/mrn"):
            found.update(db.scalars(select(models.Patient.id).where(models.Patient.mrn == value)))
        query = select(models.PatientIdentifier.patient_id).where(models.PatientIdentifier.value == value)
        found.update(db.scalars(query if system is None else query.where(models.PatientIdentifier.system == system)))
    if resource_type == "Practitioner" and system in (None, "http://hl7.org/fhir/sid/us-npi"):
        found.update(db.scalars(select(models.Practitioner.id).where(models.Practitioner.npi == value)))
    if resource_type == "ServiceRequest" and system not in (None, f"{base}/referrals"):
        derived = _derived_id(system, value)
        if db.get(models.Referral, derived) is not None:
            found.add(derived)
    return sorted(found)


def _derived_id(system: str, value: str) -> str:
    """A clinic id derived from an EHR's own identifier: the same referral sent twice is one record."""
    return "ehr-" + hashlib.sha256(f"{system}|{value}".encode()).hexdigest()[:40]


def _new_clinic_id(resource_type: str, resource: dict[str, Any]) -> str:
    if resource_type == "ServiceRequest":
        for ident in resource.get("identifier") or []:
            if ident.get("system") and ident.get("value"):
                return _derived_id(ident["system"], ident["value"])
    return str(uuid.uuid4())


def _store(db: Session, resource_type: str, resource: dict[str, Any], clinic_id: str | None,
           existing: dict[str, Any] | None) -> tuple[str, bool]:
    """Reverse-map and write; returns (clinic id, created)."""
    writable = WRITABLE[resource_type]
    ctx = fhir_store.context(db)
    try:
        record = writable.from_fhir(resource, ctx, existing)
    except ValueError as exc:
        raise FhirError(422, "processing", f"cannot take this {resource_type}: {exc}") from None
    record_id = clinic_id or record.get("id") or _new_clinic_id(resource_type, resource)
    record["id"] = record_id
    try:
        result = put_record(db, COLLECTIONS[writable.collection], record, record_id)
    except ServiceError as exc:
        status = 409 if exc.status == 409 else 422
        detail = "; ".join(f"{path}: {' '.join(msgs)}" for path, msgs in exc.errors.items())
        raise FhirError(status, "conflict" if status == 409 else "processing",
                        f"the {resource_type} does not make a valid clinic record: {detail}") from None
    return record_id, result.outcome == "created"


@dataclass(frozen=True)
class WriteOutcome:
    """What a create or update did: the HTTP status (200 or 201) and the stored resource row."""

    status: int
    stored: models.FhirResource


def _stored(db: Session, resource_type: str, clinic_id: str, status: int) -> WriteOutcome:
    stored = db.get(models.FhirResource, (resource_type, fhir_id(db.info["base_uri"], resource_type,
                                                                    WRITABLE[resource_type].collection, clinic_id)))
    return WriteOutcome(status, stored)


def shows_resource(status: int, may_read: bool) -> bool:
    """Whether a write's answer may carry the stored resource (security review, finding 1).

    A created resource is the mapping of what the client sent; a matched or updated one is a
    stored record (a conditional create's match may be another patient's), so it is shown only to
    a token that may read the type.
    """
    return status == 201 or may_read


def _answer(outcome: WriteOutcome, resource_type: str, may_read: bool) -> Response:
    """The HTTP answer of a write: 201 with Location, ETag, Last-Modified; ``Prefer: return=``.

    Without the read permission a 200 answers no body (as ``return=minimal``) and no Location.
    """
    stored, status = outcome.stored, outcome.status
    note([(resource_type, stored.id)])  # the audit trail: the resource written (or matched)
    location = external(f"/fhir/{resource_type}/{stored.id}/_history/{stored.version_id}")
    headers = {"Location": location} if status == 201 else {}
    prefer = request.headers.get("Prefer", "")
    if "return=minimal" in prefer or not shows_resource(status, may_read):
        response = resource_response("", stored.version_id, stored.last_updated, status, headers)
        response.set_data(b"")
        return response
    if "return=OperationOutcome" in prefer:
        outcome_body = operation_outcome("information", "informational", f"{resource_type}/{stored.id} stored")
        return resource_response(json.dumps(outcome_body), stored.version_id, stored.last_updated, status, headers)
    return resource_response(stored.content, stored.version_id, stored.last_updated, status, headers)


def _commit(db: Session) -> None:
    db.commit()


def create_resource(db: Session, resource_type: str, resource: dict[str, Any], if_none_exist: str | None = None,
                    *, standalone: bool = True) -> WriteOutcome:
    """create, or with ``if_none_exist`` (``identifier=system|value``) a conditional create
    (R4 http.html#create, http.html#ccreate): 201 for a new resource, 200 for the one match.

    ``standalone``: the write is its own database transaction, committed here (the HTTP
    interaction). Inside a Bundle (``standalone=False``) nothing is committed or rolled back:
    the caller owns the transaction (R4 http.html#transaction), and on SQLite has already taken
    the write lock.

    :raise FhirError: 400/412 for bad criteria, 412 for several matches, 409/422 for a resource
        that does not make a valid clinic record
    """
    criteria = _identifier_criteria(if_none_exist, "If-None-Exist") if if_none_exist else None
    _lock(db, resource_type, criteria, standalone)
    if criteria is not None:
        found = _matches(db, resource_type, *criteria)
        if len(found) > 1:
            raise FhirError(412, "multiple-matches", f"If-None-Exist matches {len(found)} {resource_type} resources")
        if found:
            return _stored(db, resource_type, found[0], 200)
    if not standalone:
        clinic_id, _ = _store(db, resource_type, resource, None, None)
        return _stored(db, resource_type, clinic_id, 201)
    try:
        clinic_id, _ = _store(db, resource_type, resource, None, None)
        _commit(db)
    except (FhirError, IntegrityError, OperationalError) as exc:
        db.rollback()
        if is_lock_contention(exc):
            raise  # busy, not a conflict: the error handlers answer 503 with Retry-After
        # a concurrent identical conditional create won the race: answer its resource
        found = _matches(db, resource_type, *criteria) if criteria is not None else []
        if len(found) == 1:
            return _stored(db, resource_type, found[0], 200)
        if isinstance(exc, FhirError):
            raise
        raise FhirError(409, "conflict", f"a concurrent write conflicted with this {resource_type}") from None
    return _stored(db, resource_type, clinic_id, 201)


def update_resource(db: Session, resource_type: str, resource: dict[str, Any], resource_id: str | None,
                    criteria_query: str | None = None, if_match: str | None = None,
                    *, standalone: bool = True) -> WriteOutcome:
    """update by id (with ``if_match``, http.html#concurrency) or, with ``resource_id`` None, a
    conditional update on ``criteria_query`` (``identifier=system|value``, http.html#cond-update):
    200 for an update, 201 when a conditional update creates. ``standalone`` as in
    :func:`create_resource`.

    :raise FhirError: 400, 405 (update-as-create), 410, 412, 409/422
    """
    writable = WRITABLE[resource_type]
    if resource_id is None:
        criteria = _identifier_criteria(criteria_query or "", "identifier")
        _lock(db, resource_type, criteria, standalone)
        found = _matches(db, resource_type, *criteria)
        if len(found) > 1:
            raise FhirError(412, "multiple-matches", f"the criteria match {len(found)} {resource_type} resources")
        if not found:
            clinic_id, _ = _store(db, resource_type, resource, None, None)
            if standalone:
                _commit(db)
            return _stored(db, resource_type, clinic_id, 201)
        clinic_id = found[0]
    else:
        if resource.get("id") not in (None, resource_id):
            raise FhirError(400, "invalid", "the resource id does not match the URL", [f"{resource_type}.id"])
        stored = db.get(models.FhirResource, (resource_type, resource_id))
        if stored is None:
            raise FhirError(405, "not-supported", f"{resource_type}/{resource_id} does not exist and this server "
                            "assigns ids: POST to create (update-as-create is not supported)")
        if stored.deleted:
            raise FhirError(410, "deleted", f"{resource_type}/{resource_id} was deleted")
        _check_if_match(stored, if_match)
        clinic_id = stored.source_id
    existing = db.get(COLLECTIONS[writable.collection].model, clinic_id)
    _store(db, resource_type, resource, clinic_id, existing.record if existing else None)
    if standalone:
        _commit(db)
    return _stored(db, resource_type, clinic_id, 200)


def create(db: Session, resource_type: str, may_read: bool) -> Response:
    """POST /fhir/<type>: create, or with If-None-Exist a conditional create (R4 http.html#ccreate).

    :param may_read: the token may read ``resource_type`` (else a match answers no body)
    """
    resource = _body(request, resource_type)
    outcome = create_resource(db, resource_type, resource, request.headers.get("If-None-Exist"))
    return _answer(outcome, resource_type, may_read)


def update(db: Session, resource_type: str, resource_id: str | None, may_read: bool) -> Response:
    """PUT /fhir/<type>/<id> (with If-Match) or PUT /fhir/<type>?identifier=... (conditional update)."""
    resource = _body(request, resource_type)
    query = request.query_string.decode() if resource_id is None else None
    outcome = update_resource(db, resource_type, resource, resource_id, query, request.headers.get("If-Match"))
    return _answer(outcome, resource_type, may_read)


def _check_if_match(stored: models.FhirResource, wanted: str | None) -> None:
    if wanted and wanted.strip() not in (f'W/"{stored.version_id}"', f'"{stored.version_id}"'):
        raise FhirError(412, "conflict", f"If-Match {wanted} is not the current version W/\"{stored.version_id}\"",
                        headers={"ETag": f'W/"{stored.version_id}"'})


def _lock(db: Session, resource_type: str, criteria: tuple[str | None, str] | None, standalone: bool = True) -> None:
    """Serialise racing conditional writes, so the second waits for the first and then finds it.

    PostgreSQL: a transaction-scoped advisory lock on the identifier. SQLite: take the database's
    write lock before searching (a reader that upgrades to a writer after another commit fails at
    once instead of waiting), by starting afresh with a write statement; a Bundle takes it once,
    before its first entry (:func:`take_write_lock`), so entries of a Bundle skip it.
    """
    if criteria is None:
        return
    if db.get_bind().dialect.name == "sqlite":
        if not standalone:
            return
        db.rollback()  # nothing written yet; drop the read snapshot the auth check took
        db.execute(text("UPDATE fhir_resources SET version_id = version_id WHERE 0 = 1"))
        return
    key = int.from_bytes(hashlib.sha256(f"{resource_type}|{criteria[0]}|{criteria[1]}".encode()).digest()[:8],
                         "big", signed=True)
    db.execute(select(_advisory_lock(key)))


def take_write_lock(db: Session) -> None:
    """SQLite: start a fresh transaction holding the write lock (see :func:`_lock`); no-op elsewhere."""
    if db.get_bind().dialect.name == "sqlite":
        db.rollback()
        db.execute(text("UPDATE fhir_resources SET version_id = version_id WHERE 0 = 1"))


def _advisory_lock(key: int) -> Any:
    from sqlalchemy import func

    return func.pg_advisory_xact_lock(key)
