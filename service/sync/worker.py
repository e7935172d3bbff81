"""Workers that drain the outbox, without Celery: the embedded thread and ``ketamine-fhir worker``.

Both run :class:`PollingWorker`: deliver to every enabled destination until nothing is due,
then wait for a wake-up (a clinic write in this process commits outbox rows) or the poll
interval; every ``sweep_seconds`` re-queue what destinations have not acknowledged, and every
``pull_seconds`` pull referrals from destinations that have ``pull`` on. Any number of them may
run against one database: claims keep a lane to one worker at a time.

With a Celery broker configured (service/sync/celery_app.py), Celery dispatches the same
functions instead, across machines.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
from datetime import timedelta

from sqlalchemy.orm import Session, sessionmaker

from service.config import Settings
from service.sync import engine, notify

__all__ = ["PollingWorker", "start_embedded", "worker_name"]

log = logging.getLogger(__name__)

def worker_name() -> str:
    """host:pid:thread — in the attempt log and outbox claims."""
    return f"{socket.gethostname()}:{os.getpid()}:{threading.get_ident() % 100000}"


class PollingWorker:
    """Deliver, sweep and pull in a loop until ``stop`` is set."""

    def __init__(self, factory: sessionmaker[Session], settings: Settings, stop: threading.Event | None = None):
        self.factory, self.settings = factory, settings
        self.stop = stop or threading.Event()
        self.lease = timedelta(seconds=settings.sync_lease_seconds)

    def run(self) -> None:
        name = worker_name()
        last_sweep = last_pull = 0.0
        log.info("sync worker %s started", name)
        while not self.stop.is_set():
            try:
                now = time.monotonic()
                if now - last_sweep >= self.settings.sync_sweep_seconds:
                    self.sweep()
                    last_sweep = now
                if now - last_pull >= self.settings.sync_pull_seconds:
                    self.pull()
                    last_pull = now
                stats = engine.deliver_all(self.factory, name, budget_seconds=30, lease=self.lease)
                busy = any(s.requests or s.delivered or s.dead for s in stats.values())
            except Exception:  # a database or programming error must not kill the worker: log, wait, go on
                log.exception("sync worker round failed")
                busy = False
            if not busy:
                notify.wait(self.settings.sync_poll_seconds)
        log.info("sync worker %s stopped", name)

    def run_until_idle(self, timeout: float = 600.0) -> None:
        """Deliver until nothing is pending or in flight (tests, ``worker --drain``)."""
        from service.sync.outbox import active_total

        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and not self.stop.is_set():
            engine.deliver_all(self.factory, worker_name(), budget_seconds=30, lease=self.lease)
            with self.factory() as db:
                if active_total(db) == 0:
                    return
            time.sleep(0.2)

    def sweep(self) -> None:
        from service.sync.outbox import sweep_all

        with self.factory() as db:
            queued = sweep_all(db)
            db.commit()
        if queued:
            log.info("sweep queued %d messages", queued)

    def pull(self) -> None:
        from service.sync.pull import pull_all

        pull_all(self.factory)


def start_embedded(factory: sessionmaker[Session], settings: Settings) -> threading.Thread | None:
    """The embedded default: one worker thread in this process (KETAMINE_FHIR_WORKER=embedded)."""
    if settings.worker != "embedded" or settings.broker_url:
        return None
    thread = threading.Thread(target=PollingWorker(factory, settings).run, name="ketamine-fhir-sync", daemon=True)
    thread.start()
    return thread
