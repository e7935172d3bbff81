"""Security review findings 6, 7 and 15 at the app: body limits before parsing, absolute URLs from
the configured public URL (never the Host header), and the headers every answer carries."""

from __future__ import annotations

import io
import json

import pytest

from service import create_app
from service.fhir.smart import register_client
from tests.factories import seed_course
from tests.fhir.smart_support import Clock, assertion, ec_key, jwks, token_form, with_smart

FHIR = {"Content-Type": "application/fhir+json"}
EVIL = {"Host": "evil.example"}


def _big_patient(size: int) -> bytes:
    return json.dumps({"resourceType": "Patient", "name": [{"family": "x" * size}]}).encode()


@pytest.mark.parametrize("path", ["/fhir/Patient", "/fhir/Patient/abc", "/admin/destinations"])
def test_a_single_write_larger_than_the_body_limit_is_413_before_parsing(client, auth, path):
    method = client.post if path != "/fhir/Patient/abc" else client.put
    response = method(path, data=_big_patient(2 * 1024 * 1024), headers=auth | FHIR)
    assert response.status_code == 413


def test_a_chunked_body_without_length_is_cut_at_the_limit(client, auth):
    body = _big_patient(2 * 1024 * 1024)
    response = client.post("/fhir/Patient", input_stream=io.BytesIO(body), headers=auth | FHIR | {
        "Transfer-Encoding": "chunked"}, environ_overrides={"wsgi.input_terminated": True})
    assert response.status_code == 413
    assert response.get_json(force=True)["resourceType"] == "OperationOutcome"


def test_an_import_still_takes_large_files(api):
    lines = "\n".join(json.dumps({"type": "practitioners", "record": {
        "id": f"dr-{i:05d}", "name": {"family": "Lee" * 30, "given": ["A" * 90]}, "role": "nurse"}})
        for i in range(5000))
    assert len(lines) > 1024 * 1024
    response = api.import_ndjson(lines)
    assert response.status_code == 200 and response.get_json()["accepted"] == 5000


def test_discovery_and_links_ignore_the_host_header(app, client, auth, api, db):
    seed_course(api)
    config = client.get("/.well-known/smart-configuration", headers=EVIL).get_json()
    assert config["token_endpoint"] == "http://localhost/auth/token"
    metadata = client.get("/fhir/metadata", headers=EVIL).get_json()
    assert metadata["implementation"]["url"] == "http://localhost/fhir"
    assert "evil" not in json.dumps(metadata)
    searched = client.get("/fhir/Observation?_count=1", headers=auth | EVIL).get_data(as_text=True)
    history = client.get("/fhir/Patient/_history?_count=1", headers=auth | EVIL).get_data(as_text=True)
    assert "evil.example" not in searched + history and "http://localhost/fhir/" in searched + history
    created = client.post("/fhir/Practitioner", headers=auth | FHIR | EVIL, json={
        "resourceType": "Practitioner", "name": [{"family": "Vale", "given": ["Io"]}]})
    assert created.headers["Location"].startswith("http://localhost/fhir/Practitioner/")


def test_a_token_is_not_issued_for_an_assertion_aimed_at_another_host(app, client, db):
    clock = Clock()
    with_smart(app, clock)
    registered = register_client(db, "ehr", jwks(ec_key()), ["system/*.rs"])
    forged = assertion(ec_key(), registered.client_id, clock.now, aud="http://evil.example/auth/token")
    response = client.post("/auth/token", data=token_form(forged), headers=EVIL)
    assert response.status_code == 401 and response.get_json()["error"] == "invalid_client"


@pytest.mark.parametrize("path", ["/fhir/metadata", "/healthz", "/api/v1/patients", "/fhir/Patient", "/nowhere"])
def test_every_answer_is_not_stored_and_not_sniffed(client, auth, path):
    response = client.get(path, headers=auth)
    assert response.headers["Cache-Control"] == "no-store"
    assert response.headers["X-Content-Type-Options"] == "nosniff"
    assert "Server" not in response.headers and "Strict-Transport-Security" not in response.headers


def test_behind_tls_answers_carry_hsts(settings):
    from dataclasses import replace

    app = create_app(replace(settings, public_url="https://fhir.clinic.example"), TESTING=True)
    try:
        response = app.test_client().get("/healthz")
        assert response.headers["Strict-Transport-Security"].startswith("max-age=")
    finally:
        app.extensions["db_engine"].dispose()


def test_a_chunked_import_over_the_limit_is_refused_whole_not_cut(settings, auth, db):
    from dataclasses import replace

    from service.models import Practitioner

    app = create_app(replace(settings, max_import_bytes=20_000), TESTING=True)
    try:
        lines = "\n".join(json.dumps({"type": "practitioners", "record": {
            "id": f"dr-{i:04d}", "name": {"family": "Lee"}, "role": "nurse"}}) for i in range(1000)).encode()
        response = app.test_client().post("/api/v1/import", input_stream=io.BytesIO(lines), headers=auth | {
            "Content-Type": "application/x-ndjson", "Transfer-Encoding": "chunked"},
            environ_overrides={"wsgi.input_terminated": True})
        assert response.status_code == 413
        assert db.query(Practitioner).count() == 0  # before the fix: the first ~250 lines were imported
    finally:
        app.extensions["db_engine"].dispose()
