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
        )


def normalise_database_url(url: str) -> str:
    """Make plain ``postgres://``/``postgresql://`` URLs use psycopg 3, the driver we ship."""
    for prefix in ("postgres://", "postgresql://"):
        if url.startswith(prefix):
            return "postgresql+psycopg://" + url[len(prefix):]
    return url
