"""Security review (issue 10), finding 12: the data folder and the SQLite database hold PHI and keys,
and were created 0755/0644 (readable by every local user). Now 0700 and 0600, whatever the umask."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest
from sqlalchemy import text

from service import create_app
from service.config import Settings
from service.db import make_engine, migrate


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.fixture
def loose_umask():
    """The usual umask (files 0644, folders 0755): what the service must not rely on."""
    old = os.umask(0o022)
    yield
    os.umask(old)


def test_migrate_makes_a_private_data_folder_and_database(tmp_path, loose_umask):
    data = tmp_path / "fresh" / "data"
    settings = Settings.from_env({"KETAMINE_FHIR_DATA": str(data)})
    migrate(settings)
    database = data / "ketamine-fhir.sqlite3"
    assert (mode(data), mode(database)) == (0o700, 0o600)
    engine = make_engine(settings.database_url)
    with engine.begin() as conn:  # a write leaves the WAL files next to it, with the database's mode
        conn.execute(text("CREATE TABLE IF NOT EXISTS probe (x INTEGER)"))
        wal = [p for p in data.iterdir() if p.name.endswith(("-wal", "-shm"))]
        assert wal and {mode(p) for p in wal} == {0o600}
    engine.dispose()


def test_an_existing_loose_database_is_narrowed_at_migrate_and_app_start(tmp_path, loose_umask, caplog):
    settings = Settings.from_env({"KETAMINE_FHIR_DATA": str(tmp_path / "data"), "KETAMINE_FHIR_WORKER": "off"})
    migrate(settings)
    database = settings.data_dir / "ketamine-fhir.sqlite3"
    os.chmod(settings.data_dir, 0o755)
    os.chmod(database, 0o644)
    app = create_app(settings)
    assert (mode(settings.data_dir), mode(database)) == (0o700, 0o600)
    assert "had mode 644; now 600" in caplog.text
    app.extensions["db_engine"].dispose()
    os.chmod(database, 0o640)
    migrate(settings)
    assert mode(database) == 0o600
