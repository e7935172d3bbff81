"""The schema enforces integrity itself (foreign keys, unique MRNs, NPIs and identifiers), and the
Alembic migrations build exactly the models — on SQLite and on PostgreSQL."""

from __future__ import annotations

from datetime import UTC, date, datetime

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy.exc import IntegrityError

from service.db import migrate
from service.models import Base, InfusionSession, Patient, PatientIdentifier, Practitioner

pytestmark = pytest.mark.postgres

NOW = datetime(2026, 1, 1, tzinfo=UTC)


def _patient(pid: str, mrn: str) -> Patient:
    return Patient(id=pid, mrn=mrn, birth_date=date(1980, 1, 1), record={}, content_hash="x", version=1,
                   created_at=NOW, updated_at=NOW)


def test_duplicate_mrn_is_refused_by_the_database(db):
    db.add_all([_patient("a", "MRN-1"), _patient("b", "MRN-1")])
    with pytest.raises(IntegrityError):
        db.commit()


def test_duplicate_npi_is_refused_by_the_database(db):
    for pid in ("a", "b"):
        db.add(Practitioner(id=pid, role="nurse", npi="1234567893", record={}, content_hash="x", version=1,
                            created_at=NOW, updated_at=NOW))
    with pytest.raises(IntegrityError):
        db.commit()


def test_an_identifier_names_one_patient_only(db):
    db.add_all([_patient("a", "1"), _patient("b", "2")])
    db.flush()
    db.add_all([PatientIdentifier(patient_id=p, system="urn:oid:1.2.3", value="E1") for p in ("a", "b")])
    with pytest.raises(IntegrityError):
        db.commit()


def test_a_session_of_an_unknown_patient_is_refused_by_the_database(db):
    db.add(InfusionSession(id="s", patient_id="ghost", start=NOW, record={}, content_hash="x", version=1,
                           created_at=NOW, updated_at=NOW))
    with pytest.raises(IntegrityError):
        db.commit()


def test_times_come_back_in_utc_with_their_offset(db):
    from datetime import timedelta, timezone

    db.add(_patient("a", "1"))
    db.flush()
    local = datetime(2026, 1, 12, 9, 0, tzinfo=timezone(timedelta(hours=-5)))
    db.add(InfusionSession(id="s", patient_id="a", start=local, record={}, content_hash="x", version=1,
                           created_at=NOW, updated_at=NOW))
    db.commit()
    db.expunge_all()
    stored = db.get(InfusionSession, "s").start
    assert stored == local and stored.utcoffset() == timedelta(0)


def test_migrations_build_exactly_the_models(app, settings):
    migrate(settings)  # a second run is a no-op
    with app.extensions["db_engine"].connect() as conn:
        diff = compare_metadata(MigrationContext.configure(conn, opts={"compare_type": False}), Base.metadata)
    assert diff == []
