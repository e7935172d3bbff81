"""SMART Backend Services client (service.sync.smart_client) and destination auth (service.sync.auth).

HTTP goes through the ``responses`` mock; the interoperability tests hand it on to this
project's own SMART authorization server and /fhir endpoint (a Flask test client).
"""

from __future__ import annotations

import re
import threading
import time
from datetime import UTC, datetime
from urllib.parse import parse_qs, urlsplit

import jwt
import pytest
import requests
import responses
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa

from service.fhir.smart import register_client
from service.sync.auth import BearerAuth, SmartAuth, auth_for
from service.sync.smart_client import JWT_BEARER, SmartAuthError, SmartTokenProvider

TOKEN_URL = "https://ehr.example/oauth/token"
FHIR_URL = "https://ehr.example/fhir/Patient"
T0 = datetime(2026, 11, 23, 9, 0, tzinfo=UTC).timestamp()


def pem(key) -> str:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption()).decode()


@pytest.fixture(scope="module")
def rsa_private():
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


@pytest.fixture(scope="module")
def ec_private():
    return ec.generate_private_key(ec.SECP384R1())


@pytest.fixture(params=["RS384", "ES384"])
def keyed(request, rsa_private, ec_private):
    """(alg, private key) of each kind SMART allows."""
    return request.param, rsa_private if request.param == "RS384" else ec_private


class FakeClock:
    def __init__(self, now: float = T0):
        self.now = now

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def http():
    with responses.RequestsMock(assert_all_requests_are_fired=False) as mock:
        yield mock


def make_provider(key, clock=time.time, token_url: str = TOKEN_URL, **kw) -> SmartTokenProvider:
    settings = {"client_id": "clinic-1", "token_url": token_url, "private_key_pem": pem(key), "kid": "k1",
                "scopes": "system/Patient.cruds system/Observation.cruds", "clock": clock, **kw}
    return SmartTokenProvider(requests.Session(), **settings)


@pytest.fixture
def provider(rsa_private, clock) -> SmartTokenProvider:
    return make_provider(rsa_private, clock)


def token_answer(token: str = "tok-1", expires_in: int | None = 300, token_type: str = "bearer") -> dict:
    body = {"access_token": token, "token_type": token_type, "scope": "system/Patient.cruds"}
    return body if expires_in is None else {**body, "expires_in": expires_in}


def token_posts(http) -> int:
    return sum(call.request.url == TOKEN_URL for call in http.calls)


def sent_form(call) -> dict[str, str]:
    return {name: values[0] for name, values in parse_qs(call.request.body).items()}


# --- the client assertion ---


def test_the_assertion_is_signed_for_the_key_type_and_carries_the_smart_claims(keyed, clock):
    alg, key = keyed
    assertion = make_provider(key, clock).assertion()
    header = jwt.get_unverified_header(assertion)
    assert header == {"alg": alg, "kid": "k1", "typ": "JWT"}
    claims = jwt.decode(assertion, key.public_key(), algorithms=[alg], audience=TOKEN_URL,
                        options={"verify_exp": False, "verify_iat": False})
    assert claims["iss"] == claims["sub"] == "clinic-1"
    assert claims["aud"] == TOKEN_URL
    assert claims["iat"] == int(T0) and 0 < claims["exp"] - claims["iat"] <= 300


def test_every_assertion_has_its_own_jti(provider):
    first, second = (jwt.decode(provider.assertion(), options={"verify_signature": False}) for _ in range(2))
    assert first["jti"] and first["jti"] != second["jti"]


def test_the_algorithm_follows_the_key(keyed):
    alg, key = keyed
    assert make_provider(key).algorithm == alg


@pytest.mark.parametrize("other", [lambda: ec.generate_private_key(ec.SECP256R1()), ed25519.Ed25519PrivateKey.generate],
                         ids=["EC P-256", "Ed25519"])
def test_keys_smart_does_not_allow_are_refused(other):
    with pytest.raises(ValueError, match=r"RSA key \(RS384\) or an EC P-384 key"):
        make_provider(other())


def test_a_private_key_that_is_not_pem_is_refused_without_echoing_it():
    with pytest.raises(ValueError, match="PEM") as refused:
        SmartTokenProvider(requests.Session(), client_id="c", token_url=TOKEN_URL, private_key_pem="s3cret-not-pem",
                           kid="k1", scopes="system/*.rs")
    assert "s3cret" not in str(refused.value)


def test_an_encrypted_private_key_is_refused(rsa_private):
    locked = rsa_private.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                       serialization.BestAvailableEncryption(b"pw")).decode()
    with pytest.raises(ValueError, match="PEM"):
        SmartTokenProvider(requests.Session(), client_id="c", token_url=TOKEN_URL, private_key_pem=locked,
                           kid="k1", scopes="system/*.rs")


# --- the token request ---


def test_the_token_request_is_a_client_credentials_form_with_the_assertion(http, provider, rsa_private):
    http.post(TOKEN_URL, json=token_answer())
    assert provider.token() == "tok-1"
    request = http.calls[0].request
    assert request.headers["Content-Type"] == "application/x-www-form-urlencoded"
    form = sent_form(http.calls[0])
    assert form.keys() == {"grant_type", "scope", "client_assertion_type", "client_assertion"}
    assert form["grant_type"] == "client_credentials"
    assert form["scope"] == "system/Patient.cruds system/Observation.cruds"
    assert form["client_assertion_type"] == JWT_BEARER
    claims = jwt.decode(form["client_assertion"], rsa_private.public_key(), algorithms=["RS384"], audience=TOKEN_URL,
                        options={"verify_exp": False, "verify_iat": False})
    assert claims["iss"] == "clinic-1"


def test_the_token_is_cached(http, provider):
    http.post(TOKEN_URL, json=token_answer())
    assert provider.token() == provider.token() == "tok-1"
    assert token_posts(http) == 1


def test_the_token_is_refreshed_when_less_than_the_margin_remains(http, provider, clock):
    http.post(TOKEN_URL, json=token_answer("tok-1", 300))
    http.post(TOKEN_URL, json=token_answer("tok-2", 300))
    clock.now = T0 + 269
    assert provider.token() == "tok-1"  # fetched at T0 + 269: valid until T0 + 569
    clock.now = T0 + 269 + 269
    assert provider.token() == "tok-1"
    clock.now = T0 + 269 + 270
    assert provider.token() == "tok-2"
    assert token_posts(http) == 2


def test_without_expires_in_a_token_lives_300_seconds(http, provider, clock):
    http.post(TOKEN_URL, json=token_answer("tok-1", None))
    http.post(TOKEN_URL, json=token_answer("tok-2", None))
    provider.token()
    clock.now = T0 + 269
    assert provider.token() == "tok-1"
    clock.now = T0 + 270
    assert provider.token() == "tok-2"


def test_a_short_lived_token_is_used_for_half_its_life_not_refetched_on_every_call(http, provider, clock):
    http.post(TOKEN_URL, json=token_answer("tok-1", 20))
    http.post(TOKEN_URL, json=token_answer("tok-2", 20))
    assert provider.token() == "tok-1"
    clock.now = T0 + 9
    assert provider.token() == "tok-1"
    clock.now = T0 + 10
    assert provider.token() == "tok-2"


def test_the_token_type_is_case_insensitive(http, provider):
    http.post(TOKEN_URL, json=token_answer(token_type="Bearer"))
    assert provider.token() == "tok-1"


def test_invalidate_forgets_the_token(http, provider):
    http.post(TOKEN_URL, json=token_answer("tok-1"))
    http.post(TOKEN_URL, json=token_answer("tok-2"))
    provider.token()
    provider.invalidate()
    assert provider.token() == "tok-2"


def test_invalidating_a_stale_token_keeps_a_newer_one(http, provider):
    http.post(TOKEN_URL, json=token_answer("tok-1"))
    provider.token()
    provider.invalidate("tok-0")  # another thread already replaced the one it saw fail
    assert provider.token() == "tok-1" and token_posts(http) == 1


def test_concurrent_callers_share_one_token_request(http, provider):
    def slow_answer(_request):
        time.sleep(0.05)
        return 200, {}, '{"access_token": "tok-1", "token_type": "bearer", "expires_in": 300}'

    http.add_callback(responses.POST, TOKEN_URL, callback=slow_answer, content_type="application/json")
    tokens: list[str] = []
    threads = [threading.Thread(target=lambda: tokens.append(provider.token())) for _ in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert tokens == ["tok-1"] * 6 and token_posts(http) == 1


# --- refusals ---


def test_a_refusal_carries_the_status_and_the_oauth_error(http, provider):
    http.post(TOKEN_URL, status=400, json={"error": "invalid_client", "error_description": "no registered key"})
    with pytest.raises(SmartAuthError) as refused:
        provider.token()
    assert refused.value.status == 400 and refused.value.error == "invalid_client"
    assert "invalid_client" in str(refused.value) and "no registered key" in str(refused.value)
    assert sent_form(http.calls[0])["client_assertion"] not in str(refused.value)


def test_a_refusal_without_json_has_no_oauth_error(http, provider):
    http.post(TOKEN_URL, status=502, body="<html>Bad Gateway</html>")
    with pytest.raises(SmartAuthError) as refused:
        provider.token()
    assert refused.value.status == 502 and refused.value.error is None


@pytest.mark.parametrize("failure", [requests.ConnectionError("refused"), requests.Timeout("slow")],
                         ids=["connection", "timeout"])
def test_an_unreachable_token_endpoint_is_an_error_without_status(http, provider, failure):
    http.post(TOKEN_URL, body=failure)
    with pytest.raises(SmartAuthError, match="unreachable") as refused:
        provider.token()
    assert refused.value.status is None and refused.value.error is None


@pytest.mark.parametrize("body", [
    {"token_type": "bearer", "expires_in": 300},
    {"access_token": "tok-1", "token_type": "mac", "expires_in": 300},
    {"access_token": "tok-1", "token_type": "bearer", "expires_in": "soon"},
    ["tok-1"],
], ids=["no access_token", "not bearer", "bad expires_in", "not an object"])
def test_a_malformed_token_response_is_an_error(http, provider, body):
    http.post(TOKEN_URL, json=body)
    with pytest.raises(SmartAuthError) as refused:
        provider.token()
    assert refused.value.status == 200


# --- SmartAuth on resource requests ---


def test_smart_auth_sends_the_token_as_a_bearer(http, provider):
    http.post(TOKEN_URL, json=token_answer("tok-1"))
    http.get(FHIR_URL, json={"resourceType": "Bundle"})
    answer = requests.get(FHIR_URL, auth=SmartAuth(provider))
    assert answer.status_code == 200
    assert answer.request.headers["Authorization"] == "Bearer tok-1"


def test_a_401_fetches_one_new_token_and_resends_once(http, provider):
    http.post(TOKEN_URL, json=token_answer("tok-1"))
    http.post(TOKEN_URL, json=token_answer("tok-2"))
    http.put(FHIR_URL, status=401)
    http.put(FHIR_URL, status=200, json={"resourceType": "Patient", "id": "p1"})
    answer = requests.put(FHIR_URL, json={"resourceType": "Patient"}, auth=SmartAuth(provider))
    assert answer.status_code == 200 and answer.json()["id"] == "p1"
    assert [c.request.url for c in http.calls] == [TOKEN_URL, FHIR_URL, TOKEN_URL, FHIR_URL]
    assert [c.request.headers["Authorization"] for c in http.calls if c.request.url == FHIR_URL] == [
        "Bearer tok-1", "Bearer tok-2"]
    assert http.calls[3].request.body == http.calls[1].request.body  # the same request, again
    assert [r.status_code for r in answer.history] == [401]


def test_a_second_401_is_returned_as_is(http, provider):
    http.post(TOKEN_URL, json=token_answer("tok-1"))
    http.post(TOKEN_URL, json=token_answer("tok-2"))
    http.get(FHIR_URL, status=401)
    answer = requests.get(FHIR_URL, auth=SmartAuth(provider))
    assert answer.status_code == 401
    assert token_posts(http) == 2 and len(http.calls) == 4


def test_other_failures_are_not_retried(http, provider):
    http.post(TOKEN_URL, json=token_answer("tok-1"))
    http.get(FHIR_URL, status=403)
    assert requests.get(FHIR_URL, auth=SmartAuth(provider)).status_code == 403
    assert len(http.calls) == 2


# --- auth_for ---


def test_auth_for_none_is_no_auth():
    assert auth_for("none", {}, requests.Session()) is None


def test_auth_for_bearer_sends_the_static_token(http):
    http.get(FHIR_URL)
    auth = auth_for("bearer", {"token": "static-1"}, requests.Session())
    assert isinstance(auth, BearerAuth)
    assert requests.get(FHIR_URL, auth=auth).request.headers["Authorization"] == "Bearer static-1"


def test_auth_for_smart_builds_a_provider_with_default_scopes(rsa_private):
    session = requests.Session()
    config = {"client_id": "clinic-1", "token_url": TOKEN_URL, "private_key": pem(rsa_private), "kid": "k1"}
    auth = auth_for("smart", config, session)
    assert isinstance(auth, SmartAuth)
    assert auth.provider.session is session and auth.provider.scopes == "system/*.cruds"
    assert auth_for("smart", {**config, "scopes": "system/Patient.rs"}, session).provider.scopes == "system/Patient.rs"


@pytest.mark.parametrize(("kind", "config", "message"), [
    ("basic", {}, "unknown auth kind"),
    ("bearer", {}, "auth.token"),
    ("smart", {"client_id": "c", "token_url": TOKEN_URL, "kid": "k1"}, "auth.private_key"),
])
def test_auth_for_refuses_what_it_cannot_build(kind, config, message):
    with pytest.raises(ValueError, match=message):
        auth_for(kind, config, requests.Session())


# --- interoperability with this project's SMART authorization server ---

OWN_TOKEN_URL = "http://localhost/auth/token"  # what the server takes as aud behind Flask's test client


def public_jwk(alg: str, key, kid: str) -> dict:
    algorithm = jwt.algorithms.RSAAlgorithm if alg == "RS384" else jwt.algorithms.ECAlgorithm
    return {**algorithm.to_jwk(key.public_key(), as_dict=True), "kid": kid, "alg": alg, "use": "sig"}


@pytest.fixture
def own_server(app, db, clock, keyed):
    """The app with its clock at ``clock``, and a provider registered there as a client."""
    alg, key = keyed
    app.config["SMART_CLOCK"] = lambda: datetime.fromtimestamp(clock.now, UTC)
    client = register_client(db, "clinic-sync", {"keys": [public_jwk(alg, key, "k1")]}, ["system/Patient.rs"])
    return app, SmartTokenProvider(requests.Session(), client_id=client.client_id, token_url=OWN_TOKEN_URL,
                                   private_key_pem=pem(key), kid="k1", scopes="system/Patient.rs", clock=clock)


def test_our_assertion_is_accepted_by_our_own_token_endpoint(own_server):
    app, provider = own_server
    form = {"grant_type": "client_credentials", "scope": provider.scopes, "client_assertion_type": JWT_BEARER,
            "client_assertion": provider.assertion()}
    answer = app.test_client().post("/auth/token", data=form)
    assert answer.status_code == 200, answer.get_json()
    assert answer.get_json()["token_type"] == "bearer" and answer.get_json()["scope"] == "system/Patient.rs"


def forward_to(app):
    """A ``responses`` callback handing a requests call to the Flask app."""
    def forward(request):
        url = urlsplit(request.url)
        headers = {k: v for k, v in request.headers.items() if k.lower() != "content-length"}
        answer = app.test_client().open(url.path, method=request.method, query_string=url.query, headers=headers,
                                        data=request.body)
        kept = {k: v for k, v in answer.headers.items() if k.lower() != "content-length"}
        return answer.status_code, kept, answer.get_data()
    return forward


def test_smart_auth_reads_our_own_fhir_api_and_recovers_when_the_server_expires_the_token(http, own_server, clock):
    app, provider = own_server
    for method in (responses.GET, responses.POST):
        http.add_callback(method, re.compile(r"http://localhost/.*"), callback=forward_to(app))
    session = requests.Session()
    session.auth = SmartAuth(provider)
    assert session.get("http://localhost/fhir/Patient").status_code == 200

    clock.now += 250  # our cache still trusts the token (refresh at 270 s); the server let it expire at 300 s
    app.config["SMART_CLOCK"] = lambda: datetime.fromtimestamp(T0 + 300, UTC)
    answer = session.get("http://localhost/fhir/Patient")
    assert answer.status_code == 200 and [r.status_code for r in answer.history] == [401]
    assert sum(call.request.url == OWN_TOKEN_URL for call in http.calls) == 2
