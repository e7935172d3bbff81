"""``ketamine-fhir worker`` and ``ketamine-fhir beat``: sync workers outside the web process."""

from __future__ import annotations

import os
import signal
import threading

import click

from service.config import Settings

__all__ = ["beat", "worker"]


@click.command()
@click.option("--concurrency", default=1, show_default=True, type=click.IntRange(1, 64),
              help="Deliveries at once in this process (threads).")
@click.option("--drain", is_flag=True, help="Deliver until nothing is pending or in flight, then exit.")
@click.option("--celery/--no-celery", default=None,
              help="Run a Celery worker (default: when KETAMINE_FHIR_BROKER_URL is set).")
def worker(concurrency: int, drain: bool, celery: bool | None) -> None:
    """Run sync workers: deliver the outbox to every destination, sweep, pull referrals.

    With a broker (KETAMINE_FHIR_BROKER_URL=redis://... or amqp://...) this is a Celery worker
    taking tasks from `ketamine-fhir beat` and from clinic writes; start any number of them, on
    any machine, against one PostgreSQL. Without one it polls the database itself.
    """
    from service.db import make_engine, migrate, session_factory

    settings = Settings.from_env()
    migrate(settings)
    use_celery = bool(settings.broker_url) if celery is None else celery
    if not use_celery or drain:  # Celery sets logging up itself, through our setup_logging receiver
        from service import logs

        logs.configure(settings.log_level)
    if use_celery and not drain:
        if not settings.broker_url:
            raise click.UsageError("--celery needs KETAMINE_FHIR_BROKER_URL")
        from service.sync.celery_app import app_for

        # a node name per process: several workers on one host must not share a control queue
        app_for(settings).worker_main(["worker", "--loglevel=INFO", f"--concurrency={concurrency}", "--pool=threads",
                                       "-Q", settings.sync_queue, "-n", f"ketamine-fhir-{os.getpid()}@%h",
                                       "--without-mingle", "--without-gossip"])
        return
    from service.sync.worker import PollingWorker

    factory = session_factory(make_engine(settings.database_url), settings)
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    if drain:
        PollingWorker(factory, settings, stop).run_until_idle()
        return
    click.echo(f"sync worker polling every {settings.sync_poll_seconds:g} s ({concurrency} thread(s)); Ctrl-C stops")
    threads = [threading.Thread(target=PollingWorker(factory, settings, stop).run, daemon=True)
               for _ in range(concurrency)]
    for t in threads:
        t.start()
    while any(t.is_alive() for t in threads):
        for t in threads:
            t.join(0.5)


@click.command()
def beat() -> None:
    """Run the Celery beat scheduler: dispatch due deliveries, sweep and pull on schedule.
    Run exactly one per deployment (needs KETAMINE_FHIR_BROKER_URL)."""
    settings = Settings.from_env()
    if not settings.broker_url:
        raise click.UsageError("beat needs KETAMINE_FHIR_BROKER_URL (without a broker, `worker` schedules itself)")
    from service.sync.celery_app import app_for

    settings.data_dir.mkdir(parents=True, exist_ok=True)
    app_for(settings).start(["beat", "--loglevel=INFO", "-s", str(settings.data_dir / "celerybeat-schedule")])
