"""``ketamine-fhir destination ...`` and ``ketamine-fhir sync ...``: the admin API's operations on the command line.

Nothing is delivered: outbox rows and attempts are set up in the database, as the delivery
engine (tested elsewhere) would leave them.
"""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from click.testing import CliRunner
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from sqlalchemy import insert, select, update

from service.cli import main
from service.config import Settings
from service.db import make_engine, session_factory
from service.models import DeliveryAttempt, OutboxMessage
from service.synthetic import clinic_lines

URL = "https://ehr.example/fhir"


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    # the destination host these tests use must be allowed (security review, finding 2)
    return {"KETAMINE_FHIR_DATA": str(tmp_path / "data"), "DATABASE_URL": "",
            "KETAMINE_FHIR_DESTINATION_HOSTS": "ehr.example"}


@pytest.fixture
def clinic(env, tmp_path) -> None:
    """Two synthetic patients (pt-0001 referred by pr-001, pt-0002 by pr-002) and the staff."""
    source = tmp_path / "clinic.ndjson"
    source.write_text("\n".join(clinic_lines(2)) + "\n")
    assert run(env, "import", str(source)).exit_code == 0


@pytest.fixture
def db(env):
    settings = Settings.from_env(env)
    engine = make_engine(settings.database_url)
    with session_factory(engine, settings)() as session:
        yield session
    engine.dispose()


def run(env: dict[str, str], *args: str):
    return CliRunner().invoke(main, list(args), env=env, catch_exceptions=False)


def ok(env: dict[str, str], *args: str) -> str:
    result = run(env, *args)
    assert result.exit_code == 0, result.output
    return result.output


def shown(env: dict[str, str], key: str = "ehr") -> dict:
    return json.loads(ok(env, "destination", "show", key, "--json"))


def outbox(db, dest_id: str) -> list[OutboxMessage]:
    fresh(db)
    return list(db.scalars(select(OutboxMessage).where(OutboxMessage.destination_id == dest_id)
                           .order_by(OutboxMessage.id)))


def fresh(db) -> None:
    """Forget what the test's session read: the next query sees what was committed since."""
    db.rollback()
    db.expire_all()


def set_rows(db, ids: list[int], **values) -> None:
    db.execute(update(OutboxMessage).where(OutboxMessage.id.in_(ids)).values(**values))
    db.commit()


# --- destination ---

def test_destination_add_queues_the_initial_load_and_says_how_much(env, clinic):
    output = ok(env, "destination", "add", "--name", "ehr", "--url", URL, "--types", "Patient,Observation")
    dest = shown(env)
    assert output.splitlines() == [
        f"added destination ehr (id {dest['id']}): {dest['status']['pending']} resource(s) queued",
        "it is paused: nothing is sent until `ketamine-fhir destination update ehr --enabled`"]
    assert dest["enabled"] is False
    assert dest["resource_types"] == ["Patient", "Observation"] and dest["status"]["pending"] > 2


def test_destination_add_takes_every_setting(env, clinic):
    ok(env, "destination", "add", "--name", "ehr", "--url", URL, "--mode", "individual", "--types", "Patient",
       "--patients", "referred-by:pr-001", "--max-entries", "20", "--rate-limit", "2.5", "--pull", "--disabled")
    dest = shown(env)
    assert {k: dest[k] for k in ("mode", "patients", "max_bundle_entries", "rate_limit", "pull", "enabled")} == {
        "mode": "individual", "patients": {"kind": "referred-by", "practitioner_id": "pr-001"},
        "max_bundle_entries": 20, "rate_limit": 2.5, "pull": True, "enabled": False}
    assert dest["status"]["pending"] == 1  # pt-0001 only
    ok(env, "destination", "add", "--name", "by-system", "--url", URL, "--patients", "identifier-system:urn:oid:1.2.3")
    assert shown(env, "by-system")["patients"] == {"kind": "identifier-system", "system": "urn:oid:1.2.3"}


def test_destination_add_prints_field_errors_one_a_line_and_exits_2(env):
    result = run(env, "destination", "add", "--name", "ehr", "--url", "not-a-url", "--types", "Patient,Spaceship",
                 "--patients", "referred-by", "--max-entries", "0")
    assert result.exit_code == 2
    lines = result.output.splitlines()
    assert {line.split(":")[0] for line in lines} == {"--url", "--types", "--patients", "--max-entries"}
    assert "--patients: required when kind is referred-by" in lines
    assert json.loads(ok(env, "destination", "list", "--json")) == {"destinations": []}


def test_a_smart_destination_takes_its_key_from_a_file_and_never_shows_it(env, tmp_path):
    pem = ec.generate_private_key(ec.SECP384R1()).private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()).decode()
    key_file = tmp_path / "key.pem"
    key_file.write_text(pem)
    ok(env, "destination", "add", "--name", "ehr", "--url", URL, "--client-id", "clinic-sync", "--token-url",
       "https://ehr.example/oauth/token", "--private-key-file", str(key_file), "--kid", "key-1")
    assert shown(env)["auth"] == {"kind": "smart", "client_id": "clinic-sync", "kid": "key-1",
                                  "token_url": "https://ehr.example/oauth/token", "private_key_set": True}
    for args in (["destination", "show", "ehr"], ["destination", "show", "ehr", "--json"], ["destination", "list"],
                 ["destination", "list", "--json"], ["sync", "status", "--json"]):
        assert "PRIVATE KEY" not in ok(env, *args) and pem.splitlines()[1] not in ok(env, *args)


def test_a_smart_destination_without_its_key_is_refused(env):
    result = run(env, "destination", "add", "--name", "ehr", "--url", URL, "--auth", "smart", "--client-id", "c",
                 "--token-url", "https://ehr.example/oauth/token", "--kid", "k")
    assert result.exit_code == 2 and "--private-key-file: required for smart auth" in result.output


def test_a_bearer_token_is_never_shown(env):
    ok(env, "destination", "add", "--name", "ehr", "--url", URL, "--token", "tok-secret-42")
    assert shown(env)["auth"] == {"kind": "bearer", "token_set": True}
    for args in (["destination", "show", "ehr"], ["destination", "list", "--json"], ["sync", "status"]):
        assert "tok-secret-42" not in ok(env, *args)


def test_destination_list_and_show(env):
    ok(env, "destination", "add", "--name", "ehr", "--url", URL)
    dest_id = shown(env)["id"]
    table = ok(env, "destination", "list").splitlines()
    assert table[0].split() == ["NAME", "ID", "MODE", "AUTH", "ENABLED", "CIRCUIT", "URL"]
    assert table[1].split() == ["ehr", dest_id, "transaction", "none", "False", "closed", URL]
    ok(env, "destination", "update", "ehr", "--enabled")
    assert ok(env, "destination", "list").splitlines()[1].split()[4] == "True"
    assert shown(env, dest_id) == shown(env)
    details = ok(env, "destination", "show", "ehr").splitlines()
    assert "name: ehr" in details and "status.pending: 0" in details and "auth.kind: none" in details
    assert "status.last_error: -" in details
    result = run(env, "destination", "show", "nope")
    assert result.exit_code == 1 and "no destination 'nope'" in result.output


def test_destination_update_changes_only_the_options_given(env, clinic):
    ok(env, "destination", "add", "--name", "ehr", "--url", URL, "--types", "Patient", "--token", "t1")
    before = shown(env)
    assert ok(env, "destination", "update", "ehr", "--mode", "batch", "--disabled").strip() == (
        "updated destination ehr: 0 resource(s) queued")
    after = shown(env)
    assert (after["mode"], after["enabled"]) == ("batch", False)
    assert {k: after[k] for k in ("url", "auth", "resource_types", "patients")} == {
        k: before[k] for k in ("url", "auth", "resource_types", "patients")}
    widened = ok(env, "destination", "update", ehr_id := after["id"], "--types", "Patient,Condition", "--name", "ehr2")
    assert widened.startswith("updated destination ehr2: ") and not widened.startswith("updated destination ehr2: 0 ")
    assert shown(env, ehr_id)["name"] == "ehr2"


def test_destination_update_refuses_bad_values_and_unknown_destinations(env):
    ok(env, "destination", "add", "--name", "ehr", "--url", URL)
    ok(env, "destination", "add", "--name", "other", "--url", URL)
    taken = run(env, "destination", "update", "other", "--name", "ehr")
    assert taken.exit_code == 2 and taken.output.startswith("--name: a destination named 'ehr' exists")
    assert run(env, "destination", "update", "other", "--auth", "bearer").exit_code == 2  # no --token
    assert run(env, "destination", "update", "nope", "--mode", "batch").exit_code == 1


def test_destination_remove(env, clinic, db):
    ok(env, "destination", "add", "--name", "ehr", "--url", URL)
    dest_id = shown(env)["id"]
    assert ok(env, "destination", "remove", "ehr").strip() == "removed destination ehr"
    assert json.loads(ok(env, "destination", "list", "--json")) == {"destinations": []}
    assert outbox(db, dest_id) == []
    assert run(env, "destination", "remove", "ehr").exit_code == 1


# --- sync ---

def test_sync_status_is_one_line_per_destination(env, clinic, db):
    ok(env, "destination", "add", "--name", "ehr", "--url", URL)
    ok(env, "destination", "add", "--name", "patients-only", "--url", URL, "--types", "Patient")
    ok(env, "destination", "update", "ehr", "--enabled")
    dest_id = shown(env)["id"]
    ids = [m.id for m in outbox(db, dest_id)]
    set_rows(db, ids[:5], status="delivered")
    set_rows(db, ids[5:7], status="dead")
    set_rows(db, ids[7:8], status="in-flight")
    set_rows(db, ids[8:9], created_at=datetime.now(UTC) - timedelta(hours=2, minutes=5))
    table = ok(env, "sync", "status").splitlines()
    assert re.split(r"\s{2,}", table[0]) == ["NAME", "ENABLED", "CIRCUIT", "PENDING", "IN FLIGHT", "DELIVERED",
                                             "DEAD LETTERS", "OLDEST PENDING", "LAST SUCCESS", "LAST ERROR"]
    assert table[1].split()[:8] == ["ehr", "True", "closed", str(len(ids) - 8), "1", "5", "2", "2h05m"]
    assert table[2].split() == ["patients-only", "False", "closed", "2", "0", "0", "0", "0s", "-", "-"]
    as_json = json.loads(ok(env, "sync", "status", "--json"))
    assert [d["name"] for d in as_json["destinations"]] == ["ehr", "patients-only"]
    assert as_json["destinations"][0]["status"]["dead_letters"] == 2


def test_sync_dead_letters_and_replay(env, clinic, db):
    ok(env, "destination", "add", "--name", "ehr", "--url", URL)
    queued = outbox(db, shown(env)["id"])
    dead = [m.id for m in queued[3:5]]
    set_rows(db, dead, status="dead", attempts=2, last_status=422, last_error="HTTP 422 (invariant)")
    listed = json.loads(ok(env, "sync", "dead-letters", "ehr", "--json"))["dead_letters"]
    assert [d["id"] for d in listed] == dead and listed[0]["last_error"] == "HTTP 422 (invariant)"
    assert [d["id"] for d in json.loads(ok(env, "sync", "dead-letters", "ehr", "--json", "--limit", "1"))[
        "dead_letters"]] == dead[:1]
    table = ok(env, "sync", "dead-letters", "ehr").splitlines()
    assert table[0].split() == ["ID", "RESOURCE", "VERSION", "ATTEMPTS", "STATUS", "CREATED", "ERROR"]
    assert table[1].split()[0] == str(dead[0]) and table[1].endswith("HTTP 422 (invariant)")
    assert table[1].split()[5].endswith("Z")  # ISO 8601 UTC
    assert ok(env, "sync", "replay", "ehr", "--id", str(dead[0])).strip() == "replayed 1 dead letter(s)"
    assert ok(env, "sync", "replay", "ehr", "--all").strip() == "replayed 1 dead letter(s)"
    assert {m.status for m in outbox(db, shown(env)["id"])} == {"pending"}
    assert run(env, "sync", "replay", "ehr").exit_code == 2
    assert run(env, "sync", "replay", "ehr", "--id", "1", "--all").exit_code == 2


def test_sync_waiting_shows_each_lane_head_and_why(env, clinic, db):
    ok(env, "destination", "add", "--name", "ehr", "--url", URL)
    head = outbox(db, shown(env)["id"])[0]
    set_rows(db, [head.id], attempts=1, last_status=503, last_error="HTTP 503 (transient)")
    table = ok(env, "sync", "waiting", "ehr").splitlines()
    assert table[0].split() == ["ID", "LANE", "RESOURCE", "STATUS", "ATTEMPTS", "NEXT", "BEHIND", "WHY"]
    assert table[1].split()[:5] == [str(head.id), head.lane, f"{head.resource_type}/{head.resource_id}", "pending",
                                    "1"] and table[1].endswith("HTTP 503 (transient)")
    listed = json.loads(ok(env, "sync", "waiting", "ehr", "--json"))["waiting"]
    assert listed[0]["id"] == head.id
    assert {w["lane"] for w in listed} == {m.lane for m in outbox(db, head.destination_id)}  # one head per lane


def test_sync_attempts_newest_first_and_filtered(env, clinic, db):
    ok(env, "destination", "add", "--name", "ehr", "--url", URL)
    first, second = outbox(db, shown(env)["id"])[:2]
    t0 = datetime(2026, 11, 23, 9, 0, tzinfo=UTC)
    db.execute(insert(DeliveryAttempt), [
        {"message_id": m.id, "destination_id": m.destination_id, "at": t0 + timedelta(minutes=i), "worker": "w1",
         "request": "transaction", "status_code": code, "result": result, "error": None, "duration_ms": 7}
        for i, (m, code, result) in enumerate([(first, 503, "retry"), (first, 200, "delivered"),
                                               (second, 200, "delivered")])])
    db.commit()

    def attempts(*args: str) -> list[tuple[int, str]]:
        rows = json.loads(ok(env, "sync", "attempts", "ehr", "--json", *args))["attempts"]
        return [(a["message_id"], a["result"]) for a in rows]

    assert attempts() == [(second.id, "delivered"), (first.id, "delivered"), (first.id, "retry")]
    assert attempts("--message", str(first.id)) == [(first.id, "delivered"), (first.id, "retry")]
    assert attempts("--result", "retry") == [(first.id, "retry")]
    assert attempts("--limit", "1") == [(second.id, "delivered")]
    table = ok(env, "sync", "attempts", "ehr").splitlines()
    assert table[0].split() == ["ID", "AT", "MESSAGE", "RESOURCE", "REQUEST", "STATUS", "RESULT", "MS", "ERROR"]
    assert table[1].split()[1] == "2026-11-23T09:02:00Z"
    assert run(env, "sync", "attempts", "ehr", "--result", "lost").exit_code == 2
    assert run(env, "sync", "attempts", "nope").exit_code == 1
