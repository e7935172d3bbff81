"""Sync to a real third-party FHIR server (../shared/peer-fhir): the destination ends up holding
exactly the clinic's data — every resource once, equal to our mapping, references resolving —
after a clean run, after updates and entered-in-error records, and through injected faults."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
import requests
from sqlalchemy import func, insert, select

from service import models
from service.sync import destinations
from service.sync.outbox import _row, active_total, counts, sweep
from service.sync.worker import PollingWorker
from tests.sync import clinic
from tests.sync.peer import assert_destination_holds_exactly_ours, fault_proxy, peer_server, reset

PATIENTS = 50
#: the one knob of the fault run's size (and of CI's time): mapping revision 2 made a patient
#: ~1.8x the resources (items, Medication, CareTeam, Flags, body weight), so 30 patients (~6,400
#: messages) keep the run near the earlier 50-patient run's size (~6,000) and time
PATIENTS_UNDER_FAULTS = 30


@pytest.fixture(scope="module")
def peer():
    with peer_server() as base:
        yield base


@pytest.fixture
def fresh_peer(peer):
    reset(peer)
    return peer


def _add(db, url: str, **settings) -> models.Destination:
    dest = destinations.create(db, {"name": "ehr", "url": url, **settings}, datetime.now(UTC))
    db.commit()
    return dest


def _drain(app, timeout: float = 600) -> None:
    factory = app.extensions["db_sessionmaker"]
    PollingWorker(factory, app.config["SETTINGS"]).run_until_idle(timeout)
    with factory() as db:
        assert active_total(db) == 0, counts(db, db.scalar(select(models.Destination.id)))


def _no_dead_letters(db, dest_id: str) -> None:
    dead = db.scalars(select(models.OutboxMessage).where(models.OutboxMessage.destination_id == dest_id,
                                                         models.OutboxMessage.status == "dead")).all()
    assert not dead, [(m.resource_type, m.last_status, m.last_error) for m in dead[:5]]


def test_a_synthetic_clinic_is_held_exactly_once_with_equal_content_after_updates(app, api, db, fresh_peer):
    records = clinic.load(api, PATIENTS)
    dest = _add(db, fresh_peer)
    _drain(app)
    first = assert_destination_holds_exactly_ours(db, fresh_peer)
    assert first > 50 * PATIENTS

    changed = clinic.change(api, records)
    assert all(changed.values())
    _drain(app)
    assert assert_destination_holds_exactly_ours(db, fresh_peer) < first  # AdverseEvents of sessions in error went
    _no_dead_letters(db, dest.id)


def test_an_unchanged_resource_is_not_sent_again(app, api, db, fresh_peer):
    records = clinic.load(api, 2)
    dest = _add(db, fresh_peer)
    _drain(app)
    sent = db.scalar(select(func.count()).select_from(models.DeliveryAttempt))
    assert sweep(db, dest, datetime.now(UTC)) == 0  # the destination acknowledged everything
    kind, record = next((k, r) for k, r in records if k == "patients")
    assert api.put(f"/{kind}/{record['id']}", record).headers["X-Write-Outcome"] == "unchanged"
    assert active_total(db) == 0
    # the PUT's AuditEvent committed after this session's read began: a stale SQLite snapshot cannot
    # write, so start a fresh transaction (as the service's own writers do)
    db.rollback()
    # an operator re-queues every resource: none goes over the wire again
    everything = db.scalars(select(models.FhirResource).where(models.FhirResource.resource_type.in_(
        dest.resource_types))).all()
    db.execute(insert(models.OutboxMessage), [_row(db, dest, r, datetime.now(UTC)) for r in everything])
    db.commit()
    _drain(app)
    assert db.scalar(select(func.count()).select_from(models.DeliveryAttempt)) == sent
    assert assert_destination_holds_exactly_ours(db, fresh_peer)


@pytest.mark.parametrize("mode", ["batch", "individual"])
def test_batch_and_individual_modes_reach_the_same_end_state(app, api, db, fresh_peer, mode):
    records = clinic.load(api, 3)
    _add(db, fresh_peer, mode=mode, max_bundle_entries=40)
    _drain(app)
    assert_destination_holds_exactly_ours(db, fresh_peer)
    clinic.change(api, records, round_=2)
    _drain(app)
    assert_destination_holds_exactly_ours(db, fresh_peer)


def test_a_transaction_limit_of_the_server_is_learned_by_splitting_not_by_looping(app, api, db, fresh_peer):
    # Medplum refuses a transaction of more than 8 conditional entries: configured for 40, the
    # engine halves the Bundle until it passes and never resends a refused Bundle unchanged
    clinic.load(api, 2)
    dest = _add(db, fresh_peer, max_bundle_entries=40)
    _drain(app)
    assert_destination_holds_exactly_ours(db, fresh_peer)
    splits = db.scalar(select(func.count(func.distinct(models.DeliveryAttempt.request))).where(
        models.DeliveryAttempt.result == "split"))
    assert splits >= 1
    _no_dead_letters(db, dest.id)


def test_through_faults_and_an_outage_the_end_state_is_the_same(app, api, db, peer):
    # the destination's default retry policy and circuit breaker: what a deployment gets
    reset(peer)
    records = clinic.load(api, PATIENTS_UNDER_FAULTS)
    with fault_proxy(peer, "--p503", "0.33", "--p429", "0.05", "--pdrop", "0.05", "--pdrop-after", "0.05",
                     "--retry-after", "1", "--seed", "7") as proxy:
        dest = _add(db, proxy)
        control = proxy.rsplit("/fhir", 1)[0]
        requests.post(f"{control}/__fault/down?seconds=10", timeout=5).raise_for_status()
        _drain(app)
        clinic.change(api, records)
        _drain(app)
        stats = requests.get(f"{control}/__fault/stats", timeout=5).json()
    assert_destination_holds_exactly_ours(db, peer)
    _no_dead_letters(db, dest.id)
    retried = db.scalar(select(func.count()).select_from(models.DeliveryAttempt).where(
        models.DeliveryAttempt.result == "retry"))
    assert retried > 20, stats  # the faults did happen, and were retried
