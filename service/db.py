"""Database engine and session lifecycle, and the schema migrations (Alembic)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from alembic import command
from alembic.config import Config
from flask import Flask, current_app, g
from sqlalchemy import Engine, create_engine, event, text
from sqlalchemy.orm import Session, sessionmaker

if TYPE_CHECKING:
    from service.config import Settings

__all__ = ["ANALYZE_AFTER_LINES", "analyze", "get_session", "init_app", "make_engine", "migrate", "ping",
           "session_factory"]

MIGRATIONS = Path(__file__).parent / "migrations"


def make_engine(url: str) -> Engine:
    """Create an engine; SQLite gets foreign keys on, WAL and a busy timeout."""
    if url.startswith("sqlite"):
        engine = create_engine(url, connect_args={"timeout": 30, "check_same_thread": False})
        event.listen(engine, "connect", _sqlite_pragmas)
        # pysqlite's own transaction handling defers BEGIN; take it over so SAVEPOINTs work.
        event.listen(engine, "begin", lambda conn: conn.exec_driver_sql("BEGIN"))
        return engine
    return create_engine(url, pool_pre_ping=True, pool_size=10, max_overflow=10)


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
        settings.data_dir.mkdir(parents=True, exist_ok=True)
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    cfg.set_main_option("sqlalchemy.url", settings.database_url.replace("%", "%%"))
    cfg.attributes["configure_logger"] = False
    command.upgrade(cfg, revision)


def init_app(app: Flask, settings: Settings) -> None:
    """Attach an engine and session factory to ``app`` and close sessions on teardown."""
    engine = make_engine(settings.database_url)
    app.extensions["db_engine"] = engine
    app.extensions["db_sessionmaker"] = session_factory(engine, settings)
    app.teardown_appcontext(_close_session)


def session_factory(engine: Engine, settings: Settings) -> sessionmaker[Session]:
    """Sessions that know the clinic's identity, which the FHIR mappings of every write need, and
    where to wake the sync workers after a write."""
    return sessionmaker(engine, expire_on_commit=False,
                        info={"base_uri": settings.base_uri, "clinic_name": settings.clinic_name,
                              "broker_url": settings.broker_url, "sync_queue": settings.sync_queue})


def get_session() -> Session:
    """The request's database session, created on first use."""
    if "db_session" not in g:
        g.db_session = current_app.extensions["db_sessionmaker"]()
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
