"""A worker process killed with SIGKILL in the middle of a batch loses and duplicates nothing:
its claimed messages are taken over when their lease runs out, and conditional updates make the
resend of anything it had already sent a no-op."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

import pytest
from sqlalchemy import func, select

from service import models
from service.sync import destinations
from service.sync.outbox import active_total
from tests.sync import clinic
from tests.sync.peer import assert_destination_holds_exactly_ours, fault_proxy, peer_server, wait_for

CLI = [str(Path(sys.executable).parent / "ketamine-fhir")]


@pytest.fixture(scope="module")
def peer():
    with peer_server() as base:
        yield base


def _delivered(db) -> int:
    db.commit()
    return db.scalar(select(func.count()).select_from(models.OutboxMessage).where(
        models.OutboxMessage.status == "delivered")) or 0


@pytest.mark.postgres
def test_a_worker_killed_mid_batch_and_restarted_reaches_the_same_end_state(app, api, db, peer, settings):
    clinic.load(api, 8)
    env = {**os.environ, "KETAMINE_FHIR_DATA": str(settings.data_dir), "DATABASE_URL": settings.database_url,
           "KETAMINE_FHIR_SYNC_LEASE_SECONDS": "2", "KETAMINE_FHIR_LOG_LEVEL": "WARNING"}
    env.pop("KETAMINE_FHIR_BROKER_URL", None)
    with fault_proxy(peer, "--latency-ms", "30") as slow:  # slow enough to be killed mid-batch
        destinations.create(db, {"name": "ehr", "url": slow}, datetime.now(UTC))
        db.commit()
        total = active_total(db)
        worker = subprocess.Popen([*CLI, "worker"], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            wait_for(lambda: _delivered(db) > total // 4, timeout=120, what="a quarter delivered")
        finally:
            worker.send_signal(signal.SIGKILL)
            worker.wait(timeout=10)
        assert _delivered(db) < total  # killed before the end
        restarted = subprocess.run([*CLI, "worker", "--drain"], env=env, capture_output=True, text=True, timeout=600)
        assert restarted.returncode == 0, restarted.stderr[-2000:]
    db.commit()
    assert active_total(db) == 0
    assert_destination_holds_exactly_ours(db, peer)
