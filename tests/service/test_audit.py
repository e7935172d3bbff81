"""The audit trail (service/audit.py, issue 10): every access to patient data is one AuditEvent —
who, what, when, outcome — append-only, served at /fhir/AuditEvent to the explicit audit scope only;
audit writes never fail or hold up the request; an EHR's write names it in the Provenance."""

from __future__ import annotations

import base64
import json
import sqlite3
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select, text
from sqlalchemy.exc import DBAPIError

from mappings.datatypes import fhir_id
from service import audit, create_app, models
from service.auth import create_token
from tests.factories import OBSERVATION, PATIENT, PSYCHIATRIST
from tests.fhir_checks import validate_with_models, validate_with_peer

BASE = "https://clinic.example.org/fhir"
FHIR = {"Content-Type": "application/fhir+json"}
PATIENT_ID = fhir_id(BASE, "Patient", "patients", "pt-1")
SCORE_ID = fhir_id(BASE, "Observation", "observations", "ob-1")


def bearer(db, name: str, *scopes: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {create_token(db, name, list(scopes))}"}


#: a score without items: one Observation (items add a panel, item Observations, a QuestionnaireResponse)
SCORE = {k: v for k, v in OBSERVATION.items() if k != "items"}


@pytest.fixture
def clinic(api) -> None:
    for path, body in (("/practitioners/dr-ortiz", PSYCHIATRIST), ("/patients/pt-1", PATIENT),
                       ("/observations/ob-1", SCORE)):
        assert api.put(path, body).status_code == 201


@pytest.fixture
def reader(db) -> dict[str, str]:
    return bearer(db, "ehr-reader", "system/*.rs")


@pytest.fixture
def auditor(db) -> dict[str, str]:
    return bearer(db, "auditor", "system/AuditEvent.rs")


def events(app, db, after: int = 0) -> list[dict[str, Any]]:
    """Every AuditEvent stored, oldest first (after the first ``after``)."""
    assert audit.flush(app)
    db.rollback()
    rows = db.scalars(select(models.AuditEventRow).order_by(models.AuditEventRow.recorded, models.AuditEventRow.id))
    return [json.loads(r.content) for r in rows][after:]


def count(app, db) -> int:
    return len(events(app, db))


def only(app, db, before: int) -> dict[str, Any]:
    [event] = events(app, db, before)
    return event


def refs(event: dict[str, Any], role: str) -> list[str]:
    return [e["what"]["reference"] for e in event.get("entity", []) if e["role"]["code"] == role and "what" in e
            and "reference" in e["what"]]


def agent(event: dict[str, Any]) -> tuple[str, str]:
    who = event["agent"][0]["who"]["identifier"]
    return who["system"], who["value"]


def query_of(event: dict[str, Any]) -> str | None:
    return next((base64.b64decode(e["query"]).decode() for e in event.get("entity", []) if "query" in e), None)


# --- what is recorded ---


@pytest.mark.postgres
def test_a_fhir_read_is_one_event_naming_the_token_and_the_patient(app, client, db, clinic, reader):
    before = count(app, db)
    assert client.get(f"/fhir/Patient/{PATIENT_ID}", headers=reader).status_code == 200
    event = only(app, db, before)
    assert (event["subtype"][0]["code"], event["action"], event["outcome"]) == ("read", "R", "0")
    assert agent(event) == (f"{BASE}/api-tokens", "ehr-reader") and event["agent"][0]["requestor"] is True
    assert refs(event, "1") == [f"Patient/{PATIENT_ID}"] and query_of(event) is None
    assert event["source"]["observer"]["identifier"]["system"] == f"{BASE}/organization"


def test_a_search_records_what_it_served_and_the_query_as_sent(app, client, db, clinic, reader):
    before = count(app, db)
    response = client.get(f"/fhir/Observation?patient=Patient/{PATIENT_ID}&_count=5", headers=reader)
    assert response.status_code == 200
    event = only(app, db, before)
    assert (event["subtype"][0]["code"], event["action"]) == ("search-type", "E")
    served = {e["resource"]["id"] for e in response.get_json(force=True)["entry"]}
    assert set(refs(event, "4")) == {f"Observation/{i}" for i in served} and SCORE_ID in served
    assert refs(event, "1") == [f"Patient/{PATIENT_ID}"]  # whose data it was, from the stored compartment
    assert query_of(event) == f"patient=Patient/{PATIENT_ID}&_count=5"


def test_a_refused_read_is_recorded_as_a_minor_failure(app, client, db, clinic):
    before = count(app, db)
    headers = bearer(db, "clinic-only", "clinic:read")
    assert client.get(f"/fhir/Patient/{PATIENT_ID}", headers=headers).status_code == 403
    event = only(app, db, before)
    assert event["outcome"] == "4" and agent(event) == (f"{BASE}/api-tokens", "clinic-only")


@pytest.mark.postgres
def test_a_fhir_write_is_one_event_and_its_provenance_names_the_client(app, client, db, clinic):
    headers = bearer(db, "ehr-writer", "system/Patient.cru")
    current = client.get(f"/fhir/Patient/{PATIENT_ID}", headers=headers).get_json(force=True)
    before = count(app, db)
    changed = {**current, "name": [{**current["name"][0], "family": "Rowan-Hale"}]}
    assert client.put(f"/fhir/Patient/{PATIENT_ID}", json=changed, headers=headers | FHIR).status_code == 200
    event = only(app, db, before)
    assert (event["subtype"][0]["code"], event["action"], event["outcome"]) == ("update", "U", "0")
    assert refs(event, "1") == [f"Patient/{PATIENT_ID}"] and agent(event) == (f"{BASE}/api-tokens", "ehr-writer")
    db.rollback()
    provenances = [json.loads(r.content) for r in db.scalars(select(models.FhirResource).where(
        models.FhirResource.resource_type == "Provenance"))]
    authors = [p["agent"][0]["who"] for p in provenances if {"reference": f"Patient/{PATIENT_ID}"} in p["target"]]
    assert {"identifier": {"system": f"{BASE}/api-tokens", "value": "ehr-writer"}, "display": "ehr-writer"} in authors
    assert any(a.get("reference", "").startswith("Organization/") for a in authors)  # the clinic's own write
    for provenance in provenances:
        validate_with_models(provenance)


def test_a_clinic_api_read_is_one_event_naming_the_record(app, db, clinic, api):
    before = count(app, db)
    assert api.get("/observations/ob-1").status_code == 200
    event = only(app, db, before)
    assert (event["subtype"][0]["code"], event["action"], event["outcome"]) == ("read", "R", "0")
    assert agent(event) == (f"{BASE}/api-tokens", "test-operator")
    assert refs(event, "1") == [f"Patient/{PATIENT_ID}"]
    [record] = [e["what"]["identifier"] for e in event["entity"] if "identifier" in e["what"]]
    assert record == {"use": "usual", "system": f"{BASE}/observations", "value": "ob-1"}


def test_clinic_writes_and_imports_are_recorded(app, db, clinic, api):
    before = count(app, db)
    api.put("/patients/pt-1", {**PATIENT, "phone": "555 0101"})
    line = json.dumps({"type": "observations", "record": {**OBSERVATION, "id": "ob-2"}})
    assert api.import_ndjson(line + "\n").status_code == 200
    put, imported = events(app, db, before)
    assert (put["subtype"][0]["code"], put["action"]) == ("update", "U")
    assert (imported["subtype"][0]["code"], imported["action"]) == ("batch", "C")
    assert refs(imported, "1") == [f"Patient/{PATIENT_ID}"]


def test_a_token_request_is_recorded_issued_or_refused(app, client, db):
    before = count(app, db)
    response = client.post("/auth/token", data={"grant_type": "client_credentials"})
    assert response.status_code in (400, 401)
    event = only(app, db, before)
    assert event["type"]["code"] == "110114" and event["subtype"][0]["code"] == "110122"
    assert event["outcome"] == "4" and event["agent"][0]["name"] == "unauthenticated client"


def test_metadata_is_not_audited(app, client, db):
    before = count(app, db)
    client.get("/fhir/metadata")
    assert events(app, db, before) == []


# --- serving the trail ---


def test_the_audit_trail_needs_its_own_scope(app, client, db, clinic, reader):
    operator = bearer(db, "operator-2", "*")
    clinical = bearer(db, "all-types", "system/*.cruds")
    for headers in (reader, operator, clinical):
        assert client.get("/fhir/AuditEvent", headers=headers).status_code == 403
        assert client.get("/fhir/AuditEvent/x", headers=headers).status_code == 403
    assert client.get("/fhir/AuditEvent").status_code == 401


def test_an_auditor_searches_and_reads_the_trail(app, client, db, clinic, reader, auditor):
    client.get(f"/fhir/Patient/{PATIENT_ID}", headers=reader)
    audit.flush(app)
    found = client.get(f"/fhir/AuditEvent?patient={PATIENT_ID}&agent-name=ehr&subtype=read", headers=auditor)
    assert found.status_code == 200
    bundle = found.get_json(force=True)
    assert bundle["type"] == "searchset" and bundle["total"] == 1
    event = bundle["entry"][0]["resource"]
    assert agent(event) == (f"{BASE}/api-tokens", "ehr-reader")
    read = client.get(f"/fhir/AuditEvent/{event['id']}", headers=auditor)
    assert read.status_code == 200 and read.get_json(force=True) == event
    assert client.get("/fhir/AuditEvent?outcome=8", headers=auditor).get_json(force=True)["total"] == 0
    today = event["recorded"][:10]
    dated = client.get(f"/fhir/AuditEvent?date={today}&entity=Patient/{PATIENT_ID}&action=R", headers=auditor)
    assert dated.get_json(force=True)["total"] >= 1
    assert client.get("/fhir/AuditEvent?date=gt2999-01-01", headers=auditor).get_json(force=True)["total"] == 0
    # the auditor's own searches are audited too
    audit.flush(app)
    mine = client.get("/fhir/AuditEvent?agent-name=auditor", headers=auditor).get_json(force=True)
    assert mine["total"] >= 3


def test_the_trail_pages_newest_first(app, client, db, clinic, reader, auditor):
    for _ in range(3):
        client.get(f"/fhir/Patient/{PATIENT_ID}", headers=reader)
    audit.flush(app)
    first = client.get("/fhir/AuditEvent?agent-name=ehr-reader&_count=2", headers=auditor).get_json(force=True)
    assert len(first["entry"]) == 2 and first["total"] == 3
    nxt = next(link["url"] for link in first["link"] if link["relation"] == "next")
    second = client.get(nxt.replace("http://localhost", ""), headers=auditor).get_json(force=True)
    assert len(second["entry"]) == 1
    stamps = [e["resource"]["recorded"] for e in first["entry"] + second["entry"]]
    assert stamps == sorted(stamps, reverse=True)


def test_the_trail_cannot_be_written_over_fhir(client, db, auditor):
    for method in ("post", "put", "delete", "patch"):
        assert getattr(client, method)("/fhir/AuditEvent/x", headers=auditor).status_code == 405
    assert client.post("/fhir/AuditEvent", json={"resourceType": "AuditEvent"}, headers=auditor | FHIR
                       ).status_code == 405


def test_a_wildcard_smart_client_is_not_granted_the_audit_scope():
    from service.fhir.scopes import allows, grant

    assert grant(["system/AuditEvent.rs", "system/*.rs"], ["system/*.cruds"]) == ["system/*.rs"]
    assert grant(["system/AuditEvent.rs"], ["system/AuditEvent.rs"]) == ["system/AuditEvent.rs"]
    assert not allows(["*"], "AuditEvent", "search") and not allows(["system/*.rs"], "AuditEvent", "read")
    assert allows(["system/AuditEvent.rs"], "AuditEvent", "search") and allows(["*"], "Patient", "read")


def test_every_stored_event_passes_the_independent_validator(app, client, db, clinic, reader, auditor,
                                                            tmp_path: Path):
    client.get(f"/fhir/Patient/{PATIENT_ID}", headers=reader)
    client.get(f"/fhir/Observation?patient={PATIENT_ID}", headers=reader)
    client.get("/fhir/AuditEvent", headers=auditor)
    client.post("/auth/token", data={"grant_type": "client_credentials"})
    stored = events(app, db)
    assert len(stored) >= 7
    for event in stored:
        validate_with_models(event)
    assert validate_with_peer(stored, tmp_path) == []


# --- never failing, never waiting ---


def test_a_failing_audit_store_does_not_fail_the_request(app, client, db, clinic, reader, monkeypatch, caplog):
    def broken(*_args: Any, **_kw: Any) -> None:
        raise RuntimeError("the audit store is down")

    monkeypatch.setattr(audit, "write_batch", broken)
    dropped = audit.dropped(app)
    response = client.get(f"/fhir/Patient/{PATIENT_ID}", headers=reader)
    assert response.status_code == 200 and response.get_json(force=True)["id"] == PATIENT_ID
    assert audit.dropped(app) == dropped + 1
    assert client.get("/readyz").get_json()["audit_dropped"] == dropped + 1
    assert "RuntimeError" in caplog.text and "Rowan" not in caplog.text


def test_a_full_queue_drops_and_counts_without_blocking(settings):
    from service.audit import AuditLog, Pending

    app = create_app(settings, TESTING=True, AUDIT_SYNC=False)
    try:
        log = AuditLog(app.extensions["db_sessionmaker"], maxsize=1)
        gate = threading.Event()
        log._write = lambda batch: gate.wait(5)  # the writer is stuck
        pending = Pending(audit.datetime.now(audit.UTC), "read", "R", "0", [audit.Agent("unknown")])
        started = time.monotonic()
        for _ in range(5):
            log.submit(pending)
        assert time.monotonic() - started < 0.5 and log.dropped >= 3
        gate.set()
        assert log.flush(5)
    finally:
        app.extensions["db_engine"].dispose()


def test_a_get_does_not_wait_for_its_audit_row_behind_a_writer(settings, tmp_path: Path):
    """SQLite: while another connection holds the write lock (an import), reads answer at once; their
    audit rows are written when the lock is free."""
    app = create_app(settings, TESTING=True, AUDIT_SYNC=False)
    try:
        factory = app.extensions["db_sessionmaker"]
        with factory() as db:
            headers = bearer(db, "ehr-reader", "system/*.rs")
        lock = sqlite3.connect(tmp_path / "ketamine-fhir.sqlite3", timeout=1, isolation_level=None)
        lock.execute("BEGIN IMMEDIATE")
        lock.execute("INSERT INTO api_tokens (name, token_hash, scopes, created_at) VALUES "
                     "('holder', 'h', 'x', '2026-01-01 00:00:00')")
        client = app.test_client()
        started = time.monotonic()
        for _ in range(3):
            assert client.get("/fhir/Patient", headers=headers).status_code == 200
        assert time.monotonic() - started < 2
        lock.execute("ROLLBACK")
        lock.close()
        assert audit.flush(app, 30)
        with factory() as db:
            assert len(list(db.scalars(select(models.AuditEventRow)))) == 3
        assert audit.dropped(app) == 0
    finally:
        app.extensions["db_engine"].dispose()


# --- append-only ---


@pytest.mark.postgres
def test_audit_rows_cannot_be_updated_or_deleted(app, client, db, clinic, reader):
    client.get(f"/fhir/Patient/{PATIENT_ID}", headers=reader)
    audit.flush(app)
    db.rollback()
    for statement in ("UPDATE audit_events SET outcome = '0'", "DELETE FROM audit_events",
                      "UPDATE audit_event_refs SET ref = 'Patient/x'", "DELETE FROM audit_event_refs"):
        with pytest.raises(DBAPIError, match="append-only"):
            db.execute(text(statement))
        db.rollback()
    assert db.scalar(text("SELECT count(*) FROM audit_events")) >= 1


# --- admin ---


def test_an_admin_destination_change_is_recorded_once_committed(settings, tmp_path: Path):
    import dataclasses

    app = create_app(dataclasses.replace(settings, destination_hosts=("ehr.example",)), TESTING=True)
    try:
        client = app.test_client()
        with app.extensions["db_sessionmaker"]() as db:
            headers = bearer(db, "operator", "*")
            response = client.post("/admin/destinations", json={"name": "ehr", "url": "https://ehr.example/fhir"},
                                   headers=headers)
            assert response.status_code == 201, response.get_json()
            [event] = [e for e in events(app, db) if e["subtype"][0]["code"] == "create"]
        assert (event["action"], event["outcome"]) == ("C", "0")
        assert event["entity"][0]["what"]["identifier"] == {"use": "usual", "system": f"{BASE}/sync-destinations",
                                                            "value": response.get_json()["id"]}
        assert agent(event) == (f"{BASE}/api-tokens", "operator")
    finally:
        app.extensions["db_engine"].dispose()
