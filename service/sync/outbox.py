"""The transactional outbox: which resource versions each destination still has to receive.

``enqueue`` runs inside the clinic write's transaction (it listens to service/fhir_store.py's
stored versions, told just before commit), so a write and its outbox rows commit together or not
at all. ``sweep`` compares what a destination acknowledged (``sync_remote``) with what we hold and
queues the difference: it is the initial load of a new destination, the backfill when a patient
enters a destination's selection, and a periodic safety net. Workers ``claim`` lanes (a
patient's rows, in order, one worker at a time; ``FOR UPDATE SKIP LOCKED`` on PostgreSQL) for a
lease.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import and_, exists, func, insert, or_, select, text, update
from sqlalchemy.orm import Session, aliased
from sqlalchemy.orm.attributes import instance_state, set_committed_value

from mappings.datatypes import fhir_id
from service import fhir_store, models
from service.sync import (
    destinations,
    notify,  # noqa: F401  (registers the after-commit wake-up)
)

__all__ = ["ACTIVE", "Claimed", "active_total", "claim", "claim_resource", "counts", "due_destinations", "enqueue",
           "lane_of", "next_attempt_of", "release", "replay", "sweep", "sweep_all"]

ACTIVE = ("pending", "in-flight")
SHARED_LANE = "shared"
#: rows inserted per statement
_CHUNK = 1000


def lane_of(db: Session, resource_type: str, patient_id: str | None) -> str:
    """The ordering lane: the patient's FHIR id (no clinic id, no PHI), or ``shared``."""
    if patient_id is None or resource_type in destinations.SHARED_TYPES:
        return SHARED_LANE
    return "Patient/" + fhir_id(db.info["base_uri"], "Patient", "patients", patient_id)


def _enabled(db: Session) -> list[models.Destination]:
    return list(db.scalars(select(models.Destination).where(models.Destination.enabled.is_(True))))


@fhir_store.on_stored
def enqueue(db: Session, stored: Iterable[models.FhirResource], now: datetime) -> int:
    """Queue the resource versions this transaction stored for every interested destination.

    ``stored``: the FhirResource rows written (the last version of each); rows a rolled-back
    SAVEPOINT undid are skipped. A Patient or ServiceRequest change can bring a patient into a
    filtered destination's selection (a new referral from its psychiatrist): those patients are
    swept, so the destination gets their whole record, not only the change.
    """
    owners = [r for r in stored if instance_state(r).persistent]
    dests = _enabled(db) if owners else []
    count = 0
    for dest in dests:
        wanted = set(dest.resource_types)
        mine = [r for r in owners if r.resource_type in wanted]
        patients = destinations.interested_patients(
            db, dest, {r.patient_id for r in mine if r.patient_id and r.resource_type not in destinations.SHARED_TYPES})
        rows = [_row(db, dest, r, now) for r in mine
                if r.resource_type in destinations.SHARED_TYPES or r.patient_id is None or r.patient_id in patients]
        count += _insert(db, rows)
        if rows:
            db.info.setdefault("sync_notify", set()).add(dest.id)
        if dest.patients.get("kind") != "all":
            entering = {r.patient_id for r in owners if r.resource_type in ("Patient", "ServiceRequest")} & patients
            if entering:
                count += sweep(db, dest, now, patient_ids=entering)
    return count


def _row(db: Session, dest: models.Destination, res: models.FhirResource, now: datetime) -> dict[str, Any]:
    return {"destination_id": dest.id, "lane": lane_of(db, res.resource_type, res.patient_id),
            "resource_type": res.resource_type, "resource_id": res.id, "version_id": res.version_id,
            "deleted": res.deleted, "status": "pending", "attempts": 0, "deferrals": 0, "next_attempt_at": now,
            "created_at": now}


def _insert(db: Session, rows: Sequence[dict[str, Any]]) -> int:
    for start in range(0, len(rows), _CHUNK):
        db.execute(insert(models.OutboxMessage), rows[start:start + _CHUNK])
    return len(rows)


# Dependency order for a sweep: targets of references first (Kahn's order within a lane is the engine's job)
_TYPE_ORDER = {t: i for i, t in enumerate(destinations.SYNCABLE_TYPES)}


def sweep(db: Session, dest: models.Destination, now: datetime, patient_ids: Iterable[str] | None = None) -> int:
    """Queue every selected resource whose current content the destination has not acknowledged
    and that has no pending, in-flight or dead row already. Returns the number queued."""
    res, remote, out = models.FhirResource, models.RemoteResource, models.OutboxMessage
    joined = and_(remote.destination_id == dest.id, remote.resource_type == res.resource_type,
                  remote.resource_id == res.id)
    differs = or_(and_(remote.resource_id.is_(None), res.deleted.is_(False)),
                  and_(remote.resource_id.is_not(None), res.deleted.is_(False),
                       or_(remote.content_hash.is_(None), remote.content_hash != res.content_hash,
                           remote.deleted.is_(True))),
                  and_(remote.resource_id.is_not(None), res.deleted.is_(True), remote.deleted.is_(False)))
    queued = exists().where(out.destination_id == dest.id, out.resource_type == res.resource_type,
                            out.resource_id == res.id, out.status.in_((*ACTIVE, "dead")))
    query = (select(res).outerjoin(remote, joined)
             .where(res.resource_type.in_(dest.resource_types), differs, ~queued)
             .order_by(res.patient_id, res.last_updated, res.resource_type, res.id))
    if patient_ids is not None:
        query = query.where(res.patient_id.in_(list(patient_ids)))
    found = list(db.scalars(query))
    patients = destinations.interested_patients(
        db, dest, {r.patient_id for r in found if r.patient_id and r.resource_type not in destinations.SHARED_TYPES})
    keep = [r for r in found
            if r.resource_type in destinations.SHARED_TYPES or r.patient_id is None or r.patient_id in patients]
    keep.sort(key=lambda r: (lane_of(db, r.resource_type, r.patient_id) != SHARED_LANE,
                             _TYPE_ORDER.get(r.resource_type, 99)))
    return _insert(db, [_row(db, dest, r, now) for r in keep])


@dataclass
class Claimed:
    """One lane's messages a worker holds until ``lease_until``, oldest first."""

    lane: str
    messages: list[models.OutboxMessage]


def _take_write_lock(db: Session) -> None:
    if db.get_bind().dialect.name == "sqlite":  # writers are serialised: take the lock before reading
        db.execute(text("UPDATE sync_outbox SET id = id WHERE 0 = 1"))


def claim(db: Session, dest_id: str, worker: str, now: datetime, *, lanes: int = 4, per_lane: int = 200,
          lease: timedelta = timedelta(seconds=60)) -> list[Claimed]:
    """Claim up to ``lanes`` lanes whose oldest active row is due, with up to ``per_lane`` rows each,
    and commit. A lane is claimable only through its head (no earlier pending or in-flight row),
    so two workers never hold the same lane and a lane's rows go out in order. In-flight rows
    whose lease expired (a killed worker) are claimable again."""
    _take_write_lock(db)
    o, p = aliased(models.OutboxMessage), aliased(models.OutboxMessage)
    claimable = or_(and_(o.status == "pending", o.next_attempt_at <= now),
                    and_(o.status == "in-flight", o.lease_until < now))
    # each lane's oldest active row, from the (destination, lane, status, id) index alone; then the
    # due ones. (A NOT EXISTS per candidate row walked every waiting lane's rows on each claim.)
    lane_heads = select(func.min(p.id)).where(p.destination_id == dest_id, p.status.in_(ACTIVE)).group_by(p.lane)
    heads = select(o.id, o.lane).where(o.id.in_(lane_heads), claimable).order_by(o.id).limit(lanes)
    if db.get_bind().dialect.name == "postgresql":
        heads = heads.with_for_update(skip_locked=True, of=o)
    claimed: list[Claimed] = []
    for head_id, lane in db.execute(heads).all():
        m = models.OutboxMessage
        # the head's followers: pending, or in flight under a lease that ran out (a killed worker)
        free = or_(m.status == "pending", and_(m.status == "in-flight", m.lease_until < now))
        rows = list(db.scalars(select(m).where(m.destination_id == dest_id, m.lane == lane, m.id >= head_id, free)
                               .order_by(m.id).limit(per_lane)))
        _hold(db, rows, worker, now + lease)
        claimed.append(Claimed(lane, rows))
    db.commit()
    return claimed


def claim_resource(db: Session, dest_id: str, lane: str, key: tuple[str, str], worker: str, now: datetime,
                   lease: timedelta) -> list[models.OutboxMessage]:
    """Add to a claimed lane the active rows of one of its resources beyond the claimed ones (a
    resource the claimed rows reference), and commit. Only for the lane's holder: nobody else can
    take rows behind a claimed head."""
    rows = list(db.scalars(select(models.OutboxMessage).where(
        models.OutboxMessage.destination_id == dest_id, models.OutboxMessage.lane == lane,
        models.OutboxMessage.resource_type == key[0], models.OutboxMessage.resource_id == key[1],
        or_(models.OutboxMessage.status == "pending", and_(models.OutboxMessage.status == "in-flight",
                                                           models.OutboxMessage.lease_until < now)))
        .order_by(models.OutboxMessage.id)))
    _hold(db, rows, worker, now + lease)
    db.commit()
    return rows


def next_attempt_of(db: Session, dest_id: str, key: tuple[str, str]) -> datetime | None:
    """When the resource's oldest pending or in-flight row for the destination is (or was) due;
    None when there is none (delivered, dead or never queued)."""
    out = models.OutboxMessage
    return db.scalar(select(out.next_attempt_at).where(
        out.destination_id == dest_id, out.resource_type == key[0], out.resource_id == key[1],
        out.status.in_(ACTIVE)).order_by(out.id).limit(1))


def _hold(db: Session, rows: Sequence[models.OutboxMessage], worker: str, until: datetime) -> None:
    """Mark rows in flight for ``worker`` in one UPDATE (not one per row at flush)."""
    if not rows:
        return
    db.execute(update(models.OutboxMessage).where(models.OutboxMessage.id.in_([r.id for r in rows]))
               .values(status="in-flight", claimed_by=worker, lease_until=until)
               .execution_options(synchronize_session=False))
    for row in rows:
        set_committed_value(row, "status", "in-flight")
        set_committed_value(row, "claimed_by", worker)
        set_committed_value(row, "lease_until", until)


def release(db: Session, messages: Iterable[models.OutboxMessage], at: datetime) -> None:
    """Give claimed messages back (not attempted): pending, due at ``at``."""
    for m in messages:
        m.status, m.claimed_by, m.lease_until, m.next_attempt_at = "pending", None, None, at


def replay(db: Session, dest_id: str, ids: Iterable[int] | None, now: datetime) -> int:
    """Dead letters back to pending (all of the destination's when ``ids`` is None), attempts reset."""
    query = update(models.OutboxMessage).where(models.OutboxMessage.destination_id == dest_id,
                                               models.OutboxMessage.status == "dead")
    if ids is not None:
        query = query.where(models.OutboxMessage.id.in_(list(ids)))
    result = db.execute(query.values(status="pending", attempts=0, deferrals=0, next_attempt_at=now,
                                     claimed_by=None, lease_until=None).execution_options(synchronize_session=False))
    return result.rowcount or 0


def sweep_all(db: Session, now: datetime | None = None) -> int:
    """:func:`sweep` every enabled destination (the periodic safety net)."""
    from datetime import UTC

    now = now or datetime.now(UTC)
    return sum(sweep(db, dest, now) for dest in _enabled(db))


def active_total(db: Session, dest_id: str | None = None) -> int:
    """Messages pending or in flight (of one destination, or all)."""
    query = select(func.count()).select_from(models.OutboxMessage).where(models.OutboxMessage.status.in_(ACTIVE))
    if dest_id is not None:
        query = query.where(models.OutboxMessage.destination_id == dest_id)
    return db.scalar(query) or 0


def due_destinations(db: Session, now: datetime) -> list[str]:
    """Enabled destinations with messages due now (or in flight past their lease)."""
    out = models.OutboxMessage
    due = or_(and_(out.status == "pending", out.next_attempt_at <= now),
              and_(out.status == "in-flight", out.lease_until < now))
    return list(db.scalars(select(models.Destination.id).where(
        models.Destination.enabled.is_(True),
        exists().where(out.destination_id == models.Destination.id, due))))


def counts(db: Session, dest_id: str) -> dict[str, int]:
    """Messages by status."""
    out = models.OutboxMessage
    rows = db.execute(select(out.status, func.count()).where(out.destination_id == dest_id).group_by(out.status))
    return {status: n for status, n in rows}
