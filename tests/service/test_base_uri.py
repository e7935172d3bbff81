"""Mapping revision 2, item 15: two clinics on the example base URI would mint colliding FHIR ids.

``serve`` warns at every start while the base is the default, and refuses to start when the
stored resources were made under another base."""

from __future__ import annotations

import dataclasses
import os
import subprocess
import sys
from pathlib import Path

import pytest
from sqlalchemy.orm import Session

from service import create_app
from service.auth import create_token
from service.base_uri import DEFAULT_BASE_URI, start_problem, stored_base_uri
from service.config import Settings
from service.db import make_engine, migrate
from tests.factories import PSYCHIATRIST as PRACTITIONER
from tests.factories import seed_course
from tests.served import free_port

pytestmark = pytest.mark.postgres

OWN_BASE = "https://fhir.rivertown-ketamine.example/fhir"


def test_an_empty_store_has_no_base_and_the_default_may_start(settings, db):
    assert stored_base_uri(db) is None
    assert start_problem(settings, db) is None


def test_the_stored_base_is_read_back_from_what_was_minted(settings, api, db):
    seed_course(api)
    assert stored_base_uri(db) == settings.base_uri


def test_the_default_over_resources_of_another_base_is_refused_with_the_base_to_set(tmp_path):
    data = _clinic_under(tmp_path, OWN_BASE)
    with Session(make_engine(data.database_url)) as db:
        assert stored_base_uri(db) == OWN_BASE
        problem = start_problem(dataclasses.replace(data, base_uri=DEFAULT_BASE_URI), db)
        assert problem and f"KETAMINE_FHIR_BASE_URI={OWN_BASE}" in problem
        assert start_problem(data, db) is None  # the clinic's own base: fine


def _clinic_under(folder: Path, base: str) -> Settings:
    """A data folder with one practitioner minted under ``base``."""
    settings = Settings.from_env({"KETAMINE_FHIR_DATA": str(folder), "KETAMINE_FHIR_BASE_URI": base})
    migrate(settings)
    app = create_app(settings, TESTING=True)
    with Session(app.extensions["db_engine"]) as db:
        token = create_token(db, "t", ["*"])
    response = app.test_client().put(f"/api/v1/practitioners/{PRACTITIONER['id']}", json=PRACTITIONER,
                                     headers={"Authorization": f"Bearer {token}"})
    assert response.status_code == 201, response.get_json()
    app.extensions["db_engine"].dispose()
    return settings


def _cli(env: dict[str, str], *args: str, timeout: float = 60) -> subprocess.CompletedProcess:
    exe = str(Path(sys.executable).with_name("ketamine-fhir"))
    return subprocess.run([exe, *args], env=env, capture_output=True, text=True, timeout=timeout)


def test_serve_refuses_to_start_on_the_default_over_another_clinics_data(tmp_path):
    _clinic_under(tmp_path, OWN_BASE)
    env = {k: v for k, v in os.environ.items() if not k.startswith("KETAMINE_FHIR_") and k != "DATABASE_URL"}
    done = _cli(env | {"KETAMINE_FHIR_DATA": str(tmp_path)}, "serve", "--port", "1")  # refused before it binds
    assert done.returncode != 0
    assert f"KETAMINE_FHIR_BASE_URI={OWN_BASE}" in done.stderr and "listening" not in done.stdout


def test_serve_warns_while_the_base_is_the_default(tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith("KETAMINE_FHIR_") and k != "DATABASE_URL"}
    env |= {"KETAMINE_FHIR_DATA": str(tmp_path)}
    _cli(env, "init-db")
    proc = subprocess.Popen([str(Path(sys.executable).with_name("ketamine-fhir")), "serve", "--port", str(free_port()),
                             "--workers", "1"], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        first = proc.stderr.readline()
    finally:
        proc.terminate()
        proc.wait(timeout=30)
    assert first.startswith("WARNING: KETAMINE_FHIR_BASE_URI is the example default")
