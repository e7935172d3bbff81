"""Write throughput of the clinic API: records/s for a synthetic clinic, per backend and write path.

What is measured, for each backend (SQLite in a temporary data folder; PostgreSQL in a database
``kf_bench_<random>`` created on the server and dropped at the end), each path on a freshly
migrated database:

* ``baseline``  -- the storage floor: the same records written with SQLAlchemy Core ``insert()``
  executemany (one per table, one transaction) into the same tables, with every column value
  precomputed outside the timer (canonical record JSON, content hash, timestamps, index columns,
  foreign keys, the patient-identifier and session-performer side rows). No validation, no
  reference checks, no clinical warnings, no HTTP.
* ``import``    -- ``POST /api/v1/import`` of the whole NDJSON in one request.
* ``put``       -- one ``PUT /api/v1/<collection>/<id>`` per record (administrations and vitals
  through ``/sessions/<sid>/<collection>/<id>``), in dependency order. By default only the first
  50 patients' records (``--put-patients``): the rate is per record, so it compares directly.
* ``re-import`` -- the same ``/import`` again on the database the import filled (every line
  ``unchanged``): the cost of an idempotent replay.

The requests go through Flask's test client in-process (no sockets, no WSGI server) with a real
bearer token from ``service.auth.create_token``; request bodies are serialised before the timer
starts. The access log is at WARNING, so it costs no I/O. Every run is checked (HTTP status,
import report, write outcome, stored row count) and the script fails loudly on any error.
Timings use ``time.perf_counter``; the ratio column is time per record relative to the baseline
of the same backend in the same run (``12.0x`` = twelve times the storage floor).

The synthetic clinic is ``service.synthetic.clinic_records``: N patients with full 6-session
courses (sessions, administrations, vitals, outcome scores); 200 patients is about 9,600 records.

Run (from the repository root)::

    .venv/bin/python bench/api_writes.py [--patients 200] [--put-patients 50]
        [--backends sqlite,postgresql] [--pg-url postgresql+psycopg://postgres@127.0.0.1:5432/test]
"""

from __future__ import annotations

import argparse
import copy
import json
import logging
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import Engine, create_engine, func, insert, select, text
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session

from service import audit, create_app, models
from service.auth import create_token
from service.clinic.collections import COLLECTIONS
from service.clinic.importer import parse_json
from service.clinic.store import _hash, load
from service.config import Settings
from service.db import make_engine, migrate
from service.synthetic import clinic_lines, clinic_records

DEFAULT_PG_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/test"
#: one HTTP request per record costs ~5-10 ms here; 50 patients (~2,400 PUTs) keeps the default run short
DEFAULT_PUT_PATIENTS = 50
BACKENDS = ("sqlite", "postgresql")
#: tables in foreign-key order, for the baseline inserts
TABLE_ORDER = ("practitioners", "patients", "patient_identifiers", "referrals", "courses", "sessions",
               "session_performers", "administrations", "observations", "vitals")
CLINIC_TABLES = [c.model.__table__ for c in COLLECTIONS.values()]

Records = list[tuple[str, dict[str, Any]]]


class BenchError(RuntimeError):
    """A benchmarked run did not do what it was meant to do."""


@dataclass
class Result:
    backend: str
    path: str
    records: int
    seconds: float
    note: str = ""

    @property
    def rate(self) -> float:
        return self.records / self.seconds


# --------------------------------------------------------------------------- backends


class SqliteBackend:
    name = "sqlite"

    def __init__(self) -> None:
        self._tmp = tempfile.TemporaryDirectory(prefix="kf_bench_")

    def fresh(self, label: str) -> Settings:
        folder = Path(self._tmp.name) / label
        settings = Settings.from_env({"KETAMINE_FHIR_DATA": str(folder), "KETAMINE_FHIR_LOG_LEVEL": "WARNING",
                                      "KETAMINE_FHIR_RATE_LIMITS": "off"})  # measure writes, not the limits
        migrate(settings)
        return settings

    def close(self) -> None:
        self._tmp.cleanup()


class PostgresBackend:
    name = "postgresql"

    def __init__(self, server_url: str) -> None:
        self._admin = create_engine(server_url, isolation_level="AUTOCOMMIT")
        self._db = f"kf_bench_{uuid.uuid4().hex[:12]}"
        self._url = make_url(server_url).set(database=self._db).render_as_string(hide_password=False)
        self._created = False

    def fresh(self, label: str) -> Settings:
        """Drop and recreate the benchmark database, then migrate it."""
        with self._admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{self._db}" WITH (FORCE)'))
            conn.execute(text(f'CREATE DATABASE "{self._db}"'))
        self._created = True
        settings = Settings.from_env({"DATABASE_URL": self._url, "KETAMINE_FHIR_DATA": "/nonexistent",
                                      "KETAMINE_FHIR_LOG_LEVEL": "WARNING", "KETAMINE_FHIR_RATE_LIMITS": "off"})
        migrate(settings)
        return settings

    def close(self) -> None:
        if self._created:
            with self._admin.connect() as conn:
                conn.execute(text(f'DROP DATABASE IF EXISTS "{self._db}" WITH (FORCE)'))
        self._admin.dispose()


Backend = SqliteBackend | PostgresBackend


@contextmanager
def open_backend(name: str, pg_url: str) -> Iterator[Backend]:
    backend: Backend = SqliteBackend() if name == "sqlite" else PostgresBackend(pg_url)
    try:
        yield backend
    finally:
        backend.close()


@contextmanager
def api_app(settings: Settings) -> Iterator[tuple[Flask, FlaskClient, dict[str, str]]]:
    """The app on ``settings``, its test client and headers with a fresh operator token."""
    app = create_app(settings)
    engine: Engine = app.extensions["db_engine"]
    try:
        with Session(engine) as session:
            token = create_token(session, f"bench-{uuid.uuid4().hex[:8]}", ["clinic:write"])
        yield app, app.test_client(), {"Authorization": f"Bearer {token}"}
    finally:
        # the audit writer is asynchronous: let it finish this path's events before the database
        # goes away (else they are dropped, and logged, against a disposed engine)
        if not audit.flush(app, timeout=60):
            raise RuntimeError("the audit queue did not drain within 60 s")
        if audit.dropped(app):
            raise RuntimeError(f"audit: {audit.dropped(app)} event(s) dropped during the benchmark")
        engine.dispose()


def stored_records(engine: Engine) -> int:
    with engine.connect() as conn:
        return sum(conn.scalar(select(func.count()).select_from(t)) or 0 for t in CLINIC_TABLES)


def check_stored(engine: Engine, expected: int, path: str) -> None:
    stored = stored_records(engine)
    if stored != expected:
        raise BenchError(f"{path}: {stored} records stored, expected {expected}")


# --------------------------------------------------------------------------- the paths


def baseline_rows(records: Records, now: datetime) -> list[tuple[str, list[dict[str, Any]]]]:
    """Every column value of every row the API would write, computed up front."""
    rows: dict[str, list[dict[str, Any]]] = {name: [] for name in TABLE_ORDER}
    session_patient: dict[str, str] = {}
    for name, raw in records:
        coll = COLLECTIONS[name]
        record = load(coll, copy.deepcopy(raw))  # the canonical JSON the API stores
        row: dict[str, Any] = {"id": record["id"], "record": record, "content_hash": _hash(record),
                               "status": record.get("status"), "warnings": [], "version": 1,
                               "created_at": now, "updated_at": now, **coll.columns(record)}
        if name == "sessions":
            session_patient[record["id"]] = record["patient_id"]
        if coll.parent:
            row["patient_id"] = session_patient[record["session_id"]]
        rows[name].append(row)
        if name == "patients":
            rows["patient_identifiers"] += [{"patient_id": record["id"], "system": i["system"], "value": i["value"]}
                                            for i in record.get("identifiers") or []]
        elif name == "sessions":
            rows["session_performers"] += [{"session_id": record["id"], "practitioner_id": p["practitioner_id"],
                                            "function": p["function"]} for p in record.get("performers") or []]
    return [(name, table_rows) for name, table_rows in rows.items() if table_rows]


def run_baseline(settings: Settings, rows: list[tuple[str, list[dict[str, Any]]]], expected: int) -> float:
    tables = models.Base.metadata.tables
    engine = make_engine(settings.database_url)
    try:
        with engine.connect() as conn:  # connect (and SQLite pragmas) outside the timer
            start = time.perf_counter()
            with conn.begin():
                for name, table_rows in rows:
                    conn.execute(insert(tables[name]), table_rows)
            seconds = time.perf_counter() - start
        check_stored(engine, expected, "baseline")
    finally:
        engine.dispose()
    return seconds


def run_import(client: FlaskClient, headers: dict[str, str], body: bytes, expected: int, outcome: str) -> float:
    start = time.perf_counter()
    response = client.post("/api/v1/import", data=body, headers=headers, content_type="application/x-ndjson")
    seconds = time.perf_counter() - start
    if response.status_code != 200:
        raise BenchError(f"/import answered {response.status_code}: {response.get_data(as_text=True)[:2000]}")
    report = response.get_json()
    if report["rejected"] or report["accepted"] != expected or report[outcome] != expected:
        summary = {k: report[k] for k in ("accepted", "rejected", "created", "updated", "unchanged")}
        raise BenchError(f"/import expected {expected} {outcome!r} lines, got {summary}; "
                         f"first errors: {json.dumps(report['errors'][:5])}")
    return seconds


def put_requests(records: Records) -> list[tuple[str, bytes]]:
    out = []
    for name, record in records:
        if COLLECTIONS[name].parent:
            url = f"/api/v1/sessions/{record['session_id']}/{name}/{record['id']}"
        else:
            url = f"/api/v1/{name}/{record['id']}"
        out.append((url, json.dumps(record, separators=(",", ":")).encode()))
    return out


def run_puts(client: FlaskClient, headers: dict[str, str], requests: list[tuple[str, bytes]]) -> float:
    statuses: list[tuple[int, str | None]] = []
    start = time.perf_counter()
    for url, body in requests:
        response = client.put(url, data=body, headers=headers, content_type="application/json")
        statuses.append((response.status_code, response.headers.get("X-Write-Outcome")))
        if response.status_code not in (200, 201):
            raise BenchError(f"PUT {url} answered {response.status_code}: {response.get_data(as_text=True)[:2000]}")
    seconds = time.perf_counter() - start
    not_created = [(url, s) for (url, _), s in zip(requests, statuses, strict=True) if s != (201, "created")]
    if not_created:
        raise BenchError(f"{len(not_created)} PUTs on an empty database did not create a record: {not_created[:5]}")
    return seconds


def validation_only(lines: list[str]) -> float:
    """Seconds for json.loads + marshmallow load of every line (no database): a reference figure."""
    start = time.perf_counter()
    for line in lines:
        envelope = parse_json(line)
        load(COLLECTIONS[envelope["type"]], envelope["record"])
    return time.perf_counter() - start


# --------------------------------------------------------------------------- driver


def bench_backend(backend: Backend, records: Records, put_records: Records, body: bytes,
                  log: Callable[[str], None]) -> list[Result]:
    name = backend.name
    n, n_put = len(records), len(put_records)
    results = []

    rows = baseline_rows(records, datetime.now(UTC))
    seconds = run_baseline(backend.fresh("baseline"), rows, n)
    results.append(Result(name, "baseline (Core executemany)", n, seconds))
    log(f"{name}: baseline {seconds:.2f}s")

    with api_app(backend.fresh("import")) as (app, client, headers):
        seconds = run_import(client, headers, body, n, "created")
        check_stored(app.extensions["db_engine"], n, "import")
        results.append(Result(name, "POST /import (1 request)", n, seconds))
        log(f"{name}: import {seconds:.2f}s")
        seconds = run_import(client, headers, body, n, "unchanged")
        check_stored(app.extensions["db_engine"], n, "re-import")
        reimport = Result(name, "POST /import again (unchanged)", n, seconds)
        log(f"{name}: re-import {seconds:.2f}s")

    with api_app(backend.fresh("put")) as (app, client, headers):
        seconds = run_puts(client, headers, put_requests(put_records))
        check_stored(app.extensions["db_engine"], n_put, "put")
        results.append(Result(name, "PUT per record", n_put, seconds, "subset" if n_put != n else ""))
        log(f"{name}: put {seconds:.2f}s")

    results.append(reimport)
    return results


def print_table(results: list[Result]) -> None:
    baseline = {r.backend: r for r in results if r.path.startswith("baseline")}
    header = f"{'backend':<11} {'path':<31} {'records':>8} {'seconds':>8} {'records/s':>10} {'vs baseline':>12}"
    print(header)
    print("-" * len(header))
    for r in results:
        ratio = baseline[r.backend].rate / r.rate
        note = f"  ({r.note})" if r.note else ""
        print(f"{r.backend:<11} {r.path:<31} {r.records:>8} {r.seconds:>8.2f} {r.rate:>10.0f} {ratio:>11.1f}x{note}")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--patients", type=int, default=200, help="synthetic patients (default 200)")
    parser.add_argument("--put-patients", type=int, default=DEFAULT_PUT_PATIENTS,
                        help=f"patients written by the PUT path (default {DEFAULT_PUT_PATIENTS}, capped at "
                             "--patients): one request per record is slow, so the PUT rate is measured on "
                             "the first patients' records")
    parser.add_argument("--backends", default=",".join(BACKENDS), help="comma-separated: sqlite,postgresql")
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
    if args.put_patients < 1:
        parser.error("--put-patients must be at least 1")
    args.put_patients = min(args.put_patients, args.patients)
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s %(message)s")

    def log(message: str) -> None:
        print(f"  .. {message}", file=sys.stderr, flush=True)

    records = list(clinic_records(args.patients, args.seed))
    put_records = list(clinic_records(args.put_patients, args.seed))
    lines = list(clinic_lines(args.patients, args.seed))
    body = "\n".join(lines).encode()
    if len(lines) != len(records):
        raise BenchError("clinic_lines and clinic_records disagree")

    print(f"ketamine-fhir write benchmark: {args.patients} patients = {len(records)} records "
          f"({len(body) / 1e6:.1f} MB NDJSON), seed {args.seed}; PUT path: {args.put_patients} patients = "
          f"{len(put_records)} records", flush=True)
    results: list[Result] = []
    for name in args.backends:
        with open_backend(name, args.pg_url) as backend:
            results += bench_backend(backend, records, put_records, body, log)
    check_seconds = validation_only(lines)

    print()
    print_table(results)
    print()
    print("baseline: SQLAlchemy Core insert() executemany of the same rows into the same tables (record JSON,")
    print("  hash, timestamps, index columns, foreign keys and side-table rows precomputed; one transaction);")
    print("  the storage floor. 'vs baseline' = time per record / baseline time per record, same backend.")
    print("API paths: Flask test client in-process, bearer token, fresh migrated database per path;")
    print("  re-import runs on the database the import filled (every line 'unchanged').")
    if args.put_patients != args.patients:
        print(f"PUT path: only the first {args.put_patients} patients ({len(put_records)} records), "
              "rate comparable per record.")
    print(f"reference: json.loads + marshmallow load alone (no database): {len(lines) / check_seconds:,.0f} records/s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
