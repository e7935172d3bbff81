"""Static tokens (issue 10): an optional expiry, honoured on /api/v1, /admin and /fhir, and
``token rotate``: a new secret for the same name and scopes, the old one ended at once or after a
grace period. The clock is moved, never waited for: ``service.auth._now`` for the clinic and admin
APIs, ``app.config["SMART_CLOCK"]`` for /fhir.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from click.testing import CliRunner

from service import create_app
from service.auth import TokenError, create_token, revoke_token, rotate_token
from service.cli import main
from service.config import Settings
from service.models import ApiToken
from tests.conftest import TEST_ENV

pytestmark = pytest.mark.postgres  # the API tests run on both backends (the CLI ones on SQLite)

NOW = datetime.now(UTC)
PATHS = ("/api/v1/patients", "/admin/destinations", "/fhir/Patient")


@pytest.fixture
def clock(app, monkeypatch):
    """Set the time both token checks see."""

    def move_to(at: datetime) -> None:
        monkeypatch.setattr("service.auth._now", lambda: at)
        app.config["SMART_CLOCK"] = lambda: at

    move_to(NOW)
    return move_to


def statuses(client, secret: str) -> list[int]:
    return [client.get(path, headers={"Authorization": f"Bearer {secret}"}).status_code for path in PATHS]


def test_a_token_works_until_it_expires_then_is_401_on_every_api(client, db, clock):
    secret = create_token(db, "ops", ["*"], expires_at=NOW + timedelta(hours=1))
    assert statuses(client, secret) == [200, 200, 200]
    clock(NOW + timedelta(hours=1, seconds=1))
    assert statuses(client, secret) == [401, 401, 401]
    fhir = client.get("/fhir/Patient", headers={"Authorization": f"Bearer {secret}"})
    assert fhir.headers["WWW-Authenticate"].startswith("Bearer")
    assert fhir.get_json()["issue"][0]["code"] == "login" and "expired" in fhir.get_json()["issue"][0]["diagnostics"]
    clinic = client.get("/api/v1/patients", headers={"Authorization": f"Bearer {secret}"})
    assert "expired" in clinic.get_json()["message"]


def test_a_token_without_expiry_keeps_working(client, db, clock):
    secret = create_token(db, "ops", ["*"])
    clock(NOW + timedelta(days=3650))
    assert statuses(client, secret) == [200, 200, 200]


@pytest.mark.parametrize("expires_at,message", [
    (NOW - timedelta(seconds=1), "in the future"), (datetime(2099, 1, 1), "UTC offset"),
])
def test_an_expiry_in_the_past_or_without_offset_is_refused(db, expires_at, message):
    with pytest.raises(TokenError, match=message):
        create_token(db, "ops", ["*"], expires_at=expires_at)


def test_rotate_gives_a_new_secret_for_the_same_name_and_scopes_and_ends_the_old_one(client, db, clock):
    old = create_token(db, "ehr", ["clinic:read", "system/*.rs"])
    new = rotate_token(db, "ehr")
    assert new != old and new.startswith("kf_")
    stored = db.query(ApiToken).one()
    assert (stored.name, stored.scopes, stored.previous_token_hash) == ("ehr", "clinic:read system/*.rs", None)
    assert old not in (stored.token_hash, stored.previous_token_hash) and new not in stored.token_hash
    assert statuses(client, old)[::2] == [401, 401]
    assert statuses(client, new)[::2] == [200, 200]


def test_rotate_with_grace_keeps_the_old_secret_until_the_grace_ends(client, db, clock):
    old = create_token(db, "ehr", ["*"])
    new = rotate_token(db, "ehr", grace=timedelta(hours=1))
    assert statuses(client, old) == [200, 200, 200] == statuses(client, new)
    clock(NOW + timedelta(minutes=61))
    assert statuses(client, old) == [401, 401, 401]
    assert statuses(client, new) == [200, 200, 200]


def test_the_grace_never_outlasts_the_old_expiry_and_a_new_rotation_ends_it(client, db, clock):
    first = create_token(db, "ehr", ["*"], expires_at=NOW + timedelta(minutes=10))
    second = rotate_token(db, "ehr", grace=timedelta(hours=1))
    assert db.query(ApiToken).one().previous_expires_at == NOW + timedelta(minutes=10)
    third = rotate_token(db, "ehr", grace=timedelta(hours=1))
    assert statuses(client, first) == [401, 401, 401]  # its grace ended with the second rotation
    assert statuses(client, second) == [200, 200, 200] == statuses(client, third)


def test_rotate_keeps_the_lifetime_unless_told_otherwise(db, clock):
    create_token(db, "ehr", ["*"], expires_at=NOW + timedelta(days=90))
    clock(NOW + timedelta(days=80))
    rotate_token(db, "ehr")
    assert db.query(ApiToken).one().expires_at == NOW + timedelta(days=170)
    rotate_token(db, "ehr", expires_at=NOW + timedelta(days=81))
    assert db.query(ApiToken).one().expires_at == NOW + timedelta(days=81)


def test_an_expired_token_can_be_renewed_by_rotation(client, db, clock):
    create_token(db, "ehr", ["*"], expires_at=NOW + timedelta(days=1))
    clock(NOW + timedelta(days=2))
    new = rotate_token(db, "ehr", grace=timedelta(hours=1))
    assert db.query(ApiToken).one().previous_token_hash is None  # an expired secret gets no grace
    assert statuses(client, new) == [200, 200, 200]


def test_revoke_ends_both_secrets_and_a_revoked_or_unknown_token_cannot_be_rotated(client, db, clock):
    old = create_token(db, "ehr", ["*"])
    new = rotate_token(db, "ehr", grace=timedelta(hours=1))
    assert revoke_token(db, "ehr")
    assert statuses(client, old) == [401, 401, 401] == statuses(client, new)
    for name in ("ehr", "nobody"):
        with pytest.raises(TokenError, match="no active token"):
            rotate_token(db, name)


# --- the command line ---


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    return {"KETAMINE_FHIR_DATA": str(tmp_path / "data"), "DATABASE_URL": ""}


def run(env: dict[str, str], *args: str):
    return CliRunner().invoke(main, list(args), env=env, catch_exceptions=False)


def served(env: dict[str, str]):
    return create_app(Settings.from_env({**env, **TEST_ENV}), TESTING=True)


def test_cli_rotate_prints_a_working_secret_once_and_the_old_one_stops(env):
    old = run(env, "token", "create", "--name", "ehr", "--scope", "*", "--expires-in", "90d").stdout.strip()
    rotated = run(env, "token", "rotate", "--name", "ehr", "--grace", "1h")
    assert rotated.exit_code == 0, rotated.output
    new = rotated.stdout.strip()
    assert new.startswith("kf_") and len(rotated.stdout.splitlines()) == 1
    assert rotated.output.count(new) == 1 and old not in rotated.output
    assert "old secret works until" in rotated.stderr
    listed = run(env, "token", "list").output
    assert "ehr\t*\tactive\t" in listed and "\texpires 20" in listed and "\told secret until " in listed
    assert new not in listed and old not in listed
    app = served(env)
    with app.test_client() as client:
        assert statuses(client, old) == [200, 200, 200] == statuses(client, new)  # in the grace period
        again = run(env, "token", "rotate", "--name", "ehr").stdout.strip()  # no grace: old and new end now
        assert "no longer works" in run(env, "token", "rotate", "--name", "ehr").stderr  # and so does again
        for secret in (old, new, again):
            assert statuses(client, secret) == [401, 401, 401]
    app.extensions["db_engine"].dispose()


def test_cli_create_with_expiry_and_list_shows_it(env):
    created = run(env, "token", "create", "--name", "a", "--scope", "*", "--expires-at", "2099-01-31T00:00:00Z")
    assert created.exit_code == 0
    assert run(env, "token", "create", "--name", "b", "--scope", "*").exit_code == 0
    listed = run(env, "token", "list").output.splitlines()
    assert listed[0].endswith("\texpires 2099-01-31T00:00:00+00:00") and listed[1].endswith("\tno expiry")


@pytest.mark.parametrize("args,message", [
    (["--expires-in", "90x"], "not a duration"), (["--expires-in", "0"], "longer than 0"),
    (["--expires-at", "2099-01-31T00:00:00"], "UTC offset"), (["--expires-at", "2001-01-01T00:00:00Z"], "future"),
    (["--expires-in", "1d", "--expires-at", "2099-01-31T00:00:00Z"], "not both"),
])
def test_cli_refuses_bad_expiries(env, args, message):
    result = run(env, "token", "create", "--name", "a", "--scope", "*", *args)
    assert result.exit_code == 2 and message in result.output


def test_cli_rotate_of_an_unknown_token_fails(env):
    run(env, "init-db")
    result = run(env, "token", "rotate", "--name", "ghost")
    assert result.exit_code == 1 and "no active token named 'ghost'" in result.output
