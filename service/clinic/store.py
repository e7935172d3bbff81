"""Writes and reads of clinic records: validation against other records, idempotent upserts, paging.

Every function takes the SQLAlchemy session and leaves committing to the caller, so a single
write and a line of an import run the same code. Each write runs inside a SAVEPOINT: a rejected
record leaves nothing behind, even halfway through an import.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
import uuid
from dataclasses import dataclass
from datetime import UTC, date, datetime
from typing import Any

from marshmallow import ValidationError
from sqlalchemy import delete, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from mappings import checks
from service import fhir_store, models
from service.clinic.collections import COLLECTIONS, Collection, Ref
from service.clinic.fields import ID_PATTERN
from service.errors import Conflict, NotFound, UnprocessableEntity, flatten_errors

__all__ = ["Page", "WriteResult", "get_record", "list_records", "put_record", "to_response"]

#: response-only keys a client may echo back from a GET; ignored on input
READ_ONLY = ("meta", "warnings", "fhir")


@dataclass
class WriteResult:
    row: models.ClinicRecord
    outcome: str  # "created", "updated" or "unchanged"
    warnings: list[dict[str, str]]
    fhir: dict[str, Any]  # the FHIR resources the record maps to: {"Type": "Type/id" or [...]}


@dataclass
class Page:
    items: list[dict[str, Any]]
    next_cursor: str | None


def _hash(record: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(record, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def to_response(row: models.ClinicRecord) -> dict[str, Any]:
    """The API view of a stored record: the record, its bookkeeping and its warnings."""
    out = dict(row.record)
    out["meta"] = {"version": row.version, "created_at": row.created_at.isoformat(),
                   "updated_at": row.updated_at.isoformat()}
    out["warnings"] = row.warnings or []
    return out


def get_record(db: Session, coll: Collection, record_id: str, parent_id: str | None = None) -> models.ClinicRecord:
    """The stored record, or NotFound (also when it is not under the given parent)."""
    if parent_id is not None:
        _parent_or_404(db, coll, parent_id)
    row = db.get(coll.model, record_id) if re.fullmatch(ID_PATTERN, record_id) else None
    if row is None or (parent_id is not None and row.session_id != parent_id):
        raise NotFound(f"no {coll.label} with id {record_id!r}")
    return row


def _parent_or_404(db: Session, coll: Collection, parent_id: str) -> models.ClinicRecord:
    parent = COLLECTIONS[coll.parent]
    row = db.get(parent.model, parent_id) if re.fullmatch(ID_PATTERN, parent_id) else None
    if row is None:
        raise NotFound(f"no {parent.label} with id {parent_id!r}")
    return row


def load(coll: Collection, body: Any) -> dict[str, Any]:
    """Validate a body against the collection's schema: the canonical JSON record, or 422."""
    if not isinstance(body, dict):
        raise UnprocessableEntity("the body must be a JSON object", {"_request": ["Must be a JSON object."]})
    body = {k: v for k, v in body.items() if k not in READ_ONLY}
    schema = coll.load_schema()
    try:
        data = schema.load(body)
    except ValidationError as exc:
        raise UnprocessableEntity(errors=flatten_errors(exc.messages)) from None
    record = _jsonable(data)
    unstorable = _unstorable_strings(record)
    if unstorable:
        raise UnprocessableEntity(errors={path: ["Must not contain control characters (other than tab and line "
                                                 "breaks) or unpaired surrogates."] for path in unstorable})
    return record


# NUL: PostgreSQL refuses it in text; other C0 controls and DEL: not valid FHIR strings (R4
# datatypes: string); lone surrogates: not UTF-8.
_UNSTORABLE = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\x7f\ud800-\udfff]")


def _unstorable_strings(value: Any, path: str = "") -> list[str]:
    """Paths of strings we cannot store or serve: control characters and unpaired UTF-16
    surrogates, all legal JSON escapes (``\\u0000``, ``\\ud800``)."""
    if isinstance(value, str):
        return [path] if _UNSTORABLE.search(value) else []
    items = value.items() if isinstance(value, dict) else enumerate(value) if isinstance(value, list) else ()
    return [p for key, item in items for p in _unstorable_strings(item, f"{path}.{key}" if path else str(key))]


def _jsonable(value: Any) -> Any:
    """The loaded record as JSON values: times and dates in ISO 8601 (offsets kept)."""
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_jsonable(v) for v in value]
    if isinstance(value, datetime | date):
        return value.isoformat()
    return value


def put_record(
    db: Session,
    coll: Collection,
    body: Any,
    record_id: str | None = None,
    *,
    parent_id: str | None = None,
    create_only: bool = False,
    now: datetime | None = None,
) -> WriteResult:
    """Create or replace one record (idempotent). ``create_only`` is POST: an existing id with other
    content is a conflict. Raises 422/404/409 ServiceErrors; nothing is written then."""
    if parent_id is not None:
        _parent_or_404(db, coll, parent_id)
    record = load(coll, body)
    record_id = _resolve_id(record, record_id)
    record["id"] = record_id
    if coll.parent:
        _resolve_parent_id(coll, record, parent_id)
    with db.no_autoflush:  # queries must not flush half-built rows; the one flush is explicit
        targets = _resolve_refs(db, coll, record)
        patient_id = _patient_of(coll, record, targets)
        existing = db.get(coll.model, record["id"])
        _keep(db, existing, *targets.values())
        digest = _hash(record)
        if existing is not None:
            if coll.has_patient and existing.patient_id != patient_id:
                raise Conflict(f"{coll.label} {record['id']!r} belongs to another patient",
                               {"patient_id": ["A stored record cannot move to another patient."]})
            if existing.content_hash == digest:
                return WriteResult(existing, "unchanged", existing.warnings or [],
                                   fhir_store.links_of(db, coll.name, existing.id))
            if create_only:
                raise Conflict(f"{coll.label} {record['id']!r} exists with other content; PUT replaces it",
                               {"id": ["Already exists with other content."]})
        # Only the write needs a SAVEPOINT: a failure inside it leaves nothing behind.
        with db.begin_nested():
            return _write(db, coll, record, existing, targets, patient_id, digest, now or datetime.now(UTC))


def _keep(db: Session, *rows: models.ClinicRecord | None) -> None:
    """Hold rows strongly for the session's life: its identity map holds them weakly, and later
    lines of an import name the same patients, courses and sessions again."""
    kept = db.info.setdefault("kept_rows", {})
    for row in rows:
        if row is not None:
            kept[(type(row), row.id)] = row


def _resolve_id(record: dict[str, Any], url_id: str | None) -> str:
    body_id = record.get("id")
    if url_id is not None and body_id is not None and body_id != url_id:
        raise UnprocessableEntity(errors={"id": [f"Does not match the id in the URL ({url_id!r})."]})
    if url_id is not None:
        _check_id(url_id)
    return url_id or body_id or str(uuid.uuid4())


def _check_id(value: str) -> None:
    if not re.fullmatch(ID_PATTERN, value):
        raise UnprocessableEntity(errors={"id": ["Must be 1-64 characters of A-Z a-z 0-9 . _ -."]})


def _resolve_parent_id(coll: Collection, record: dict[str, Any], url_parent: str | None) -> None:
    key = f"{COLLECTIONS[coll.parent].label}_id"
    if url_parent is not None:
        if record.get(key) not in (None, url_parent):
            raise UnprocessableEntity(errors={key: [f"Does not match the {key} in the URL ({url_parent!r})."]})
        record[key] = url_parent
    elif not record.get(key):
        raise UnprocessableEntity(errors={key: ["Missing data for required field."]})


def _write(db: Session, coll: Collection, record: dict[str, Any], existing: models.ClinicRecord | None,
           targets: dict[str, Any], patient_id: str | None, digest: str, now: datetime) -> WriteResult:
    _check_unique(db, coll, record)
    previous_drug = existing.record.get("drug") if existing is not None else None
    row = existing or coll.model(id=record["id"], created_at=now, version=0)
    row.record = record
    row.content_hash = digest
    row.status = record.get("status")
    row.version += 1
    row.updated_at = now
    for name, value in coll.columns(record).items():
        setattr(row, name, value)
    if coll.has_patient:
        row.patient_id = patient_id
    if existing is None:
        db.add(row)
    _keep(db, row)
    _write_side_tables(db, coll, record, replace=existing is not None)
    row.warnings = _warnings(db, coll, record)
    try:
        db.flush()
    except IntegrityError as exc:  # a concurrent writer took a unique value between check and flush
        raise Conflict(f"{coll.label} conflicts with a stored record: {exc.orig.__class__.__name__}") from None
    warnings = row.warnings
    also: list[tuple[str, models.ClinicRecord]] = []
    if _may_change_rems(db, coll, record, previous_drug):
        session_id = record["id"] if coll.name == "sessions" else record["session_id"]
        if _refresh_rems(db, session_id) and coll.name != "sessions":
            also.append(("sessions", db.get(models.InfusionSession, session_id)))
        warnings = row.warnings if coll.name == "sessions" else row.warnings + rems_of(db, session_id)
    links = fhir_store.on_write(db, coll.name, row, now, also=also)
    return WriteResult(row, "updated" if existing is not None else "created", warnings, links)


def ref_values(record: dict[str, Any], ref: Ref) -> list[tuple[str, str]]:
    """(error path, id) pairs named by a reference field, including ``list.field`` paths."""
    head, _, tail = ref.field.partition(".")
    if not tail:
        return [(head, record[head])] if record.get(head) else []
    return [(f"{head}.{i}.{tail}", item[tail]) for i, item in enumerate(record.get(head) or [])]


def _resolve_refs(db: Session, coll: Collection, record: dict[str, Any]) -> dict[str, models.ClinicRecord]:
    """Load every record this one names: 422 for unknown ids, 409 for another patient's records."""
    targets: dict[str, models.ClinicRecord] = {}
    errors: dict[str, list[str]] = {}
    conflicts: dict[str, list[str]] = {}
    for ref in coll.refs:
        target = COLLECTIONS[ref.target]
        for path, value in ref_values(record, ref):
            row = db.get(target.model, value)
            if row is None:
                errors[path] = [f"No {target.label} with id {value!r}."]
                continue
            targets[ref.field] = row
            if ref.same_patient and row.patient_id != record.get("patient_id"):
                conflicts[path] = [f"{target.label.capitalize()} {value!r} belongs to another patient."]
    if errors:
        raise UnprocessableEntity("the record names records that do not exist", errors)
    if conflicts:
        raise Conflict("the record names another patient's records", conflicts)
    return targets


def _patient_of(coll: Collection, record: dict[str, Any], targets: dict[str, Any]) -> str | None:
    if not coll.has_patient:
        return None
    if coll.parent:
        return targets["session_id"].patient_id
    return record["patient_id"]


def _check_unique(db: Session, coll: Collection, record: dict[str, Any]) -> None:
    """Friendly 409s for unique columns; the database constraints stay the guarantee."""
    rid = record["id"]
    if coll.name == "patients":
        other = db.scalar(select(models.Patient.id).where(models.Patient.mrn == record["mrn"],
                                                          models.Patient.id != rid))
        if other:
            raise Conflict("MRN already in use", {"mrn": ["MRN already belongs to another patient."]})
        for i, ident in enumerate(record.get("identifiers") or []):
            owner = db.scalar(select(models.PatientIdentifier.patient_id).where(
                models.PatientIdentifier.system == ident["system"], models.PatientIdentifier.value == ident["value"],
                models.PatientIdentifier.patient_id != rid))
            if owner:
                raise Conflict("identifier already in use",
                               {f"identifiers.{i}": ["Already identifies another patient."]})
    elif coll.name == "practitioners" and record.get("npi"):
        other = db.scalar(select(models.Practitioner.id).where(models.Practitioner.npi == record["npi"],
                                                               models.Practitioner.id != rid))
        if other:
            raise Conflict("NPI already in use", {"npi": ["NPI already belongs to another practitioner."]})
    elif coll.name == "sessions" and record.get("course_id") and record.get("number"):
        other = db.scalar(select(models.InfusionSession.id).where(
            models.InfusionSession.course_id == record["course_id"],
            models.InfusionSession.number == record["number"], models.InfusionSession.id != rid))
        if other:
            raise Conflict("session number already used",
                           {"number": [f"Another session is number {record['number']} of this course."]})


def _write_side_tables(db: Session, coll: Collection, record: dict[str, Any], replace: bool) -> None:
    if coll.name == "patients":
        if replace:
            db.execute(delete(models.PatientIdentifier).where(models.PatientIdentifier.patient_id == record["id"]))
        db.add_all(models.PatientIdentifier(patient_id=record["id"], system=i["system"], value=i["value"])
                   for i in record.get("identifiers") or [])
    elif coll.name == "sessions":
        if replace:
            db.execute(delete(models.SessionPerformer).where(models.SessionPerformer.session_id == record["id"]))
        db.add_all(models.SessionPerformer(session_id=record["id"], practitioner_id=p["practitioner_id"],
                                           function=p["function"]) for p in record.get("performers") or [])


def _warnings(db: Session, coll: Collection, record: dict[str, Any]) -> list[dict]:
    return checks.warnings_for(coll.name, record, fhir_store.context(db))


def _may_change_rems(db: Session, coll: Collection, record: dict[str, Any], previous_drug: str | None) -> bool:
    """Whether this write can change its session's REMS check, which only esketamine sessions have."""
    if coll.name == "sessions":
        return True
    if coll.name == "administrations":
        return "esketamine" in (record["drug"], previous_drug)
    if coll.name == "vitals":
        return db.scalar(select(models.Administration.id).where(
            models.Administration.session_id == record["session_id"],
            models.Administration.drug == "esketamine").limit(1)) is not None
    return False


def _refresh_rems(db: Session, session_id: str) -> bool:
    """Recompute the session's REMS warning from its doses and vitals; stored on the session.
    True when the session's warnings changed (its FHIR resources flag them)."""
    session = db.get(models.InfusionSession, session_id)
    rems = checks.session_rems(session.record, fhir_store.context(db))
    kept = [w for w in (session.warnings or []) if w["code"] != "rems-monitoring-incomplete"]
    if kept + rems != (session.warnings or []):
        session.warnings = kept + rems
        db.flush()
        return True
    return False


def rems_of(db: Session, session_id: str) -> list[dict[str, str]]:
    """The session's current REMS warnings (answered on writes of its doses and vitals)."""
    session = db.get(models.InfusionSession, session_id)
    return [w for w in (session.warnings or []) if w["code"] == "rems-monitoring-incomplete"]


def encode_cursor(updated_at: datetime, record_id: str) -> str:
    raw = json.dumps([updated_at.isoformat(), record_id]).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple[datetime, str]:
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        stamp, record_id = json.loads(raw)
        when = datetime.fromisoformat(stamp)
        if when.tzinfo is None or not re.fullmatch(ID_PATTERN, record_id):
            raise ValueError("not an aware time and a record id")
        when.astimezone(UTC)  # OverflowError when it has no UTC equivalent
        return when, record_id
    except (ValueError, TypeError, OverflowError) as exc:
        raise UnprocessableEntity(errors={"cursor": ["Not a cursor this API issued."]}) from exc


def list_records(
    db: Session,
    coll: Collection,
    *,
    limit: int,
    patient_id: str | None = None,
    since: datetime | None = None,
    status: str | None = None,
    cursor: str | None = None,
    parent_id: str | None = None,
) -> Page:
    """One page of records in (updated_at, id) order: a stable keyset cursor, so records changed
    while a client pages move to the end and are seen again instead of being skipped."""
    model = coll.model
    query = select(model)
    if parent_id is not None:
        _parent_or_404(db, coll, parent_id)
        query = query.where(model.session_id == parent_id)
    if patient_id is not None and coll.name == "patients":
        query = query.where(model.id == patient_id)
    elif patient_id is not None:
        if not coll.has_patient:
            raise UnprocessableEntity(errors={"patient_id": [f"{coll.name} are not per patient."]})
        query = query.where(model.patient_id == patient_id)
    if since is not None:
        query = query.where(model.updated_at >= since)
    if status is not None:
        query = query.where(model.status == status)
    if cursor:
        stamp, last_id = decode_cursor(cursor)
        query = query.where((model.updated_at > stamp) | ((model.updated_at == stamp) & (model.id > last_id)))
    rows = list(db.scalars(query.order_by(model.updated_at, model.id).limit(limit + 1)))
    more = len(rows) > limit
    rows = rows[:limit]
    next_cursor = encode_cursor(rows[-1].updated_at, rows[-1].id) if more else None
    return Page([to_response(r) for r in rows], next_cursor)
