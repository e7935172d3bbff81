"""A standard third-party FHIR client (fhirpy's SyncFHIRClient) discovers, reads and searches our
server over real HTTP (gunicorn), with no code of ours on the client side."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import jwt as pyjwt
import pytest
import requests
from fhirpy import SyncFHIRClient

from mappings.resources import MAPPED_TYPES
from service.synthetic import clinic_lines
from tests.fhir.smart_support import ec_key, jwks
from tests.served import free_port, wait_ready


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory):
    """ketamine-fhir serve on a free port, loaded with a small synthetic clinic; yields (base, token)."""
    data = tmp_path_factory.mktemp("served")
    exe = str(Path(sys.executable).with_name("ketamine-fhir"))
    env = {k: v for k, v in os.environ.items() if k != "DATABASE_URL"} | {"KETAMINE_FHIR_DATA": str(data)}
    clinic = data / "clinic.ndjson"
    clinic.write_text("\n".join(clinic_lines(4)) + "\n")  # 4: one has a clinical-check Flag
    subprocess.run([exe, "import", str(clinic)], env=env, check=True, capture_output=True)
    token = subprocess.run([exe, "token", "create", "--name", "ehr", "--scope", "system/*.rs"], env=env,
                           check=True, capture_output=True, text=True).stdout.strip()
    keys = data / "jwks.json"
    keys.write_text(json.dumps(jwks(ec_key())))
    client_id = subprocess.run([exe, "client", "register", "--name", "epic", "--jwks", str(keys), "--scope",
                                "system/*.rs"], env=env, check=True, capture_output=True, text=True).stdout.strip()
    port = free_port()
    proc = subprocess.Popen([exe, "serve", "--port", str(port), "--workers", "2"], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    base = f"http://127.0.0.1:{port}"
    wait_ready(base)
    yield f"{base}/fhir", token, client_id
    proc.send_signal(signal.SIGTERM)
    proc.wait(timeout=30)


@pytest.fixture
def fhir(server) -> SyncFHIRClient:
    base, token, _ = server
    return SyncFHIRClient(base, authorization=f"Bearer {token}")


def smart_access_token(base: str, client_id: str) -> str:
    """SMART Backend Services as any client does it: discover, sign an assertion, ask for a token."""
    root = base.removesuffix("/fhir")
    config = requests.get(f"{root}/.well-known/smart-configuration", timeout=10).json()
    assert "private_key_jwt" in config["token_endpoint_auth_methods_supported"]
    now = int(time.time())
    key = ec_key()
    signed = pyjwt.encode({"iss": client_id, "sub": client_id, "aud": config["token_endpoint"], "exp": now + 240,
                           "jti": uuid.uuid4().hex}, key.private, algorithm="ES384", headers={"kid": key.kid})
    answer = requests.post(config["token_endpoint"], data={
        "grant_type": "client_credentials", "scope": "system/*.rs", "client_assertion": signed,
        "client_assertion_type": "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"}, timeout=10)
    assert answer.status_code == 200, answer.text
    assert answer.json()["expires_in"] <= 300
    return answer.json()["access_token"]


def test_a_client_authenticated_with_a_signed_jwt_reads_and_searches_every_type(server):
    base, _, client_id = server
    fhir = SyncFHIRClient(base, authorization=f"Bearer {smart_access_token(base, client_id)}")
    statement = fhir.execute("metadata", method="get")
    types = [r["type"] for r in statement["rest"][0]["resource"]]
    # AuditEvent is served too, but only to an explicit audit scope, never to system/*.rs
    assert set(types) == {*MAPPED_TYPES, "AuditEvent"}
    for resource_type in MAPPED_TYPES:
        found = fhir.resources(resource_type).limit(1).fetch()
        assert found, resource_type
        again = fhir.reference(resource_type, found[0]["id"]).to_resource()
        assert again["id"] == found[0]["id"]


def test_the_client_reads_the_capability_statement(fhir):
    statement = fhir.execute("metadata", method="get")
    assert statement["fhirVersion"] == "4.0.1"


def test_the_client_reads_a_patient_by_reference(fhir, server):
    base, token, _ = server
    any_patient = requests.get(f"{base}/Patient/_history?_count=1", headers={"Authorization": f"Bearer {token}"},
                               timeout=10).json()["entry"][0]["resource"]
    patient = fhir.reference("Patient", any_patient["id"]).to_resource()
    assert patient["resourceType"] == "Patient" and patient["id"] == any_patient["id"]
    assert patient.get("birthDate")


def test_the_client_searches_with_its_own_query_builder(fhir):
    patients = fhir.resources("Patient").search(gender="male").limit(2).fetch()
    assert len(patients) == 2 and all(p["gender"] == "male" for p in patients)  # the synthetic clinic's first two
    patient = fhir.resources("Patient").first()
    scores = fhir.resources("Observation").search(patient=patient["id"], category="survey").fetch_all()
    assert scores and all(o["subject"]["reference"].endswith(patient["id"]) for o in scores)
    assert fhir.resources("Encounter").search(patient=patient["id"]).count() == 6
