"""Wake the sync workers when a clinic write commits outbox rows, instead of at their next poll.

In this process: an Event the embedded worker waits on. Across processes: a Celery ``drain``
task when a broker is configured (service/sync/celery_app.py); without one, other processes'
workers find the rows at their next poll (KETAMINE_FHIR_SYNC_POLL_SECONDS).
"""

from __future__ import annotations

import threading

from sqlalchemy import event
from sqlalchemy.orm import Session

__all__ = ["wait", "wake"]

_WAKE = threading.Event()


def wake() -> None:
    _WAKE.set()


def wait(seconds: float) -> None:
    """Sleep until woken or ``seconds`` passed."""
    _WAKE.wait(seconds)
    _WAKE.clear()


@event.listens_for(Session, "after_commit")
def _after_commit(db: Session) -> None:
    dest_ids = db.info.pop("sync_notify", None)
    if dest_ids:
        wake()
        from service.sync.celery_app import notify_commit

        notify_commit(dest_ids, db.info.get("broker_url", ""), db.info.get("sync_queue", ""))
