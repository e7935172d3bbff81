"""SMART Backend Services authorization server: discovery, the token endpoint, client registration.

Specification: SMART App Launch v2 backend-services.html and client-confidential-asymmetric.html;
errors per RFC 6749 §5.2 (every failure to authenticate the client is ``invalid_client``, 401).
"""

from __future__ import annotations

import json

import jwt
import pytest
from click.testing import CliRunner
from sqlalchemy import func, select

from service.cli import main
from service.fhir.smart import ClientError, register_client, revoke_client, validate_jwks
from service.models import SmartAccessToken, SmartAssertionJti
from tests.fhir.smart_support import (
    TOKEN_URL,
    Clock,
    assertion,
    ec_key,
    jwks,
    rsa_key,
    token_form,
    with_smart,
)

ALLOWED = ["system/*.rs", "system/Patient.cruds"]


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def smart(app, clock):
    return with_smart(app, clock).test_client()


@pytest.fixture
def client_id(db) -> str:
    """A client with an RSA and an EC key, allowed to read everything and to write Patients."""
    return register_client(db, "ehr", jwks(rsa_key(), ec_key()), ALLOWED).client_id


def issued(db) -> int:
    db.rollback()  # a fresh snapshot: the app wrote through its own session
    return db.scalar(select(func.count()).select_from(SmartAccessToken))


def post_token(smart, form):
    return smart.post("/auth/token", data=form)


# --- discovery ---


def test_smart_configuration_is_open_and_names_the_token_endpoint(smart):
    response = smart.get("/.well-known/smart-configuration")
    assert response.status_code == 200 and response.mimetype == "application/json"
    config = response.get_json()
    assert config["token_endpoint"] == TOKEN_URL
    assert config["grant_types_supported"] == ["client_credentials"]
    assert config["token_endpoint_auth_methods_supported"] == ["private_key_jwt"]
    assert config["token_endpoint_auth_signing_alg_values_supported"] == ["RS384", "ES384"]
    assert {"client-confidential-asymmetric", "permission-v2"} <= set(config["capabilities"])
    assert "system/*.rs" in config["scopes_supported"]


def test_the_token_endpoint_url_is_the_configured_public_url_whatever_host_is_asked(smart):
    # security review finding 7: it used to follow the Host header, so evil.example got a token URL of its own
    config = smart.get("/.well-known/smart-configuration", base_url="https://evil.example:8443").get_json()
    assert config["token_endpoint"] == TOKEN_URL


# --- the happy path ---


@pytest.mark.postgres
@pytest.mark.parametrize("key", [rsa_key, ec_key], ids=["RS384", "ES384"])
def test_a_signed_assertion_buys_a_short_lived_bearer_token(smart, db, client_id, clock, key):
    response = post_token(smart, token_form(assertion(key(), client_id, clock.now), "system/Observation.rs"))
    assert response.status_code == 200, response.get_json()
    assert response.headers["Cache-Control"] == "no-store"
    body = response.get_json()
    assert body["token_type"] == "bearer" and 0 < body["expires_in"] <= 300
    assert body["scope"] == "system/Observation.rs"
    assert body["access_token"] and issued(db) == 1
    stored = db.scalar(select(SmartAccessToken))
    assert stored.token_hash != body["access_token"] and body["access_token"] not in stored.token_hash
    assert (stored.expires_at - clock.now).total_seconds() == body["expires_in"]


@pytest.mark.postgres
def test_granted_scopes_are_the_requested_ones_cut_to_the_clients(smart, db, client_id, clock):
    form = token_form(assertion(rsa_key(), client_id, clock.now),
                      "system/Observation.cruds system/Patient.cruds system/Encounter.rs system/Practitioner.d")
    body = post_token(smart, form).get_json()
    assert body["scope"] == "system/Observation.rs system/Patient.cruds system/Encounter.rs"


@pytest.mark.postgres
def test_an_assertion_slightly_past_exp_is_accepted_within_the_clock_skew(smart, client_id, clock):
    form = token_form(assertion(rsa_key(), client_id, clock.now, lifetime=-30))
    assert post_token(smart, form).status_code == 200


# --- rejections ---


def _rejections():
    """(name, form builder(client_id, at), expected error)."""
    rsa, ec = rsa_key(), ec_key()
    other = rsa_key("rsa-other")
    return [
        ("no grant_type", lambda c, t: {**token_form(assertion(rsa, c, t)), "grant_type": ""}, "invalid_request"),
        ("authorization_code", lambda c, t: token_form(assertion(rsa, c, t), grant_type="authorization_code"),
         "unsupported_grant_type"),
        ("no scope", lambda c, t: token_form(assertion(rsa, c, t), scope=""), "invalid_request"),
        ("client secret instead", lambda c, t: {**token_form("x"), "client_assertion_type": "", "client_secret": "s"},
         "invalid_client"),
        ("saml assertion type", lambda c, t: token_form(assertion(rsa, c, t), client_assertion_type="urn:saml"),
         "invalid_client"),
        ("no assertion", lambda c, t: token_form(""), "invalid_client"),
        ("not a JWT", lambda c, t: token_form("not.a.jwt"), "invalid_client"),
        ("garbage", lambda c, t: token_form("%%%"), "invalid_client"),
        ("alg RS256", lambda c, t: token_form(assertion(rsa, c, t, alg="RS256")), "invalid_client"),
        ("alg HS384", lambda c, t: token_form(assertion(rsa, c, t, alg="HS384", signing_key="k" * 48)),
         "invalid_client"),
        ("alg none", lambda c, t: token_form(assertion(rsa, c, t, alg="none", signing_key="")), "invalid_client"),
        ("no kid", lambda c, t: token_form(assertion(rsa, c, t, headers={"kid": None})), "invalid_client"),
        ("unknown kid", lambda c, t: token_form(assertion(other, c, t)), "invalid_client"),
        ("kid of the EC key, alg RS384",
         lambda c, t: token_form(assertion(rsa, c, t, headers={"kid": ec.kid})), "invalid_client"),
        ("signed by another key", lambda c, t: token_form(assertion(rsa, c, t, signing_key=other.private)),
         "invalid_client"),
        ("iss is not sub", lambda c, t: token_form(assertion(rsa, c, t, sub="someone-else")), "invalid_client"),
        ("unknown client", lambda c, t: token_form(assertion(rsa, "no-such-client", t)), "invalid_client"),
        ("no iss", lambda c, t: token_form(assertion(rsa, c, t, drop=("iss",))), "invalid_client"),
        ("wrong aud", lambda c, t: token_form(assertion(rsa, c, t, aud="https://elsewhere/token")), "invalid_client"),
        ("no aud", lambda c, t: token_form(assertion(rsa, c, t, drop=("aud",))), "invalid_client"),
        ("no exp", lambda c, t: token_form(assertion(rsa, c, t, drop=("exp",))), "invalid_client"),
        ("expired", lambda c, t: token_form(assertion(rsa, c, t, lifetime=-61)), "invalid_client"),
        ("exp beyond 5 minutes", lambda c, t: token_form(assertion(rsa, c, t, lifetime=301)), "invalid_client"),
        ("exp not a number", lambda c, t: token_form(assertion(rsa, c, t, exp="soon")), "invalid_client"),
        ("exp NaN", lambda c, t: token_form(assertion(rsa, c, t, exp=float("nan"))), "invalid_client"),
        ("exp huge", lambda c, t: token_form(assertion(rsa, c, t, exp=10**30)), "invalid_client"),
        ("nbf in the future", lambda c, t: token_form(assertion(rsa, c, t, nbf=int(t.timestamp()) + 120)),
         "invalid_client"),
        ("no jti", lambda c, t: token_form(assertion(rsa, c, t, drop=("jti",))), "invalid_client"),
        ("jti not a string", lambda c, t: token_form(assertion(rsa, c, t, jti=7)), "invalid_client"),
        ("scope not allowed", lambda c, t: token_form(assertion(rsa, c, t), "system/Encounter.c"), "invalid_scope"),
        ("scope not SMART", lambda c, t: token_form(assertion(rsa, c, t), "openid launch/patient"), "invalid_scope"),
        ("operator scope", lambda c, t: token_form(assertion(rsa, c, t), "*"), "invalid_scope"),
    ]


@pytest.mark.postgres
@pytest.mark.parametrize(("case", "build", "error"), _rejections(), ids=[r[0] for r in _rejections()])
def test_each_bad_request_gets_its_oauth_error_and_no_token(smart, db, client_id, clock, case, build, error):
    response = post_token(smart, build(client_id, clock.now))
    assert response.status_code == (401 if error == "invalid_client" else 400), response.get_json()
    body = response.get_json()
    assert body["error"] == error and body["error_description"]
    assert response.headers["Cache-Control"] == "no-store"
    assert issued(db) == 0


@pytest.mark.postgres
def test_a_replayed_assertion_is_refused(smart, db, client_id, clock):
    form = token_form(assertion(ec_key(), client_id, clock.now))
    assert post_token(smart, form).status_code == 200
    clock.advance(10)
    replay = post_token(smart, form)
    assert replay.status_code == 401 and replay.get_json()["error"] == "invalid_client"
    assert "jti" in replay.get_json()["error_description"] and issued(db) == 1


@pytest.mark.postgres
def test_the_same_jti_is_fine_for_another_client(smart, db, client_id, clock):
    other = register_client(db, "other-ehr", jwks(rsa_key()), ["system/*.rs"]).client_id
    for cid in (client_id, other):
        assert post_token(smart, token_form(assertion(rsa_key(), cid, clock.now, jti="same"))).status_code == 200


@pytest.mark.postgres
def test_used_jtis_are_forgotten_once_their_assertion_cannot_be_accepted_any_more(smart, db, client_id, clock):
    post_token(smart, token_form(assertion(rsa_key(), client_id, clock.now, lifetime=60)))
    clock.advance(121)  # exp + the 60 s skew has passed
    post_token(smart, token_form(assertion(rsa_key(), client_id, clock.now)))
    db.rollback()
    assert db.scalar(select(func.count()).select_from(SmartAssertionJti)) == 1


@pytest.mark.postgres
def test_a_revoked_client_gets_no_token(smart, db, client_id, clock):
    assert revoke_client(db, "ehr")
    response = post_token(smart, token_form(assertion(rsa_key(), client_id, clock.now)))
    assert response.status_code == 401 and response.get_json()["error"] == "invalid_client"


def test_a_json_body_is_an_invalid_request(smart, client_id, clock):
    response = smart.post("/auth/token", json=token_form(assertion(rsa_key(), client_id, clock.now)))
    assert response.status_code == 400 and response.get_json()["error"] == "invalid_request"


def test_a_repeated_parameter_is_an_invalid_request(smart, client_id, clock):
    form = token_form(assertion(rsa_key(), client_id, clock.now))
    body = "&".join(f"{k}={v}" for k, v in form.items()) + "&scope=system/Patient.rs"
    response = smart.post("/auth/token", data=body, content_type="application/x-www-form-urlencoded")
    assert response.status_code == 400 and response.get_json()["error"] == "invalid_request"


# --- registration ---


@pytest.mark.parametrize(("bad", "message"), [
    ({}, "keys"),
    ({"keys": []}, "keys"),
    ({"keys": ["x"]}, "not a JSON object"),
    ({"keys": [{**rsa_key().jwk, "d": "AQAB"}]}, "private key material"),
    ({"keys": [{"kty": "oct", "k": "c2VjcmV0", "kid": "s"}]}, "private key material"),
    ({"keys": [{**rsa_key().jwk, "kid": ""}]}, "no kid"),
    ({"keys": [rsa_key().jwk, {**ec_key().jwk, "kid": rsa_key().kid}]}, "used twice"),
    ({"keys": [{**rsa_key().jwk, "alg": "RS256"}]}, "alg must be RS384"),
    ({"keys": [{**ec_key().jwk, "alg": "RS384"}]}, "alg must be ES384"),
    ({"keys": [{**rsa_key().jwk, "use": "enc"}]}, "use must be sig"),
    ({"keys": [{**rsa_key().jwk, "n": "!!"}]}, "not a valid RSA public key"),
    ({"keys": [{**rsa_key().jwk, "kty": "OKP"}]}, "kty"),
])
def test_a_jwks_must_hold_valid_public_signing_keys_only(bad, message):
    with pytest.raises(ClientError, match=message):
        validate_jwks(bad)


def test_weak_keys_are_refused():
    from cryptography.hazmat.primitives.asymmetric import ec

    with pytest.raises(ClientError, match="2048"):
        validate_jwks(jwks(rsa_key("small", bits=1024)))
    with pytest.raises(ClientError, match="P-384"):
        validate_jwks(jwks(ec_key("p256", curve=ec.SECP256R1)))


@pytest.mark.postgres
def test_register_client_keeps_the_public_jwks_and_gives_a_random_unique_id(db):
    a = register_client(db, "a", jwks(rsa_key()), ["system/*.rs"])
    b = register_client(db, "b", jwks(ec_key()), ["system/Observation.rs", "system/Patient.cruds"])
    assert a.client_id != b.client_id and len(a.client_id) >= 32
    assert a.jwks == jwks(rsa_key()) and b.scopes == "system/Observation.rs system/Patient.cruds"
    with pytest.raises(ClientError, match="exists already"):
        register_client(db, "a", jwks(rsa_key()), ["system/*.rs"])
    for scopes in ([], ["*"], ["clinic:read"]):
        with pytest.raises(ClientError):
            register_client(db, "c", jwks(rsa_key()), scopes)


@pytest.fixture
def cli_env(tmp_path):
    return {"KETAMINE_FHIR_DATA": str(tmp_path / "data"), "DATABASE_URL": ""}


def cli(env, *args):
    return CliRunner().invoke(main, list(args), env=env, catch_exceptions=False)


def test_client_register_prints_the_client_id_and_client_list_shows_it(cli_env, tmp_path):
    keys = tmp_path / "jwks.json"
    keys.write_text(json.dumps(jwks(rsa_key(), ec_key())))
    result = cli(cli_env, "client", "register", "--name", "epic", "--jwks", str(keys),
                 "--scope", "system/*.rs", "--scope", "system/Patient.cruds")
    assert result.exit_code == 0, result.output
    client_id = result.output.strip()
    assert len(client_id.splitlines()) == 1 and len(client_id) >= 32
    listed = cli(cli_env, "client", "list").output
    assert f"epic\t{client_id}\tsystem/*.rs system/Patient.cruds\tactive\trsa-1,ec-1" in listed
    assert cli(cli_env, "client", "revoke", "--name", "epic").exit_code == 0
    assert "\trevoked\t" in cli(cli_env, "client", "list").output


def test_client_register_refuses_private_keys_bad_scopes_and_bad_json(cli_env, tmp_path):
    private = tmp_path / "private.json"
    private.write_text(json.dumps({"keys": [{**rsa_key().jwk, "d": "AQAB"}]}))
    public = tmp_path / "public.json"
    public.write_text(json.dumps(jwks(rsa_key())))
    garbage = tmp_path / "garbage.json"
    garbage.write_text("{")
    assert cli(cli_env, "client", "register", "--name", "a", "--jwks", str(private), "--scope", "system/*.rs"
               ).exit_code == 2
    assert cli(cli_env, "client", "register", "--name", "a", "--jwks", str(public), "--scope", "*").exit_code == 2
    assert cli(cli_env, "client", "register", "--name", "a", "--jwks", str(garbage), "--scope", "system/*.rs"
               ).exit_code == 2


def test_a_client_registered_with_the_cli_can_get_a_token(cli_env, tmp_path, monkeypatch):
    from service import create_app
    from service.config import Settings

    keys = tmp_path / "jwks.json"
    keys.write_text(json.dumps(jwks(ec_key())))
    client_id = cli(cli_env, "client", "register", "--name", "ehr", "--jwks", str(keys),
                    "--scope", "system/Observation.rs").output.strip()
    clock = Clock()
    app = with_smart(create_app(Settings.from_env(cli_env | {"KETAMINE_FHIR_PUBLIC_URL": "http://localhost"}),
                                TESTING=True), clock)
    try:
        response = app.test_client().post("/auth/token", data=token_form(
            assertion(ec_key(), client_id, clock.now), "system/Observation.rs"))
    finally:
        app.extensions["db_engine"].dispose()
    assert response.status_code == 200 and response.get_json()["scope"] == "system/Observation.rs"


def test_pyjwt_is_what_a_client_would_use():
    """The assertions of these tests are standard JWTs: a client library verifies them the same way."""
    token = assertion(rsa_key(), "c", Clock().now)
    assert jwt.get_unverified_header(token) == {"alg": "RS384", "kid": "rsa-1", "typ": "JWT"}


@pytest.mark.postgres
def test_concurrent_replays_of_one_assertion_get_exactly_one_token(smart, app, db, client_id, clock):
    from concurrent.futures import ThreadPoolExecutor

    form = token_form(assertion(rsa_key(), client_id, clock.now))
    with ThreadPoolExecutor(8) as pool:
        statuses = sorted(pool.map(lambda _: app.test_client().post("/auth/token", data=form).status_code, range(8)))
    assert statuses == [200] + [401] * 7 and issued(db) == 1
