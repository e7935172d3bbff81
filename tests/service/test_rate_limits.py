"""Security review finding 11: rate limits per client, per IP, and stricter at the token endpoint.

The review sent 1,200 requests at 150/s and 200 bad assertions in 1.8 s, none refused. Here an app
with small limits (5 a minute) shows that the next request gets 429 with Retry-After in its area's
error shape, that other clients and addresses go on, that failed assertions count, that the probes
are never limited, and that the Redis storage (the real server on 127.0.0.1:6379) shares one limit
between two app instances, as between gunicorn workers or machines.
"""

from __future__ import annotations

import dataclasses
import logging
import uuid
from collections.abc import Iterator

import pytest
import redis
from flask import Flask

from service import create_app
from service.auth import create_token
from service.config import Settings
from service.fhir.smart import register_client
from tests.fhir.smart_support import Clock, assertion, jwks, rsa_key, token_form, with_smart

REDIS_URL = "redis://127.0.0.1:6379/0"
A, B, C = "198.51.100.1", "198.51.100.2", "198.51.100.3"
LIMITS = {"rate_limits": True, "rate_limit_ip": "5/minute", "rate_limit_client": "5/minute",
          "rate_limit_token": "3/minute", "rate_limit_token_client": "2/minute"}


def limited_app(settings: Settings, **overrides) -> Flask:
    app = create_app(dataclasses.replace(settings, **{**LIMITS, **overrides}), TESTING=True,
                     RATELIMIT_KEY_PREFIX=f"kf-test-{uuid.uuid4().hex}")
    return with_smart(app, Clock())


@pytest.fixture
def app(settings: Settings) -> Iterator[Flask]:  # overrides conftest's: this one has limits on
    app = limited_app(settings)
    yield app
    app.extensions["db_engine"].dispose()


def get(client, path: str, ip: str = A, token: str | None = None):
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    return client.get(path, headers=headers, environ_base={"REMOTE_ADDR": ip})


def assert_throttled(response, retry_within: int = 60) -> None:
    assert response.status_code == 429, response.get_data(as_text=True)
    assert 1 <= int(response.headers["Retry-After"]) <= retry_within


# --- per IP ---


def test_the_request_after_the_limit_is_429_with_retry_after_in_the_clinic_api_shape(client):
    for _ in range(5):
        assert get(client, "/api/v1/patients").status_code == 401
    response = get(client, "/api/v1/patients")
    assert_throttled(response)
    body = response.get_json()
    assert set(body) == {"message", "errors"} and "5 per 1 minute" in body["message"]
    assert "X-RateLimit-Remaining" not in response.headers


def test_another_address_is_not_affected(client):
    for _ in range(6):
        get(client, "/api/v1/patients", ip=A)
    assert get(client, "/api/v1/patients", ip=A).status_code == 429
    assert get(client, "/api/v1/patients", ip=B).status_code == 401


def test_bad_tokens_and_unknown_paths_count_per_ip(client):
    for path in ("/api/v1/patients", "/no/such/path", "/fhir/Patient", "/admin/destinations", "/nope"):
        assert get(client, path, token="kf_guessed").status_code in (401, 404)
    assert_throttled(get(client, "/api/v1/patients", token="kf_another-guess"))


def test_fhir_answers_429_as_an_operation_outcome_throttled(client):
    for _ in range(5):
        get(client, "/fhir/Patient")
    response = get(client, "/fhir/Patient")
    assert_throttled(response)
    assert response.mimetype == "application/fhir+json"
    issue = response.get_json()["issue"][0]
    assert issue["code"] == "throttled" and issue["severity"] == "error"


def test_open_fhir_and_smart_metadata_are_limited_per_ip_even_with_a_token(client, db):
    token = create_token(db, "ehr", ["system/*.rs"])
    paths = ["/fhir/metadata", "/.well-known/smart-configuration", "/api/v1/openapi.json"] * 2
    assert [get(client, p, token=token).status_code for p in paths[:5]] == [200] * 5
    assert_throttled(get(client, paths[5], token=token))
    assert get(client, "/fhir/Patient", token=token).status_code == 200  # the client's own allowance


def test_health_probes_are_never_limited(client):
    for _ in range(6):
        get(client, "/api/v1/patients")
    for _ in range(20):
        assert get(client, "/healthz").status_code == 200
        assert get(client, "/readyz").status_code == 200


# --- per client ---


def test_a_token_is_limited_by_its_name_from_any_address(client, db):
    token = create_token(db, "clinic", ["clinic:read"])
    assert [get(client, "/api/v1/patients", ip=ip, token=token).status_code for ip in (A, B, C, A, B)] == [200] * 5
    assert_throttled(get(client, "/api/v1/patients", ip=C, token=token))
    other = create_token(db, "other", ["clinic:read"])
    assert get(client, "/api/v1/patients", ip=C, token=other).status_code == 200
    # authenticated requests did not use up the address's allowance for everything else
    assert get(client, "/api/v1/patients", ip=A).status_code == 401


def test_a_smart_client_is_limited_by_client_id_across_its_access_tokens(settings, db):
    app = limited_app(settings, rate_limit_token_client="5/minute")
    client, clock = app.test_client(), app.config["SMART_CLOCK"]
    client_id = register_client(db, "ehr", jwks(rsa_key()), ["system/*.rs"]).client_id

    def access_token() -> str:
        form = token_form(assertion(rsa_key(), client_id, clock.now))
        response = client.post("/auth/token", data=form, environ_base={"REMOTE_ADDR": C})
        assert response.status_code == 200, response.get_json()
        return response.get_json()["access_token"]

    first, second = access_token(), access_token()
    statuses = [get(client, "/fhir/Patient", token=t).status_code for t in (first, second, first, second, first)]
    assert statuses == [200] * 5
    response = get(client, "/fhir/Patient", ip=B, token=second)
    assert_throttled(response)
    assert response.get_json()["issue"][0]["code"] == "throttled"
    app.extensions["db_engine"].dispose()


# --- the token endpoint ---


def test_bad_assertions_are_limited_per_ip_in_the_oauth_error_shape(client):
    for n in range(3):
        response = client.post("/auth/token", data=token_form(f"not-a-jwt-{n}"), environ_base={"REMOTE_ADDR": A})
        assert response.status_code == 401 and response.get_json()["error"] == "invalid_client"
    response = client.post("/auth/token", data=token_form("not-a-jwt"), environ_base={"REMOTE_ADDR": A})
    assert_throttled(response)
    assert response.get_json()["error"] == "slow_down" and response.headers["Cache-Control"] == "no-store"
    assert client.post("/auth/token", data=token_form("x"), environ_base={"REMOTE_ADDR": B}).status_code == 401


def test_assertions_naming_one_client_id_are_limited_from_any_address(client, db):
    client_id = register_client(db, "ehr", jwks(rsa_key()), ["system/*.rs"]).client_id
    forged = assertion(rsa_key("rsa-forger"), client_id, Clock().now)  # signed with a key not registered
    for ip in (A, B):
        assert client.post("/auth/token", data=token_form(forged), environ_base={"REMOTE_ADDR": ip}).status_code == 401
    assert_throttled(client.post("/auth/token", data=token_form(forged), environ_base={"REMOTE_ADDR": C}))
    other = assertion(rsa_key("rsa-forger"), "another-client", Clock().now)
    assert client.post("/auth/token", data=token_form(other), environ_base={"REMOTE_ADDR": C}).status_code == 401


# --- addresses, storage, configuration ---


def test_x_forwarded_for_is_ignored_unless_proxies_are_trusted(settings):
    spoofing = limited_app(settings).test_client()
    for n in range(5):
        spoofing.get("/api/v1/patients", headers={"X-Forwarded-For": f"203.0.113.{n}"})
    assert spoofing.get("/api/v1/patients", headers={"X-Forwarded-For": "203.0.113.99"}).status_code == 429

    proxied = limited_app(settings, trusted_proxies=1).test_client()
    for _ in range(5):
        proxied.get("/api/v1/patients", headers={"X-Forwarded-For": "203.0.113.1"})
    assert proxied.get("/api/v1/patients", headers={"X-Forwarded-For": "203.0.113.1"}).status_code == 429
    assert proxied.get("/api/v1/patients", headers={"X-Forwarded-For": "203.0.113.2"}).status_code == 401


def test_memory_counters_are_per_process(settings):
    first, second = limited_app(settings).test_client(), limited_app(settings).test_client()
    for _ in range(5):
        get(first, "/api/v1/patients")
    assert get(first, "/api/v1/patients").status_code == 429
    assert get(second, "/api/v1/patients").status_code == 401


def test_redis_storage_shares_one_limit_between_two_app_instances(settings):
    prefix = f"kf-test-{uuid.uuid4().hex}"
    shared = dataclasses.replace(settings, **LIMITS, rate_limit_storage=REDIS_URL)
    first = create_app(shared, TESTING=True, RATELIMIT_KEY_PREFIX=prefix).test_client()
    second = create_app(shared, TESTING=True, RATELIMIT_KEY_PREFIX=prefix).test_client()
    try:
        assert [get(c, "/api/v1/patients").status_code for c in (first, second, first, second, first)] == [401] * 5
        assert_throttled(get(second, "/api/v1/patients"))
        assert get(second, "/api/v1/patients", ip=B).status_code == 401
        server = redis.Redis.from_url(REDIS_URL)
        assert any(prefix.encode() in key for key in server.scan_iter(match="*kf-test-*"))
    finally:
        server = redis.Redis.from_url(REDIS_URL)
        for key in server.scan_iter(match=f"*{prefix}*"):
            server.delete(key)


def test_an_unreachable_redis_falls_back_to_per_process_limits(settings):
    client = limited_app(settings, rate_limit_storage="redis://127.0.0.1:1/0").test_client()
    assert [get(client, "/api/v1/patients").status_code for _ in range(5)] == [401] * 5
    assert get(client, "/api/v1/patients").status_code == 429


def test_limits_off_limits_nothing(settings):
    client = create_app(dataclasses.replace(settings, rate_limits=False), TESTING=True).test_client()
    assert {get(client, "/api/v1/patients").status_code for _ in range(30)} == {401}


def test_breaches_log_no_token_name_address_or_path(client, db, caplog):
    token = create_token(db, "named-holder", ["clinic:read"])
    with caplog.at_level(logging.DEBUG):
        for _ in range(7):
            get(client, "/api/v1/patients/pt-0001", token=token)
    text = "\n".join(record.getMessage() for record in caplog.records)
    assert "429" in text
    assert not [r for r in caplog.records if r.name == "flask-limiter"]
    for secret in (token, "named-holder", "pt-0001", A):
        assert secret not in text


def test_the_defaults_and_their_variables():
    defaults = Settings.from_env({})
    assert defaults.rate_limits and defaults.rate_limit_storage == "memory://" and defaults.trusted_proxies == 0
    assert (defaults.rate_limit_client, defaults.rate_limit_ip) == ("1200/minute;50/second", "600/minute;20/second")
    assert (defaults.rate_limit_token, defaults.rate_limit_token_client) == ("30/minute", "10/minute")
    env = {"KETAMINE_FHIR_RATE_LIMITS": "off", "KETAMINE_FHIR_RATE_LIMIT_CLIENT": "100/minute",
           "KETAMINE_FHIR_RATE_LIMIT_IP": "10/second", "KETAMINE_FHIR_RATE_LIMIT_TOKEN": "5/minute",
           "KETAMINE_FHIR_RATE_LIMIT_TOKEN_CLIENT": "1/minute", "KETAMINE_FHIR_RATE_LIMIT_STORAGE": REDIS_URL,
           "KETAMINE_FHIR_TRUSTED_PROXIES": "2"}
    configured = Settings.from_env(env)
    assert not configured.rate_limits and configured.rate_limit_storage == REDIS_URL
    assert (configured.rate_limit_client, configured.rate_limit_ip, configured.rate_limit_token,
            configured.rate_limit_token_client, configured.trusted_proxies) == (
        "100/minute", "10/second", "5/minute", "1/minute", 2)


@pytest.mark.parametrize("name,value", [
    ("KETAMINE_FHIR_RATE_LIMITS", "sometimes"), ("KETAMINE_FHIR_RATE_LIMIT_CLIENT", "lots"),
    ("KETAMINE_FHIR_RATE_LIMIT_TOKEN", "30 a minute"), ("KETAMINE_FHIR_TRUSTED_PROXIES", "-1"),
])
def test_bad_settings_are_refused_at_start(name, value):
    with pytest.raises(ValueError, match=name):
        Settings.from_env({name: value})
