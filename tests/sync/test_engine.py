"""The delivery engine (service.sync.engine) against a destination played by ``responses``.

Every retry path, end to end through a real database: a tiny synthetic clinic loaded through the
clinic API, a destination made by ``destinations.create`` (which queues the initial load), then
``engine.deliver`` with a controllable clock. The destination is :class:`Ehr`: by default it
behaves like a FHIR server (a conditional update creates once and finds the same resource after),
and each test scripts the failures it needs. What the engine decided is read back from the
outbox, the attempt log, ``sync_remote`` and the destination's row.
"""

from __future__ import annotations

import itertools
import json
import random
import re
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from typing import Any
from urllib.parse import unquote

import pytest
import requests
import responses
from sqlalchemy import insert, select

from service import models
from service.sync import destinations, engine
from service.sync.outbox import _row
from service.sync.retry import RetryPolicy
from service.synthetic import clinic_lines

BASE = "https://ehr.example/fhir"
#: later than any real "now": rows the clinic API queues (at the real time) are due at once
T0 = datetime(2030, 1, 7, 9, 0, tzinfo=UTC)

PATIENT_URL = "Patient?identifier=https://clinic.example.org/fhir/patients|pt-0001"
PHQ9_URL = "Observation?identifier=https://clinic.example.org/fhir/observations|pt-0001-phq9-0"
GAD7_URL = "Observation?identifier=https://clinic.example.org/fhir/observations|pt-0001-gad7-0"


def _tiny_clinic() -> list[str]:
    """Three practitioners, the first patient (referred by the first of them) and the patient's two
    baseline scores: 10 resources, in a ``shared`` lane (Organization, 3 Practitioner, 3
    PractitionerRole) and the patient's lane (Patient, 2 Observation)."""
    lines = list(clinic_lines(1))
    kinds = [json.loads(line) for line in lines]
    staff = [line for line, k in zip(lines, kinds, strict=True) if k["type"] == "practitioners"][:3]
    patient = next(line for line, k in zip(lines, kinds, strict=True) if k["type"] == "patients")
    # without the day of its weight and height: those would add two body-measurement Observations
    patient = json.dumps({**json.loads(patient), "record": {f: v for f, v in json.loads(patient)["record"].items()
                                                            if f != "body_measured_on"}})
    # without their items: one Observation each (items add a panel, item Observations and a
    # QuestionnaireResponse per score)
    scores = [json.dumps({**k, "record": {f: v for f, v in k["record"].items() if f != "items"}})
              for k in kinds if k["record"]["id"] in ("pt-0001-phq9-0", "pt-0001-gad7-0")]
    # the referral names its psychiatrist (ServiceRequest.requester): the patient's lane refers
    # to the staff's
    referral = next(line for line, k in zip(lines, kinds, strict=True) if k["type"] == "referrals")
    return [*staff, patient, referral, *scores]


CLINIC = _tiny_clinic()
PATIENT = json.loads(CLINIC[3])["record"]
#: what must never reach the attempt log: the patient's name, birth date, MRN, phone
PHI = (PATIENT["name"]["family"], PATIENT["name"]["given"][0], PATIENT["birth_date"], PATIENT["mrn"], "555 0100")

Answer = tuple[int, dict[str, str], Any]


class Ehr:
    """The destination's FHIR server.

    Each request is answered by the first matching ``rule`` (kept for the whole test), else by the
    next ``script``ed answer, else :meth:`accept`. An answer is ``(status, headers, body)``, an
    exception instance (raised: a timeout, a dropped connection) or a callable taking the request.
    """

    def __init__(self, rsps: responses.RequestsMock):
        self.rsps = rsps
        self.script: list[Any] = []
        self.rules: list[tuple[Callable[[requests.PreparedRequest], bool], Any]] = []
        self.held: dict[str, str] = {}  # conditional URL -> "Type/<their id>"
        self._ids = itertools.count(1)
        for method in ("GET", "POST", "PUT", "DELETE"):
            rsps.add_callback(method, re.compile(re.escape(BASE) + r"(/.*)?$"), callback=self._answer,
                              content_type="application/fhir+json")

    def then(self, *answers: Any) -> None:
        self.script.extend(answers)

    def always(self, when: Callable[[requests.PreparedRequest], bool], answer: Any) -> None:
        self.rules.append((when, answer))

    # --- what was sent ---

    @property
    def sent(self) -> list[tuple[str, str]]:
        """(method, path) of every request, in order; POST to the base is ``("POST", "")``."""
        return [(c.request.method, path_of(c.request)) for c in self.rsps.calls]

    @property
    def bodies(self) -> list[dict[str, Any] | None]:
        return [json.loads(c.request.body) if c.request.body else None for c in self.rsps.calls]

    # --- answering ---

    def _answer(self, request: requests.PreparedRequest) -> Answer:
        rule = next((a for when, a in self.rules if when(request)), None)
        answer = rule if rule is not None else self.script.pop(0) if self.script else self.accept
        if callable(answer):
            answer = answer(request)
        if isinstance(answer, BaseException):
            raise answer
        status, headers, body = answer
        return status, headers, body if isinstance(body, str) else json.dumps(body)

    def accept(self, request: requests.PreparedRequest) -> Answer:
        """What a FHIR server does: stores writes, answers a search by identifier from what it holds."""
        path = path_of(request)
        if request.method == "POST":
            bundle = json.loads(request.body)
            entries = [{"response": self._write(e["request"]["method"], e["request"]["url"])}
                       for e in bundle["entry"]]
            return 200, {}, {"resourceType": "Bundle", "type": f"{bundle['type']}-response", "entry": entries}
        if request.method == "PUT":
            response = self._write("PUT", path)
            return int(response["status"].split()[0]), {"Location": f"{BASE}/{response['location']}"}, ""
        if request.method == "GET":
            found = self.held.get(path.split("&_count")[0])
            return 200, {}, searchset(*([found.split("/")[1]] if found else []))
        return 204, {}, ""

    def _write(self, method: str, url: str) -> dict[str, str]:
        if method == "DELETE":
            return {"status": "204 No Content"}
        if "?" not in url:  # PUT Type/<their id>: an update of what they hold
            return {"status": "200 OK", "location": f"{url}/_history/2"}
        if url not in self.held:  # a conditional update creates it once ...
            self.held[url] = f"{url.split('?')[0]}/ehr-{next(self._ids)}"
            return {"status": "201 Created", "location": f"{self.held[url]}/_history/1"}
        return {"status": "200 OK", "location": f"{self.held[url]}/_history/2"}  # ... and finds it again

    def applied_then_dropped(self, request: requests.PreparedRequest) -> BaseException:
        """The server applies the write, then the connection drops before we read the answer."""
        self.accept(request)
        return requests.exceptions.ConnectionError("Connection aborted: RemoteDisconnected")


def path_of(request: requests.PreparedRequest) -> str:
    return unquote(request.url.removeprefix(BASE).lstrip("/"))


def searchset(*ids: str, rtype: str = "Patient") -> dict[str, Any]:
    return {"resourceType": "Bundle", "type": "searchset", "total": len(ids),
            "entry": [{"resource": {"resourceType": rtype, "id": i}, "search": {"mode": "match"}} for i in ids]}


def outcome(code: str = "processing", diagnostics: str = "refused") -> dict[str, Any]:
    return {"resourceType": "OperationOutcome", "issue": [{"severity": "error", "code": code,
                                                           "diagnostics": diagnostics}]}


class Clock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> datetime:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)


# --- fixtures ---


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def ehr():
    with responses.RequestsMock(assert_all_requests_are_fired=False) as rsps:
        yield Ehr(rsps)


@pytest.fixture
def clinic(api) -> None:
    response = api.import_ndjson("\n".join(CLINIC))
    assert response.status_code == 200 and response.get_json()["rejected"] == 0, response.get_json()


@pytest.fixture
def add_destination(db, clinic, clock) -> Callable[..., str]:
    """A destination made as the admin API makes it, which queues the clinic's data for it."""

    def add(**settings: Any) -> str:
        dest = destinations.create(db, {"name": "ehr", "url": BASE, **settings}, clock())
        db.commit()
        return dest.id

    return add


@pytest.fixture
def deliver(app, clock) -> Callable[[str], engine.RunStats]:
    factory = app.extensions["db_sessionmaker"]
    return lambda dest_id: engine.deliver(factory, dest_id, "worker-1", clock=clock, rng=random.Random(7))


# --- reading what the engine left ---


def fresh(db) -> None:
    """Forget what the test's session read: the next query sees what the engine committed."""
    db.rollback()
    db.expire_all()


def outbox(db, dest_id: str, rtype: str | None = None) -> list[models.OutboxMessage]:
    fresh(db)
    query = select(models.OutboxMessage).where(models.OutboxMessage.destination_id == dest_id)
    if rtype:
        query = query.where(models.OutboxMessage.resource_type == rtype)
    return list(db.scalars(query.order_by(models.OutboxMessage.id)))


def only(db, dest_id: str, rtype: str = "Patient") -> models.OutboxMessage:
    rows = outbox(db, dest_id, rtype)
    assert len(rows) == 1, rows
    return rows[0]


def attempts(db, dest_id: str, message_id: int | None = None) -> list[models.DeliveryAttempt]:
    fresh(db)
    query = select(models.DeliveryAttempt).where(models.DeliveryAttempt.destination_id == dest_id)
    if message_id is not None:
        query = query.where(models.DeliveryAttempt.message_id == message_id)
    return list(db.scalars(query.order_by(models.DeliveryAttempt.id)))


def remote(db, dest_id: str) -> dict[tuple[str, str], models.RemoteResource]:
    fresh(db)
    rows = db.scalars(select(models.RemoteResource).where(models.RemoteResource.destination_id == dest_id))
    return {(r.resource_type, r.resource_id): r for r in rows}


def destination(db, dest_id: str) -> models.Destination:
    fresh(db)
    return db.get(models.Destination, dest_id)


def statuses(db, dest_id: str) -> dict[str, int]:
    out: dict[str, int] = {}
    for m in outbox(db, dest_id):
        out[m.status] = out.get(m.status, 0) + 1
    return out


def wait_of(row: models.OutboxMessage, clock: Clock) -> float:
    return (row.next_attempt_at - clock()).total_seconds()


def until_due(db, dest_id: str, clock: Clock) -> None:
    """Move the clock to when every pending message is due."""
    clock.now = max([clock.now, *(m.next_attempt_at for m in outbox(db, dest_id) if m.status == "pending")])


def requeue_everything(db, dest_id: str, clock: Clock) -> int:
    """What an operator's re-sync does: a new outbox row for every resource the destination receives."""
    dest = destination(db, dest_id)
    stored = db.scalars(select(models.FhirResource).where(models.FhirResource.resource_type.in_(
        dest.resource_types))).all()
    db.execute(insert(models.OutboxMessage), [_row(db, dest, r, clock()) for r in stored])
    db.commit()
    return len(stored)


# --- 2xx ---


def test_a_2xx_delivers_every_message_and_remembers_their_id_and_content_hash(db, ehr, add_destination, deliver):
    dest_id = add_destination()
    stats = deliver(dest_id)

    # one transaction per lane, the shared lane (staff) first
    assert ehr.sent == [("POST", ""), ("POST", "")]
    assert [len(b["entry"]) for b in ehr.bodies] == [7, 5]
    assert stats.delivered == 12 and stats.requests == 2
    rows = outbox(db, dest_id)
    assert {m.status for m in rows} == {"delivered"} and all(m.delivered_at == T0 for m in rows)
    log = attempts(db, dest_id)
    assert sorted(a.message_id for a in log) == sorted(m.id for m in rows)  # one attempt row per message
    assert {(a.request, a.result, a.status_code) for a in log} == {("transaction 7", "delivered", 201),
                                                                  ("transaction 5", "delivered", 201)}
    # their ids (from each entry's response.location) and the content they acknowledged
    held = remote(db, dest_id)
    stored = {(r.resource_type, r.id): r for r in db.scalars(select(models.FhirResource))}
    assert set(held) == {(m.resource_type, m.resource_id) for m in rows}
    assert {f"{t}/{r.remote_id}" for (t, _), r in held.items()} == set(ehr.held.values())
    assert all(r.content_hash == stored[k].content_hash for k, r in held.items())
    # the patient's bundle refers to the referring psychiatrist by the id the destination gave it
    [referral] = [e["resource"] for e in ehr.bodies[1]["entry"] if e["resource"]["resourceType"] == "ServiceRequest"]
    assert referral["requester"]["reference"] in {f"Practitioner/{r.remote_id}"
                                                  for (t, _), r in held.items() if t == "Practitioner"}


def test_a_single_put_takes_their_id_from_the_location_header(db, ehr, add_destination, deliver):
    dest_id = add_destination(resource_types=["Patient"])
    ehr.then((201, {"Location": f"{BASE}/Patient/their-42/_history/1"}, ""))
    deliver(dest_id)

    assert ehr.sent == [("PUT", PATIENT_URL)]  # a conditional update on the business identifier
    row = only(db, dest_id)
    assert (row.status, row.last_status) == ("delivered", 201)
    assert remote(db, dest_id)[("Patient", row.resource_id)].remote_id == "their-42"
    assert [(a.request, a.result) for a in attempts(db, dest_id)] == [("PUT Patient", "delivered")]


def test_unchanged_content_is_not_sent_again(db, ehr, add_destination, deliver, clock):
    dest_id = add_destination()
    deliver(dest_id)
    sent, logged = len(ehr.sent), len(attempts(db, dest_id))

    clock.advance(60)
    assert requeue_everything(db, dest_id, clock) == 12
    stats = deliver(dest_id)

    # the content hash they acknowledged is ours: nothing goes over the wire, nothing is logged as sent
    assert len(ehr.sent) == sent
    assert (stats.unchanged, stats.delivered, stats.requests) == (12, 0, 0)
    assert statuses(db, dest_id) == {"delivered": 24}
    assert len(attempts(db, dest_id)) == logged


def test_versions_queued_before_delivery_go_once_as_the_current_content_the_older_row_superseded(
        db, api, ehr, add_destination, deliver):
    dest_id = add_destination(resource_types=["Patient"])
    changed = api.put(f"/patients/{PATIENT['id']}", {**PATIENT, "status": "inactive"})
    assert changed.status_code == 200, changed.get_json()
    deliver(dest_id)

    rows = outbox(db, dest_id)
    assert [m.status for m in rows] == ["superseded", "delivered"]  # in id order: the newest delivered
    assert len(ehr.sent) == 1 and ehr.bodies[0]["active"] is False  # one PUT, with the current content


def test_a_clinic_write_committed_while_a_request_is_in_flight_does_not_stop_the_delivery(app, db, ehr,
                                                                                         add_destination, deliver):
    # SQLite in WAL mode: a transaction that read before another writer committed can never write,
    # so the engine must not hold its read transaction open while it waits on the destination
    from service.auth import create_token

    dest_id = add_destination(resource_types=["Patient"])

    def clinic_writes_meanwhile(request):
        with app.extensions["db_sessionmaker"]() as other:
            create_token(other, "meanwhile", ["clinic:read"])
            other.commit()
        return ehr.accept(request)

    ehr.then(clinic_writes_meanwhile)
    deliver(dest_id)
    assert only(db, dest_id).status == "delivered"


def test_a_destination_removed_while_its_request_is_in_flight_ends_the_run_quietly(app, db, ehr, add_destination,
                                                                                  deliver):
    dest_id = add_destination(resource_types=["Patient"])

    def removed_meanwhile(request):
        with app.extensions["db_sessionmaker"]() as other:  # the operator's DELETE, committed mid-request
            other.delete(other.get(models.Destination, dest_id))
            other.commit()
        return ehr.accept(request)

    ehr.then(removed_meanwhile)
    deliver(dest_id)  # no exception: the messages and their attempt log went with the destination
    fresh(db)
    assert db.get(models.Destination, dest_id) is None and outbox(db, dest_id) == []


# --- Retry-After ---


def test_a_503_with_retry_after_seconds_waits_that_long_without_counting_a_failure(db, ehr, add_destination,
                                                                                  deliver, clock):
    dest_id = add_destination(resource_types=["Patient"])
    ehr.then((500, {}, ""), (503, {"Retry-After": "7"}, ""))
    deliver(dest_id)  # one counted failure first, so "not incremented" is visible
    row = only(db, dest_id)
    assert (row.attempts, destination(db, dest_id).circuit_failures) == (1, 1)

    clock.now = row.next_attempt_at
    deliver(dest_id)

    row = only(db, dest_id)
    assert row.status == "pending"
    assert 7 <= wait_of(row, clock) <= 7.7  # Retry-After plus at most 10% spread
    assert row.attempts == 1  # the server scheduled us: not a failure toward max_attempts
    dest = destination(db, dest_id)
    # nor toward the breaker: a server that schedules us is up, so the failure streak starts again
    assert (dest.circuit_state, dest.circuit_failures) == ("closed", 0)
    assert dest.paused_until is None  # a 503 delays the message, it does not pause the destination
    assert [(a.result, a.status_code) for a in attempts(db, dest_id)] == [("retry", 500), ("retry", 503)]
    assert (row.last_status, row.last_error) == (503, "HTTP 503")


@pytest.mark.parametrize("status", [503, 429])
def test_a_retry_after_http_date_is_honoured_as_the_seconds_until_that_date(db, ehr, add_destination, deliver,
                                                                           clock, status):
    dest_id = add_destination(resource_types=["Patient"])
    ehr.then((status, {"Retry-After": format_datetime(T0 + timedelta(seconds=30), usegmt=True)}, ""))
    deliver(dest_id)

    row = only(db, dest_id)
    assert (row.status, row.attempts, row.last_status) == ("pending", 0, status)
    assert 30 <= wait_of(row, clock) <= 33
    assert destination(db, dest_id).circuit_failures == 0


def test_a_429_pauses_the_whole_destination_until_retry_after(db, ehr, add_destination, deliver, clock):
    dest_id = add_destination()
    ehr.then((429, {"Retry-After": "7"}, outcome("throttled")))
    deliver(dest_id)

    # the staff's bundle was throttled; the patient's lane was not even tried
    assert len(ehr.sent) == 1
    dest = destination(db, dest_id)
    assert dest.paused_until == T0 + timedelta(seconds=7)
    staff = [m for m in outbox(db, dest_id) if m.lane == "shared"]
    assert all(m.status == "pending" and m.attempts == 0 and 7 <= wait_of(m, clock) <= 7.7 for m in staff)
    patient_lane = [m for m in outbox(db, dest_id) if m.lane != "shared"]
    assert all(m.status == "pending" and m.next_attempt_at == T0 for m in patient_lane)  # due, yet ...
    assert {a.message_id for a in attempts(db, dest_id)} == {m.id for m in staff}

    clock.advance(3)
    stats = deliver(dest_id)  # ... no worker calls a paused destination
    assert len(ehr.sent) == 1 and stats.requests == 0

    until_due(db, dest_id, clock)
    deliver(dest_id)
    assert len(ehr.sent) == 3
    assert statuses(db, dest_id) == {"delivered": 12}


def test_a_429_retry_after_beyond_the_policy_cap_pauses_only_up_to_max_retry_after(db, ehr, add_destination,
                                                                                  deliver, clock):
    dest_id = add_destination(resource_types=["Patient"], retry={"max_retry_after": 120})
    ehr.then((429, {"Retry-After": "999999"}, ""))  # a broken or hostile header
    deliver(dest_id)

    assert destination(db, dest_id).paused_until == T0 + timedelta(seconds=120)
    assert 120 <= wait_of(only(db, dest_id), clock) <= 132


@pytest.mark.parametrize("retry_after", ["0", format_datetime(T0 - timedelta(seconds=30), usegmt=True)],
                         ids=["zero", "past date"])
def test_a_retry_after_of_zero_does_not_make_one_run_resend_in_a_tight_loop(db, ehr, add_destination, deliver,
                                                                            retry_after):
    dest_id = add_destination(resource_types=["Patient"])
    ehr.then(*[(503, {"Retry-After": retry_after}, "")] * 30)  # bounded: the loop ends when these run out
    deliver(dest_id)
    assert len(ehr.sent) == 1


# --- transient failures: backoff, then a dead letter ---


TRANSIENT = {
    "500": ((500, {}, outcome("exception")), 500, "HTTP 500 (exception)"),
    "502": ((502, {}, "<html>Bad Gateway</html>"), 502, "HTTP 502"),
    "504": ((504, {}, ""), 504, "HTTP 504"),
    "read timeout": (requests.exceptions.ReadTimeout("read timed out"), None, "ReadTimeout"),
    "connect timeout": (requests.exceptions.ConnectTimeout("connect timed out"), None, "ConnectTimeout"),
    "dropped connection": (requests.exceptions.ConnectionError("Connection reset by peer"), None, "ConnectionError"),
}


@pytest.mark.parametrize("failure", TRANSIENT.values(), ids=TRANSIENT.keys())
def test_a_transient_failure_is_retried_with_exponential_backoff_then_becomes_a_dead_letter(
        db, ehr, add_destination, deliver, clock, failure):
    answer, status, error = failure
    retry = {"base_seconds": 2.0, "factor": 3.0, "jitter": 0.5, "max_attempts": 4}
    policy = RetryPolicy.from_dict(retry)
    dest_id = add_destination(resource_types=["Patient"], retry=retry)
    ehr.always(lambda request: True, answer)

    for n in (1, 2, 3):
        deliver(dest_id)
        row = only(db, dest_id)
        assert (row.status, row.attempts, row.last_status, row.last_error) == ("pending", n, status, error)
        backoff = policy.base_seconds * policy.factor ** (n - 1)
        assert backoff * (1 - policy.jitter) <= wait_of(row, clock) <= backoff
        clock.now = row.next_attempt_at - timedelta(milliseconds=1)
        deliver(dest_id)  # not due yet: nothing is sent
        assert len(ehr.sent) == n
        clock.now = row.next_attempt_at

    deliver(dest_id)  # the 4th counted failure is the last
    row = only(db, dest_id)
    assert (row.status, row.attempts, row.last_status) == ("dead", 4, status)
    assert row.last_error == f"{error} (gave up after 4 attempts)"
    assert [(a.result, a.status_code, a.error) for a in attempts(db, dest_id)] == (
        [("retry", status, error)] * 3 + [("dead", status, row.last_error)])

    clock.advance(3600)
    deliver(dest_id)  # a dead letter waits for a human
    assert len(ehr.sent) == 4


def test_failures_the_server_scheduled_never_dead_letter_a_message(db, ehr, add_destination, deliver, clock):
    dest_id = add_destination(resource_types=["Patient"], retry={"max_attempts": 2})
    ehr.then(*[(503, {"Retry-After": "1"}, "")] * 4)

    for _ in range(4):  # twice max_attempts: still pending, never counted
        deliver(dest_id)
        row = only(db, dest_id)
        assert (row.status, row.attempts) == ("pending", 0)
        clock.now = row.next_attempt_at
    deliver(dest_id)

    assert len(ehr.sent) == 5
    assert only(db, dest_id).status == "delivered"


# --- circuit breaker ---


FAST = {"base_seconds": 0.5, "factor": 1.0, "jitter": 0.0}  # every retry due 0.5 s later


def _open_the_circuit(db, ehr, deliver, clock, dest_id: str) -> datetime:
    """Five consecutive failed requests; returns when the circuit opened. A run sends the staff's
    bundle and the patient's Patient (it refers to no staff; the referral after it waits for its
    psychiatrist), so two a run, and the fifth opens the circuit before anything else goes out."""
    ehr.always(lambda request: True, (500, {}, ""))
    for run, failures in enumerate((2, 4, 5), start=1):
        deliver(dest_id)
        dest = destination(db, dest_id)
        assert dest.circuit_failures == failures
        assert dest.circuit_state == ("open" if run == 3 else "closed")
        if run < 3:
            clock.advance(0.5)
    assert len(ehr.sent) == 5
    ehr.rules.clear()
    return destination(db, dest_id).circuit_opened_at


def test_five_consecutive_failures_open_the_circuit_and_nothing_is_sent_while_open(db, ehr, add_destination,
                                                                                  deliver, clock):
    dest_id = add_destination(retry=FAST)
    opened = _open_the_circuit(db, ehr, deliver, clock, dest_id)
    assert opened == clock()

    clock.advance(4.9)  # every message is due again, but the circuit is open
    assert any(m.next_attempt_at <= clock() for m in outbox(db, dest_id))
    stats = deliver(dest_id)
    assert stats.requests == 0 and len(ehr.sent) == 5
    assert destinations.BREAKER.shown(destinations.circuit_state(destination(db, dest_id)), clock()) == "open"


def test_after_the_reset_time_one_probe_goes_out_and_its_success_closes_the_circuit(db, ehr, add_destination,
                                                                                   deliver, clock):
    dest_id = add_destination(retry=FAST)
    opened = _open_the_circuit(db, ehr, deliver, clock, dest_id)

    clock.now = opened + timedelta(seconds=destinations.BREAKER.reset_seconds)
    deliver(dest_id)

    assert len(ehr.sent) == 5 + 2  # the probe (staff) succeeded, so the patient's lane followed
    dest = destination(db, dest_id)
    assert (dest.circuit_state, dest.circuit_failures, dest.circuit_opened_at) == ("closed", 0, None)
    assert dest.last_success_at == clock()
    assert statuses(db, dest_id) == {"delivered": 12}


def test_a_failed_probe_reopens_the_circuit_for_twice_as_long(db, ehr, add_destination, deliver, clock):
    dest_id = add_destination(retry=FAST)
    opened = _open_the_circuit(db, ehr, deliver, clock, dest_id)

    clock.now = opened + timedelta(seconds=5)
    ehr.then((502, {}, ""))
    stats = deliver(dest_id)
    assert stats.requests == 1  # one probe; it failed, so the patient's lane did not follow
    dest = destination(db, dest_id)
    assert (dest.circuit_state, dest.circuit_failures, dest.circuit_opened_at) == ("open", 6, clock())

    reopened = clock()
    clock.now = reopened + timedelta(seconds=9.9)
    assert deliver(dest_id).requests == 0  # 10 s now, not 5
    clock.now = reopened + timedelta(seconds=10)
    deliver(dest_id)
    assert len(ehr.sent) == 5 + 1 + 2
    assert destination(db, dest_id).circuit_state == "closed"
    assert statuses(db, dest_id) == {"delivered": 12}


def test_503s_with_retry_after_never_open_the_circuit(db, ehr, add_destination, deliver, clock):
    dest_id = add_destination(resource_types=["Patient"])
    ehr.then(*[(503, {"Retry-After": "2"}, "")] * 7)

    for n in range(1, 8):
        assert deliver(dest_id).requests == 1  # the breaker never holds a request back
        dest = destination(db, dest_id)
        assert (dest.circuit_state, dest.circuit_failures) == ("closed", 0), n
        clock.now = only(db, dest_id).next_attempt_at
    deliver(dest_id)
    assert only(db, dest_id).status == "delivered"


def test_a_success_resets_the_count_of_consecutive_failures(db, ehr, add_destination, deliver, clock):
    dest_id = add_destination(resource_types=["Patient", "Observation"], mode="individual", retry=FAST)
    # four failures, then the patient goes through; then a score fails four times: never 5 in a row
    ehr.then(*[(500, {}, "")] * 4, ehr.accept, *[(500, {}, "")] * 4)
    failures = []
    for _ in range(8):  # the 5th run sends the patient (accepted) and the first score (refused)
        deliver(dest_id)
        failures.append(destination(db, dest_id).circuit_failures)
        until_due(db, dest_id, clock)
    assert failures == [1, 2, 3, 4, 1, 2, 3, 4]
    assert destination(db, dest_id).circuit_state == "closed"
    assert only(db, dest_id).status == "delivered"
    deliver(dest_id)
    assert statuses(db, dest_id) == {"delivered": 3}


# --- refused: dead letters ---


@pytest.mark.parametrize("status", [400, 404, 422])
def test_a_refused_single_request_is_a_dead_letter_at_once_keeping_their_operation_outcome(
        db, ehr, add_destination, deliver, clock, status):
    dest_id = add_destination(resource_types=["Patient"])
    refusal = outcome("invariant", "Patient.name: something their profile wants")
    ehr.then((status, {}, refusal))
    deliver(dest_id)

    row = only(db, dest_id)
    assert (row.status, row.last_status, row.attempts) == ("dead", status, 1)
    assert row.outcome == refusal
    assert row.last_error == f"HTTP {status} (invariant)"  # the issue codes, not the diagnostics
    assert [(a.request, a.result, a.status_code) for a in attempts(db, dest_id)] == [("PUT Patient", "dead",
                                                                                      status)]
    clock.advance(3600)
    deliver(dest_id)
    assert len(ehr.sent) == 1  # never retried by itself
    assert destination(db, dest_id).circuit_failures == 0  # the server answered: it is not down


def test_a_dead_letter_does_not_hold_back_the_other_messages_or_lanes(db, ehr, add_destination, deliver):
    dest_id = add_destination(mode="individual")
    refusal = outcome("value")
    ehr.always(lambda request: path_of(request) == PHQ9_URL, (422, {}, refusal))
    deliver(dest_id)

    assert len(ehr.sent) == 12
    dead = [m for m in outbox(db, dest_id) if m.status == "dead"]
    assert len(dead) == 1 and dead[0].resource_type == "Observation" and dead[0].outcome == refusal
    assert statuses(db, dest_id) == {"delivered": 11, "dead": 1}
    assert ("PUT", GAD7_URL) in ehr.sent[ehr.sent.index(("PUT", PHQ9_URL)):]  # the same lane, after it


# --- 409/412: reconcile ---


@pytest.mark.parametrize("status", [409, 412])
def test_a_conflict_is_reconciled_by_finding_their_copy_and_updating_it_by_id(db, ehr, add_destination, deliver,
                                                                             status):
    dest_id = add_destination(resource_types=["Patient"])
    ehr.then((status, {}, outcome("conflict")), (200, {}, searchset("theirs-9")))
    deliver(dest_id)

    assert ehr.sent == [("PUT", PATIENT_URL), ("GET", f"{PATIENT_URL}&_count=5"), ("PUT", "Patient/theirs-9")]
    assert ehr.bodies[2]["id"] == "theirs-9"
    row = only(db, dest_id)
    assert (row.status, row.outcome) == ("delivered", None)
    assert remote(db, dest_id)[("Patient", row.resource_id)].remote_id == "theirs-9"
    assert [a.result for a in attempts(db, dest_id)] == ["delivered"]


def test_a_conflict_with_several_copies_there_is_a_dead_letter_for_a_human(db, ehr, add_destination, deliver):
    dest_id = add_destination(resource_types=["Patient"])
    ehr.then((409, {}, outcome("conflict")), (200, {}, searchset("a", "b")))
    deliver(dest_id)

    assert [m for m, _ in ehr.sent] == ["PUT", "GET"]  # no guess at which copy to overwrite
    row = only(db, dest_id)
    assert (row.status, row.last_status) == ("dead", 409)
    assert "2 resources there carry this identifier" in row.last_error


# --- refused Bundles: split, never resent unchanged ---


def _bundle_of_more_than(n: int) -> Callable[[requests.PreparedRequest], bool]:
    def when(request: requests.PreparedRequest) -> bool:
        return request.method == "POST" and len(json.loads(request.body)["entry"]) > n
    return when


def test_a_transaction_refused_whole_is_split_in_halves_and_never_resent_unchanged(db, ehr, add_destination,
                                                                                  deliver):
    # like Medplum: no more than 3 conditional entries in one transaction
    dest_id = add_destination(max_bundle_entries=8)
    refused = (400, {}, outcome("too-costly"))
    ehr.always(_bundle_of_more_than(3), refused)
    deliver(dest_id)

    assert statuses(db, dest_id) == {"delivered": 12}
    sizes = [len(b["entry"]) if m == "POST" else 1 for (m, _), b in zip(ehr.sent, ehr.bodies, strict=True)]
    # 7 is refused and halved (4 + 3); the 4 is refused too and halved (2 + 2); both halves pass,
    # so 2 is learned as the limit and nothing larger goes out again
    assert [n for n in sizes if n > 3] == [7, 4] and max(sizes[sizes.index(4) + 1:]) <= 2
    refused_bodies = [b for b, n in zip(ehr.bodies, sizes, strict=True) if n > 3]
    assert all(ehr.bodies.count(b) == 1 for b in refused_bodies)
    staff = {m.id for m in outbox(db, dest_id) if m.lane == "shared"}
    splits = [a for a in attempts(db, dest_id) if a.result == "split"]
    assert {a.message_id for a in splits} == staff
    assert {a.request for a in splits} == {"transaction 7", "transaction 4"}


def _holding(resource_type: str) -> Callable[[requests.PreparedRequest], bool]:
    """A request that writes a resource of the type (alone or in a Bundle)."""
    def when(request: requests.PreparedRequest) -> bool:
        if request.method == "POST":
            return any(e["request"]["url"].startswith(resource_type) for e in json.loads(request.body)["entry"])
        return path_of(request).startswith(resource_type)
    return when


def test_one_invalid_resource_is_a_dead_letter_and_teaches_no_bundle_limit(db, ehr, add_destination, deliver):
    # the Organization is refused wherever it goes: halving finds it, every other entry is delivered,
    # and bundles stay full size afterwards (the size was never the problem)
    dest_id = add_destination(max_bundle_entries=8)
    ehr.always(_holding("Organization"), (422, {}, outcome("invariant")))
    deliver(dest_id)

    rows = outbox(db, dest_id)
    assert [m.resource_type for m in rows if m.status == "dead"] == ["Organization"]
    # the referral names the clinic as its performer: it waits for the Organization (a dead letter
    # until someone fixes it) instead of going out with a reference the destination cannot resolve
    assert [m.resource_type for m in rows if m.status == "pending"] == ["ServiceRequest"]
    assert statuses(db, dest_id) == {"delivered": 10, "dead": 1, "pending": 1}
    assert dest_id not in engine._LEARNED_LIMIT


def test_a_single_refused_entry_is_a_dead_letter_not_a_loop(db, ehr, add_destination, deliver, clock):
    # the scores alone (their subject, a Patient, is not sent there): a lane of two independent entries
    dest_id = add_destination(resource_types=["Observation"])
    refused = (400, {}, outcome("invalid"))
    ehr.always(lambda request: True, refused)
    deliver(dest_id)

    # the pair refused, then each alone: refused, dead
    assert ehr.sent == [("POST", ""), ("PUT", PHQ9_URL), ("PUT", GAD7_URL)]
    assert statuses(db, dest_id) == {"dead": 2}
    assert all(m.outcome == outcome("invalid") and m.last_status == 400 for m in outbox(db, dest_id))
    assert [a.result for a in attempts(db, dest_id)] == ["split", "split", "dead", "dead"]
    clock.advance(3600)
    deliver(dest_id)
    assert len(ehr.sent) == 3


def test_a_batch_resends_only_the_entries_that_failed(db, ehr, add_destination, deliver, clock):
    dest_id = add_destination(resource_types=["Practitioner"], mode="batch")

    def second_unavailable(request):
        status, headers, body = ehr.accept(request)
        body["entry"][1] = {"response": {"status": "503 Service Unavailable"}}
        return status, headers, body

    ehr.then(second_unavailable)
    deliver(dest_id)
    rows = outbox(db, dest_id)
    assert [m.status for m in rows] == ["delivered", "pending", "delivered"]
    assert (rows[1].attempts, rows[1].last_status) == (1, 503)
    assert [(a.request, a.result) for a in attempts(db, dest_id)] == [("batch 3", "delivered"), ("batch 3", "retry"),
                                                                      ("batch 3", "delivered")]

    until_due(db, dest_id, clock)
    deliver(dest_id)
    resent = ehr.bodies[1]
    assert resent["type"] == "batch" and len(resent["entry"]) == 1
    assert resent["entry"][0]["resource"]["identifier"][0]["value"] == "pr-002"
    assert statuses(db, dest_id) == {"delivered": 3}


def test_a_batch_entry_refused_is_a_dead_letter_and_the_others_are_delivered(db, ehr, add_destination, deliver):
    dest_id = add_destination(resource_types=["Practitioner"], mode="batch")
    refusal = outcome("required")

    def second_refused(request):
        status, headers, body = ehr.accept(request)
        body["entry"][1] = {"response": {"status": "422 Unprocessable Entity", "outcome": refusal}}
        return status, headers, body

    ehr.then(second_refused)
    deliver(dest_id)

    rows = outbox(db, dest_id)
    assert [m.status for m in rows] == ["delivered", "dead", "delivered"]
    assert (rows[1].outcome, rows[1].last_status, rows[1].last_error) == (refusal, 422, "HTTP 422 (required)")
    assert len(ehr.sent) == 1


# --- idempotency across a dropped connection ---


def test_a_retry_after_a_dropped_connection_is_the_same_conditional_update(db, ehr, add_destination, deliver, clock):
    dest_id = add_destination(resource_types=["Patient"])
    ehr.then(ehr.applied_then_dropped)
    deliver(dest_id)
    row = only(db, dest_id)
    assert (row.status, row.last_error) == ("pending", "ConnectionError")
    assert list(ehr.held.values()) == ["Patient/ehr-1"]  # they did apply it

    clock.now = row.next_attempt_at
    deliver(dest_id)

    # not a create: the conditional update on our identifier finds the one they made
    assert ehr.sent == [("PUT", PATIENT_URL), ("PUT", PATIENT_URL)]
    assert list(ehr.held.values()) == ["Patient/ehr-1"]
    row = only(db, dest_id)
    assert row.status == "delivered"
    assert remote(db, dest_id)[("Patient", row.resource_id)].remote_id == "ehr-1"


def test_once_their_id_is_known_a_change_and_its_retry_update_that_id(db, api, ehr, add_destination, deliver,
                                                                      clock):
    dest_id = add_destination(resource_types=["Patient"])
    deliver(dest_id)
    assert api.put("/patients/pt-0001", {**PATIENT, "status": "inactive"}).status_code == 200

    ehr.then(ehr.applied_then_dropped)
    deliver(dest_id)
    changed = outbox(db, dest_id)[-1]
    assert changed.status == "pending"
    clock.now = changed.next_attempt_at
    deliver(dest_id)

    assert ehr.sent == [("PUT", PATIENT_URL), ("PUT", "Patient/ehr-1"), ("PUT", "Patient/ehr-1")]
    assert ehr.bodies[1] == ehr.bodies[2] and ehr.bodies[2]["active"] is False
    assert statuses(db, dest_id) == {"delivered": 2}


def test_a_transaction_resent_after_a_dropped_connection_creates_nothing_twice(db, ehr, add_destination, deliver,
                                                                               clock):
    dest_id = add_destination()
    ehr.then(ehr.applied_then_dropped)
    deliver(dest_id)
    # the staff's bundle, applied though its answer was lost, and the patient's Patient (it refers
    # to no staff, so it did not wait for them)
    assert len(ehr.held) == 8
    until_due(db, dest_id, clock)
    deliver(dest_id)

    first = ehr.bodies[0]

    def urls(body: dict) -> list[str]:
        return [e["request"]["url"] for e in body.get("entry", [])]

    [again] = [b for b in ehr.bodies[1:] if urls(b) == urls(first)]
    assert first == again  # the same conditional updates ...
    assert all(e["request"]["method"] == "PUT" and "?identifier=" in e["request"]["url"] for e in again["entry"])
    assert len(ehr.held) == 12  # ... so the destination holds each resource once
    assert statuses(db, dest_id) == {"delivered": 12}


# --- the attempt log ---


def test_the_attempt_log_carries_no_phi(db, ehr, add_destination, deliver, clock):
    dest_id = add_destination(resource_types=["Patient"])
    quoted = f"{PATIENT['name']['given'][0]} {PATIENT['name']['family']}, born {PATIENT['birth_date']}"
    ehr.then(requests.exceptions.ConnectionError(f"dropped while sending {quoted}"),
             (503, {}, outcome("transient", quoted)),
             (500, {}, f"<html>Internal error for {quoted} ({PATIENT['mrn']})</html>"),
             (422, {}, outcome("invariant", f"Patient {quoted}: telecom +1 555 0100 is not valid")))
    for _ in range(4):
        deliver(dest_id)
        until_due(db, dest_id, clock)

    row = only(db, dest_id)
    assert row.status == "dead"
    log = attempts(db, dest_id)
    assert [(a.request, a.result, a.status_code) for a in log] == [
        ("PUT Patient", "retry", None), ("PUT Patient", "retry", 503), ("PUT Patient", "retry", 500),
        ("PUT Patient", "dead", 422)]
    texts = [str(getattr(a, c.name)) for a in log for c in models.DeliveryAttempt.__table__.columns]
    texts += [row.last_error, destination(db, dest_id).last_error]
    for value in PHI:
        assert not [t for t in texts if value in t], value


