"""Database engine and session lifecycle, and the schema migrations (Alembic)."""

from __future__ import annotations

import logging
import os
import stat
from pathlib import Path
from typing import TYPE_CHECKING, Any

from alembic import command
from alembic.config import Config
from flask import Flask, current_app, g, has_request_context, request
from sqlalchemy import Connection, Engine, create_engine, event, text
from sqlalchemy.orm import Session, SessionTransaction, sessionmaker

if TYPE_CHECKING:
    from service.config import Settings

__all__ = ["ANALYZE_AFTER_LINES", "RETRY_AFTER_SECONDS", "analyze", "get_session", "init_app", "is_lock_contention",
           "make_engine", "migrate", "ping", "secure_files", "session_factory"]

MIGRATIONS = Path(__file__).parent / "migrations"
log = logging.getLogger(__name__)


def make_engine(url: str) -> Engine:
    """Create an engine; SQLite gets foreign keys on, WAL and a busy timeout.

    ``hide_parameters``: SQL parameters are patient data (MRNs, names, birth dates); without it
    every database error's message, and the SQL log when ``sqlalchemy.engine`` is at INFO, prints
    them."""
    if url.startswith("sqlite"):
        engine = create_engine(url, hide_parameters=True, connect_args={"timeout": 30, "check_same_thread": False})
        event.listen(engine, "connect", _sqlite_pragmas)
        # pysqlite's own transaction handling defers BEGIN; take it over so SAVEPOINTs work.
        event.listen(engine, "begin", lambda conn: conn.exec_driver_sql("BEGIN"))
        return engine
    return create_engine(url, hide_parameters=True, pool_pre_ping=True, pool_size=10, max_overflow=10)


def _sqlite_pragmas(dbapi_conn, _record) -> None:
    dbapi_conn.isolation_level = None
    cur = dbapi_conn.cursor()
    cur.execute("PRAGMA foreign_keys=ON")
    cur.execute("PRAGMA journal_mode=WAL")
    cur.execute("PRAGMA synchronous=NORMAL")
    cur.execute("PRAGMA busy_timeout=30000")
    cur.close()


def migrate(settings: Settings, revision: str = "head") -> None:
    """Create or upgrade the database schema to ``revision``."""
    if settings.database_url.startswith("sqlite"):
        settings.data_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        _create_private(_sqlite_path(settings.database_url))
    secure_files(settings)
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    cfg.set_main_option("sqlalchemy.url", settings.database_url.replace("%", "%%"))
    cfg.attributes["configure_logger"] = False
    command.upgrade(cfg, revision)


def _sqlite_path(url: str) -> Path | None:
    """The SQLite database file of ``url``; None for another database or an in-memory one."""
    from sqlalchemy.engine import make_url

    parsed = make_url(url)
    name = parsed.database or ""
    if not parsed.drivername.startswith("sqlite") or name in ("", ":memory:") or name.startswith("file:"):
        return None
    return Path(name)


def _create_private(path: Path | None) -> None:
    """Create the database file 0600 before SQLite does (it would use 0644 under the usual umask);
    its -wal and -shm files take the database file's mode."""
    if path is not None and not path.exists():
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT, 0o600))


def secure_files(settings: Settings) -> None:
    """Data folder 0700, SQLite database files 0600: they hold PHI and keys (security review, finding 12).

    Called by :func:`migrate` and at app start; a wider mode found is narrowed and logged.
    """
    if settings.data_dir.is_dir():
        _narrow(settings.data_dir, 0o700)
    path = _sqlite_path(settings.database_url)
    if path is not None:
        for file in (path, path.with_name(path.name + "-wal"), path.with_name(path.name + "-shm")):
            if file.exists():
                _narrow(file, 0o600)


def _narrow(path: Path, mode: int) -> None:
    current = stat.S_IMODE(path.stat().st_mode)
    if not current & ~mode:
        return
    try:
        os.chmod(path, mode)
    except OSError as exc:  # not ours (a mounted volume): say so, the service still runs
        log.warning("%s has mode %o, should be %o, and cannot be changed: %s", path, current, mode, exc.strerror)
        return
    log.warning("%s had mode %o; now %o", path, current, mode)


def init_app(app: Flask, settings: Settings) -> None:
    """Attach an engine and session factory to ``app`` and close sessions on teardown."""
    secure_files(settings)
    engine = make_engine(settings.database_url)
    app.extensions["db_engine"] = engine
    app.extensions["db_sessionmaker"] = session_factory(engine, settings)
    app.teardown_appcontext(_close_session)


def session_factory(engine: Engine, settings: Settings) -> sessionmaker[Session]:
    """Sessions that know the clinic's identity, which the FHIR mappings of every write need, and
    where to wake the sync workers after a write."""
    from functools import cache

    from service.keys import app_secret, secrets_cipher

    # the key file is read (or made) on first use: CLI commands that issue no token never touch it
    secret = cache(lambda: app_secret(settings))
    # likewise the Fernet keys of destination secrets: read when a secret is sealed or opened
    encryption = cache(lambda: secrets_cipher(settings))
    factory = sessionmaker(engine, expire_on_commit=False,
                           info={"base_uri": settings.base_uri, "clinic_name": settings.clinic_name,
                                 "security": settings.security,
                                 "broker_url": settings.broker_url, "sync_queue": settings.sync_queue,
                                 "secret_key": secret, "encryption": encryption})
    event.listen(factory, "after_begin", _lock_wait)
    return factory


#: what a request answered 503 for lock contention or a timeout is told to wait (Retry-After)
RETRY_AFTER_SECONDS = 5
#: how long workers and the CLI wait for a lock (an import can hold SQLite's write lock that long)
BACKGROUND_LOCK_WAIT_SECONDS = 30.0


def _lock_wait(session: Session, transaction: SessionTransaction, connection: Connection) -> None:
    """Each transaction waits for locks as long as its session may: ``session.info["lock_wait"]``
    seconds (web requests, KETAMINE_FHIR_LOCK_WAIT_SECONDS), else :data:`BACKGROUND_LOCK_WAIT_SECONDS`.
    A web request then answers 503 with Retry-After within seconds instead of hanging behind a
    long import (security review, finding 4). SQLite: the connection's busy timeout (set every
    time, connections are pooled); PostgreSQL: ``lock_timeout`` for this transaction only.

    SQLite, ``session.info["write_lock"]`` (write requests): take the write lock first. A deferred
    transaction that has read and then writes cannot wait for another writer (its snapshot would be
    stale): SQLite answers SQLITE_BUSY at once, whatever the busy timeout, and the background audit
    writer makes that an everyday race.
    """
    if transaction.nested:
        return
    seconds = session.info.get("lock_wait")
    if connection.dialect.name == "sqlite":
        connection.exec_driver_sql(f"PRAGMA busy_timeout={int((seconds or BACKGROUND_LOCK_WAIT_SECONDS) * 1000)}")
        if session.info.get("write_lock"):
            connection.exec_driver_sql("UPDATE fhir_resources SET version_id = version_id WHERE 0 = 1")
    elif seconds is not None:
        connection.exec_driver_sql(f"SET LOCAL lock_timeout = '{int(seconds * 1000)}ms'")


#: write requests that take no write lock up front: searches, and Bundles, which lock for their
#: writes only (service/fhir/bundles.py) so that no search runs under the lock
_READ_MOSTLY_ENDPOINTS = ("fhir.search_post", "fhir.transaction_or_batch")


def _writes(req: Any) -> bool:
    return req.method in ("POST", "PUT", "PATCH", "DELETE") and req.endpoint not in _READ_MOSTLY_ENDPOINTS


#: PostgreSQL SQLSTATEs of lock contention: lock_not_available (lock_timeout, NOWAIT), deadlock,
#: serialization failure, query_canceled (statement_timeout)
_PG_CONTENTION = {"55P03", "40P01", "40001", "57014"}


def is_lock_contention(exc: BaseException) -> bool:
    """Whether a database error means "busy, try again": SQLite's database/table is locked (after
    the busy timeout), PostgreSQL's lock, deadlock and serialization failures. The web layer answers
    these 503 with Retry-After (service/errors.py, service/fhir/views.py), never 500."""
    from sqlalchemy.exc import DBAPIError

    if not isinstance(exc, DBAPIError):
        return False
    orig = exc.orig
    if getattr(orig, "sqlstate", None) in _PG_CONTENTION:
        return True
    # sqlite3: SQLITE_BUSY (5) and SQLITE_LOCKED (6), extended codes included
    code = getattr(orig, "sqlite_errorcode", None)
    return isinstance(code, int) and code & 0xFF in (5, 6)


def get_session() -> Session:
    """The request's database session, created on first use; it waits for locks at most
    ``KETAMINE_FHIR_LOCK_WAIT_SECONDS`` (see :func:`_lock_wait`)."""
    if "db_session" not in g:
        wait = current_app.config["SETTINGS"].lock_wait_seconds
        g.db_session = current_app.extensions["db_sessionmaker"](
            info={"lock_wait": wait, "write_lock": has_request_context() and _writes(request)})
    return g.db_session


def _close_session(_exc: BaseException | None) -> None:
    session = g.pop("db_session", None)
    if session is not None:
        session.close()


#: an import of at least this many lines refreshes the query planner's statistics afterwards
ANALYZE_AFTER_LINES = 500


def analyze(session: Session) -> None:
    """Refresh the planner's statistics. Without them, right after a large import, both SQLite and
    PostgreSQL (until autovacuum runs, if it is on) plan FHIR searches as scans of every indexed
    value: seconds per search at 300 patients instead of milliseconds (bench/fhir_api.py)."""
    session.execute(text("ANALYZE"))
    session.commit()


def ping(engine: Engine) -> None:
    """Raise if the database cannot answer a trivial query."""
    with engine.connect() as conn:
        conn.execute(text("SELECT 1"))
