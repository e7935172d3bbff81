"""What operators see of a destination's sync: queue depth, health, dead letters and the attempt log.

The admin API (service/admin) and the CLI both read through here. Only ids, statuses, codes and
times leave this module, never patient data: a destination's OperationOutcome is cut down to its
coded parts, because free-text diagnostics may quote the record it refused.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import distinct, func, select
from sqlalchemy.orm import Session, aliased

from service import models
from service.sync import destinations, outbox

__all__ = ["ATTEMPT_RESULTS", "MAX_LIMIT", "attempts", "coded_outcome", "dead_letters", "describe",
           "destination_status", "waiting"]

#: what a DeliveryAttempt's ``result`` can be (service/sync/engine.py)
ATTEMPT_RESULTS = ("delivered", "unchanged", "retry", "dead", "deferred", "split")
#: the most rows one listing returns
MAX_LIMIT = 1000


def _iso(moment: datetime | None) -> str | None:
    return None if moment is None else moment.isoformat()


def destination_status(db: Session, dest: models.Destination, now: datetime) -> dict[str, Any]:
    """Queue depth by status, how far behind the destination is, and its health.

    ``oldest_pending_age_seconds`` counts from the oldest pending or in-flight message's creation;
    ``paused_until`` is set only while a 429 pause lasts.
    """
    out = models.OutboxMessage
    mine = out.destination_id == dest.id
    by_status = outbox.counts(db, dest.id)
    oldest, lanes = db.execute(select(func.min(out.created_at), func.count(distinct(out.lane)))
                               .where(mine, out.status.in_(outbox.ACTIVE))).one()
    next_at = db.scalar(select(func.min(out.next_attempt_at)).where(mine, out.status == "pending"))
    paused = dest.paused_until if dest.paused_until and dest.paused_until > now else None
    return {
        "enabled": dest.enabled,
        "circuit": destinations.BREAKER.shown(destinations.circuit_state(dest), now),
        "paused_until": _iso(paused),
        "pending": by_status.get("pending", 0),
        "in_flight": by_status.get("in-flight", 0),
        "delivered": by_status.get("delivered", 0),
        "dead_letters": by_status.get("dead", 0),
        "superseded": by_status.get("superseded", 0),
        "lanes_waiting": lanes,
        "oldest_pending_age_seconds": None if oldest is None else max(0, int((now - oldest).total_seconds())),
        "next_attempt_at": _iso(next_at),
        "last_success_at": _iso(dest.last_success_at),
        "last_error_at": _iso(dest.last_error_at),
        "last_error": dest.last_error,
    }


def describe(db: Session, dest: models.Destination, now: datetime) -> dict[str, Any]:
    """The destination's settings (no secret) with its status, as the API and CLI list it."""
    return destinations.public_view(dest, now) | {"status": destination_status(db, dest, now)}


def dead_letters(db: Session, dest_id: str, limit: int = 100, after_id: int | None = None) -> list[dict[str, Any]]:
    """The destination's dead letters, oldest first (id order); ``after_id`` continues a listing."""
    out = models.OutboxMessage
    query = select(out).where(out.destination_id == dest_id, out.status == "dead").order_by(out.id).limit(limit)
    if after_id is not None:
        query = query.where(out.id > after_id)
    return [_dead_letter(m) for m in db.scalars(query)]


def waiting(db: Session, dest_id: str, limit: int = 100, after_id: int | None = None) -> list[dict[str, Any]]:
    """What holds each waiting lane up: the lane's oldest pending or in-flight message (its head),
    oldest first (id order), with why it waits (``last_error``: the last failure, or "waiting for
    Type/id" a reference target) and when it goes next; ``behind`` counts the lane's messages after it.
    ``after_id`` continues a listing."""
    out, p = models.OutboxMessage, aliased(models.OutboxMessage)
    heads = (select(func.min(p.id)).where(p.destination_id == dest_id, p.status.in_(outbox.ACTIVE))
             .group_by(p.lane))
    query = select(out).where(out.id.in_(heads)).order_by(out.id).limit(limit)
    if after_id is not None:
        query = query.where(out.id > after_id)
    rows = list(db.scalars(query))
    behind = dict(db.execute(select(out.lane, func.count()).where(
        out.destination_id == dest_id, out.status.in_(outbox.ACTIVE), out.lane.in_([m.lane for m in rows]))
        .group_by(out.lane)).all()) if rows else {}
    return [_dead_letter(m) | {"status": m.status, "next_attempt_at": _iso(m.next_attempt_at),
                               "lease_until": _iso(m.lease_until), "behind": behind.get(m.lane, 1) - 1}
            for m in rows]


def _dead_letter(m: models.OutboxMessage) -> dict[str, Any]:
    return {"id": m.id, "resource_type": m.resource_type, "resource_id": m.resource_id, "lane": m.lane,
            "version_id": m.version_id, "deleted": m.deleted, "attempts": m.attempts, "last_status": m.last_status,
            "last_error": m.last_error, "outcome": coded_outcome(m.outcome), "created_at": _iso(m.created_at)}


def coded_outcome(outcome: dict[str, Any] | None) -> dict[str, Any] | None:
    """An OperationOutcome without its free text: severity, code, coded details, expression, location."""
    if not isinstance(outcome, dict):
        return None
    issues = [i for i in outcome.get("issue") or [] if isinstance(i, dict)]
    return {"resourceType": "OperationOutcome", "issue": [_coded_issue(i) for i in issues]}


def _coded_issue(issue: dict[str, Any]) -> dict[str, Any]:
    kept: dict[str, Any] = {k: issue[k] for k in ("severity", "code", "expression", "location") if k in issue}
    codings = (issue.get("details") or {}).get("coding") if isinstance(issue.get("details"), dict) else None
    if isinstance(codings, list):
        kept["details"] = {"coding": [{k: c[k] for k in ("system", "code") if k in c}
                                      for c in codings if isinstance(c, dict)]}
    return kept


def attempts(db: Session, dest_id: str, *, message_id: int | None = None, result: str | None = None,
             resource_type: str | None = None, since: datetime | None = None, limit: int = 100,
             after_id: int | None = None) -> list[dict[str, Any]]:
    """The destination's delivery attempts, newest first (descending id); ``after_id`` continues a
    listing with the attempts older than that one. ``since`` keeps attempts at or after that time."""
    a, m = models.DeliveryAttempt, models.OutboxMessage
    query = (select(a, m.resource_type, m.resource_id).join(m, m.id == a.message_id)
             .where(a.destination_id == dest_id).order_by(a.id.desc()).limit(limit))
    if message_id is not None:
        query = query.where(a.message_id == message_id)
    if result is not None:
        query = query.where(a.result == result)
    if resource_type is not None:
        query = query.where(m.resource_type == resource_type)
    if since is not None:
        query = query.where(a.at >= since)
    if after_id is not None:
        query = query.where(a.id < after_id)
    return [_attempt(row, rtype, rid) for row, rtype, rid in db.execute(query)]


def _attempt(row: models.DeliveryAttempt, resource_type: str, resource_id: str) -> dict[str, Any]:
    return {"id": row.id, "at": _iso(row.at), "message_id": row.message_id, "resource_type": resource_type,
            "resource_id": resource_id, "worker": row.worker, "request": row.request, "status_code": row.status_code,
            "result": row.result, "error": row.error, "duration_ms": row.duration_ms}
