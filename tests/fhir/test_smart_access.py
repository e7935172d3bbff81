"""Access to /fhir: bearer token -> scopes (service.fhir.access), for SMART and static tokens.

RFC 6750 §3.1 as FHIR OperationOutcomes: no, unknown or expired token -> 401 ``login`` with
``WWW-Authenticate: Bearer``; scopes that do not allow the interaction -> 403 ``forbidden``.
"""

from __future__ import annotations

import pytest
from click.testing import CliRunner

from service.auth import create_token
from service.cli import main
from service.fhir.access import fhir_scopes, require
from service.fhir.outcomes import FhirError
from service.fhir.smart import register_client, revoke_client
from tests.fhir.smart_support import Clock, assertion, ec_key, jwks, token_form, with_smart


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def smart_app(app, clock):
    return with_smart(app, clock)


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def scopes_for(app, headers: dict[str, str]) -> frozenset[str]:
    with app.test_request_context("/fhir/Patient", headers=headers):
        return fhir_scopes()


def check(app, headers: dict[str, str], resource_type: str, interaction: str) -> int:
    """The status ``require`` answers: 200 when allowed, else the FhirError's."""
    with app.test_request_context("/fhir/Patient", headers=headers):
        try:
            require(resource_type, interaction)
        except FhirError as exc:
            return exc.status
    return 200


def smart_token(app, db, clock, scope: str, allowed=("system/*.rs", "system/Patient.cruds")) -> str:
    client_id = register_client(db, "ehr", jwks(ec_key()), allowed).client_id
    response = app.test_client().post("/auth/token", data=token_form(assertion(ec_key(), client_id, clock.now), scope))
    assert response.status_code == 200, response.get_json()
    return response.get_json()["access_token"]


# --- static tokens ---


@pytest.mark.postgres
def test_a_static_token_with_system_scopes_reads_and_searches_everything_but_writes_nothing(smart_app, db):
    headers = bearer(create_token(db, "reader", ["system/*.rs"]))
    assert scopes_for(smart_app, headers) == {"system/*.rs"}
    assert check(smart_app, headers, "Observation", "search") == 200
    assert check(smart_app, headers, "Patient", "vread") == 200
    assert check(smart_app, headers, "Patient", "create") == 403


@pytest.mark.postgres
def test_a_static_token_for_one_type(smart_app, db):
    headers = bearer(create_token(db, "obs", ["system/Observation.rs", "system/Patient.cruds"]))
    assert check(smart_app, headers, "Observation", "read") == 200
    assert check(smart_app, headers, "Encounter", "read") == 403
    assert check(smart_app, headers, "Patient", "delete") == 200


@pytest.mark.postgres
def test_the_operator_token_is_allowed_everywhere(smart_app, db):
    headers = bearer(create_token(db, "operator", ["*"]))
    for resource_type, interaction in [("Patient", "create"), ("Observation", "delete"), ("Provenance", "history")]:
        assert check(smart_app, headers, resource_type, interaction) == 200


@pytest.mark.postgres
def test_a_clinic_only_token_is_known_but_forbidden_on_fhir(smart_app, db):
    headers = bearer(create_token(db, "clinic", ["clinic:read", "clinic:write", "admin"]))
    assert scopes_for(smart_app, headers) == {"clinic:read", "clinic:write", "admin"}
    with smart_app.test_request_context("/fhir/Patient", headers=headers), pytest.raises(FhirError) as caught:
        require("Patient", "read")
    assert caught.value.status == 403 and caught.value.code == "forbidden"
    assert "system/Patient.r" in caught.value.diagnostics


@pytest.mark.postgres
def test_a_system_scoped_static_token_cannot_use_the_clinic_api(smart_app, db):
    headers = bearer(create_token(db, "reader", ["system/*.rs"]))
    assert smart_app.test_client().get("/api/v1/patients", headers=headers).status_code == 403


def test_token_create_accepts_smart_scopes(tmp_path):
    env = {"KETAMINE_FHIR_DATA": str(tmp_path / "data"), "DATABASE_URL": ""}
    result = CliRunner().invoke(main, ["token", "create", "--name", "ehr", "--scope", "system/*.rs"], env=env)
    assert result.exit_code == 0 and result.output.startswith("kf_")
    bad = CliRunner().invoke(main, ["token", "create", "--name", "x", "--scope", "system/*.xyz"], env=env)
    assert bad.exit_code == 2


# --- 401 ---


@pytest.mark.postgres
@pytest.mark.parametrize("headers", [
    {}, {"Authorization": "Bearer"}, {"Authorization": "Basic dXNlcjpwYXNz"}, bearer("kfs_not-issued"),
    bearer("kf_unknown"),
], ids=["none", "empty", "basic", "unknown SMART", "unknown static"])
def test_no_valid_token_is_401_with_a_bearer_challenge(smart_app, db, headers):
    with smart_app.test_request_context("/fhir/Patient", headers=headers), pytest.raises(FhirError) as caught:
        fhir_scopes()
    assert caught.value.status == 401 and caught.value.code == "login"
    assert caught.value.headers == {"WWW-Authenticate": 'Bearer realm="ketamine-fhir"'}


@pytest.mark.postgres
def test_a_revoked_static_token_is_401(smart_app, db):
    from service.auth import revoke_token

    headers = bearer(create_token(db, "gone", ["system/*.rs"]))
    revoke_token(db, "gone")
    assert check(smart_app, headers, "Patient", "read") == 401


# --- SMART access tokens ---


@pytest.mark.postgres
def test_a_smart_access_token_carries_its_granted_scopes(smart_app, db, clock):
    headers = bearer(smart_token(smart_app, db, clock, "system/Observation.rs system/Patient.cu"))
    assert scopes_for(smart_app, headers) == {"system/Observation.rs", "system/Patient.cu"}
    assert check(smart_app, headers, "Observation", "search") == 200
    assert check(smart_app, headers, "Observation", "update") == 403
    assert check(smart_app, headers, "Patient", "update") == 200
    assert check(smart_app, headers, "Patient", "read") == 403  # not requested, so not granted


@pytest.mark.postgres
def test_a_smart_access_token_expires_after_its_expires_in(smart_app, db, clock):
    headers = bearer(smart_token(smart_app, db, clock, "system/*.rs"))
    clock.advance(299)
    assert check(smart_app, headers, "Patient", "read") == 200
    clock.advance(1)
    assert check(smart_app, headers, "Patient", "read") == 401


@pytest.mark.postgres
def test_revoking_a_client_ends_its_tokens_at_once(smart_app, db, clock):
    headers = bearer(smart_token(smart_app, db, clock, "system/*.rs"))
    revoke_client(db, "ehr")
    assert check(smart_app, headers, "Patient", "read") == 401


@pytest.mark.postgres
def test_scopes_are_looked_up_once_per_request(smart_app, db, clock):
    headers = bearer(smart_token(smart_app, db, clock, "system/*.rs"))
    with smart_app.test_request_context("/fhir/Patient", headers=headers):
        first = fhir_scopes()
        revoke_client(db, "ehr")  # takes effect from the next request
        assert fhir_scopes() is first
