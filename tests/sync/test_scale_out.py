"""Scale-out: two Celery worker processes and a beat on one PostgreSQL database drain one outbox
over a real broker (Redis, RabbitMQ) while the clinic keeps writing. Nothing is delivered twice,
no resource's versions reach the destination out of order, and both workers share the work."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import uuid
from collections import defaultdict
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path

import orjson
import pytest
import redis
from sqlalchemy import select

from service import models
from service.sync import destinations
from service.sync.outbox import active_total
from service.synthetic import clinic_lines
from tests.sync import clinic
from tests.sync.peer import assert_destination_holds_exactly_ours, fault_proxy, peer_server, wait_for

CLI = [str(Path(sys.executable).parent / "ketamine-fhir")]
BROKERS = {"redis": "redis://127.0.0.1:6379/0", "rabbitmq": "amqp://guest:guest@127.0.0.1:5672//",
           "unreachable": "redis://127.0.0.1:9/0"}


@pytest.fixture(scope="module")
def peer():
    with peer_server() as base:
        yield base


def _attempt_log(db) -> list[tuple[int, str, str, int, str, str, int]]:
    """Every delivery of the run, in the order the workers recorded them (attempt id):
    (attempt id, worker process, lane, message id, type, resource id, version)."""
    a, o = models.DeliveryAttempt, models.OutboxMessage
    rows = db.execute(select(a.id, a.worker, o.lane, o.id, o.resource_type, o.resource_id, o.version_id)
                      .join(o, o.id == a.message_id).where(a.result == "delivered").order_by(a.id))
    return [(aid, worker.rsplit(":", 1)[0], *rest) for aid, worker, *rest in rows]


@pytest.fixture
def settings(settings, broker):
    """The app's clinic writes wake the workers through the broker, on a queue of this test's own."""
    return replace(settings, broker_url=BROKERS[broker], sync_queue=f"kf-test-{uuid.uuid4().hex[:8]}")


@pytest.mark.postgres_only
@pytest.mark.parametrize("broker", ["redis", "rabbitmq"])
def test_two_celery_workers_on_postgresql_drain_one_outbox_without_duplicates_or_reordering(
        api, db, peer, settings, broker):
    records = clinic.load(api, 10)
    env = {**os.environ, "KETAMINE_FHIR_DATA": str(settings.data_dir), "DATABASE_URL": settings.database_url,
           "KETAMINE_FHIR_BROKER_URL": settings.broker_url, "KETAMINE_FHIR_SYNC_QUEUE": settings.sync_queue,
           "KETAMINE_FHIR_SYNC_POLL_SECONDS": "1", "KETAMINE_FHIR_LOG_LEVEL": "WARNING"}
    with fault_proxy(peer, "--latency-ms", "15") as slow:  # slow enough that both workers get lanes
        destinations.create(db, {"name": "ehr", "url": slow}, datetime.now(UTC))
        db.commit()
        procs = [subprocess.Popen([*CLI, "worker", "--celery", "--concurrency", "2"], env=env,
                                  stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True) for _ in range(2)]
        procs.append(subprocess.Popen([*CLI, "beat"], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                                      text=True))
        try:
            wait_for(lambda: (db.commit() or active_total(db)) == 0, timeout=300, what="the initial load")
            changed = [clinic.change(api, records, round_=r) for r in (1, 2, 3)]  # while the first is in flight
            wait_for(lambda: (db.commit() or active_total(db)) == 0, timeout=300, what="the changes")
        finally:
            for proc in procs:
                proc.send_signal(signal.SIGTERM)
            errors = [proc.communicate(timeout=30)[1] for proc in procs]
    assert all("Traceback" not in e for e in errors), next(e for e in errors if "Traceback" in e)[-3000:]
    assert_destination_holds_exactly_ours(db, peer)

    log = _attempt_log(db)
    per_message: dict[int, int] = defaultdict(int)
    for _, _, _, message_id, *_ in log:
        per_message[message_id] += 1
    assert max(per_message.values()) == 1, "a message was delivered more than once"
    by_process: dict[str, int] = defaultdict(int)
    for _, process, *_ in log:
        by_process[process] += 1
    assert len(by_process) == 2 and min(by_process.values()) > 0, by_process
    versions: dict[tuple[str, str], list[int]] = defaultdict(list)
    for _, _, _, _, rtype, rid, version in log:
        versions[(rtype, rid)].append(version)
    out_of_order = {k: v for k, v in versions.items() if v != sorted(v)}
    assert not out_of_order, f"versions delivered out of order: {list(out_of_order.items())[:3]}"
    # every changed record went out again after its first version, in order
    assert sum(len(v) > 1 for v in versions.values()) >= sum(changed[0].values())


def _one_patient(api) -> None:
    lines = list(clinic_lines(1))
    first_patient = next(i for i, line in enumerate(lines) if line.startswith('{"type":"patients"'))
    response = api.import_ndjson("\n".join(lines[:first_patient + 1]))
    assert response.status_code == 200 and response.get_json()["rejected"] == 0, response.get_json()


@pytest.mark.parametrize("broker", ["redis"])
def test_a_clinic_write_that_queues_messages_wakes_a_celery_worker_through_the_broker(api, db, settings):
    destinations.create(db, {"name": "ehr", "url": "http://127.0.0.1:9/fhir"}, datetime.now(UTC))
    db.commit()
    queue = redis.Redis.from_url(settings.broker_url)
    queue.delete(settings.sync_queue)
    _one_patient(api)
    tasks = [orjson.loads(t) for t in queue.lrange(settings.sync_queue, 0, -1)]
    queue.delete(settings.sync_queue)
    assert [t["headers"]["task"] for t in tasks] == ["ketamine_fhir.drain"]


@pytest.mark.parametrize("broker", ["unreachable"])
def test_a_clinic_write_succeeds_at_once_when_the_broker_is_down(api, db):
    """The beat's dispatch delivers it later; the clinic is never made to wait for the broker."""
    destinations.create(db, {"name": "ehr", "url": "http://127.0.0.1:9/fhir"}, datetime.now(UTC))
    db.commit()
    _one_patient(api)
    assert active_total(db) > 0
