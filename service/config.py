"""Settings read from the environment (12-factor); every variable is listed in README."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

from mappings.security_labels import SENSITIVITY_CHOICES, SecurityPolicy

MIN_SECRET_CHARS = 32

__all__ = ["DEFAULT_BASE_URI", "Settings"]


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


#: the example base URI (docs only): ``serve`` warns while it is in use (service/base_uri.py)
DEFAULT_BASE_URI = "https://clinic.example.org/fhir"


@dataclass(frozen=True)
class Settings:
    """Runtime configuration of one service instance."""

    data_dir: Path
    database_url: str
    base_uri: str
    clinic_name: str = "Ketamine clinic"
    max_body_bytes: int = 1 * 1024 * 1024
    max_import_bytes: int = 64 * 1024 * 1024
    #: longest ``/import`` line (one record; from the environment it defaults to ``max_body_bytes``):
    #: a longer one is rejected unread
    max_import_line_bytes: int = 1 * 1024 * 1024
    #: rejected ``/import`` lines listed in the report (all are counted)
    max_import_errors: int = 1000
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
    #: this service's public URL (scheme, host, port, path prefix): every absolute URL it hands out
    #: (Location, links, the SMART token endpoint and the ``aud`` it accepts) starts with it, never
    #: with the request's Host header
    public_url: str = "http://127.0.0.1:8000"
    #: HMAC key of the tokens the service issues; empty: generated into ``<data>/secret.key``
    secret_key: str = ""
    #: hosts sync destinations (and their SMART token URLs) may point at: names, ``*.suffix``,
    #: optional ``:port``; empty: no destination can be added or re-pointed
    destination_hosts: tuple[str, ...] = ()
    #: allow ``http://`` destinations on loopback addresses only (tests, a local relay); else https only
    allow_http_loopback: bool = False
    #: Fernet keys for secrets at rest (first encrypts, all decrypt); empty: ``<data>/encryption.key``
    encryption_keys: tuple[str, ...] = ()
    #: seconds a client has to send a request's head, then the first MiB of its body (slow clients)
    header_timeout: float = 10.0
    body_timeout: float = 30.0
    #: largest FHIR answer (a search page, a history page, a batch/transaction response): more is 413
    max_response_bytes: int = 32 * 1024 * 1024
    #: how long a web request waits for a database lock before answering 503 with Retry-After
    lock_wait_seconds: float = 5.0
    #: rate limits (service/ratelimit.py), in ``limits`` notation, several joined by ";": per client
    #: (the bearer token's name or SMART client_id), per IP (requests without a valid token), and at
    #: ``POST /auth/token`` per IP and per assertion ``iss``; ``rate_limits`` False turns them all off
    rate_limits: bool = True
    rate_limit_client: str = "1200/minute;50/second"
    rate_limit_ip: str = "600/minute;20/second"
    rate_limit_token: str = "30/minute"
    rate_limit_token_client: str = "10/minute"
    #: where the counters live: ``memory://`` (each process its own) or ``redis://host:port/db`` (shared)
    rate_limit_storage: str = "memory://"
    #: reverse proxies in front of the service that append to X-Forwarded-For; 0: trust no header
    trusted_proxies: int = 0
    #: ``meta.security`` labels on patient resources (mappings/security_labels.py, reference 12.2)
    security: SecurityPolicy = field(default_factory=SecurityPolicy)
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
            base_uri=(env.get("KETAMINE_FHIR_BASE_URI") or DEFAULT_BASE_URI).rstrip("/"),
            clinic_name=env.get("KETAMINE_FHIR_CLINIC_NAME") or cls.clinic_name,
            max_body_bytes=_int(env, "KETAMINE_FHIR_MAX_BODY_BYTES", cls.max_body_bytes),
            max_import_bytes=_int(env, "KETAMINE_FHIR_MAX_IMPORT_BYTES", cls.max_import_bytes),
            max_import_line_bytes=_int(env, "KETAMINE_FHIR_MAX_IMPORT_LINE_BYTES",
                                       _int(env, "KETAMINE_FHIR_MAX_BODY_BYTES", cls.max_body_bytes)),
            max_import_errors=_int(env, "KETAMINE_FHIR_MAX_IMPORT_ERRORS", cls.max_import_errors),
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
            public_url=_public_url(env.get("KETAMINE_FHIR_PUBLIC_URL") or cls.public_url),
            secret_key=_secret(env.get("KETAMINE_FHIR_SECRET_KEY", "")),
            header_timeout=_float(env, "KETAMINE_FHIR_HEADER_TIMEOUT", cls.header_timeout),
            body_timeout=_float(env, "KETAMINE_FHIR_BODY_TIMEOUT", cls.body_timeout),
            max_response_bytes=_int(env, "KETAMINE_FHIR_MAX_RESPONSE_BYTES", cls.max_response_bytes),
            lock_wait_seconds=_float(env, "KETAMINE_FHIR_LOCK_WAIT_SECONDS", cls.lock_wait_seconds),
            destination_hosts=_hosts(env.get("KETAMINE_FHIR_DESTINATION_HOSTS", "")),
            allow_http_loopback=_flag(env, "KETAMINE_FHIR_ALLOW_HTTP_LOOPBACK"),
            encryption_keys=_fernet_keys(env.get("KETAMINE_FHIR_ENCRYPTION_KEYS", "")),
            security=_security_policy(env),
            **_rate_limit_settings(env),
        )


def _rate_limit_settings(env: dict[str, str]) -> dict[str, object]:
    """The rate-limit fields of :class:`Settings`, each limit string checked now rather than at the first request."""
    proxies = _int(env, "KETAMINE_FHIR_TRUSTED_PROXIES", Settings.trusted_proxies)
    if proxies < 0:
        raise ValueError(f"KETAMINE_FHIR_TRUSTED_PROXIES must be 0 or more, got {proxies}")
    return {
        "rate_limits": _choice(env, "KETAMINE_FHIR_RATE_LIMITS", ("on", "off"), "on") == "on",
        "rate_limit_client": _limit(env, "KETAMINE_FHIR_RATE_LIMIT_CLIENT", Settings.rate_limit_client),
        "rate_limit_ip": _limit(env, "KETAMINE_FHIR_RATE_LIMIT_IP", Settings.rate_limit_ip),
        "rate_limit_token": _limit(env, "KETAMINE_FHIR_RATE_LIMIT_TOKEN", Settings.rate_limit_token),
        "rate_limit_token_client": _limit(env, "KETAMINE_FHIR_RATE_LIMIT_TOKEN_CLIENT",
                                          Settings.rate_limit_token_client),
        "rate_limit_storage": env.get("KETAMINE_FHIR_RATE_LIMIT_STORAGE") or Settings.rate_limit_storage,
        "trusted_proxies": proxies,
    }


def _security_policy(env: dict[str, str]) -> SecurityPolicy:
    """The clinic's labelling policy: which labels is a privacy-officer decision (reference 12.2)."""
    confidentiality = (env.get("KETAMINE_FHIR_CONFIDENTIALITY") or "R").strip().upper()
    if confidentiality not in ("N", "R", "V"):
        raise ValueError(f"KETAMINE_FHIR_CONFIDENTIALITY must be N, R or V, got {confidentiality!r}")
    sensitivity = (env.get("KETAMINE_FHIR_SENSITIVITY") or "PSY").strip()
    sensitivity = "none" if sensitivity.lower() == "none" else sensitivity.upper()
    if sensitivity not in SENSITIVITY_CHOICES:
        raise ValueError(f"KETAMINE_FHIR_SENSITIVITY must be one of {', '.join(SENSITIVITY_CHOICES)}, "
                         f"got {sensitivity!r}")
    # on unless switched off: a Part 2 label too many is safer than one too few
    part2 = _flag({"KETAMINE_FHIR_PART2": env.get("KETAMINE_FHIR_PART2") or "true"}, "KETAMINE_FHIR_PART2")
    return SecurityPolicy(confidentiality, sensitivity, part2)


def _limit(env: dict[str, str], name: str, default: str) -> str:
    from limits import parse_many

    value = (env.get(name) or default).strip()
    try:
        parse_many(value)
    except ValueError:
        raise ValueError(f"{name} must be rate limits such as '600/minute;20/second', got {value!r}") from None
    return value


def _public_url(value: str) -> str:
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.netloc or parts.query or parts.fragment:
        raise ValueError(f"KETAMINE_FHIR_PUBLIC_URL must be an http(s) URL without query, got {value!r}")
    return value.rstrip("/")


def _secret(value: str) -> str:
    if value and len(value) < MIN_SECRET_CHARS:
        raise ValueError(f"KETAMINE_FHIR_SECRET_KEY must be at least {MIN_SECRET_CHARS} characters")
    return value


def _hosts(value: str) -> tuple[str, ...]:
    hosts = tuple(h.strip().lower().rstrip(".") for h in value.split(",") if h.strip())
    if "*" in hosts:  # an allow-list that allows everything is the exfiltration it exists to stop
        raise ValueError("KETAMINE_FHIR_DESTINATION_HOSTS lists hosts or *.suffix patterns; '*' alone is not allowed")
    return hosts


def _flag(env: dict[str, str], name: str) -> bool:
    value = (env.get(name) or "false").strip().lower()
    if value not in ("true", "false", "1", "0", "yes", "no"):
        raise ValueError(f"{name} must be true or false, got {value!r}")
    return value in ("true", "1", "yes")


def _fernet_keys(value: str) -> tuple[str, ...]:
    from cryptography.fernet import Fernet

    keys = tuple(k.strip() for k in value.split(",") if k.strip())
    for position, key in enumerate(keys, 1):
        try:
            Fernet(key)
        except ValueError:  # never echo the key: it is a secret
            raise ValueError(f"KETAMINE_FHIR_ENCRYPTION_KEYS: key {position} is not a Fernet key "
                             "(32 url-safe base64-encoded bytes)") from None
    return keys


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
