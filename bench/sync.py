"""Push sync throughput: how fast the outbox engine (``ketamine-fhir worker --drain`` processes) delivers a
synthetic clinic to a real external FHIR server, against a trivial client that sends the very same resources
in the same request shape -- the ceiling -- on a clean network and through a fault-injecting proxy.

What is measured, for a synthetic clinic of N patients (``--patients``, default 20) and each backend
(``--backends``, default ``postgresql``; ``sqlite,postgresql`` for both):

* Data: ``ketamine-fhir synth --patients N --seed S`` loaded once per backend with ``ketamine-fhir import``
  (it migrates, maps to FHIR at write time and ANALYZEs), into a fresh database ``kf_bench_<random>`` created
  on the server of ``--pg-url`` (dropped at the end) or a fresh SQLite data folder. The clinic is reused by
  every run of that backend: each run is a new destination on a freshly reset peer.
* The destination server: ``../shared/peer-fhir`` (Medplum's FHIR router over its in-memory repository,
  validation of writes on, one request at a time; installed into ``.cache/peer-fhir`` and started through
  ``tests.sync.peer.peer_server``), emptied with ``$peer-reset`` before every run.
* ``ceiling N thread(s)``: a trivial client -- plain ``requests.Session`` per thread, no database, no outbox,
  no retry logic on a clean network -- sends what a destination with default settings receives: the current,
  non-deleted rows of ``fhir_resources`` of ``service.sync.destinations.DEFAULT_TYPES`` (``content`` is the
  FHIR JSON), read from our database before the timer starts. The request shape is the engine's default,
  entry for entry: the resources are grouped into the engine's lanes (``outbox.lane_of``: one per patient,
  plus ``shared`` for Organization / Practitioner / PractitionerRole), put in the engine's order within a lane
  (the sweep's type order, then ``service.sync.entries.order``: reference targets first), and cut into
  transaction Bundles of at most ``max_bundle_entries`` (8, the destination default and Medplum's limit for
  conditional entries) without crossing a lane, so both clients send the same number of requests with the
  same entries each. Entries are built by ``service.sync.entries.entry_for``, the engine's own pure
  function: a conditional update ``PUT Type?identifier=<system>|<value>`` on the business identifier
  (``PUT AdverseEvent/<our id>``, which R4 cannot search by identifier), references to resources in the same
  Bundle as ``urn:uuid:<our id>`` and to resources sent earlier as ``Type/<their id>`` (learnt from the
  Bundle response's ``location``), exactly as the engine rewrites them. So the peer does the same work
  (identifier searches, creates, reference checks) for both clients. We chose conditional PUT plus urn:uuid
  over ``PUT Type/<our id>`` because the latter skips the peer's identifier search and would not be the
  request our engine sends. Like the engine, a chunk of one entry goes as a single ``PUT``, not a Bundle.
  The shared lane goes first (patient resources reference its practitioners), then the patient lanes are
  handed to the threads from one queue. Bodies are serialised with orjson. Timed from the first request to
  the last answer. Each backend's runs start with one untimed ceiling run: the first requests after the
  peer starts are slower (Node's JIT), and the reference row must not pay for that.
* ``ours N worker(s)``: ``service.sync.destinations.create`` (what ``ketamine-fhir destination add`` and the
  admin API call: the sweep queues the initial load in ``sync_outbox``) of a destination with default
  settings (transaction mode, 8 entries, default retry policy and circuit breaker, no rate limit) at the
  peer's URL, committed, then N ``ketamine-fhir worker --drain`` processes started at once (environment:
  ``DATABASE_URL`` / ``KETAMINE_FHIR_DATA`` of the backend, ``KETAMINE_FHIR_LOG_LEVEL=WARNING``, no broker),
  timed from just before the destination is created until every worker has exited and the destination has
  nothing pending or in flight. So the time includes the sweep, the workers' start-up (Python imports,
  migration check) and their exit. ``worker --drain`` gives up after 600 s; if it exits with work left, the
  bench starts the workers again (shown as ``relaunched``; a deployment's workers keep running) until
  ``--run-timeout``. A worker that exits non-zero (a crash) fails the run, but the bench restarts the
  workers as a supervisor would (at most 5 times), finishes the run and prints the crash's traceback, so
  the rest of the figures still come out. Two workers run on PostgreSQL only (SQLite serialises writers;
  one process there).
* Faults (skip with ``--no-faults``): the same runs, ceiling and ours, through
  ``../shared/peer-fhir/fault-proxy.py`` (``tests.sync.peer.fault_proxy``, a fresh proxy per run, so the
  seeded fault sequence restarts) with the fault mix of ``tests/sync/test_sync_peer.py``:
  ``--p503 0.33 --p429 0.05 --pdrop 0.05 --pdrop-after 0.05 --retry-after 1 --seed 7`` (a request fails
  48 % of the time: 503 or 429 with ``Retry-After: 1`` before the peer sees it, a reset connection before it,
  or a reset connection after the peer applied it). ``--outage`` also takes the peer down for 10 s
  (``POST /__fault/down?seconds=10``) right after the destination is created / before the ceiling starts.
  Our engine runs with the destination's DEFAULT retry policy and circuit breaker (nothing is
  monkeypatched: a 503/429 waits its ``Retry-After`` (+ up to 10 %) and does not count as a failed attempt;
  other failures back off from 2 s, factor 2, jitter 0.5, 15 attempts; the breaker opens after 5
  consecutive failures without ``Retry-After`` and probes after 5 s, doubling; a 429 pauses the destination
  for its ``Retry-After``), so the figures are what a deployment sees.
  The faulty ceiling is the trivial client with the least retry logic that gets everything through: a
  failed request is resent unchanged (a transaction of conditional updates is idempotent, so resending one
  the peer already applied is harmless), after its ``Retry-After`` on a 503/429 (a 429 also holds back every
  thread for that long), at once after a first dropped connection and then after 0.1, 0.2 ... 2 s; while a
  lane waits, its thread goes on with other lanes.
* After every run -- ceiling ones too -- ``tests.sync.peer.assert_destination_holds_exactly_ours`` checks
  that the peer holds every current resource of ours exactly once, with equal content, nothing else, and
  every reference resolving; for our runs the number of delivered outbox messages must equal it and there
  must be no dead letter and no traceback in a worker's log. Any failure is listed after the tables and
  the bench exits 1.

Printed, one table per backend: run, resources (verified on the peer), requests, failed requests,
seconds, resources/s, ratio to ``ceiling 1 thread`` (clean) and, for fault runs, to ``ceiling 1 thread
faults``, seconds until the first answer (ours: worker start-up plus the sweep), summed HTTP time (request
sent until answer read, over all threads/workers), and deferrals (ours: a lane whose next resource
references one the destination does not hold yet waits until that resource's message is due, not counted
here, or 1 s at a time when it is not queued, counted; see ``engine.DEFER_SECONDS``).
How requests are counted: the ceiling counts its own HTTP requests. Ours: the distinct (worker, at, request)
triples of the destination's ``sync_attempts`` rows -- the engine writes one row per outbox message per
request, all of a request's rows with the same worker, settle time and request label, split refusals
included -- so one triple is one HTTP request. The reconciliation requests the engine makes inside one
attempt on a 409/412 (a GET, then a PUT) are not separate triples; on a fault run the proxy's own
``requests`` counter (every request it received) is printed next to it as a cross-check. For fault runs the
proxy's ``/__fault/stats`` counters are printed, and for our runs the dead letters (must be 0), the time of
the sweep (``destinations.create``), and from the attempt log the longest pause between two answers and the
sum of all pauses of 1 s or more (where our run waited: backoff, deferrals, an open circuit, a 429 pause).

Everything runs on this machine (2 shared cores): the peer (one Node process), the proxy, the database
server, the bench and the workers share the cores and talk over loopback, so the figures move by +-30 %
between runs; compare rows of one run. The peer, the proxies and the workers are stopped at the end, also
on errors (SIGTERM, SIGKILL after 15 s), and the PostgreSQL database dropped.

Run (from the repository root)::

    .venv/bin/python bench/sync.py [--patients 20] [--backends postgresql|sqlite,postgresql]
        [--outage] [--no-faults] [--run-timeout 1800] [--seed 1]
        [--pg-url postgresql+psycopg://postgres@127.0.0.1:5432/test]

A default run (20 patients, PostgreSQL, with faults) takes a few minutes, most of it in our fault runs
(backoff waits and an open circuit); ``--patients 4 --backends sqlite,postgresql`` is a quick check.
"""

from __future__ import annotations

import argparse
import heapq
import itertools
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager, suppress
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from types import ModuleType
from typing import Any

import orjson
import requests
from sqlalchemy import create_engine, func, select, text
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session, sessionmaker

from service import models
from service.config import Settings
from service.db import make_engine, session_factory
from service.sync import destinations, outbox
from service.sync.entries import Item, entry_for, order, remote_id_of

ROOT = Path(__file__).resolve().parent.parent
CLI = Path(sys.executable).parent / "ketamine-fhir"
DEFAULT_PG_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/test"
BACKENDS = ("sqlite", "postgresql")
DEFAULT_PATIENTS = 20
#: the fault mix of tests/sync/test_sync_peer.py::test_through_faults_and_an_outage_the_end_state_is_the_same
FAULT_ARGS = ("--p503", "0.33", "--p429", "0.05", "--pdrop", "0.05", "--pdrop-after", "0.05", "--retry-after", "1",
              "--seed", "7")
OUTAGE_SECONDS = 10
#: worker crashes in one run after which the bench gives up
MAX_CRASHES = 5
#: the engine's defaults (service/sync/client.py via the destination's connect/read timeouts)
TIMEOUT = (5.0, 30.0)
FHIR_JSON = "application/fhir+json"
#: the destination default (DestinationSchema.max_bundle_entries)
MAX_ENTRIES = int(destinations.DestinationSchema().load({"name": "x", "url": "http://x/fhir"})["max_bundle_entries"])

Log = Callable[[str], None]


class BenchError(RuntimeError):
    """A run did not do what it was meant to do."""


def peer_tools() -> ModuleType:
    """``tests.sync.peer`` (the peer server, fault proxy, reset and the end-state check)."""
    if str(ROOT) not in sys.path:
        sys.path.insert(0, str(ROOT))
    import tests.sync.peer as peer

    return peer


@dataclass
class Run:
    backend: str
    label: str
    ours: bool
    faulty: bool
    resources: int = 0  # verified on the peer
    requests: int = 0
    failed: int = 0  # requests that got no 2xx answer (and were retried)
    seconds: float = 0.0
    first_answer: float | None = None
    http_seconds: float = 0.0
    deferrals: int = 0
    dead: int = 0
    delivered: int = 0
    splits: int = 0
    relaunches: int = 0
    crashes: int = 0  # ours: worker processes that exited non-zero (restarted)
    sweep_seconds: float = 0.0  # ours: destinations.create (the sweep queueing the initial load) + commit
    gaps: tuple[float, float] = (0.0, 0.0)  # ours: the longest pause between answers, and all pauses >= 1 s
    proxy: dict[str, Any] | None = None
    problems: list[str] = field(default_factory=list)

    @property
    def rate(self) -> float:
        return self.resources / self.seconds if self.seconds else 0.0


@dataclass
class Lanes:
    """What a default destination receives, in the engine's lanes and order."""

    shared: list[Item]
    patients: list[list[Item]]

    @property
    def resources(self) -> int:
        return len(self.shared) + sum(len(lane) for lane in self.patients)

    @property
    def requests(self) -> int:
        """Requests of a clean run: chunks of MAX_ENTRIES per lane."""
        return sum(-(-len(lane) // MAX_ENTRIES) for lane in [self.shared, *self.patients] if lane)


# --------------------------------------------------------------------------- processes and backends


def run_cli(args: list[str], env: dict[str, str], stdout: Path | None = None) -> str:
    """Run ``ketamine-fhir ARGS``; return its stdout (or write it to ``stdout``); raise on failure."""
    with ExitStack() as stack:
        out = stack.enter_context(stdout.open("wb")) if stdout else subprocess.PIPE
        proc = subprocess.run([str(CLI), *args], env=env, stdout=out, stderr=subprocess.PIPE, check=False)
    if proc.returncode != 0:
        shown = proc.stdout.decode()[-2000:] if isinstance(proc.stdout, bytes) else ""
        raise BenchError(f"ketamine-fhir {' '.join(args)} exited {proc.returncode}:\n{shown}\n"
                         f"{proc.stderr.decode()[-3000:]}")
    return proc.stdout.decode() if isinstance(proc.stdout, bytes) else ""


def clean_env(data_dir: Path) -> dict[str, str]:
    """This process's environment without any database, broker or service setting of the caller."""
    env = {k: v for k, v in os.environ.items() if k != "DATABASE_URL" and not k.startswith("KETAMINE_FHIR_")}
    env["KETAMINE_FHIR_DATA"] = str(data_dir)
    env["KETAMINE_FHIR_LOG_LEVEL"] = "WARNING"
    env["KETAMINE_FHIR_RATE_LIMITS"] = "off"  # the bench measures throughput, which the limits would cap
    return env


@contextmanager
def backend_env(backend: str, workdir: Path, pg_url: str, log: Log) -> Iterator[dict[str, str]]:
    """The environment for ``ketamine-fhir`` on a fresh SQLite data folder or a fresh PostgreSQL database
    (created here, dropped on exit)."""
    env = clean_env(workdir / f"data-{backend}")
    if backend == "sqlite":
        yield env
        return
    admin = create_engine(pg_url, isolation_level="AUTOCOMMIT")
    db = f"kf_bench_{uuid.uuid4().hex[:12]}"
    try:
        with admin.connect() as conn:
            conn.execute(text(f'CREATE DATABASE "{db}"'))
        log(f"postgresql: created database {db}")
        env["DATABASE_URL"] = make_url(pg_url).set(database=db).render_as_string(hide_password=False)
        yield env
    finally:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{db}" WITH (FORCE)'))
        admin.dispose()
        log(f"postgresql: dropped database {db}")


def stop_workers(procs: list[subprocess.Popen[bytes]], log: Log) -> None:
    """SIGTERM the worker process groups we started that are still running; SIGKILL after 15 s."""
    running = [p for p in procs if p.poll() is None]
    for p in running:
        with suppress(ProcessLookupError):
            os.killpg(p.pid, signal.SIGTERM)
    for p in running:
        try:
            p.wait(timeout=15)
        except subprocess.TimeoutExpired:
            log(f"worker {p.pid} did not stop in 15 s: SIGKILL")
            with suppress(ProcessLookupError):
                os.killpg(p.pid, signal.SIGKILL)
            p.wait(timeout=10)
    if running:
        log(f"stopped {len(running)} worker process(es)")


# --------------------------------------------------------------------------- what a destination receives


def load_lanes(factory: sessionmaker[Session]) -> Lanes:
    """Our current resources of the default types, in the engine's lanes and order (see the docstring)."""
    type_order = {t: i for i, t in enumerate(destinations.SYNCABLE_TYPES)}
    res = models.FhirResource
    lanes: dict[str, list[tuple[Any, ...]]] = {}
    with factory() as db:
        found = db.execute(select(res.resource_type, res.id, res.version_id, res.content, res.content_hash,
                                 res.patient_id, res.last_updated)
                          .where(res.resource_type.in_(destinations.DEFAULT_TYPES), res.deleted.is_(False)))
        for rtype, rid, version, content, content_hash, patient_id, last_updated in found:
            lane = outbox.lane_of(db, rtype, patient_id)
            item = Item(rtype, rid, version, orjson.loads(content), content_hash, False)
            lanes.setdefault(lane, []).append((type_order.get(rtype, 99), last_updated, rtype, rid, item))
    ordered = {name: order(row[-1] for row in sorted(keyed, key=lambda r: r[:4])) for name, keyed in lanes.items()}
    shared = ordered.pop(outbox.SHARED_LANE, [])
    return Lanes(shared, [ordered[name] for name in sorted(ordered)])


# --------------------------------------------------------------------------- the ceiling


@dataclass
class _LaneWork:
    items: list[Item]
    pos: int = 0  # items delivered so far
    failures: int = 0  # consecutive failures of its next request


class Ceiling:
    """The trivial client: lanes of Bundles from a queue, ``threads`` at a time (see the docstring)."""

    def __init__(self, base: str, faulty: bool, sent_types: set[str]):
        self.base, self.faulty, self.sent_types = base, faulty, sent_types
        self.remote: dict[tuple[str, str], str] = {}  # our (type, id) -> their id
        self.lock = threading.Lock()
        self.requests = self.failed = 0
        self.http = 0.0
        self.first: float | None = None
        self.started = 0.0
        self.paused_until = 0.0  # monotonic; a 429 holds back every thread

    def run(self, lanes: Lanes, threads: int) -> float:
        """Send the shared lane, then the patient lanes; returns the wall seconds."""
        self.started = time.perf_counter()
        self._pool([_LaneWork(lanes.shared)], threads)
        self._pool([_LaneWork(lane) for lane in lanes.patients], threads)
        return time.perf_counter() - self.started

    def _pool(self, lanes: list[_LaneWork], threads: int) -> None:
        seq = itertools.count()
        heap = [(0.0, next(seq), lane) for lane in lanes if lane.items]
        heapq.heapify(heap)
        outstanding = [len(heap)]
        errors: list[BaseException] = []
        cond = threading.Condition()

        def take() -> _LaneWork | None:
            with cond:
                while True:
                    if errors or not outstanding[0]:
                        return None
                    if heap:
                        wait = max(heap[0][0], self.paused_until) - time.monotonic()
                        if wait <= 0:
                            return heapq.heappop(heap)[2]
                        cond.wait(wait)
                    else:
                        cond.wait()

        def worker() -> None:
            session = requests.Session()
            session.headers.update({"Accept": FHIR_JSON, "Content-Type": FHIR_JSON})
            try:
                while (lane := take()) is not None:
                    retry_at = self._lane(session, lane)
                    with cond:
                        if retry_at is None:
                            outstanding[0] -= 1
                        else:
                            heapq.heappush(heap, (retry_at, next(seq), lane))
                        cond.notify_all()
            except BaseException as exc:
                with cond:
                    errors.append(exc)
                    cond.notify_all()
            finally:
                session.close()

        pool = [threading.Thread(target=worker, daemon=True) for _ in range(threads)]
        for t in pool:
            t.start()
        for t in pool:
            t.join()
        if errors:
            raise errors[0]

    def _lane(self, session: requests.Session, lane: _LaneWork) -> float | None:
        """Send the lane's Bundles in order; None when done, else when to try its next one again."""
        while lane.pos < len(lane.items):
            chunk = lane.items[lane.pos:lane.pos + MAX_ENTRIES]
            entries: list[dict[str, Any]] = []
            in_bundle: set[tuple[str, str]] = set()
            for item in chunk:
                entry = entry_for(item, self.remote, in_bundle, self.sent_types)
                if entry is None:
                    raise BenchError(f"no entry for {item.key}")
                entries.append(entry)
                in_bundle.add(item.key)
            wait = self._send(session, chunk, entries)
            if wait is not None:
                lane.failures += 1
                if wait < 0:  # no Retry-After: at once the first time, then 0.1, 0.2 ... 2 s
                    wait = 0.0 if lane.failures == 1 else min(0.1 * 2 ** (lane.failures - 2), 2.0)
                return time.monotonic() + wait
            lane.failures = 0
            lane.pos += len(chunk)
        return None

    def _count(self, started: float, failed: bool) -> None:
        now = time.perf_counter()
        with self.lock:
            self.requests += 1
            self.failed += failed
            self.http += now - started
            if self.first is None:
                self.first = now - self.started

    def _send(self, session: requests.Session, chunk: list[Item], entries: list[dict[str, Any]]) -> float | None:
        """One request; None when delivered, else seconds to wait (-1: no Retry-After)."""
        if len(entries) == 1:  # as the engine: one entry goes as a single request
            method, url, body = "PUT", f"{self.base}/{entries[0]['request']['url']}", entries[0]["resource"]
        else:
            method, url, body = "POST", self.base, {"resourceType": "Bundle", "type": "transaction", "entry": entries}
        started = time.perf_counter()
        try:
            resp = session.request(method, url, data=orjson.dumps(body), timeout=TIMEOUT)
        except (requests.ConnectionError, requests.Timeout) as exc:
            self._count(started, True)
            if not self.faulty:
                raise BenchError(f"ceiling: {method} {url}: {type(exc).__name__}: {exc}") from exc
            return -1.0
        ok = 200 <= resp.status_code < 300
        self._count(started, not ok)
        if not ok:
            if self.faulty and (resp.status_code in (429, 503) or resp.status_code >= 500):
                after = resp.headers.get("Retry-After", "")
                wait = float(after) if after.strip().isdigit() else -1.0
                if resp.status_code == 429 and wait > 0:
                    with self.lock:
                        self.paused_until = max(self.paused_until, time.monotonic() + wait)
                return wait
            raise BenchError(f"ceiling: {method} {url} answered {resp.status_code}: {resp.text[:1500]}")
        if len(entries) == 1:
            got = resp.json() if resp.content else {}
            ids = [remote_id_of(resp.headers.get("Location") or resp.headers.get("Content-Location"),
                                got if got.get("resourceType") == chunk[0].resource_type else None)]
        else:
            answers = resp.json().get("entry") or []
            if len(answers) != len(entries):
                raise BenchError(f"ceiling: {len(answers)} answers to a transaction of {len(entries)}")
            bad = [a.get("response", {}).get("status") for a in answers
                   if not str(a.get("response", {}).get("status", "")).startswith("2")]
            if bad:
                raise BenchError(f"ceiling: transaction answered 200 with entry statuses {bad}")
            ids = [remote_id_of(a["response"].get("location"), a.get("resource")) for a in answers]
        for item, rid in zip(chunk, ids, strict=True):
            if not rid:
                raise BenchError(f"ceiling: no id of {item.resource_type} in the answer")
            self.remote[item.key] = rid
        return None


# --------------------------------------------------------------------------- one backend


@dataclass
class Context:
    backend: str
    env: dict[str, str]
    factory: sessionmaker[Session]
    peer: str  # the peer's base URL
    lanes: Lanes
    workdir: Path
    args: argparse.Namespace
    log: Log


@contextmanager
def maybe_proxy(ctx: Context, faulty: bool) -> Iterator[tuple[str, str | None]]:
    """(base URL to send to, proxy control URL or None): a fresh fault proxy for a fault run."""
    if not faulty:
        yield ctx.peer, None
        return
    with peer_tools().fault_proxy(ctx.peer, *FAULT_ARGS) as proxy:
        yield proxy, proxy.rsplit("/fhir", 1)[0]


def outage(control: str | None, ctx: Context) -> None:
    if control and ctx.args.outage:
        requests.post(f"{control}/__fault/down?seconds={OUTAGE_SECONDS}", timeout=5).raise_for_status()


def proxy_stats(control: str | None) -> dict[str, Any] | None:
    if control is None:
        return None
    stats: dict[str, Any] = requests.get(f"{control}/__fault/stats", timeout=5).json()
    return stats


def verify(ctx: Context, run: Run) -> None:
    """The peer holds exactly our resources (tests.sync.peer); records a problem otherwise."""
    with ctx.factory() as db:
        try:
            run.resources = peer_tools().assert_destination_holds_exactly_ours(db, ctx.peer)
        except AssertionError as exc:
            run.problems.append(f"end state on the peer: {exc}")
            run.resources = ctx.lanes.resources
    if run.resources != ctx.lanes.resources:
        run.problems.append(f"the peer holds {run.resources} of ours, a destination receives {ctx.lanes.resources}")


def run_ceiling(ctx: Context, threads: int, faulty: bool) -> Run:
    label = f"ceiling {threads} thread{'s' if threads > 1 else ''}" + (" faults" if faulty else "")
    label += " +outage" if faulty and ctx.args.outage else ""
    run = Run(ctx.backend, label, ours=False, faulty=faulty)
    peer_tools().reset(ctx.peer)
    with maybe_proxy(ctx, faulty) as (base, control):
        outage(control, ctx)
        client = Ceiling(base, faulty, set(destinations.DEFAULT_TYPES))
        run.seconds = client.run(ctx.lanes, threads)
        run.proxy = proxy_stats(control)
    run.requests, run.failed, run.http_seconds, run.first_answer = (client.requests, client.failed, client.http,
                                                                    client.first)
    verify(ctx, run)
    ctx.log(f"{ctx.backend}: {label}: {run.resources} resources, {run.requests} requests in {run.seconds:.2f} s")
    return run


def start_workers(ctx: Context, n: int, tag: str) -> list[subprocess.Popen[bytes]]:
    procs = []
    for i in range(n):
        with (ctx.workdir / f"worker-{tag}-{i}.log").open("ab") as err:
            procs.append(subprocess.Popen([str(CLI), "worker", "--drain"], env=ctx.env, stdout=subprocess.DEVNULL,
                                          stderr=err, start_new_session=True))
    return procs


def run_ours(ctx: Context, workers: int, faulty: bool) -> Run:
    label = f"ours {workers} worker{'s' if workers > 1 else ''}" + (" faults" if faulty else "")
    label += " +outage" if faulty and ctx.args.outage else ""
    run = Run(ctx.backend, label, ours=True, faulty=faulty)
    tag = f"{ctx.backend}-{label.replace(' ', '_')}"
    peer_tools().reset(ctx.peer)
    procs: list[subprocess.Popen[bytes]] = []
    with maybe_proxy(ctx, faulty) as (base, control):
        try:
            wall_start = datetime.now(UTC)
            started = time.perf_counter()
            with ctx.factory() as db:
                dest_id = destinations.create(db, {"name": f"bench-{uuid.uuid4().hex[:8]}", "url": base},
                                              datetime.now(UTC)).id
                db.commit()
                run.sweep_seconds = time.perf_counter() - started
                queued = outbox.active_total(db, dest_id)
            outage(control, ctx)
            procs = start_workers(ctx, workers, tag)
            deadline = started + ctx.args.run_timeout
            while True:
                for p in procs:
                    p.wait(timeout=max(1.0, deadline - time.perf_counter()))
                crashed = [p for p in procs if p.returncode != 0]
                for p in crashed:
                    run.crashes += 1
                    summary = crash_summary(worker_logs(ctx, tag))
                    run.problems.append(f"a worker exited {p.returncode} at {time.perf_counter() - started:.1f} s "
                                        f"(restarted, as a supervisor would):\n{summary}")
                    ctx.log(f"{label}: a worker exited {p.returncode}; restarting it:\n{summary}")
                if run.crashes > MAX_CRASHES:
                    raise BenchError(f"{label}: workers crashed {run.crashes} times")
                with ctx.factory() as db:
                    left = outbox.active_total(db, dest_id)
                if not left:
                    break
                if time.perf_counter() > deadline:
                    raise BenchError(f"{label}: {left} messages still pending after {ctx.args.run_timeout:.0f} s")
                run.relaunches += 1
                ctx.log(f"{label}: workers exited with {left} messages left: starting them again")
                procs = start_workers(ctx, workers, tag)
            run.seconds = time.perf_counter() - started
            run.proxy = proxy_stats(control)
        except subprocess.TimeoutExpired:
            raise BenchError(f"{label}: not drained in {ctx.args.run_timeout:.0f} s") from None
        finally:
            stop_workers(procs, ctx.log)
    attempt_stats(ctx, run, dest_id, wall_start)
    if run.delivered != queued:
        run.problems.append(f"{run.delivered} messages delivered of {queued} queued")
    if run.dead:
        run.problems.append(f"{run.dead} dead letters")
    if not run.crashes and "Traceback" in worker_logs(ctx, tag):
        run.problems.append(f"a traceback in a worker's log: {ctx.workdir}/worker-{tag}-*.log")
    verify(ctx, run)
    if run.delivered != run.resources:
        run.problems.append(f"{run.delivered} messages delivered, {run.resources} resources on the peer")
    with ctx.factory() as db:  # done: later runs' workers need not look at it
        dest = db.get(models.Destination, dest_id)
        if dest is not None:
            dest.enabled = False
        db.commit()
    ctx.log(f"{ctx.backend}: {label}: {run.resources} resources, {run.requests} requests in {run.seconds:.2f} s")
    return run


def worker_logs(ctx: Context, tag: str) -> str:
    return "".join(p.read_text(errors="replace") for p in sorted(ctx.workdir.glob(f"worker-{tag}-*.log")))


def crash_summary(log_text: str, lines: int = 10, width: int = 300) -> str:
    """The end of the last traceback in a worker log, long lines (SQL parameter lists) cut to ``width``."""
    start = log_text.rfind("Traceback")
    block = (log_text[start:] if start >= 0 else log_text).splitlines()
    shown = [line if len(line) <= width else line[:width] + " ..." for line in block[-lines:]]
    cut = [f"Traceback ... ({len(block) - lines} lines cut)"] if len(block) > lines else []
    return "\n".join(f"    | {line}" for line in cut + shown)


def attempt_stats(ctx: Context, run: Run, dest_id: str, wall_start: datetime) -> None:
    """Requests (distinct worker, at, request of sync_attempts), their time, and the outbox's end state."""
    a, o = models.DeliveryAttempt, models.OutboxMessage
    with ctx.factory() as db:
        rows = db.execute(select(a.worker, a.at, a.request, a.result, a.duration_ms)
                          .where(a.destination_id == dest_id)).all()
        requests_: dict[tuple[str, datetime, str], tuple[set[str], int]] = {}
        for worker, at, request, result, ms in rows:
            results, _ = requests_.setdefault((worker, at, request), (set(), ms))
            results.add(result)
        run.requests = len(requests_)
        run.failed = sum(1 for results, _ in requests_.values() if results & {"retry", "split"})
        run.splits = sum(1 for results, _ in requests_.values() if "split" in results)
        run.http_seconds = sum(ms for _, ms in requests_.values()) / 1000
        if requests_:
            answers = sorted(at for _, at, _ in requests_)
            run.first_answer = (answers[0] - wall_start).total_seconds()
            pauses = [(b - a).total_seconds() for a, b in itertools.pairwise(answers)]
            run.gaps = (max(pauses, default=0.0), sum(p for p in pauses if p >= 1.0))
        status = dict(db.execute(select(o.status, func.count()).where(o.destination_id == dest_id)
                                 .group_by(o.status)).all())
        run.delivered, run.dead = status.get("delivered", 0), status.get("dead", 0)
        run.deferrals = db.scalar(select(func.coalesce(func.sum(o.deferrals), 0)).where(o.destination_id == dest_id))


def bench_backend(backend: str, workdir: Path, clinic_file: Path, records: int, peer: str,
                  args: argparse.Namespace, log: Log) -> tuple[list[Run], list[str]]:
    notes: list[str] = []
    with backend_env(backend, workdir, args.pg_url, log) as env:
        started = time.perf_counter()
        report = orjson.loads(run_cli(["import", str(clinic_file)], env))
        if report["rejected"] or report["accepted"] != records:
            raise BenchError(f"{backend}: import accepted {report['accepted']}, rejected {report['rejected']} "
                             f"of {records}: {report['errors'][:3]}")
        notes.append(f"import of {records} records: {time.perf_counter() - started:.1f} s (CLI wall time)")
        log(f"{backend}: {notes[-1]}")
        settings = Settings.from_env(env)
        engine = make_engine(settings.database_url)
        try:
            factory = session_factory(engine, settings)
            lanes = load_lanes(factory)
            types = Counter(i.resource_type for lane in [lanes.shared, *lanes.patients] for i in lane)
            notes.append(f"a default destination receives {lanes.resources} resources in {1 + len(lanes.patients)} "
                         f"lanes, {lanes.requests} requests of <= {MAX_ENTRIES} entries on a clean run: "
                         + ", ".join(f"{t} {n}" for t, n in types.most_common()))
            ctx = Context(backend, env, factory, peer, lanes, workdir, args, log)
            most = 2 if backend == "postgresql" else 1
            run_ceiling(ctx, 1, False)  # untimed warm-up: the peer's JIT, connection set-up
            runs = [run_ceiling(ctx, 1, False), run_ceiling(ctx, 2, False)]
            runs += [run_ours(ctx, n, False) for n in range(1, most + 1)]
            if args.faults:
                runs += [run_ceiling(ctx, 1, True), run_ceiling(ctx, 2, True)]
                runs += [run_ours(ctx, n, True) for n in range(1, most + 1)]
        finally:
            engine.dispose()
    return runs, notes


# --------------------------------------------------------------------------- report


def print_table(backend: str, runs: list[Run], notes: list[str]) -> None:
    clean = next((r for r in runs if r.label == "ceiling 1 thread"), None)
    faulty = next((r for r in runs if not r.ours and r.faulty and r.label.startswith("ceiling 1 thread")), None)
    print(f"{backend}:")
    for note in notes:
        print(f"  {note}")
    header = (f"  {'run':<28} {'resources':>9} {'requests':>8} {'failed':>6} {'seconds':>8} {'res/s':>7} "
              f"{'x ceiling':>9} {'x faulty':>9} {'1st answer':>10} {'HTTP s':>7} {'deferrals':>9}")
    print(header)
    print("  " + "-" * (len(header) - 2))
    for r in runs:
        x_clean = f"{r.rate / clean.rate:>8.2f}x" if clean and clean.rate else f"{'':>9}"
        x_faulty = f"{r.rate / faulty.rate:>8.2f}x" if r.faulty and faulty and faulty.rate else f"{'':>9}"
        first = f"{r.first_answer:>9.2f}s" if r.first_answer is not None else f"{'-':>10}"
        deferrals = f"{r.deferrals:>9}" if r.ours else f"{'-':>9}"
        flag = "  FAILED" if r.problems else ""
        print(f"  {r.label:<28} {r.resources:>9} {r.requests:>8} {r.failed:>6} {r.seconds:>8.2f} {r.rate:>7.1f} "
              f"{x_clean} {x_faulty} {first} {r.http_seconds:>7.2f} {deferrals}{flag}")
    for r in runs:
        extra = []
        if r.ours:
            extra.append(f"dead letters {r.dead}")
            extra.append(f"sweep {r.sweep_seconds:.2f} s")
            extra.append(f"longest pause between answers {r.gaps[0]:.1f} s, pauses >= 1 s {r.gaps[1]:.1f} s")
            if r.splits:
                extra.append(f"{r.splits} split Bundles")
            if r.crashes:
                extra.append(f"WORKER CRASHES {r.crashes} (restarted)")
            if r.relaunches:
                extra.append(f"workers started again {r.relaunches}x with messages left (a crash, or worker "
                             "--drain's 600 s limit)")
        if r.proxy:
            keys = ("requests", "forwarded", "ok", "503", "429", "drop", "drop_after", "down", "upstream_errors")
            extra.append("fault proxy: " + ", ".join(f"{k} {r.proxy.get(k, 0)}" for k in keys))
        if extra:
            print(f"  {r.label}: " + "; ".join(extra))


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--patients", type=int, default=DEFAULT_PATIENTS,
                        help=f"synthetic patients (default {DEFAULT_PATIENTS})")
    parser.add_argument("--backends", default="postgresql", help="comma-separated: sqlite,postgresql "
                        "(default postgresql)")
    parser.add_argument("--outage", action="store_true",
                        help=f"fault runs also start with a {OUTAGE_SECONDS} s outage of the peer")
    parser.add_argument("--no-faults", dest="faults", action="store_false", help="clean runs only")
    parser.add_argument("--run-timeout", type=float, default=1800.0,
                        help="seconds one of our runs may take before the bench fails (default 1800)")
    parser.add_argument("--pg-url", default=DEFAULT_PG_URL,
                        help="a PostgreSQL server database to connect to for CREATE/DROP DATABASE")
    parser.add_argument("--seed", type=int, default=1, help="synthetic clinic seed (default 1)")
    args = parser.parse_args(argv)
    args.backends = [b.strip() for b in args.backends.split(",") if b.strip()]
    unknown = set(args.backends) - set(BACKENDS)
    if unknown or not args.backends:
        parser.error(f"--backends: unknown {', '.join(sorted(unknown)) or '(empty)'}; known: {', '.join(BACKENDS)}")
    if args.patients < 1:
        parser.error("--patients must be at least 1")
    if args.run_timeout <= 0:
        parser.error("--run-timeout must be positive")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    run_start = time.perf_counter()

    def log(message: str) -> None:
        print(f"  .. [{time.perf_counter() - run_start:6.1f}s] {message}", file=sys.stderr, flush=True)

    if not CLI.exists():
        raise BenchError(f"{CLI} not found: run with the project's venv (.venv/bin/python bench/sync.py)")
    results: list[tuple[str, list[Run], list[str]]] = []
    with tempfile.TemporaryDirectory(prefix="kf_bench_sync_") as tmp, ExitStack() as stack:
        workdir = Path(tmp)
        clinic_file = workdir / "clinic.ndjson"
        run_cli(["synth", "--patients", str(args.patients), "--seed", str(args.seed)], clean_env(workdir / "unused"),
                stdout=clinic_file)
        records = len(clinic_file.read_bytes().splitlines())
        peer = stack.enter_context(peer_tools().peer_server())
        log(f"peer: {peer}")
        for backend in args.backends:
            runs, notes = bench_backend(backend, workdir, clinic_file, records, peer, args, log)
            results.append((backend, runs, notes))

    print(f"ketamine-fhir push sync benchmark: {args.patients} patients = {records} clinic records, seed {args.seed}; "
          f"peer-fhir (Medplum, in memory) on loopback; default destination (transaction Bundles of <= "
          f"{MAX_ENTRIES}, default retry policy and circuit breaker)")
    if args.faults:
        print(f"fault runs: fault-proxy.py {' '.join(FAULT_ARGS)}"
              + (f", plus a {OUTAGE_SECONDS} s outage at the start" if args.outage else ""))
    for backend, runs, notes in results:
        print()
        print_table(backend, runs, notes)
    print()
    print("resources: verified on the peer after the run (assert_destination_holds_exactly_ours). requests: the")
    print("  ceiling's own count; ours: distinct (worker, at, request) in sync_attempts. failed: requests without a")
    print("  2xx answer (ours: retried or split). seconds: ceiling from its first request; ours from destination")
    print("  creation (sweep) until every worker --drain exited with nothing pending. x ceiling / x faulty:")
    print("  resources/s over 'ceiling 1 thread' / 'ceiling 1 thread faults'. 1st answer: seconds until the")
    print("  first request was answered (ours: sweep + worker start-up). HTTP s: summed request time of all")
    print("  threads/workers. deferrals: timed waits of a lane for a reference target that is not queued")
    print("  (waits for a queued target, e.g. the shared lane's practitioners, follow it and are not counted).")
    print(f"total run time {time.perf_counter() - run_start:.0f} s")
    failures = [f"{backend} {r.label}: {p}" for backend, runs, _ in results for r in runs for p in r.problems]
    if failures:
        print(f"\nFAIL: {len(failures)} problem(s):")
        for line in failures:
            print(f"  {line}")
        return 1
    print("every run left the peer holding exactly our resources; no dead letters")
    return 0


if __name__ == "__main__":
    sys.exit(main())
