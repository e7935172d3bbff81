"""Settings read from the environment (12-factor); every variable is listed in README."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

__all__ = ["Settings"]


def _int(env: dict[str, str], name: str, default: int) -> int:
    raw = env.get(name)
    if raw is None or raw == "":
        return default
    try:
        return int(raw)
    except ValueError as exc:
        raise ValueError(f"{name} must be an integer, got {raw!r}") from exc


def _float(env: dict[str, str], name: str, default: float) -> float:
    raw = env.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = float(raw)
    except ValueError as exc:
        raise ValueError(f"{name} must be a number, got {raw!r}") from exc
    if not value > 0:
        raise ValueError(f"{name} must be positive, got {raw!r}")
    return value


@dataclass(frozen=True)
class Settings:
    """Runtime configuration of one service instance."""

    data_dir: Path
    database_url: str
    base_uri: str
    clinic_name: str = "Ketamine clinic"
    max_body_bytes: int = 1 * 1024 * 1024
    max_import_bytes: int = 64 * 1024 * 1024
    page_size: int = 50
    max_page_size: int = 500
    log_level: str = "INFO"
    #: sync workers: "embedded" (a thread in each `serve` process), "off" (separate `worker` processes)
    worker: str = "embedded"
    #: Celery broker (redis://... or amqp://...); empty: no Celery, workers poll the database
    broker_url: str = ""
    sync_queue: str = "ketamine-fhir"
    sync_poll_seconds: float = 1.0
    sync_sweep_seconds: float = 300.0
    sync_pull_seconds: float = 300.0
    sync_lease_seconds: float = 60.0
    extra: dict[str, object] = field(default_factory=dict)

    @classmethod
    def from_env(cls, env: dict[str, str] | None = None) -> Settings:
        """Build settings from ``os.environ`` (or the mapping given)."""
        env = dict(os.environ if env is None else env)
        data_dir = Path(env.get("KETAMINE_FHIR_DATA") or "data").expanduser().resolve()
        database_url = env.get("DATABASE_URL") or f"sqlite:///{data_dir / 'ketamine-fhir.sqlite3'}"
        return cls(
            data_dir=data_dir,
            database_url=normalise_database_url(database_url),
            base_uri=(env.get("KETAMINE_FHIR_BASE_URI") or "https://clinic.example.org/fhir").rstrip("/"),
            clinic_name=env.get("KETAMINE_FHIR_CLINIC_NAME") or cls.clinic_name,
            max_body_bytes=_int(env, "KETAMINE_FHIR_MAX_BODY_BYTES", cls.max_body_bytes),
            max_import_bytes=_int(env, "KETAMINE_FHIR_MAX_IMPORT_BYTES", cls.max_import_bytes),
            page_size=_int(env, "KETAMINE_FHIR_PAGE_SIZE", cls.page_size),
            max_page_size=_int(env, "KETAMINE_FHIR_MAX_PAGE_SIZE", cls.max_page_size),
            log_level=env.get("KETAMINE_FHIR_LOG_LEVEL", "INFO").upper(),
            worker=_choice(env, "KETAMINE_FHIR_WORKER", ("embedded", "off"), cls.worker),
            broker_url=env.get("KETAMINE_FHIR_BROKER_URL", ""),
            sync_queue=env.get("KETAMINE_FHIR_SYNC_QUEUE") or cls.sync_queue,
            sync_poll_seconds=_float(env, "KETAMINE_FHIR_SYNC_POLL_SECONDS", cls.sync_poll_seconds),
            sync_sweep_seconds=_float(env, "KETAMINE_FHIR_SYNC_SWEEP_SECONDS", cls.sync_sweep_seconds),
            sync_pull_seconds=_float(env, "KETAMINE_FHIR_SYNC_PULL_SECONDS", cls.sync_pull_seconds),
            sync_lease_seconds=_float(env, "KETAMINE_FHIR_SYNC_LEASE_SECONDS", cls.sync_lease_seconds),
        )


def _choice(env: dict[str, str], name: str, allowed: tuple[str, ...], default: str) -> str:
    value = (env.get(name) or default).lower()
    if value not in allowed:
        raise ValueError(f"{name} must be one of {', '.join(allowed)}, got {value!r}")
    return value


def normalise_database_url(url: str) -> str:
    """Make plain ``postgres://``/``postgresql://`` URLs use psycopg 3, the driver we ship."""
    for prefix in ("postgres://", "postgresql://"):
        if url.startswith(prefix):
            return "postgresql+psycopg://" + url[len(prefix):]
    return url
