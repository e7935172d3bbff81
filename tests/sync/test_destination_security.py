"""Security review (issue 10), findings 2 and 12: who may point the clinic's data somewhere, where it
may go, and how destination secrets are kept.

Finding 2: an ``admin`` token added a plain-http destination of its own choosing and received the
clinic's MRNs within seconds. Now adding, re-pointing, widening and enabling need
``admin:destinations``; URLs must be https on an operator-listed host (http only to loopback, when
allowed); a new destination is paused until enabled; every change is an audit line.
Finding 12: bearer tokens and SMART private keys were stored as plaintext JSON; now they are Fernet
encrypted at rest, opened only where requests are built, and ``secrets rotate`` re-encrypts them.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import re
from datetime import UTC, datetime

import pytest
import responses
from click.testing import CliRunner
from cryptography.fernet import Fernet, InvalidToken
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from sqlalchemy import func, select, text, update

from service.admin.policy import url_errors
from service.auth import create_token
from service.cli import main
from service.config import Settings
from service.db import make_engine, session_factory
from service.models import Destination, OutboxMessage
from service.sync.client import client_for
from service.sync.worker import PollingWorker
from service.synthetic import clinic_lines
from tests.sync.test_engine import CLINIC, Ehr

URL = "https://ehr.example/fhir"
TOKEN = "bearer-secret-0123456789"
NOW = datetime(2026, 12, 1, 9, 0, tzinfo=UTC)
HOSTS = ("ehr.example", "*.trusted.example", "127.0.0.1:8080", "evil.example")


@pytest.fixture
def settings(settings, request):
    """The app's settings with a destination policy (``request.param`` to change it)."""
    policy = getattr(request, "param", {})
    return dataclasses.replace(settings, destination_hosts=policy.get("hosts", HOSTS),
                               allow_http_loopback=policy.get("loopback", False))


def bearer(db, name: str, scopes: list[str]) -> dict[str, str]:
    return {"Authorization": f"Bearer {create_token(db, name, scopes)}"}


@pytest.fixture
def privileged(db) -> dict[str, str]:
    return bearer(db, "integrations", ["admin", "admin:destinations"])


@pytest.fixture
def ops(db) -> dict[str, str]:
    return bearer(db, "ops", ["admin"])


def settle(app) -> None:
    """Wait for the audit trail's background writes of the requests so far (service/audit.py): on
    SQLite a request that reads, then writes, while that writer commits gets "database is locked"."""
    if "audit" in app.extensions:
        app.extensions["audit"].flush()


@pytest.fixture
def clinic(app, api) -> None:
    assert api.import_ndjson("\n".join(clinic_lines(2))).get_json()["rejected"] == 0
    settle(app)


def post(client, headers, body):
    return client.post("/admin/destinations", json=body, headers=headers)


def patch(client, headers, key, body):
    return client.patch(f"/admin/destinations/{key}", json=body, headers=headers)


def counts(db) -> tuple[int, int]:
    db.rollback()
    return (db.scalar(select(func.count()).select_from(Destination)),
            db.scalar(select(func.count()).select_from(OutboxMessage)))


def raw_auth(db, dest_id: str) -> str:
    """``auth_config`` as the database holds it, as text."""
    db.rollback()
    value = db.execute(text("SELECT auth_config FROM sync_destinations WHERE id = :id"), {"id": dest_id}).scalar_one()
    return value if isinstance(value, str) else json.dumps(value)


# --- finding 2: who may add, re-point, widen or enable ---

@pytest.mark.postgres
def test_an_admin_token_cannot_add_a_destination(client, db, ops, clinic):
    """The reported exfiltration: the attacker's own URL, plain http, everything selected."""
    body = {"name": "exfil", "url": "http://evil.example/fhir", "auth": {"kind": "bearer", "token": TOKEN},
            "patients": {"kind": "all"}, "enabled": True}
    response = post(client, ops, body)
    assert response.status_code == 403
    assert "admin:destinations" in response.get_json()["message"]
    answer = response.get_data(as_text=True)
    assert "evil.example" not in answer and TOKEN not in answer and "exfil" not in answer
    assert counts(db) == (0, 0)  # nothing stored, nothing queued


@pytest.mark.parametrize("body", [
    {"url": "https://ehr.example/other"},
    {"auth": {"kind": "bearer", "token": TOKEN}},
    {"patients": {"kind": "all"}},
    {"resource_types": ["Patient", "Provenance"]},
    {"pull": True},
    {"enabled": True},
])
def test_an_admin_token_cannot_repoint_widen_or_enable_a_destination(client, db, privileged, ops, clinic, body):
    created = post(client, privileged, {"name": "ehr", "url": URL, "resource_types": ["Patient"],
                                        "patients": {"kind": "referred-by", "practitioner_id": "pr-001"}}).get_json()
    before = counts(db)
    response = patch(client, ops, "ehr", body)
    assert response.status_code == 403 and "admin:destinations" in response.get_json()["message"]
    assert counts(db) == before
    after = client.get("/admin/destinations/ehr", headers=ops).get_json()
    assert {k: after[k] for k in created if k != "queued"} == {k: v for k, v in created.items() if k != "queued"}


def test_an_admin_token_can_still_pause_rename_and_tune(client, db, privileged, ops):
    post(client, privileged, {"name": "ehr", "url": URL})
    assert patch(client, privileged, "ehr", {"enabled": True}).get_json()["enabled"] is True
    response = patch(client, ops, "ehr", {"enabled": False, "name": "ehr-2", "read_timeout": 10, "mode": "batch"})
    assert response.status_code == 200
    assert (response.get_json()["enabled"], response.get_json()["name"]) == (False, "ehr-2")


def test_the_destinations_scope_works_with_admin_and_the_operator_scope_alone(client, db, auth):
    alone = bearer(db, "only-destinations", ["admin:destinations"])
    assert post(client, alone, {"name": "ehr", "url": URL}).status_code == 403  # the admin API needs admin
    assert post(client, auth, {"name": "ehr", "url": URL}).status_code == 201  # "*"


# --- finding 2: where a destination may point ---

@pytest.mark.parametrize("url,message", [
    ("http://evil.example/fhir", "must be https"),
    ("https://elsewhere.example/fhir", "host elsewhere.example:443 is not in KETAMINE_FHIR_DESTINATION_HOSTS"),
    ("https://ehr.example.evil.example/fhir", "is not in KETAMINE_FHIR_DESTINATION_HOSTS"),
    ("https://trusted.example/fhir", "is not in"),  # *.suffix: names under it, not the suffix itself
    ("https://127.0.0.1:9999/fhir", "host 127.0.0.1:9999 is not in"),  # the listed port only
    ("http://127.0.0.1:8080/fhir", "must be https"),  # loopback http needs the flag
    ("https://user:pw@ehr.example/fhir", "no user name or password"),
])
def test_a_url_outside_the_policy_is_a_422_field_error_and_nothing_is_stored(client, db, privileged, url, message):
    response = post(client, privileged, {"name": "ehr", "url": url})
    assert response.status_code == 422, response.get_json()
    assert any(message in m for m in response.get_json()["errors"]["url"]), response.get_json()
    assert counts(db) == (0, 0)


def test_allowed_hosts_and_suffixes_pass(client, privileged):
    for name, url in (("a", URL), ("b", "https://ehr.example:8443/fhir"), ("c", "https://fhir.trusted.example/r4"),
                      ("d", "https://a.b.trusted.example/r4"), ("e", "https://127.0.0.1:8080/fhir")):
        assert post(client, privileged, {"name": name, "url": url}).status_code == 201, url


@pytest.mark.parametrize("settings", [{"hosts": ("127.0.0.1:8080", "localhost", "::1"), "loopback": True}],
                         indirect=True)
def test_loopback_http_only_with_the_flag(client, privileged):
    for name, url in (("a", "http://127.0.0.1:8080/fhir"), ("b", "http://localhost/fhir"), ("c", "http://[::1]/fhir")):
        assert post(client, privileged, {"name": name, "url": url}).status_code == 201, url
    refused = post(client, privileged, {"name": "d", "url": "http://10.0.0.8/fhir"}).get_json()["errors"]["url"]
    assert any("must be https" in m for m in refused)


@pytest.mark.parametrize("settings", [{"hosts": ()}], indirect=True)
def test_an_empty_allow_list_allows_no_destination_and_says_so(client, privileged):
    response = post(client, privileged, {"name": "ehr", "url": URL})
    assert response.status_code == 422
    assert response.get_json()["errors"]["url"] == [
        "no destination host is allowed: the operator lists them in KETAMINE_FHIR_DESTINATION_HOSTS"]


def test_a_smart_token_url_follows_the_same_policy(client, privileged):
    pem = ec.generate_private_key(ec.SECP384R1()).private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()).decode()
    auth = {"kind": "smart", "client_id": "c", "kid": "k", "private_key": pem}
    response = post(client, privileged, {"name": "ehr", "url": URL, "mode": "stream",
                                         "auth": auth | {"token_url": "http://evil.example/token"}})
    assert response.status_code == 422
    errors = response.get_json()["errors"]
    assert any("must be https" in m for m in errors["auth.token_url"]) and "mode" in errors  # with the others
    assert post(client, privileged, {"name": "ehr", "url": URL,
                                     "auth": auth | {"token_url": "https://ehr.example/token"}}).status_code == 201


def test_repointing_is_checked_and_pauses_the_destination(client, db, privileged):
    post(client, privileged, {"name": "ehr", "url": URL})
    patch(client, privileged, "ehr", {"enabled": True})
    refused = patch(client, privileged, "ehr", {"url": "https://elsewhere.example/fhir", "enabled": True})
    assert refused.status_code == 422 and "url" in refused.get_json()["errors"]
    shown = client.get("/admin/destinations/ehr", headers=privileged).get_json()
    assert (shown["url"], shown["enabled"]) == (URL, True)
    moved = patch(client, privileged, "ehr", {"url": "https://fhir.trusted.example/r4"}).get_json()
    assert (moved["url"], moved["enabled"]) == ("https://fhir.trusted.example/r4", False)  # paused: not checked yet
    rekeyed = patch(client, privileged, "ehr", {"auth": {"kind": "bearer", "token": TOKEN}, "enabled": True})
    assert rekeyed.get_json()["enabled"] is True  # re-pointed and enabled in one privileged step


def test_enabling_checks_the_url_it_keeps(client, db, privileged):
    """A destination from before the policy (made directly, as an older version could) stays off."""
    from service.sync import destinations

    dest = destinations.create(db, {"name": "old", "url": "http://evil.example/fhir", "enabled": False}, NOW)
    db.commit()
    response = patch(client, privileged, dest.id, {"enabled": True})
    assert response.status_code == 422 and any("must be https" in m for m in response.get_json()["errors"]["url"])
    assert client.get("/admin/destinations/old", headers=privileged).get_json()["enabled"] is False


def test_the_url_policy_unit():
    strict = Settings(data_dir=None, database_url="", base_uri="", destination_hosts=("ehr.example", "[::1]:8443"))
    assert url_errors("https://EHR.example./fhir", strict) == []
    assert url_errors("https://[::1]:8443/fhir", strict) == []
    assert url_errors("not a url", strict) == []  # the schema names that problem
    assert url_errors("http://[::1]:8443/fhir", strict) == [
        "must be https (http only to a loopback address, with KETAMINE_FHIR_ALLOW_HTTP_LOOPBACK=true)"]
    assert url_errors("http://[::1]:8443/fhir", dataclasses.replace(strict, allow_http_loopback=True)) == []


def test_settings_read_the_policy_and_refuse_a_star():
    settings = Settings.from_env({"KETAMINE_FHIR_DESTINATION_HOSTS": " EHR.example , *.trusted.example:443,",
                                  "KETAMINE_FHIR_ALLOW_HTTP_LOOPBACK": "true"})
    assert settings.destination_hosts == ("ehr.example", "*.trusted.example:443") and settings.allow_http_loopback
    assert Settings.from_env({}).destination_hosts == () and not Settings.from_env({}).allow_http_loopback
    with pytest.raises(ValueError, match="'\\*' alone is not allowed"):
        Settings.from_env({"KETAMINE_FHIR_DESTINATION_HOSTS": "ehr.example,*"})
    with pytest.raises(ValueError, match="ALLOW_HTTP_LOOPBACK must be true or false"):
        Settings.from_env({"KETAMINE_FHIR_ALLOW_HTTP_LOOPBACK": "sometimes"})


# --- finding 2: a new destination is paused, and a paused one sends nothing ---

@pytest.fixture
def ehr():
    with responses.RequestsMock(assert_all_requests_are_fired=False) as rsps:
        yield Ehr(rsps)


@pytest.mark.postgres
def test_a_new_destination_sends_nothing_until_enabled_then_authenticates_with_its_stored_token(
        app, api, client, db, privileged, ehr, settings):
    assert api.import_ndjson("\n".join(CLINIC)).get_json()["rejected"] == 0
    settle(app)
    created = post(client, privileged, {"name": "ehr", "url": URL, "auth": {"kind": "bearer", "token": TOKEN},
                                        "enabled": True}).get_json()
    assert created["enabled"] is False and created["queued"] > 0  # the initial load waits, queued
    worker = PollingWorker(app.extensions["db_sessionmaker"], settings)
    worker.run_until_idle(timeout=1.0)
    assert len(ehr.rsps.calls) == 0  # paused: not one request
    assert patch(client, privileged, "ehr", {"enabled": True}).status_code == 200
    worker.run_until_idle(timeout=30)
    assert ehr.rsps.calls and {c.request.headers["Authorization"] for c in ehr.rsps.calls} == {f"Bearer {TOKEN}"}
    db.rollback()
    statuses = db.scalars(select(OutboxMessage.status).where(OutboxMessage.destination_id == created["id"]))
    assert set(statuses) == {"delivered"}


def test_a_destination_that_redirects_does_not_forward_our_data(app, api, client, privileged, settings):
    """The allow-list names hosts: a 307/308 from one must not resend the PHI body elsewhere."""
    assert api.import_ndjson("\n".join(CLINIC)).get_json()["rejected"] == 0
    settle(app)
    post(client, privileged, {"name": "ehr", "url": URL, "retry": {"max_attempts": 1}})
    patch(client, privileged, "ehr", {"enabled": True})
    with responses.RequestsMock(assert_all_requests_are_fired=False) as rsps:
        for method in (responses.POST, responses.PUT):
            rsps.add(method, re.compile(re.escape(URL) + "(/.*)?$"), status=307,
                     headers={"Location": "https://evil.example/fhir"})
        evil = rsps.add(responses.POST, re.compile("https://evil.example/.*"), status=200, json={})
        PollingWorker(app.extensions["db_sessionmaker"], settings).run_until_idle(timeout=3)
        assert len(rsps.calls) > 0 and evil.call_count == 0


# --- finding 2: the audit line ---

def test_every_destination_change_is_one_audit_line_without_values(client, db, privileged, ops, caplog):
    caplog.set_level(logging.INFO, logger="ketamine_fhir.audit")
    dest_id = post(client, privileged, {"name": "ehr", "url": URL, "auth": {"kind": "bearer", "token": TOKEN}}
                   ).get_json()["id"]
    patch(client, privileged, "ehr", {"enabled": True})
    patch(client, privileged, "ehr", {"auth": {"kind": "bearer", "token": TOKEN + "2"}, "enabled": True})
    patch(client, ops, "ehr", {"enabled": False})
    patch(client, ops, "ehr", {"read_timeout": 9})
    client.delete("/admin/destinations/ehr", headers=ops)
    events = [r.audit for r in caplog.records if getattr(r, "audit", {}).get("event") == "destination"]
    assert events == [json.loads(r.getMessage()) for r in caplog.records if hasattr(r, "audit")]
    assert [(e["action"], e["actor"], e["fields"]) for e in events] == [
        ("create", "integrations", ["auth", "enabled", "name", "url"]),
        ("enable", "integrations", ["enabled"]),
        ("update", "integrations", ["auth"]),
        ("pause", "ops", ["enabled"]),
        ("update", "ops", ["read_timeout"]),
        ("delete", "ops", []),
    ]
    assert {(e["destination_id"], e["destination_name"]) for e in events} == {(dest_id, "ehr")}
    logged = "\n".join(r.getMessage() for r in caplog.records)
    assert TOKEN not in logged and "ehr.example" not in logged


# --- finding 12: secrets at rest ---

@pytest.mark.postgres
def test_secrets_are_encrypted_in_the_database(client, db, privileged, app, settings):
    pem = ec.generate_private_key(ec.SECP384R1()).private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()).decode()
    bearer_id = post(client, privileged, {"name": "b", "url": URL, "auth": {"kind": "bearer", "token": TOKEN}}
                     ).get_json()["id"]
    smart_id = post(client, privileged, {"name": "s", "url": URL, "auth": {
        "kind": "smart", "client_id": "c", "kid": "k", "token_url": "https://ehr.example/token", "private_key": pem}}
                    ).get_json()["id"]
    for dest_id in (bearer_id, smart_id):
        stored = raw_auth(db, dest_id)
        assert TOKEN not in stored and "PRIVATE KEY" not in stored and pem.splitlines()[1] not in stored
        assert '"enc"' in stored
    key = (settings.data_dir / "encryption.key").read_bytes().strip()
    assert (settings.data_dir / "encryption.key").stat().st_mode & 0o777 == 0o600
    sealed = json.loads(raw_auth(db, smart_id))["private_key"]["enc"]
    assert Fernet(key).decrypt(sealed.encode()).decode() == pem
    with app.extensions["db_sessionmaker"]() as session:
        auth = client_for(session.get(Destination, smart_id)).session.auth
        assert auth.provider.client_id == "c"  # the key opened: the SMART signer was built from it


def test_a_plaintext_secret_from_before_still_authenticates(app, db, client, privileged, ehr, settings):
    dest_id = post(client, privileged, {"name": "ehr", "url": URL, "auth": {"kind": "bearer", "token": "x"}}
                   ).get_json()["id"]
    db.execute(update(Destination).where(Destination.id == dest_id).values(auth_config={"token": TOKEN}))
    db.commit()
    with app.extensions["db_sessionmaker"]() as session:
        client_for(session.get(Destination, dest_id)).request("GET", "metadata")
    assert ehr.rsps.calls[-1].request.headers["Authorization"] == f"Bearer {TOKEN}"


# --- finding 12: rotation, on the command line ---

def run(env: dict[str, str], *args: str):
    return CliRunner().invoke(main, list(args), env=env, catch_exceptions=False)


def cli_token(env: dict[str, str]) -> str:
    """The bearer token the destination's client sends, under ``env``'s keys."""
    settings = Settings.from_env(env)
    engine = make_engine(settings.database_url)
    with session_factory(engine, settings)() as db:
        token = client_for(db.scalar(select(Destination))).session.auth.token
    engine.dispose()
    return token


def test_secrets_rotate_re_encrypts_under_the_first_key(tmp_path):
    old, new = Fernet.generate_key().decode(), Fernet.generate_key().decode()
    env = {"KETAMINE_FHIR_DATA": str(tmp_path / "data"), "DATABASE_URL": "",
           "KETAMINE_FHIR_DESTINATION_HOSTS": "ehr.example", "KETAMINE_FHIR_ENCRYPTION_KEYS": old}
    added = run(env, "destination", "add", "--name", "ehr", "--url", URL, "--token", TOKEN)
    assert added.exit_code == 0 and "destination update ehr --enabled" in added.output
    settings = Settings.from_env(env)
    engine = make_engine(settings.database_url)

    def sealed() -> str:
        with engine.connect() as conn:
            return json.loads(conn.execute(text("SELECT auth_config FROM sync_destinations")).scalar_one())["token"]

    assert Fernet(old).decrypt(sealed()["enc"].encode()).decode() == TOKEN
    assert not (tmp_path / "data" / "encryption.key").exists()  # the variable's keys: no key file
    rotating = env | {"KETAMINE_FHIR_ENCRYPTION_KEYS": f"{new},{old}"}
    result = run(rotating, "secrets", "rotate")
    assert result.exit_code == 0 and result.output.strip() == (
        "re-encrypted 1 secret(s) of 1 destination(s) with the first key")
    assert Fernet(new).decrypt(sealed()["enc"].encode()).decode() == TOKEN
    with pytest.raises(InvalidToken):
        Fernet(old).decrypt(sealed()["enc"].encode())
    assert cli_token(env | {"KETAMINE_FHIR_ENCRYPTION_KEYS": new}) == TOKEN  # the old key can go
    stranger = run(env | {"KETAMINE_FHIR_ENCRYPTION_KEYS": Fernet.generate_key().decode()}, "secrets", "rotate")
    assert stranger.exit_code == 1 and "no configured key opens the secrets of destination ehr" in stranger.output
    assert Fernet(new).decrypt(sealed()["enc"].encode()).decode() == TOKEN  # nothing changed
    engine.dispose()


def test_secrets_rotate_encrypts_plaintext_rows(tmp_path):
    env = {"KETAMINE_FHIR_DATA": str(tmp_path / "data"), "DATABASE_URL": "",
           "KETAMINE_FHIR_DESTINATION_HOSTS": "ehr.example"}
    assert run(env, "destination", "add", "--name", "ehr", "--url", URL, "--token", "x").exit_code == 0
    engine = make_engine(Settings.from_env(env).database_url)
    with engine.begin() as conn:
        conn.execute(text("UPDATE sync_destinations SET auth_config = :c"), {"c": json.dumps({"token": TOKEN})})
    assert run(env, "secrets", "rotate").exit_code == 0
    with engine.connect() as conn:
        stored = conn.execute(text("SELECT auth_config FROM sync_destinations")).scalar_one()
    engine.dispose()
    assert TOKEN not in stored and '"enc"' in stored
    assert cli_token(env) == TOKEN  # opened with <data>/encryption.key


def test_a_bad_encryption_key_is_refused_at_start_without_echoing_it():
    with pytest.raises(ValueError, match="key 2 is not a Fernet key") as caught:
        Settings.from_env({"KETAMINE_FHIR_ENCRYPTION_KEYS": f"{Fernet.generate_key().decode()},not-a-key-123"})
    assert "not-a-key-123" not in str(caught.value)
