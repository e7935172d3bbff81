"""Inbound pull from a real third-party FHIR server (../shared/peer-fhir: Medplum's router, in memory):
an EHR's patient, psychiatrist and referral become clinic records, pulling again changes nothing, and
what the push engine delivered there comes back as no new version."""

from __future__ import annotations

import socket
import subprocess
from collections.abc import Iterator
from datetime import UTC, datetime

import pytest
import requests
from sqlalchemy import select

from service import models
from service.sync import destinations
from service.sync.engine import deliver
from service.sync.pull import pull
from tests.factories import PATIENT, PSYCHIATRIST, REFERRAL
from tests.fhir_checks import peer_fhir

pytestmark = pytest.mark.postgres

MR = {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v2-0203", "code": "MR"}]}
NPI = "1234567893"
T0 = datetime(2026, 3, 2, 12, 0, tzinfo=UTC)


@pytest.fixture(scope="session")
def peer() -> Iterator[str]:
    """The peer FHIR server on a free port; its base URL."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen([str(peer_fhir() / "start.sh"), str(port)], stdout=subprocess.PIPE,
                            stderr=subprocess.DEVNULL, text=True)
    try:
        assert proc.stdout.readline().startswith("ready")
        yield f"http://127.0.0.1:{port}/fhir"
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def create(base: str, resource: dict) -> str:
    """POST to the peer; its id for the resource."""
    response = requests.post(f"{base}/{resource['resourceType']}", json=resource, timeout=30,
                             headers={"Content-Type": "application/fhir+json"})
    assert response.status_code == 201, response.text
    return response.json()["id"]


def ehr_records(base: str) -> None:
    """A patient, the psychiatrist who refers them, and the referral, as an EHR holds them."""
    patient = create(base, {"resourceType": "Patient",
                            "identifier": [{"type": MR, "system": "http://ehr.example.org/mrn", "value": "E-901"}],
                            "name": [{"family": "Larch", "given": ["Robin"]}], "gender": "female",
                            "birthDate": "1979-05-02"})
    doctor = create(base, {"resourceType": "Practitioner",
                           "identifier": [{"system": "http://hl7.org/fhir/sid/us-npi", "value": NPI}],
                           "name": [{"family": "Ortiz", "given": ["Ana"]}]})
    create(base, {"resourceType": "ServiceRequest", "status": "active", "intent": "order",
                  "identifier": [{"system": "http://ehr.example.org/referrals", "value": "REF-901"}],
                  "subject": {"reference": f"Patient/{patient}"}, "requester": {"reference": f"Practitioner/{doctor}"},
                  "authoredOn": "2026-02-01", "code": {"text": "Ketamine treatment referral"},
                  "reasonCode": [{"coding": [{"system": "http://hl7.org/fhir/sid/icd-10-cm", "code": "F33.2"}]}]})


def versions(db) -> dict[tuple[str, str], int]:
    db.rollback()
    return {(r.resource_type, r.id): r.version_id for r in db.scalars(select(models.FhirResource))}


def destination(peer: str, db) -> str:
    """An empty peer, pulled from and pushed to."""
    requests.post(f"{peer}/$peer-reset", timeout=30).raise_for_status()
    dest = destinations.create(db, {"name": "peer", "url": peer, "pull": True}, T0)
    db.commit()
    return dest.id


def test_an_ehr_referral_is_pulled_from_a_real_fhir_server_once(peer, app, db, api):
    dest_id = destination(peer, db)
    ehr_records(peer)
    factory = app.extensions["db_sessionmaker"]

    first = pull(factory, dest_id, now=T0, page_size=1)  # one resource a page: the next links are followed
    assert (first.errors, first.applied, first.skipped) == ([], 3, 0)
    [patient] = api.get("/patients").get_json()["items"]
    [referral] = api.get(f"/referrals?patient_id={patient['id']}").get_json()["items"]
    doctor = api.get(f"/practitioners/{referral['referrer_id']}").get_json()
    assert (patient["mrn"], referral["diagnoses"], doctor["npi"]) == ("E-901", ["F33.2"], NPI)

    stored = versions(db)
    again = pull(factory, dest_id, now=T0)
    assert (again.fetched, again.errors) == (0, [])  # nothing changed there since the watermark
    db.rollback()  # past the pull's own commits (its audit event): SQLite cannot write from an older snapshot
    dest = db.get(models.Destination, dest_id)
    dest.pull_watermarks = {}
    db.commit()
    from_scratch = pull(factory, dest_id, now=T0)
    assert (from_scratch.applied, from_scratch.unchanged, from_scratch.errors) == (0, 2, [])
    assert versions(db) == stored


def test_what_the_push_engine_delivered_comes_back_as_no_new_version(peer, app, db, api):
    dest_id = destination(peer, db)
    for path, body in (("/practitioners/dr-ortiz", PSYCHIATRIST), ("/patients/pt-1", PATIENT),
                       ("/referrals/rf-1", REFERRAL)):
        assert api.put(path, body).status_code == 201
    factory = app.extensions["db_sessionmaker"]
    assert deliver(factory, dest_id, "test-worker").dead == 0
    stored = versions(db)
    echo = pull(factory, dest_id, now=T0)
    assert (echo.fetched, echo.applied, echo.unchanged, echo.errors) == (2, 0, 2, [])
    assert versions(db) == stored
    assert api.get("/patients/pt-1").get_json()["weight_kg"] == PATIENT["weight_kg"]  # FHIR does not carry it
