"""Map once, at write time: the FHIR resources of each written clinic record, stored as served.

After a clinic record is written, ``on_write`` maps it and the records whose resources depend on
it (a session's Procedure code depends on its doses, a course's CarePlan on its sessions), stores
each resource whose mapping changed as a new version, marks resources a record no longer yields as
deleted, and records one Provenance for the write. Runs inside the write's transaction.

A resource many records share (a Medication: one product and lot, given to many patients) is not
any record's: it is stored under its own key (``_ensure_shared``), belongs to no patient, and is
never retired by a record that stops naming it.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import event, inspect, select
from sqlalchemy.orm import Session

from mappings import provenance
from mappings.context import MappingContext
from mappings.resources import clinic_organization, resources_for
from mappings.security_labels import SecurityPolicy, label
from service import models
from service.clinic.collections import COLLECTIONS

__all__ = ["context", "flush_pending", "links_of", "on_stored", "on_write", "remap"]

#: listener(db, rows, at): told of the resource versions a transaction stored, just before it
#: commits, inside it. The sync outbox registers itself (service/sync/outbox.py): the write path
#: does not know who listens (layers point down).
StoredListener = Callable[[Session, list[models.FhirResource], datetime], Any]
_STORED_LISTENERS: list[StoredListener] = []

#: types many records share (mappings/medication.py): stored once by ``_ensure_shared``, never
#: retired, belonging to no patient; the source collection they are stored under
SHARED_SOURCE = {"Medication": "medications"}
SHARED_TYPES = frozenset(SHARED_SOURCE)

#: children(parent_id, collection): which column names the parent, and the order
_CHILDREN = {
    "administrations": (models.Administration, models.Administration.session_id, models.Administration.start),
    "vitals": (models.Vitals, models.Vitals.session_id, models.Vitals.effective),
    "sessions": (models.InfusionSession, models.InfusionSession.course_id, models.InfusionSession.start),
}


def _as_record(row: models.ClinicRecord) -> dict[str, Any]:
    """The clinic record as mappings see it: plus patient_id for nested records, plus warnings."""
    record = dict(row.record)
    if "patient_id" not in record and getattr(row, "patient_id", None):
        record["patient_id"] = row.patient_id
    if row.warnings:
        record["warnings"] = row.warnings
    return record


def context(db: Session, memo: bool = False) -> MappingContext:
    """A MappingContext answering lookups from this session's database.

    ``memo``: remember answers, for one write's mapping, during which clinic records do not change
    (a course's CarePlan asks each of its sessions for its doses).
    """
    lookups: dict[tuple[str, str], dict[str, Any] | None] = {}
    kids: dict[tuple[str, str], list[dict[str, Any]]] = {}

    def lookup(collection: str, record_id: str) -> dict[str, Any] | None:
        if collection not in COLLECTIONS:  # a FHIR type and our resource id (reverse mappings ask so)
            stored = db.get(models.FhirResource, (collection, record_id))
            if stored is None or stored.deleted:
                return None
            return lookup(stored.source_collection, stored.source_id)
        if (collection, record_id) not in lookups or not memo:
            row = db.get(COLLECTIONS[collection].model, record_id)
            lookups[(collection, record_id)] = _as_record(row) if row is not None else None
        return lookups[(collection, record_id)]

    def children(parent_id: str, collection: str) -> list[dict[str, Any]]:
        if (parent_id, collection) not in kids or not memo:
            model, parent_col, order = _CHILDREN[collection]
            kids[(parent_id, collection)] = [_as_record(r) for r in db.scalars(
                select(model).where(parent_col == parent_id).order_by(order, model.id))]
        return kids[(parent_id, collection)]

    return MappingContext(base_uri=db.info["base_uri"], clinic_name=db.info["clinic_name"], lookup=lookup,
                          children=children, security=db.info.get("security") or SecurityPolicy())


def _digest(resource: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(resource, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def _dependents(db: Session, collection: str, row: models.ClinicRecord) -> list[tuple[str, models.ClinicRecord]]:
    """Records whose resources read this one (see the module docstring)."""
    def rows(model: type, *where: Any) -> list[tuple[str, Any]]:
        name = next(c.name for c in COLLECTIONS.values() if c.model is model)
        return [(name, r) for r in db.scalars(select(model).where(*where).order_by(model.id))]

    if collection == "administrations":
        return [("sessions", db.get(models.InfusionSession, row.session_id))]
    if collection == "sessions" and row.course_id:
        return [("courses", db.get(models.Course, row.course_id))]
    if collection == "courses":
        sessions = rows(models.InfusionSession, models.InfusionSession.course_id == row.id)
        admins = [a for _, s in sessions for a in rows(models.Administration, models.Administration.session_id == s.id)]
        return sessions + admins
    if collection == "referrals":
        return rows(models.Course, models.Course.referral_id == row.id)
    if collection == "patients":  # a course's CareTeam falls back to the patient's referring practitioner
        return rows(models.Course, models.Course.patient_id == row.id)
    return []


def _patient_of(collection: str, row: models.ClinicRecord) -> str | None:
    if collection == "patients":
        return row.id
    return getattr(row, "patient_id", None)


def _store(db: Session, resource: dict[str, Any], current: models.FhirResource | None, source: tuple[str, str],
           patient_id: str | None, now: datetime) -> bool:
    """Store one mapped resource over its ``current`` row; True when it is new or changed."""
    digest = _digest(resource)
    if current is not None and current.content_hash == digest and not current.deleted:
        return False
    version = current.version_id + 1 if current is not None else 1
    served = _with_meta(resource, version, now)
    if current is None:
        current = models.FhirResource(resource_type=resource["resourceType"], id=resource["id"])
        db.add(current)
    current.version_id, current.last_updated, current.content = version, now, served
    current.content_hash, current.deleted, current.patient_id = digest, False, patient_id
    current.source_collection, current.source_id = source
    db.add(models.FhirResourceVersion(resource_type=current.resource_type, id=current.id, version_id=version,
                                      last_updated=now, content=served, deleted=False))
    from service.fhir.search.index import queue_index  # late: the service.fhir package imports the blueprint
    queue_index(db, resource, False, version_id=version, last_updated=now, owner=current)
    db.info.setdefault("sync_pending", {})[(current.resource_type, current.id)] = current
    return True


def _with_meta(resource: dict[str, Any], version: int, now: datetime) -> str:
    meta = {"versionId": str(version), "lastUpdated": now.isoformat(timespec="milliseconds").replace("+00:00", "Z")}
    meta.update(resource.get("meta", {}))
    out = {"resourceType": resource["resourceType"], "id": resource["id"], "meta": meta}
    out.update((k, v) for k, v in resource.items() if k not in out)
    return json.dumps(out, separators=(",", ":"), ensure_ascii=False)


def _retire(db: Session, existing: Iterable[models.FhirResource], keep: set[tuple[str, str]],
            now: datetime) -> list[str]:
    """Mark deleted the resources a record yielded before but no longer does."""
    retired = []
    for res in existing:
        if (res.resource_type, res.id) in keep or res.resource_type == "Provenance" or res.deleted:
            continue
        res.deleted, res.version_id, res.last_updated = True, res.version_id + 1, now
        db.add(models.FhirResourceVersion(resource_type=res.resource_type, id=res.id, version_id=res.version_id,
                                          last_updated=now, content=res.content, deleted=True))
        from service.fhir.search.index import queue_index  # late, as in _store
        queue_index(db, {"resourceType": res.resource_type, "id": res.id}, True, version_id=res.version_id,
                    last_updated=now, owner=res)
        db.info.setdefault("sync_pending", {})[(res.resource_type, res.id)] = res
        retired.append(f"{res.resource_type}/{res.id}")
    return retired


def _map_and_store(db: Session, ctx: MappingContext, collection: str, row: models.ClinicRecord,
                   now: datetime, new: bool = False) -> tuple[list[dict[str, Any]], list[str]]:
    """Map one record and store what changed; return what it maps to (shared resources included)
    and the ``Type/id`` of what was stored or retired. ``new``: the record was just created, so
    nothing of it is stored yet (saves the query)."""
    mapped = resources_for(collection, _as_record(row), ctx)
    resources = [r for r in mapped if r["resourceType"] not in SHARED_TYPES]
    source = (collection, row.id)
    existing = {} if new else {(r.resource_type, r.id): r for r in db.scalars(select(models.FhirResource).where(
        models.FhirResource.source_collection == collection, models.FhirResource.source_id == row.id))}
    patient_id = _patient_of(collection, row)
    changed = [f"{r['resourceType']}/{r['id']}" for r in mapped
               if r["resourceType"] in SHARED_TYPES and _ensure_shared(db, r, now)]
    changed += [f"{r['resourceType']}/{r['id']}" for r in resources
                if _store(db, r, existing.get((r["resourceType"], r["id"])), source, patient_id, now)]
    changed += _retire(db, existing.values(), {(r["resourceType"], r["id"]) for r in resources}, now)
    return mapped, changed


def _ensure_shared(db: Session, resource: dict[str, Any], now: datetime) -> bool:
    """Store a resource many records share (a Medication: one product and lot, given to many
    patients) under its own key, like the clinic Organization: no source record, so no record
    retires it when it stops naming it, and no patient (Medication is not in the Patient
    compartment). Its content is a function of its id, so the doses that name it never make a new
    version. True when it was new (or its mapping changed)."""
    key = (resource["resourceType"], resource["id"])
    current = db.get(models.FhirResource, key)  # autoflushes: a copy stored earlier in this transaction is found
    return _store(db, resource, current, (SHARED_SOURCE[resource["resourceType"]], resource["id"]), None, now)


@dataclass
class _Write:
    """One clinic-record write of this transaction, waiting for its Provenance."""

    collection: str
    row: models.ClinicRecord
    record: dict[str, Any]
    meta: dict[str, Any]
    patient_id: str | None
    now: datetime
    changed: list[str] = field(default_factory=list)
    #: who wrote, when not the clinic: the EHR client of a /fhir write (``db.info["agent"]``)
    agent: dict[str, Any] | None = None


def on_write(db: Session, collection: str, row: models.ClinicRecord, now: datetime,
             also: Iterable[tuple[str, models.ClinicRecord]] = ()) -> dict[str, Any]:
    """Map a just-written record now; return its FHIR links.

    Its dependents and ``also`` (records whose warnings the write changed) are re-mapped once,
    just before the transaction commits (``_before_commit``): an /import of a whole course
    re-maps each session and CarePlan once instead of after every dose. Mappings read clinic
    records only, never other resources, so the order of re-mapping does not matter.
    """
    ctx = context(db, memo=True)
    _ensure_organization(db, ctx, now)
    resources, changed = _map_and_store(db, ctx, collection, row, now, new=row.version == 1)
    writes: list[_Write] = db.info.setdefault("fhir_writes", [])
    meta = {"version": row.version, "updated_at": row.updated_at.isoformat()}
    writes.append(_Write(collection, row, _as_record(row), meta, _patient_of(collection, row), now, changed,
                         db.info.get("agent")))
    dirty: dict[tuple[str, str], tuple[models.ClinicRecord, int]] = db.info.setdefault("fhir_dirty", {})
    for dep_collection, dep_row in [*_dependents(db, collection, row), *also]:
        dirty.pop((dep_collection, dep_row.id), None)  # re-insert: attributed to the latest write
        dirty[(dep_collection, dep_row.id)] = (dep_row, len(writes) - 1)
    return _links(r for r in resources if r["resourceType"] not in SHARED_TYPES)  # as links_of: its own


def flush_pending(db: Session) -> None:
    """Re-map the dependents of this transaction's writes, then store one Provenance per write."""
    from service.fhir.search.index import flush_index  # late, as in _store

    writes: list[_Write] = db.info.pop("fhir_writes", [])
    dirty: dict[tuple[str, str], tuple[models.ClinicRecord, int]] = db.info.pop("fhir_dirty", {})
    if not writes:
        flush_index(db)
        _flush_outbox(db)
        return
    ctx = context(db, memo=True)
    done: set[tuple[str, str]] = set()
    queue = list(dirty.items())
    while queue:
        (collection, record_id), (row, owner) = queue.pop(0)
        if (collection, record_id) in done or not inspect(row).persistent:
            continue  # mapped already, or written in a savepoint that was rolled back
        done.add((collection, record_id))
        writes[owner].changed += _map_and_store(db, ctx, collection, row, writes[owner].now)[1]
        queue += [((c, r.id), (r, owner)) for c, r in _dependents(db, collection, row)]
    for write in writes:
        # a write a rolled-back SAVEPOINT undid: its row is gone, or back at an older version
        if write.changed and inspect(write.row).persistent and write.row.version == write.meta["version"]:
            prov = provenance.to_fhir(write.collection, write.record, write.meta,
                                      [{"reference": c} for c in dict.fromkeys(write.changed)], ctx, write.agent)
            prov = label(prov, ctx.security, about_patient=write.patient_id is not None)
            # keyed on the record's new version: always a new resource
            _store(db, prov, None, (write.collection, write.record["id"]), write.patient_id, write.now)
    db.flush()
    flush_index(db)  # last: every version this transaction stored is known now
    _flush_outbox(db)


def on_stored(listener: StoredListener) -> StoredListener:
    """Register a listener for stored versions (see ``_STORED_LISTENERS``); usable as a decorator."""
    if listener not in _STORED_LISTENERS:
        _STORED_LISTENERS.append(listener)
    return listener


def _flush_outbox(db: Session) -> None:
    """Tell the listeners (the sync outbox) which versions this transaction stored."""
    pending: dict[tuple[str, str], models.FhirResource] = db.info.pop("sync_pending", {})
    if not pending:
        return
    if not _STORED_LISTENERS:  # refuse the commit rather than store versions no destination hears of
        raise RuntimeError("no listener for stored FHIR versions: import service.sync.outbox before writing")
    at = max(r.last_updated for r in pending.values())
    for listener in _STORED_LISTENERS:
        listener(db, list(pending.values()), at)


@event.listens_for(Session, "before_commit")
def _before_commit(db: Session) -> None:
    if not db.in_nested_transaction():  # the event fires for SAVEPOINT releases too
        flush_pending(db)


@event.listens_for(Session, "after_soft_rollback")
def _after_rollback(db: Session, previous_transaction: Any) -> None:
    # Only the outermost rollback drops the pending work: a rolled-back SAVEPOINT (one bad /import
    # line or batch entry) must not lose the earlier writes' Provenance and index rows; its own
    # entries are skipped at flush because their rows are no longer persistent.
    if previous_transaction.parent is None:
        db.info.pop("fhir_writes", None)
        db.info.pop("fhir_dirty", None)
        db.info.pop("index_pending", None)
        db.info.pop("sync_pending", None)
        db.info.pop("sync_notify", None)


def _ensure_organization(db: Session, ctx: MappingContext, now: datetime) -> None:
    if not db.info.get("organization_stored"):
        org = clinic_organization(ctx)
        _store(db, org, db.get(models.FhirResource, (org["resourceType"], org["id"])), ("organization", "clinic"),
               None, now)
        db.info["organization_stored"] = True


def remap(db: Session, now: datetime, chunk: int = 500) -> dict[str, int]:
    """Map every stored clinic record again (after an upgrade of the mappings or a change of the
    labelling policy) and store what changed; commits every ``chunk`` records.

    Changed resources get a new version, their index rows and outbox entries, as on a write, so
    destinations receive the new mapping; no Provenance is recorded: no clinic data changed.
    """
    counts = {"records": 0, "changed": 0, "retired": 0}
    _ensure_organization(db, context(db), now)
    for name, coll in COLLECTIONS.items():
        ids = list(db.scalars(select(coll.model.id).order_by(coll.model.id)))
        for start in range(0, len(ids), chunk):
            ctx = context(db, memo=True)
            for record_id in ids[start:start + chunk]:
                resources, changed = _map_and_store(db, ctx, name, db.get(coll.model, record_id), now)
                kept = {f"{r['resourceType']}/{r['id']}" for r in resources}
                counts["records"] += 1
                counts["changed"] += sum(1 for c in changed if c in kept)
                counts["retired"] += sum(1 for c in changed if c not in kept)
            db.commit()
    return counts


def _links(resources: Iterable[dict[str, Any]]) -> dict[str, Any]:
    """``{"Patient": "Patient/<id>"}``; a list where a record yields several of one type."""
    links: dict[str, Any] = {}
    for r in resources:
        url = f"{r['resourceType']}/{r['id']}"
        if r["resourceType"] in links:
            prev = links[r["resourceType"]]
            links[r["resourceType"]] = [*prev, url] if isinstance(prev, list) else [prev, url]
        else:
            links[r["resourceType"]] = url
    return links


def links_of(db: Session, collection: str, record_id: str) -> dict[str, Any]:
    """The FHIR links of a stored record (its current, non-deleted, non-Provenance resources)."""
    rows = db.execute(select(models.FhirResource.resource_type, models.FhirResource.id).where(
        models.FhirResource.source_collection == collection, models.FhirResource.source_id == record_id,
        models.FhirResource.deleted.is_(False), models.FhirResource.resource_type != "Provenance")
        .order_by(models.FhirResource.resource_type, models.FhirResource.id)).all()
    return _links({"resourceType": t, "id": i} for t, i in rows)
