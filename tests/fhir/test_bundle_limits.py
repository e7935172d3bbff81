"""Security review (issue 10): Bundles and searches are bounded in time, cost and size (findings 4
and 5), no search runs under the write lock, lock contention is 503 + Retry-After (never 500), and
one bad batch entry stays in its own answer (finding 10)."""

from __future__ import annotations

import dataclasses
import sqlite3
import threading
import time
import tracemalloc

import pytest
from sqlalchemy import create_engine, text

from service.config import Settings
from service.fhir import bundles
from service.fhir.search import query
from service.models import FhirResource, Patient
from service.synthetic import clinic_lines
from tests.factories import PATIENT, make, seed_course

pytestmark = pytest.mark.postgres

FHIR = {"Content-Type": "application/fhir+json"}
EHR_MRN = "urn:oid:2.16.840.1.113883.3.9999.7"


def _patient(mrn: str) -> dict:
    mr = {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v2-0203", "code": "MR"}]}
    return {"resourceType": "Patient", "identifier": [{"type": mr, "system": EHR_MRN, "value": mrn}],
            "name": [{"family": "Larch", "given": ["Robin"]}], "gender": "female", "birthDate": "1979-05-02"}


def _post(resource: dict) -> dict:
    return {"resource": resource, "request": {"method": "POST", "url": resource["resourceType"]}}


def _get(url: str) -> dict:
    return {"request": {"method": "GET", "url": url}}


def _bundle(kind: str, *entries: dict) -> dict:
    return {"resourceType": "Bundle", "type": kind, "entry": list(entries)}


def _configure(app, **changes) -> None:
    """Settings are read per request: change them on the running app."""
    app.config["SETTINGS"] = dataclasses.replace(app.config["SETTINGS"], **changes)


def _outcome(response, status: int, code: str) -> dict:
    assert response.status_code == status, response.get_data(as_text=True)[:500]
    body = response.get_json(force=True)
    assert body["resourceType"] == "OperationOutcome" and body["issue"][0]["code"] == code, body
    return body


@pytest.fixture
def clinic(api) -> None:
    assert api.import_ndjson("\n".join(clinic_lines(3))).get_json()["rejected"] == 0


# --- finding 4: the write lock -----------------------------------------------------------------------------------

class _Holder:
    """Another process's writer, holding the database's write lock (SQLite) or the FHIR tables
    (PostgreSQL) until released."""

    def __init__(self, settings):
        self.url = settings.database_url
        if self.url.startswith("sqlite"):
            self.raw = sqlite3.connect(self.url.removeprefix("sqlite:///"), isolation_level=None)
            self.raw.execute("BEGIN IMMEDIATE")
        else:
            self.engine = create_engine(self.url)
            self.conn = self.engine.connect()
            self.conn.execute(text("LOCK TABLE fhir_resources, patients IN EXCLUSIVE MODE"))

    def release(self) -> None:
        if self.url.startswith("sqlite"):
            self.raw.rollback()
            self.raw.close()
        else:
            self.conn.rollback()
            self.conn.close()
            self.engine.dispose()


def test_writes_behind_a_held_lock_are_503_with_retry_after_and_store_nothing(app, client, api, auth, db,
                                                                              settings, monkeypatch):
    _configure(app, lock_wait_seconds=0.3)
    if "audit" in app.extensions:  # its (synchronous under TESTING) writes would wait out the holder too
        monkeypatch.setattr(app.extensions["audit"], "submit", lambda pending: None)
    holder = _Holder(settings)
    try:
        started = time.monotonic()
        clinic = api.put("/patients/pt-1", make(PATIENT, referring_practitioner_id=None))
        assert clinic.status_code == 503, clinic.get_data(as_text=True)
        assert time.monotonic() - started < 3  # KETAMINE_FHIR_LOCK_WAIT_SECONDS, not the workers' 30 s
        assert clinic.headers["Retry-After"].isdigit() and set(clinic.get_json()) == {"message", "errors"}
        sent = client.post("/fhir", json=_bundle("transaction", _post(_patient("E-1"))), headers=auth | FHIR)
        assert sent.headers["Retry-After"].isdigit()
        _outcome(sent, 503, "lock-error")
        single = client.post("/fhir/Patient", json=_patient("E-2"), headers=auth | FHIR)
        _outcome(single, 503, "lock-error")
        assert single.headers["Retry-After"].isdigit()
    finally:
        holder.release()
    db.rollback()
    assert db.query(Patient).count() == 0
    assert db.query(FhirResource).filter(FhirResource.resource_type == "Patient").count() == 0
    assert api.put("/patients/pt-1", make(PATIENT, referring_practitioner_id=None)).status_code == 201


def _write_lock_free(settings) -> bool:
    """Whether another connection could take SQLite's write lock right now."""
    probe = sqlite3.connect(settings.database_url.removeprefix("sqlite:///"), timeout=0, isolation_level=None)
    try:
        probe.execute("BEGIN IMMEDIATE")
        probe.execute("ROLLBACK")
        return True
    except sqlite3.OperationalError:
        return False
    finally:
        probe.close()


@pytest.mark.sqlite_only
@pytest.mark.parametrize("kind", ["transaction", "batch"])
def test_a_bundle_searches_outside_the_write_lock_and_sees_its_writes(client, auth, settings, monkeypatch, kind,
                                                                      clinic):
    import service.fhir.search as search_pkg

    seen: list[bool] = []
    real = search_pkg.run_search

    def probing(*args, **kwargs):
        seen.append(_write_lock_free(settings))
        return real(*args, **kwargs)

    monkeypatch.setattr(search_pkg, "run_search", probing)
    sent = _bundle(kind, _get(f"Patient?identifier={EHR_MRN}|E-9"), _post(_patient("E-9")),
                   *[_get("Observation?_count=5") for _ in range(3)])
    body = client.post("/fhir", json=sent, headers=auth | FHIR).get_json(force=True)
    assert [e["response"]["status"] for e in body["entry"]] == ["200 OK", "201 Created"] + ["200 OK"] * 3
    assert body["entry"][0]["resource"]["total"] == 1  # the GET saw the write
    assert seen == [True] * 4  # every search ran while another writer could have taken the lock


def test_a_transaction_checks_every_entry_before_writing(client, auth, db):
    for bad in (_get("Patient?birthdate=notadate"), _get("Patient/does-not-exist"),
                _get("Patient?patient.name=x")):
        sent = _bundle("transaction", _post(_patient("E-3")), bad)
        response = client.post("/fhir", json=sent, headers=auth | FHIR)
        assert response.status_code in (400, 404), response.get_data(as_text=True)
        assert response.get_json(force=True)["issue"][0]["expression"][0] == "Bundle.entry[1]"
    db.rollback()
    assert db.query(Patient).count() == 0


def test_more_searches_than_allowed_is_413_before_any_work(client, auth, db):
    sent = _bundle("transaction", _post(_patient("E-4")),
                   *[_get("Patient?gender=female")] * (bundles.MAX_SEARCHES + 1))
    _outcome(client.post("/fhir", json=sent, headers=auth | FHIR), 413, "too-costly")
    db.rollback()
    assert db.query(Patient).count() == 0


@pytest.mark.sqlite_only  # PostgreSQL: statement_timeout, test_time_limit_stops_a_slow_statement
def test_a_search_over_its_time_limit_is_503_timeout(client, auth, monkeypatch, settings, clinic):
    monkeypatch.setattr(query, "SEARCH_SECONDS", 0.0)
    monkeypatch.setattr(query, "_PROGRESS_STEPS", 1)
    slow = client.get("/fhir/Observation?_count=50", headers=auth)
    _outcome(slow, 503, "timeout")
    assert slow.headers["Retry-After"].isdigit()
    body = client.post("/fhir", json=_bundle("batch", _get("Observation?_count=50"), _post(_patient("E-5"))),
                       headers=auth | FHIR).get_json(force=True)
    assert [e["response"]["status"] for e in body["entry"]] == ["503 Service Unavailable", "201 Created"]


def test_time_limit_stops_a_slow_statement(db):
    slow = ("SELECT pg_sleep(2)" if db.get_bind().dialect.name == "postgresql" else
            "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n) SELECT count(*) FROM n")
    with pytest.raises(query.FhirError) as caught, query.time_limit(db, 0.2):
        db.execute(text(slow))
    assert caught.value.status == 503 and caught.value.code == "timeout"
    db.rollback()
    with query.time_limit(db, 5):  # the session works afterwards, and a fast statement passes
        assert db.scalar(text("SELECT 1")) == 1


@pytest.mark.sqlite_only
def test_a_slow_search_does_not_block_a_concurrent_clinic_write(app, api, db, monkeypatch, settings, clinic):
    """A search held open (a slow progress handler) while a clinic write commits: WAL readers never
    block writers, and the search no longer holds the write lock."""
    started, release = threading.Event(), threading.Event()
    original = query._run_search

    def held(session, *args):
        raw = session.connection().connection.dbapi_connection

        def wait() -> int:
            started.set()
            release.wait(10)
            return 0

        raw.set_progress_handler(wait, 1000)  # replaces the time limit's handler for this test
        return original(session, *args)

    monkeypatch.setattr(query, "_run_search", held)
    results: list[int] = []

    def search() -> None:
        with app.test_client() as other:
            results.append(other.get("/fhir/Observation?_count=5", headers=api.headers).status_code)

    thread = threading.Thread(target=search)
    thread.start()
    assert started.wait(10)
    _configure(app, lock_wait_seconds=1.0)
    try:
        assert api.put("/patients/pt-1", make(PATIENT, referring_practitioner_id=None)).status_code == 201
    finally:
        release.set()
        thread.join(10)
    assert results == [200]


# --- batch entries fail alone --------------------------------------------------------------------------------------

def test_an_unexpected_error_in_one_batch_entry_is_that_entrys_500(client, auth, db, monkeypatch, caplog):
    real = bundles._Run.target

    def failing(self, entry):
        if entry.resource_id == "boom":
            raise RuntimeError("secret patient detail")
        return real(self, entry)

    monkeypatch.setattr(bundles._Run, "target", failing)
    sent = _bundle("batch", _post(_patient("E-6")), _get("Patient/boom"), _get("Organization?_count=1"))
    body = client.post("/fhir", json=sent, headers=auth | FHIR).get_json(force=True)
    assert [e["response"]["status"] for e in body["entry"]] == ["201 Created", "500 Internal Server Error",
                                                                "200 OK"]
    assert body["entry"][1]["response"]["outcome"]["issue"][0]["code"] == "exception"
    assert "RuntimeError" in caplog.text and "secret patient detail" not in caplog.text
    db.rollback()
    assert db.query(Patient).count() == 1


# --- finding 5: size -------------------------------------------------------------------------------------------------

def test_includes_are_capped_per_page(client, auth, monkeypatch, clinic):
    monkeypatch.setattr(query, "MAX_INCLUDED", 5)
    _outcome(client.get("/fhir/Patient?_revinclude=Observation:patient&_count=3", headers=auth), 413, "too-costly")
    assert client.get("/fhir/Patient?_revinclude=Observation:patient&_count=3&_id=nobody",
                      headers=auth).status_code == 200


def _peak(call) -> tuple[object, int]:
    tracemalloc.start()
    try:
        response = call()
        return response, tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def test_answers_over_the_byte_budget_are_413(app, client, auth, db, clinic):
    url = "/fhir/Observation?_count=1000&_include=Observation:patient"
    full, full_peak = _peak(lambda: client.get(url, headers=auth))
    size = len(full.get_data())
    assert full.status_code == 200 and size > 100_000
    budget = size // 4
    _configure(app, max_response_bytes=budget)
    refused, refused_peak = _peak(lambda: client.get(url, headers=auth))
    _outcome(refused, 413, "too-costly")
    assert len(refused.get_data()) < 1000 and refused_peak < full_peak
    print(f"\nfull answer {size} B, peak {full_peak} B; budget {budget} B: 413, peak {refused_peak} B")

    small = "Organization?_count=1"
    batch = client.post("/fhir", json=_bundle("batch", _get(small), _get(url.removeprefix("/fhir/")), _get(small)),
                        headers=auth | FHIR)
    body = batch.get_json(force=True)
    assert [e["response"]["status"] for e in body["entry"]] == ["200 OK", "413 Request Entity Too Large", "200 OK"]
    assert len(batch.get_data()) < budget
    only_reads = _bundle("transaction", _get(small), _get(url.removeprefix("/fhir/")))
    _outcome(client.post("/fhir", json=only_reads, headers=auth | FHIR), 413, "too-costly")
    # a transaction that wrote keeps its writes and answers the oversized GET in its own entry
    wrote = client.post("/fhir", json=_bundle("transaction", _post(_patient("E-8")), _get(url.removeprefix("/fhir/"))),
                        headers=auth | FHIR).get_json(force=True)
    assert [e["response"]["status"] for e in wrote["entry"]] == ["201 Created", "413 Request Entity Too Large"]
    db.rollback()
    assert db.query(FhirResource).filter(FhirResource.id == wrote["entry"][0]["fullUrl"].rsplit("/", 1)[1]).count()


def test_history_is_within_the_byte_budget(app, client, auth, api):
    seed_course(api)
    _configure(app, max_response_bytes=500)
    _outcome(client.get("/fhir/Patient/_history", headers=auth), 413, "too-costly")


def test_the_limits_are_settings():
    settings = Settings.from_env({"KETAMINE_FHIR_LOCK_WAIT_SECONDS": "2.5", "KETAMINE_FHIR_MAX_RESPONSE_BYTES": "4096"})
    assert (settings.lock_wait_seconds, settings.max_response_bytes) == (2.5, 4096)
    defaults = Settings.from_env({})
    assert (defaults.lock_wait_seconds, defaults.max_response_bytes) == (5.0, 32 * 1024 * 1024)
