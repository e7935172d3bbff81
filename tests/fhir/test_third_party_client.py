"""A standard third-party FHIR client (fhirpy's SyncFHIRClient) discovers, reads and searches our
server over real HTTP (gunicorn), with no code of ours on the client side."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests
from fhirpy import SyncFHIRClient

from service.synthetic import clinic_lines


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory):
    """ketamine-fhir serve on a free port, loaded with a small synthetic clinic; yields (base, token)."""
    data = tmp_path_factory.mktemp("served")
    exe = str(Path(sys.executable).with_name("ketamine-fhir"))
    env = {k: v for k, v in os.environ.items() if k != "DATABASE_URL"} | {"KETAMINE_FHIR_DATA": str(data)}
    clinic = data / "clinic.ndjson"
    clinic.write_text("\n".join(clinic_lines(3)) + "\n")
    subprocess.run([exe, "import", str(clinic)], env=env, check=True, capture_output=True)
    token = subprocess.run([exe, "token", "create", "--name", "ehr", "--scope", "system/*.rs"], env=env,
                           check=True, capture_output=True, text=True).stdout.strip()
    port = _free_port()
    proc = subprocess.Popen([exe, "serve", "--port", str(port), "--workers", "2"], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    base = f"http://127.0.0.1:{port}"
    for _ in range(100):
        try:
            if requests.get(f"{base}/readyz", timeout=1).status_code == 200:
                break
        except requests.ConnectionError:
            time.sleep(0.1)
    yield f"{base}/fhir", token
    proc.send_signal(signal.SIGTERM)
    proc.wait(timeout=30)


@pytest.fixture
def fhir(server) -> SyncFHIRClient:
    base, token = server
    return SyncFHIRClient(base, authorization=f"Bearer {token}")


def test_the_client_reads_the_capability_statement(fhir):
    statement = fhir.execute("metadata", method="get")
    assert statement["fhirVersion"] == "4.0.1"


def test_the_client_reads_a_patient_by_reference(fhir, server):
    base, token = server
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
