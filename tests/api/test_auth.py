"""Bearer tokens: 401 without one, 403 without the scope; probes and the OpenAPI document open."""

from __future__ import annotations

import pytest

from service.auth import TokenError, create_token, revoke_token
from service.models import ApiToken
from tests.factories import NURSE


@pytest.mark.parametrize("method,path", [
    ("get", "/api/v1/patients"), ("get", "/api/v1/patients/pt-1"), ("put", "/api/v1/patients/pt-1"),
    ("post", "/api/v1/patients"), ("post", "/api/v1/import"), ("get", "/api/v1/sessions/se-1/vitals"),
])
def test_every_clinic_endpoint_needs_a_token(client, method, path):
    response = getattr(client, method)(path, json={})
    assert response.status_code == 401
    assert response.headers["WWW-Authenticate"].startswith("Bearer")
    assert response.get_json()["errors"]


@pytest.mark.parametrize("header", ["Bearer nonsense", "Basic dXNlcjpwdw==", "Bearer ", "kf_abc"])
def test_unknown_or_malformed_tokens_are_401(client, header):
    assert client.get("/api/v1/patients", headers={"Authorization": header}).status_code == 401


def test_read_scope_reads_but_cannot_write(client, db):
    token = create_token(db, "reader", ["clinic:read"])
    headers = {"Authorization": f"Bearer {token}"}
    assert client.get("/api/v1/practitioners", headers=headers).status_code == 200
    response = client.put("/api/v1/practitioners/rn-cho", json=NURSE, headers=headers)
    assert response.status_code == 403
    assert "clinic:write" in response.get_json()["message"]


def test_write_scope_cannot_read(client, db):
    headers = {"Authorization": f"Bearer {create_token(db, 'writer', ['clinic:write'])}"}
    assert client.put("/api/v1/practitioners/rn-cho", json=NURSE, headers=headers).status_code == 201
    assert client.get("/api/v1/practitioners/rn-cho", headers=headers).status_code == 403


def test_a_revoked_token_is_refused(client, db):
    token = create_token(db, "temp", ["clinic:read"])
    assert revoke_token(db, "temp")
    assert client.get("/api/v1/patients", headers={"Authorization": f"Bearer {token}"}).status_code == 401


def test_tokens_are_stored_hashed(db):
    token = create_token(db, "ops", ["*"])
    stored = db.query(ApiToken).one()
    assert token not in (stored.token_hash, stored.name, stored.scopes)
    assert len(stored.token_hash) == 64


@pytest.mark.parametrize("scopes,message", [([], "at least one"), (["clinic:delete"], "unknown scope")])
def test_token_scopes_are_checked(db, scopes, message):
    with pytest.raises(TokenError, match=message):
        create_token(db, "x", scopes)


def test_token_names_are_unique(db):
    create_token(db, "dup", ["*"])
    with pytest.raises(TokenError, match="exists"):
        create_token(db, "dup", ["*"])


def test_health_probes_and_openapi_are_open(client):
    assert client.get("/healthz").get_json() == {"status": "ok"}
    assert client.get("/readyz").get_json() == {"status": "ok", "database": "ok", "audit_dropped": 0}
    assert client.get("/api/v1/openapi.json").status_code == 200


def test_readyz_is_503_when_the_database_is_unreachable(tmp_path):
    from service import create_app
    from service.config import Settings

    app = create_app(Settings.from_env({"KETAMINE_FHIR_DATA": str(tmp_path),
                                        "DATABASE_URL": "postgresql://nobody@127.0.0.1:1/none"}))
    response = app.test_client().get("/readyz")
    assert response.status_code == 503
    assert response.get_json()["database"] == "unreachable"
