"""FHIR read/search throughput and p50/p99 latency of ``ketamine-fhir serve`` (gunicorn, 2 workers)
on SQLite and PostgreSQL, side by side with the peer FHIR server, with the same requests in the same run.

What is measured:

* Data: a synthetic clinic of N patients with full courses (``ketamine-fhir synth``). Our server is
  loaded with ``ketamine-fhir import`` of that NDJSON (it maps to FHIR at write time) into a fresh data
  folder (SQLite) or a fresh database ``kf_bench_<random>`` on the PostgreSQL server (created here,
  dropped at the end). The peer server (``../shared/peer-fhir``: Medplum's FHIR router over its in-memory
  repository, behind a small Node front end; installed at ``.cache/peer-fhir``) is loaded with the
  output of ``ketamine-fhir map`` on the same NDJSON -- the same resources -- POSTed as batch Bundles of
  at most 1,000 entries. The entries are ``PUT Type/id`` (update-as-create), so the peer stores them
  under the same ids and every reference resolves there exactly as on our server; with plain POST
  entries the peer would assign new ids and every ``patient=`` search there would match nothing.
  Load times are printed (synth, map, import per backend, peer load).
* Before measuring, the number of resources of every mapped type is compared across the map output,
  the peer and our server (``Type?_count=1`` -> ``total``); any difference fails the run.
* Planner statistics: right after a bulk import neither SQLite nor PostgreSQL has any (the service
  never runs ``ANALYZE``; PostgreSQL's autovacuum would, a while later, where it is on -- the run prints
  whether it is), and the search SQL (EXISTS subqueries over ``fhir_search_index``) then gets nested-loop
  plans that are quadratic in the number of Observations. So, per backend: one request of each search
  kind is sent to the server as imported (``--probe-timeout`` each; a request cut off leaves a stuck
  worker, so the server is then SIGKILLed and PostgreSQL's orphaned query terminated), then the bench
  runs ``ANALYZE``, restarts the server and measures. ``--no-analyze`` measures the database as imported
  instead (expect ``--timeout`` failures beyond a few dozen patients).
* Request mix, built per server from what that server returns: every Patient (``Patient?_count=1000``,
  following ``next``) gives the patient ids and MRN identifiers; a seeded sample of the sorted ids is
  the patient pool; ``Encounter?patient=X`` / ``Observation?patient=X`` for the first pool patients give
  the ids to read. As both servers hold the same ids, the pools (and so the request lists) come out
  identical; the script says so, or says where they differ. Kinds:

  - ``read Patient``, ``read Encounter``, ``read Observation``: ``GET Type/id``
  - ``Obs?patient&code``: ``Observation?patient=X&code=http://loinc.org|44261-6`` (PHQ-9 totals)
  - ``Enc?patient``: ``Encounter?patient=X``
  - ``MedAdmin?patient``: ``MedicationAdministration?patient=X``
  - ``Patient?identifier``: ``Patient?identifier=<MRN system>|<MRN>``
  - ``Obs?patient&date``: ``Observation?patient=X&date=ge2026-01-01&_count=50``

* Client: for each server and kind, ``--requests / 8`` requests (a fixed budget per kind) from a
  thread pool of ``--concurrency`` threads, each with its own ``requests.Session`` (keep-alive),
  after an untimed warm-up of ``--warmup`` requests per kind on the same connections. Every response
  must be 200 with the expected resourceType (reads: the requested Type/id; searches: a searchset
  Bundle whose entries are all of the searched type; ``Patient?identifier``: exactly one match);
  anything else stops the run with the response. The ``total`` and entry count of every search URL
  that was sent to both servers must agree, or the run fails after printing the table.
* Printed per server x backend x kind: requests/s (requests / wall time of the timed phase), p50 and
  p99 latency in ms (client side: send until the body is read), mean response size, and the ratios
  to the peer for the same kind (``rps x peer`` > 1 = faster than the peer; ``p50 x peer`` < 1 =
  lower latency). The peer is measured once and is the reference for both backends.

Our server runs as ``ketamine-fhir serve --workers 2`` (gunicorn gthread, 4 threads per worker, the
default) on a free loopback port with ``KETAMINE_FHIR_LOG_LEVEL=WARNING`` (no per-request log line;
the peer logs nothing by default either) and a static token from
``ketamine-fhir token create --scope 'system/*.rs'``. The peer runs with its defaults (validation of
writes on, one request at a time). Client, servers and database share this machine's cores; all
traffic is loopback. Both servers are stopped at the end, also on errors, and the database dropped.

Clinic size: the issue asks for 1,000 patients (about 48,000 clinic records, 130,000 FHIR resources).
On this 2-core machine the default 300 patients (14,416 records, 34,455 resources) took 9.7 minutes;
1,000 would take about 30 (extrapolated: ``ketamine-fhir import`` runs at about 190 records/s on SQLite
and 100/s on PostgreSQL, and the peer's Observation searches and ours on SQLite cost time linear in
the number of stored Observations per request). So the default is the largest clinic that keeps a run
under 10 minutes (``DEFAULT_PATIENTS``); ``--patients 1000`` runs the full size. The run prints what
it used.

Run (from the repository root)::

    .venv/bin/python bench/fhir_api.py [--patients 300] [--backends sqlite,postgresql]
        [--requests 2000] [--concurrency 8] [--warmup 40] [--pool 100] [--read-patients 20]
        [--timeout 60] [--probe-timeout 10] [--no-analyze] [--seed 1]
        [--pg-url postgresql+psycopg://postgres@127.0.0.1:5432/test]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from itertools import count
from pathlib import Path
from typing import IO, Any

import orjson
import requests
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

from service.config import Settings

ROOT = Path(__file__).resolve().parent.parent
CLI = Path(sys.executable).parent / "ketamine-fhir"
PEER_DIR = ROOT / ".cache" / "peer-fhir"
DEFAULT_PG_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/test"
BACKENDS = ("sqlite", "postgresql")
BATCH_SIZE = 1000
#: the largest clinic whose default run stays near 10 minutes on a 2-core machine (measured, see --help)
DEFAULT_PATIENTS = 300
MINUTES_FOR_1000 = 30
PHQ9_TOTAL = "http://loinc.org|44261-6"
MR_TYPE = "MR"  # v2-0203 identifier type of the medical record number

Log = Callable[[str], None]


class BenchError(RuntimeError):
    """A benchmarked server did not do what it was meant to do."""


@dataclass(frozen=True)
class Kind:
    """One kind of request: a label, the resource type expected back, and whether it is a search."""

    label: str
    resource_type: str
    search: bool


KINDS = (
    Kind("read Patient", "Patient", False),
    Kind("read Encounter", "Encounter", False),
    Kind("read Observation", "Observation", False),
    Kind("Obs?patient&code", "Observation", True),
    Kind("Enc?patient", "Encounter", True),
    Kind("MedAdmin?patient", "MedicationAdministration", True),
    Kind("Patient?identifier", "Patient", True),
    Kind("Obs?patient&date", "Observation", True),
)


@dataclass
class Server:
    """A running FHIR server as the client sees it."""

    name: str  # "ketamine-fhir" or "peer"
    backend: str  # "sqlite", "postgresql" or "memory"
    base: str
    headers: dict[str, str]
    timeout: float = 60.0  # seconds per request


@dataclass
class Measurement:
    server: str
    backend: str
    kind: str
    requests: int
    seconds: float
    latencies: list[float]
    bytes: int
    search_results: dict[str, tuple[int | None, int]] = field(default_factory=dict)

    @property
    def rps(self) -> float:
        return self.requests / self.seconds

    def percentile(self, p: int) -> float:
        """The p-th percentile of the latencies, in ms."""
        if len(self.latencies) == 1:
            return self.latencies[0] * 1000
        return statistics.quantiles(self.latencies, n=100, method="inclusive")[p - 1] * 1000


# --------------------------------------------------------------------------- processes


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def run_cli(args: list[str], env: dict[str, str], stdin: Path | None = None, stdout: Path | None = None) -> str:
    """Run ``ketamine-fhir ARGS``; return its stdout (or write it to ``stdout``); raise on failure."""
    with ExitStack() as stack:
        fin = stack.enter_context(stdin.open("rb")) if stdin else None
        fout = stack.enter_context(stdout.open("wb")) if stdout else subprocess.PIPE
        proc = subprocess.run([str(CLI), *args], env=env, stdin=fin, stdout=fout, stderr=subprocess.PIPE,
                              check=False)
    if proc.returncode != 0:
        out = proc.stdout.decode()[-2000:] if isinstance(proc.stdout, bytes) else ""
        raise BenchError(f"ketamine-fhir {' '.join(args)} exited {proc.returncode}:\n{out}\n"
                         f"{proc.stderr.decode()[-3000:]}")
    return proc.stdout.decode() if isinstance(proc.stdout, bytes) else ""


def stop_process(proc: subprocess.Popen[Any], name: str, log: Log, force: bool = False) -> None:
    """SIGTERM the process group we started (gunicorn master + workers, or node), SIGKILL if it lingers.

    ``force``: SIGKILL at once (a gunicorn worker stuck in a query would hold a graceful stop for 30 s).
    """
    if proc.poll() is not None:
        return
    try:
        os.killpg(proc.pid, signal.SIGKILL if force else signal.SIGTERM)
    except ProcessLookupError:
        return
    try:
        proc.wait(timeout=40)
    except subprocess.TimeoutExpired:
        log(f"{name} did not stop in 40 s: SIGKILL")
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)
    log(f"{name} stopped" + (" (SIGKILL)" if force else ""))


def wait_ready(url: str, proc: subprocess.Popen[Any], logfile: Path, timeout: float = 90.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise BenchError(f"server exited {proc.returncode} before it was ready:\n"
                             f"{logfile.read_text(errors='replace')[-3000:]}")
        try:
            if requests.get(url, timeout=2).status_code == 200:
                return
        except requests.RequestException:
            pass
        time.sleep(0.2)
    raise BenchError(f"{url} not ready after {timeout:.0f} s:\n{logfile.read_text(errors='replace')[-3000:]}")


def drain(stream: IO[bytes]) -> None:
    """Read a child's stdout to its end, so the pipe never fills."""
    for _ in stream:
        pass


@contextmanager
def peer_server(workdir: Path, timeout: float, log: Log) -> Iterator[Server]:
    """The peer FHIR server on a free loopback port (installed idempotently), stopped on exit."""
    if not (PEER_DIR / "node_modules").exists():
        sys.path.insert(0, str(ROOT))
        from tests.fhir_checks import peer_fhir

        log("installing the peer FHIR server into .cache/peer-fhir")
        peer_fhir()
    port = free_port()
    logfile = workdir / "peer.log"
    with logfile.open("wb") as err:
        proc = subprocess.Popen([str(PEER_DIR / "start.sh"), str(port)], stdout=subprocess.PIPE, stderr=err,
                                start_new_session=True)
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline().decode()
        if not line.startswith("ready"):
            proc.wait(timeout=10)
            raise BenchError(f"peer did not start: {line!r} {logfile.read_text(errors='replace')[-2000:]}")
        log(f"peer: {line.strip()}")
        threading.Thread(target=drain, args=(proc.stdout,), daemon=True).start()
        yield Server("peer", "memory", f"http://127.0.0.1:{port}/fhir", {"Accept": "application/fhir+json"}, timeout)
    finally:
        stop_process(proc, "peer", log)


def create_token(env: dict[str, str]) -> str:
    """A static bearer token with the SMART system scope for every read and search."""
    out = run_cli(["token", "create", "--name", f"bench-{uuid.uuid4().hex[:8]}", "--scope", "system/*.rs"], env)
    return out.strip().splitlines()[-1]


@contextmanager
def our_server(env: dict[str, str], workdir: Path, backend: str, secret: str, timeout: float, log: Log,
               force_stop: list[bool]) -> Iterator[Server]:
    """``ketamine-fhir serve --workers 2`` on a free loopback port, stopped on exit (SIGKILL if
    ``force_stop[0]`` is set by then)."""
    port = free_port()
    logfile = workdir / f"serve-{backend}-{port}.log"
    with logfile.open("wb") as out:
        proc = subprocess.Popen([str(CLI), "serve", "--host", "127.0.0.1", "--port", str(port), "--workers", "2"],
                                env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        base = f"http://127.0.0.1:{port}/fhir"
        wait_ready(f"{base}/metadata", proc, logfile)
        log(f"ketamine-fhir ({backend}): serving {base} (gunicorn, 2 workers)")
        yield Server("ketamine-fhir", backend, base,
                     {"Accept": "application/fhir+json", "Authorization": f"Bearer {secret}"}, timeout)
    finally:
        stop_process(proc, f"ketamine-fhir ({backend})", log, force=force_stop[0])


@contextmanager
def backend_env(backend: str, workdir: Path, pg_url: str, log: Log) -> Iterator[dict[str, str]]:
    """The environment for ``ketamine-fhir`` on a fresh data folder, or on a fresh PostgreSQL database."""
    env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL",) and not k.startswith("KETAMINE_FHIR_")}
    env["KETAMINE_FHIR_DATA"] = str(workdir / f"data-{backend}")
    env["KETAMINE_FHIR_LOG_LEVEL"] = "WARNING"
    env["KETAMINE_FHIR_RATE_LIMITS"] = "off"  # the bench measures throughput, which the limits would cap
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


# --------------------------------------------------------------------------- loading


def load_peer(server: Server, resources_file: Path) -> tuple[int, float]:
    """PUT every resource into the peer in batch Bundles of <= BATCH_SIZE entries; (resources, seconds)."""
    lines = resources_file.read_bytes().splitlines()
    session = requests.Session()
    headers = {**server.headers, "Content-Type": "application/fhir+json"}
    start = time.perf_counter()
    for i in range(0, len(lines), BATCH_SIZE):
        chunk = [orjson.loads(line) for line in lines[i:i + BATCH_SIZE]]
        bundle = {"resourceType": "Bundle", "type": "batch",
                  "entry": [{"resource": r, "request": {"method": "PUT", "url": f"{r['resourceType']}/{r['id']}"}}
                            for r in chunk]}
        response = session.post(server.base, data=orjson.dumps(bundle), headers=headers, timeout=600)
        if response.status_code != 200:
            raise BenchError(f"peer batch {i // BATCH_SIZE} answered {response.status_code}: {response.text[:2000]}")
        statuses = Counter(e["response"]["status"].split()[0] for e in response.json()["entry"])
        if set(statuses) - {"200", "201"} or sum(statuses.values()) != len(chunk):
            raise BenchError(f"peer batch {i // BATCH_SIZE}: entry statuses {dict(statuses)} for {len(chunk)} entries")
    return len(lines), time.perf_counter() - start


def import_ours(env: dict[str, str], clinic_file: Path, records: int) -> float:
    start = time.perf_counter()
    report = json.loads(run_cli(["import", str(clinic_file)], env))
    seconds = time.perf_counter() - start
    if report["rejected"] or report["accepted"] != records:
        raise BenchError(f"import: accepted {report['accepted']}, rejected {report['rejected']} of {records}; "
                         f"first errors: {json.dumps(report['errors'][:5])}")
    return seconds


def database_url(env: dict[str, str]) -> str:
    return Settings.from_env(env).database_url


def autovacuum(pg_url: str) -> str:
    engine = create_engine(pg_url)
    try:
        with engine.connect() as conn:
            return str(conn.execute(text("SHOW autovacuum")).scalar())
    finally:
        engine.dispose()


def analyze(env: dict[str, str]) -> float:
    """``ANALYZE`` the loaded database (planner statistics); on PostgreSQL first end any query a probe left
    running (its client is gone). Returns seconds."""
    engine = create_engine(database_url(env), isolation_level="AUTOCOMMIT")
    try:
        with engine.connect() as conn:
            if engine.dialect.name == "postgresql":
                conn.execute(text("SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                                  "WHERE datname = current_database() AND pid <> pg_backend_pid()"))
            start = time.perf_counter()
            conn.execute(text("ANALYZE"))
            return time.perf_counter() - start
    finally:
        engine.dispose()


@dataclass
class Probe:
    backend: str
    kind: str
    url: str
    seconds: float | None  # None: no answer within the timeout


def probe_searches(server: Server, patient: tuple[str, str], timeout: float, log: Log) -> list[Probe]:
    """One request of each search kind, one at a time, on the database as imported (no planner statistics)."""
    pools = Pools([patient], [], [])
    session = requests.Session()
    out = []
    for kind in KINDS:
        if not kind.search:
            continue
        url = request_urls(kind, pools, 1, 0)[0]
        start = time.perf_counter()
        try:
            response = session.get(f"{server.base}/{url}", headers=server.headers, timeout=timeout)
        except requests.Timeout:
            out.append(Probe(server.backend, kind.label, url, None))
            log(f"probe ({server.backend}, as imported) {kind.label}: no answer in {timeout:.0f} s")
            session.close()
            session = requests.Session()  # the timed-out connection is unusable
            continue
        seconds = time.perf_counter() - start
        check_response(server, kind, url, response)
        out.append(Probe(server.backend, kind.label, url, seconds))
        log(f"probe ({server.backend}, as imported) {kind.label}: {seconds * 1000:.0f} ms")
    session.close()
    return out


# --------------------------------------------------------------------------- request mix


def get_json(session: requests.Session, server: Server, url: str) -> dict[str, Any]:
    full = url if url.startswith("http") else f"{server.base}/{url}"
    response = session.get(full, headers=server.headers, timeout=server.timeout)
    if response.status_code != 200:
        raise BenchError(f"{server.name} ({server.backend}) GET {full} answered {response.status_code}: "
                         f"{response.text[:2000]}")
    body: dict[str, Any] = response.json()
    return body


def search_all(session: requests.Session, server: Server, url: str) -> list[dict[str, Any]]:
    """Every resource of a search, following ``next`` links."""
    out: list[dict[str, Any]] = []
    next_url: str | None = url
    while next_url:
        bundle = get_json(session, server, next_url)
        out += [e["resource"] for e in bundle.get("entry", [])]
        next_url = next((link["url"] for link in bundle.get("link", []) if link["relation"] == "next"), None)
    return out


def type_counts(server: Server, types: list[str]) -> dict[str, int]:
    session = requests.Session()
    return {t: int(get_json(session, server, f"{t}?_count=1")["total"]) for t in types}


def mrn(patient: dict[str, Any]) -> str:
    for identifier in patient.get("identifier", []):
        codes = [c.get("code") for c in identifier.get("type", {}).get("coding", [])]
        if MR_TYPE in codes and identifier.get("system"):
            return f"{identifier['system']}|{identifier['value']}"
    raise BenchError(f"Patient/{patient['id']} has no MRN identifier: {patient.get('identifier')}")


@dataclass
class Pools:
    patients: list[tuple[str, str]]  # (id, MRN system|value), the seeded sample
    encounters: list[str]
    observations: list[str]


def collect_patients(server: Server, pool_size: int, seed: int) -> list[tuple[str, str]]:
    """A seeded sample of every (Patient id, MRN) this server returns, sorted first: the same sample on
    servers holding the same patients."""
    patients = search_all(requests.Session(), server, "Patient?_count=1000")
    if not patients:
        raise BenchError(f"{server.name} ({server.backend}) returned no Patient")
    everyone = sorted((p["id"], mrn(p)) for p in patients)
    return random.Random(seed).sample(everyone, min(pool_size, len(everyone)))


def collect_pools(server: Server, patients: list[tuple[str, str]], read_patients: int) -> Pools:
    """The ids to read: the Encounters and Observations of the first ``read_patients`` pool patients."""
    session = requests.Session()
    encounters: set[str] = set()
    observations: set[str] = set()
    for pid, _ in patients[:read_patients]:
        encounters |= {r["id"] for r in search_all(session, server, f"Encounter?patient={pid}&_count=1000")}
        observations |= {r["id"] for r in search_all(session, server, f"Observation?patient={pid}&_count=1000")}
    if not encounters or not observations:
        raise BenchError(f"{server.name} ({server.backend}): no Encounter/Observation for the sampled patients")
    return Pools(patients, sorted(encounters), sorted(observations))


def request_urls(kind: Kind, pools: Pools, n: int, seed: int) -> list[str]:
    """``n`` relative URLs of one kind, drawn (seeded) from the pools."""
    rng = random.Random(f"{seed}-{kind.label}")
    pick: Callable[[], str]
    if kind.label == "read Patient":
        pick = lambda: f"Patient/{rng.choice(pools.patients)[0]}"  # noqa: E731
    elif kind.label == "read Encounter":
        pick = lambda: f"Encounter/{rng.choice(pools.encounters)}"  # noqa: E731
    elif kind.label == "read Observation":
        pick = lambda: f"Observation/{rng.choice(pools.observations)}"  # noqa: E731
    elif kind.label == "Obs?patient&code":
        pick = lambda: f"Observation?patient={rng.choice(pools.patients)[0]}&code={PHQ9_TOTAL}"  # noqa: E731
    elif kind.label == "Enc?patient":
        pick = lambda: f"Encounter?patient={rng.choice(pools.patients)[0]}"  # noqa: E731
    elif kind.label == "MedAdmin?patient":
        pick = lambda: f"MedicationAdministration?patient={rng.choice(pools.patients)[0]}"  # noqa: E731
    elif kind.label == "Patient?identifier":
        pick = lambda: f"Patient?identifier={rng.choice(pools.patients)[1]}"  # noqa: E731
    elif kind.label == "Obs?patient&date":
        pick = lambda: f"Observation?patient={rng.choice(pools.patients)[0]}&date=ge2026-01-01&_count=50"  # noqa: E731
    else:
        raise ValueError(kind.label)
    return [pick() for _ in range(n)]


# --------------------------------------------------------------------------- the client


def check_response(server: Server, kind: Kind, url: str, response: requests.Response) -> tuple[int | None, int]:
    """Fail unless the response is 200 with the expected resource(s); (total, entries) for searches."""

    def fail(why: str) -> BenchError:
        return BenchError(f"{server.name} ({server.backend}) GET {url}: {why}; status {response.status_code}: "
                          f"{response.text[:1500]}")

    if response.status_code != 200:
        raise fail("not 200")
    try:
        body = orjson.loads(response.content)
    except orjson.JSONDecodeError:
        raise fail("not JSON") from None
    if not kind.search:
        expected_id = url.rsplit("/", 1)[1]
        if body.get("resourceType") != kind.resource_type or body.get("id") != expected_id:
            raise fail(f"expected {kind.resource_type}/{expected_id}")
        return None, 0
    if body.get("resourceType") != "Bundle" or body.get("type") != "searchset":
        raise fail("expected a searchset Bundle")
    entries = body.get("entry", [])
    wrong = [t for e in entries if (t := e["resource"].get("resourceType")) != kind.resource_type]
    if wrong:
        raise fail(f"entries of type {wrong[:3]} in a {kind.resource_type} search")
    if kind.label == "Patient?identifier" and (body.get("total") != 1 or len(entries) != 1):
        raise fail("expected exactly one Patient for an MRN")
    return body.get("total"), len(entries)


def measure(server: Server, kind: Kind, warm_urls: list[str], urls: list[str], concurrency: int) -> Measurement:
    """Warm up, then send ``urls`` from ``concurrency`` threads (keep-alive sessions); fail on any bad answer."""
    latencies: list[float] = [0.0] * len(urls)
    sizes: list[int] = [0] * len(urls)
    results: dict[str, tuple[int | None, int]] = {}
    errors: list[BaseException] = []
    stop = threading.Event()
    barrier = threading.Barrier(concurrency + 1)
    warm_next, timed_next = count(), count()  # next() on itertools.count is atomic under the GIL

    def one(session: requests.Session, url: str) -> tuple[float, requests.Response]:
        start = time.perf_counter()
        try:
            response = session.get(f"{server.base}/{url}", headers=server.headers, timeout=server.timeout)
        except requests.Timeout:
            raise BenchError(f"{server.name} ({server.backend}) GET {url}: no answer in {server.timeout:.0f} s "
                             "(--timeout)") from None
        return time.perf_counter() - start, response

    def worker() -> None:
        session = requests.Session()
        try:
            while not stop.is_set() and (i := next(warm_next)) < len(warm_urls):
                check_response(server, kind, warm_urls[i], one(session, warm_urls[i])[1])
        except BaseException as exc:
            errors.append(exc)
            stop.set()
        barrier.wait()
        try:
            while not stop.is_set() and (i := next(timed_next)) < len(urls):
                seconds, response = one(session, urls[i])
                latencies[i], sizes[i] = seconds, len(response.content)
                outcome = check_response(server, kind, urls[i], response)
                if kind.search:
                    results[urls[i]] = outcome
        except BaseException as exc:
            errors.append(exc)
            stop.set()
        finally:
            session.close()

    threads = [threading.Thread(target=worker, daemon=True) for _ in range(concurrency)]
    for t in threads:
        t.start()
    barrier.wait()
    start = time.perf_counter()
    for t in threads:
        t.join()
    seconds = time.perf_counter() - start
    if errors:
        raise errors[0]
    return Measurement(server.name, server.backend, kind.label, len(urls), seconds, latencies, sum(sizes), results)


def bench_server(server: Server, pools: Pools, args: argparse.Namespace, log: Log) -> list[Measurement]:
    per_kind = max(1, args.requests // len(KINDS))
    out = []
    for kind in KINDS:
        warm = request_urls(kind, pools, args.warmup, args.seed + 1)
        urls = request_urls(kind, pools, per_kind, args.seed)
        m = measure(server, kind, warm, urls, args.concurrency)
        log(f"{server.name} ({server.backend}) {kind.label}: {m.rps:.0f} req/s, p50 {m.percentile(50):.1f} ms, "
            f"p99 {m.percentile(99):.1f} ms")
        out.append(m)
    return out


# --------------------------------------------------------------------------- report


def compare_pools(peer: Pools, ours: Pools, backend: str) -> str:
    same = [name for name in ("patients", "encounters", "observations")
            if getattr(peer, name) == getattr(ours, name)]
    if len(same) == 3:
        return f"{backend}: request pools identical to the peer's (same requests on both servers)"
    return f"{backend}: request pools differ from the peer's except {same or 'none'} (each server gets its own ids)"


def search_mismatches(peer: list[Measurement], ours: list[Measurement]) -> list[str]:
    """Search URLs sent to both servers whose (total, entries) differ."""
    out = []
    for p, o in zip(peer, ours, strict=True):
        for url in sorted(set(p.search_results) & set(o.search_results)):
            if p.search_results[url] != o.search_results[url]:
                out.append(f"{o.backend} {url}: peer (total, entries) {p.search_results[url]}, "
                           f"ours {o.search_results[url]}")
    return out


def print_table(results: list[Measurement]) -> None:
    peer = {m.kind: m for m in results if m.server == "peer"}
    header = (f"{'server':<14} {'backend':<10} {'request':<19} {'n':>5} {'req/s':>7} {'p50 ms':>8} {'p99 ms':>8} "
              f"{'KB/resp':>8} {'rps x peer':>11} {'p50 x peer':>11}")
    print(header)
    print("-" * len(header))
    order = {"memory": 0, "sqlite": 1, "postgresql": 2}
    kinds = [k.label for k in KINDS]
    for kind in kinds:
        for m in sorted((m for m in results if m.kind == kind), key=lambda m: order[m.backend]):
            ref = peer.get(kind)
            if ref is None or m is ref:
                ratios = f"{'':>11} {'':>11}"
            else:
                ratios = f"{m.rps / ref.rps:>10.2f}x {m.percentile(50) / ref.percentile(50):>10.2f}x"
            print(f"{m.server:<14} {m.backend:<10} {m.kind:<19} {m.requests:>5} {m.rps:>7.0f} "
                  f"{m.percentile(50):>8.1f} {m.percentile(99):>8.1f} {m.bytes / m.requests / 1024:>8.1f} {ratios}")
        print()
    totals: dict[tuple[str, str], tuple[int, float]] = {}
    for m in results:
        n, s = totals.get((m.server, m.backend), (0, 0.0))
        totals[(m.server, m.backend)] = (n + m.requests, s + m.seconds)
    peer_total = totals.get(("peer", "memory"))
    for (server, backend), (n, s) in sorted(totals.items(), key=lambda kv: order[kv[0][1]]):
        ratio = f"  ({n / s / (peer_total[0] / peer_total[1]):.2f}x peer)" if peer_total and server != "peer" else ""
        print(f"all kinds     {server} ({backend}): {n} requests in {s:.1f} s = {n / s:.0f} req/s{ratio}")


def print_probes(probes: list[Probe], timeout: float) -> None:
    labels = [k.label for k in KINDS if k.search]
    print(f"as imported (no planner statistics yet), one request of each search kind at a time, "
          f"timeout {timeout:.0f} s, latency in ms:")
    print(f"  {'backend':<10} " + " ".join(f"{label:>19}" for label in labels))
    for backend in dict.fromkeys(p.backend for p in probes):
        cells = {p.kind: (f">{timeout * 1000:.0f} (cut)" if p.seconds is None else f"{p.seconds * 1000:.0f}")
                 for p in probes if p.backend == backend}
        print(f"  {backend:<10} " + " ".join(f"{cells.get(label, '-'):>19}" for label in labels))


@dataclass
class Report:
    results: list[Measurement] = field(default_factory=list)
    loads: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    probes: list[Probe] = field(default_factory=list)
    mismatches: list[str] = field(default_factory=list)


def bench_ours(backend: str, workdir: Path, clinic_file: Path, records: int, n_resources: int,
               expected_counts: dict[str, int], peer_pools: Pools, peer_results: list[Measurement],
               args: argparse.Namespace, report: Report, log: Log) -> None:
    """Load, probe, ANALYZE and measure our server on one backend, against the peer's figures."""
    with backend_env(backend, workdir, args.pg_url, log) as env:
        seconds = import_ours(env, clinic_file, records)
        report.loads.append(f"ketamine-fhir ({backend}): import of {records} records -> {n_resources} resources "
                            f"(+ Provenance) in {seconds:.1f} s ({records / seconds:,.0f} records/s)")
        log(report.loads[-1])
        secret = create_token(env)
        force_stop = [False]
        with our_server(env, workdir, backend, secret, args.timeout, log, force_stop) as ours:
            counts = type_counts(ours, list(expected_counts))
            if counts != expected_counts:
                raise BenchError(f"ketamine-fhir ({backend}) holds {counts}, map wrote {expected_counts}")
            patients = collect_patients(ours, args.pool, args.seed)
            if args.analyze:
                probes = probe_searches(ours, patients[0], args.probe_timeout, log)
                report.probes += probes
                force_stop[0] = any(p.seconds is None for p in probes)
        if args.analyze:
            seconds = analyze(env)
            stats = f"ANALYZE after the import ({seconds:.1f} s), server restarted"
            report.loads.append(f"ketamine-fhir ({backend}): {stats}")
            log(report.loads[-1])
        force_stop[0] = False
        with our_server(env, workdir, backend, secret, args.timeout, log, force_stop) as ours:
            pools = collect_pools(ours, collect_patients(ours, args.pool, args.seed), args.read_patients)
            report.notes.append(compare_pools(peer_pools, pools, backend))
            try:
                our_results = bench_server(ours, pools, args, log)
            except BaseException:
                force_stop[0] = True  # a worker may be stuck in a query
                raise
            report.results += our_results
            report.mismatches += search_mismatches(peer_results, our_results)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--patients", type=int, default=DEFAULT_PATIENTS,
                        help=f"synthetic patients (default {DEFAULT_PATIENTS}; 1000 takes about "
                             f"{MINUTES_FOR_1000} minutes here, mostly in the two imports)")
    parser.add_argument("--backends", default=",".join(BACKENDS), help="comma-separated: sqlite,postgresql")
    parser.add_argument("--requests", type=int, default=2000,
                        help=f"timed requests per server and backend, split evenly over the {len(KINDS)} kinds "
                             "(default 2000)")
    parser.add_argument("--concurrency", type=int, default=8, help="client threads (default 8)")
    parser.add_argument("--warmup", type=int, default=40, help="untimed requests per kind first (default 40)")
    parser.add_argument("--pool", type=int, default=100, help="patients in the request pool (default 100)")
    parser.add_argument("--read-patients", type=int, default=20,
                        help="pool patients whose Encounters/Observations are the read ids (default 20)")
    parser.add_argument("--timeout", type=float, default=60.0,
                        help="seconds a measured request may take before the run fails (default 60)")
    parser.add_argument("--no-analyze", dest="analyze", action="store_false",
                        help="measure our server as imported, without planner statistics (no probe, no ANALYZE)")
    parser.add_argument("--probe-timeout", type=float, default=10.0,
                        help="seconds for each as-imported probe request (default 10)")
    parser.add_argument("--pg-url", default=DEFAULT_PG_URL,
                        help="a PostgreSQL server database to connect to for CREATE/DROP DATABASE")
    parser.add_argument("--seed", type=int, default=1, help="synthetic clinic and request seed (default 1)")
    args = parser.parse_args(argv)
    args.backends = [b.strip() for b in args.backends.split(",") if b.strip()]
    unknown = set(args.backends) - set(BACKENDS)
    if unknown or not args.backends:
        parser.error(f"--backends: unknown {', '.join(sorted(unknown)) or '(empty)'}; known: {', '.join(BACKENDS)}")
    for name in ("patients", "requests", "concurrency", "pool", "read_patients", "timeout", "probe_timeout"):
        if getattr(args, name) <= 0:
            parser.error(f"--{name.replace('_', '-')} must be positive")
    if args.warmup < 0:
        parser.error("--warmup must not be negative")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    run_start = time.perf_counter()

    def log(message: str) -> None:
        print(f"  .. [{time.perf_counter() - run_start:6.1f}s] {message}", file=sys.stderr, flush=True)

    if not CLI.exists():
        raise BenchError(f"{CLI} not found: run with the project's venv (.venv/bin/python bench/fhir_api.py)")
    with tempfile.TemporaryDirectory(prefix="kf_bench_fhir_") as tmp:
        workdir = Path(tmp)
        clinic_file, fhir_file = workdir / "clinic.ndjson", workdir / "fhir.ndjson"
        base_env = {k: v for k, v in os.environ.items() if k != "DATABASE_URL" and not k.startswith("KETAMINE_FHIR_")}
        base_env["KETAMINE_FHIR_DATA"] = str(workdir / "unused")

        start = time.perf_counter()
        run_cli(["synth", "--patients", str(args.patients), "--seed", str(args.seed)], base_env, stdout=clinic_file)
        synth_s = time.perf_counter() - start
        records = len(clinic_file.read_bytes().splitlines())
        start = time.perf_counter()
        run_cli(["map", str(clinic_file)], base_env, stdout=fhir_file)
        map_s = time.perf_counter() - start
        type_count = Counter(orjson.loads(line)["resourceType"] for line in fhir_file.read_bytes().splitlines())
        n_resources = sum(type_count.values())
        per_kind = max(1, args.requests // len(KINDS))
        print(f"ketamine-fhir FHIR API benchmark: {args.patients} patients = {records} clinic records -> "
              f"{n_resources} FHIR resources ({', '.join(f'{t} {n}' for t, n in type_count.most_common())}); "
              f"seed {args.seed}", flush=True)
        print(f"client: {per_kind} timed requests per kind per server ({per_kind * len(KINDS)} in all) after "
              f"{args.warmup} warm-up, {args.concurrency} threads with keep-alive requests.Session; "
              f"pool {args.pool} patients", flush=True)
        print(f"load: synth {synth_s:.1f} s, map {map_s:.1f} s (CLI wall time)", flush=True)

        report = Report()
        with peer_server(workdir, args.timeout, log) as peer:
            n, seconds = load_peer(peer, fhir_file)
            report.loads.append(f"peer: {n} resources in {seconds:.1f} s ({n / seconds:,.0f}/s, batch Bundles of "
                                f"{BATCH_SIZE} PUTs)")
            log(report.loads[-1])
            peer_counts = type_counts(peer, list(type_count))
            if peer_counts != dict(type_count):
                raise BenchError(f"peer holds {peer_counts}, map wrote {dict(type_count)}")
            peer_pools = collect_pools(peer, collect_patients(peer, args.pool, args.seed), args.read_patients)
            peer_results = bench_server(peer, peer_pools, args, log)
            report.results += peer_results
            for backend in args.backends:
                bench_ours(backend, workdir, clinic_file, records, n_resources, dict(type_count), peer_pools,
                           peer_results, args, report, log)

        print()
        for line in report.loads:
            print(f"load: {line}")
        if "postgresql" in args.backends:
            print(f"load: PostgreSQL server autovacuum = {autovacuum(args.pg_url)}")
        print("resource counts per type: map output = peer = ketamine-fhir, every backend")
        for line in report.notes:
            print(f"requests: {line}")
        if report.probes:
            print()
            print_probes(report.probes, args.probe_timeout)
        print()
        stats = "after ANALYZE" if args.analyze else "as imported, no ANALYZE"
        print(f"measured (ketamine-fhir {stats}):")
        print_table(report.results)
        print()
        print("req/s: timed requests / wall time of that kind's phase; p50/p99: client-side latency (send until the")
        print("  body is read); KB/resp: mean body size. rps x peer > 1: more requests/s than the peer;")
        print("  p50 x peer < 1: lower median latency than the peer. Peer: Medplum router + in-memory repository,")
        print("  one request at a time; ketamine-fhir: gunicorn gthread, 2 workers x 4 threads, SQLite (WAL) or")
        print("  PostgreSQL on this machine. Client, servers and database share the same cores.")
        print(f"total run time {time.perf_counter() - run_start:.0f} s")
        if report.mismatches:
            print(f"\nFAIL: {len(report.mismatches)} search URL(s) answered differently by the peer and ketamine-fhir:")
            for line in report.mismatches[:20]:
                print(f"  {line}")
            return 1
        print("every search URL sent to both servers gave the same total and entry count on both")
    return 0


if __name__ == "__main__":
    sys.exit(main())
