"""Scale-out: Celery dispatches deliveries, sweeps and pulls to worker processes on any machine,
over Redis or RabbitMQ (``KETAMINE_FHIR_BROKER_URL``), with PostgreSQL as the shared database.

Celery only carries *which destination to work on*; what to send stays in the outbox, so a lost
or duplicated task loses or duplicates nothing: a ``drain`` claims lanes (``FOR UPDATE SKIP
LOCKED``) and any number of drains of one destination may run at once on different workers.

- ``ketamine-fhir worker`` (with a broker set) runs ``celery worker`` on this app;
- ``ketamine-fhir beat`` runs ``celery beat``: ``dispatch`` every poll interval (a drain for each
  destination with due messages), ``sweep`` and ``pull`` on their intervals;
- a clinic write that queued messages sends a ``drain`` at once (``notify_commit``).
"""

from __future__ import annotations

import logging
from functools import cache
from typing import Any

from sqlalchemy.orm import Session, sessionmaker

from service.config import Settings

__all__ = ["app_for", "notify_commit"]

log = logging.getLogger(__name__)

DRAIN, DISPATCH, SWEEP, PULL = ("ketamine_fhir.drain", "ketamine_fhir.dispatch", "ketamine_fhir.sweep",
                                "ketamine_fhir.pull")


@cache
def _factory() -> sessionmaker[Session]:
    """This worker process's sessions (created on first use, after Celery forked it)."""
    from service.db import make_engine, session_factory

    settings = Settings.from_env()
    return session_factory(make_engine(settings.database_url), settings)


def _setup_logging(**_: Any) -> None:
    from service import logs

    logs.configure(Settings.from_env().log_level)


def app_for(settings: Settings) -> Any:
    """The Celery app of these settings (broker, queue, beat schedule)."""
    from celery import Celery
    from celery.signals import setup_logging

    # a receiver makes Celery leave logging to us: our handler, which redacts tracebacks
    setup_logging.connect(_setup_logging)
    app = Celery("ketamine_fhir", broker=settings.broker_url, set_as_current=False)
    app.conf.update(
        task_default_queue=settings.sync_queue,
        task_ignore_result=True,
        task_acks_late=True,  # a worker killed mid-task leaves the task to another
        task_reject_on_worker_lost=True,
        worker_prefetch_multiplier=1,
        worker_hijack_root_logger=False,
        broker_connection_retry_on_startup=True,
        beat_schedule={
            "dispatch": {"task": DISPATCH, "schedule": settings.sync_poll_seconds},
            "sweep": {"task": SWEEP, "schedule": settings.sync_sweep_seconds},
            "pull": {"task": PULL, "schedule": settings.sync_pull_seconds},
        },
    )
    lease = settings.sync_lease_seconds

    @app.task(name=DRAIN)
    def drain(dest_id: str) -> None:
        from datetime import timedelta

        from service.sync.engine import deliver
        from service.sync.worker import worker_name

        deliver(_factory(), dest_id, worker_name(), budget_seconds=30, lease=timedelta(seconds=lease))

    @app.task(name=DISPATCH)
    def dispatch() -> None:
        from datetime import UTC, datetime

        from service.sync.outbox import due_destinations

        with _factory()() as db:
            for dest_id in due_destinations(db, datetime.now(UTC)):
                drain.delay(dest_id)

    @app.task(name=SWEEP)
    def sweep() -> None:
        from service.sync.outbox import sweep_all

        with _factory()() as db:
            sweep_all(db)
            db.commit()

    @app.task(name=PULL)
    def pull() -> None:
        from service.sync.pull import pull_all

        pull_all(_factory())

    return app


@cache
def _sender(broker_url: str, queue: str) -> Any:
    """A Celery app that only sends tasks (the web process's): short broker timeouts."""
    from celery import Celery

    app = Celery("ketamine_fhir", broker=broker_url, set_as_current=False)
    app.conf.update(task_default_queue=queue, broker_connection_timeout=2, broker_connection_retry=False)
    return app


def notify_commit(dest_ids: set[str], broker_url: str, queue: str) -> None:
    """After a clinic write committed outbox rows: ask a Celery worker to drain now (when a broker
    is configured). The beat's dispatch catches anything this misses, so a broker outage only
    delays delivery and never fails or stalls the clinic's write (no publish retries)."""
    if not broker_url:
        return
    try:
        sender = _sender(broker_url, queue)
        for dest_id in dest_ids:
            sender.send_task(DRAIN, args=[dest_id], queue=queue, retry=False)
    except Exception as exc:  # the write is committed; the beat dispatch delivers it shortly
        log.warning("could not notify the sync workers: %s", type(exc).__name__)


def celery_app() -> Any:
    """For ``celery -A service.sync.celery_app:celery_app``."""
    return app_for(Settings.from_env())
