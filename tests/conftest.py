"""Fixtures: an app on a fresh database per test, on SQLite and on the real PostgreSQL.

Tests that take ``app``/``client``/``db`` run once per backend listed in ``BACKENDS`` when they
are marked ``postgres`` (persistence tests), on PostgreSQL alone when marked ``postgres_only`` (what
SQLite cannot do: several worker processes on one database), on SQLite alone when marked
``sqlite_only`` (in a ``postgres`` module: what only SQLite has, its database-wide write lock), and
on SQLite alone otherwise. PostgreSQL is the server at ``TEST_DATABASE_URL`` (default: the local
one); each test run creates its own database there, migrates it once, and empties it between tests.
"""

from __future__ import annotations

import os
import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session

from service import create_app
from service.auth import create_token
from service.config import Settings
from service.db import migrate
from service.models import Base

#: what every test app is configured with: Flask's test client calls itself http://localhost; rate
#: limits off, so that no test is throttled by accident (tests/service/test_rate_limits.py turns them on)
TEST_ENV = {"KETAMINE_FHIR_PUBLIC_URL": "http://localhost", "KETAMINE_FHIR_RATE_LIMITS": "off"}

PG_URL = os.environ.get("TEST_DATABASE_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test")


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "backend" in metafunc.fixturenames:
        marker = metafunc.definition.get_closest_marker
        backends = (["postgresql"] if marker("postgres_only") else ["sqlite"] if marker("sqlite_only")
                    else ["sqlite", "postgresql"] if marker("postgres") else ["sqlite"])
        metafunc.parametrize("backend", backends, scope="function")


@pytest.fixture(scope="session")
def sqlite_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("template")
    migrate(Settings.from_env({"KETAMINE_FHIR_DATA": str(folder)}))
    return folder / "ketamine-fhir.sqlite3"


@pytest.fixture(scope="session")
def pg_database() -> Iterator[str]:
    """A database of our own on the PostgreSQL server, migrated once, dropped at the end."""
    admin = create_engine(PG_URL, isolation_level="AUTOCOMMIT")
    name = f"kf_test_{uuid.uuid4().hex[:12]}"
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    url = make_url(PG_URL).set(database=name).render_as_string(hide_password=False)
    migrate(Settings.from_env({"DATABASE_URL": url, "KETAMINE_FHIR_DATA": "/nonexistent"}))
    yield url
    with admin.connect() as conn:
        conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    admin.dispose()


def _truncate_pg(url: str) -> None:
    engine = create_engine(url)
    tables = ", ".join(f'"{t.name}"' for t in Base.metadata.sorted_tables)
    with engine.begin() as conn:
        conn.execute(text(f"TRUNCATE {tables} RESTART IDENTITY CASCADE"))
    engine.dispose()


@pytest.fixture
def settings(backend: str, tmp_path: Path, request: pytest.FixtureRequest) -> Settings:
    if backend == "sqlite":
        shutil.copy(request.getfixturevalue("sqlite_template"), tmp_path / "ketamine-fhir.sqlite3")
        return Settings.from_env({"KETAMINE_FHIR_DATA": str(tmp_path), **TEST_ENV})
    url = request.getfixturevalue("pg_database")
    _truncate_pg(url)
    return Settings.from_env({"DATABASE_URL": url, "KETAMINE_FHIR_DATA": str(tmp_path), **TEST_ENV})


@pytest.fixture
def app(settings: Settings):
    app = create_app(settings, TESTING=True)
    yield app
    app.extensions["db_engine"].dispose()


@pytest.fixture
def client(app):
    return app.test_client()


@pytest.fixture
def db(app) -> Iterator[Session]:
    with app.extensions["db_sessionmaker"]() as session:
        yield session


@pytest.fixture
def auth(db: Session) -> dict[str, str]:
    """Headers with an operator token (scope ``*``)."""
    return {"Authorization": f"Bearer {create_token(db, 'test-operator', ['*'])}"}


@pytest.fixture
def api(client, auth):
    """A small client for /api/v1 with the operator token."""
    return Api(client, auth)


class Api:
    def __init__(self, client, headers: dict[str, str]):
        self.client, self.headers = client, headers

    def put(self, path: str, body, **kw):
        return self.client.put(f"/api/v1{path}", json=body, headers=self.headers, **kw)

    def post(self, path: str, body, **kw):
        return self.client.post(f"/api/v1{path}", json=body, headers=self.headers, **kw)

    def get(self, path: str, **kw):
        return self.client.get(f"/api/v1{path}", headers=self.headers, **kw)

    def import_ndjson(self, text_body: str):
        return self.client.post("/api/v1/import", data=text_body.encode(), headers=self.headers,
                                content_type="application/x-ndjson")
