"""HTTP to one destination's FHIR server: a pooled ``requests.Session`` per destination, explicit
connect/read timeouts, the destination's auth, and its requests-per-second limit.

No retries here (``max_retries=0``): retrying is the engine's decision, recorded in the outbox.
"""

from __future__ import annotations

import threading
import time
from typing import Any

import requests
from cryptography.fernet import InvalidToken
from requests.adapters import HTTPAdapter
from sqlalchemy.orm import object_session

from service import models
from service.sync.auth import auth_for
from service.sync.destinations import open_auth

__all__ = ["FhirClient", "client_for"]

FHIR_JSON = "application/fhir+json"


class FhirClient:
    """Requests to one FHIR base URL; thread-safe (a lock paces requests for the rate limit)."""

    def __init__(self, base_url: str, *, auth_kind: str = "none", auth_config: dict[str, Any] | None = None,
                 timeout: tuple[float, float] = (5.0, 30.0), rate_limit: float | None = None,
                 session: requests.Session | None = None):
        self.base_url = base_url.rstrip("/")
        self.timeout = timeout
        self.session = session or requests.Session()
        adapter = HTTPAdapter(pool_connections=1, pool_maxsize=8, max_retries=0)
        self.session.mount("http://", adapter)
        self.session.mount("https://", adapter)
        self.session.headers.update({"Accept": FHIR_JSON, "User-Agent": "ketamine-fhir-sync"})
        self.session.auth = auth_for(auth_kind, auth_config or {}, self.session)
        self._interval = 1.0 / rate_limit if rate_limit else 0.0
        self._next = 0.0
        self._lock = threading.Lock()

    def _pace(self) -> None:
        if not self._interval:
            return
        with self._lock:
            wait = self._next - time.monotonic()
            if wait > 0:
                time.sleep(wait)
            self._next = max(self._next, time.monotonic()) + self._interval

    def request(self, method: str, path: str, body: Any = None, params: dict[str, str] | None = None,
                headers: dict[str, str] | None = None) -> requests.Response:
        """One request to ``<base>/<path>`` (or an absolute URL, for paging links)."""
        self._pace()
        url = path if path.startswith(("http://", "https://")) else f"{self.base_url}/{path.lstrip('/')}"
        extra = {"Content-Type": FHIR_JSON} if body is not None else {}
        # no redirects: the operator allowed this host, not wherever it points (a 307/308 would
        # resend the PHI body there); a 3xx is an answer like any other (a dead letter, logged)
        return self.session.request(method, url, json=body, params=params, headers={**extra, **(headers or {})},
                                    timeout=self.timeout, allow_redirects=False)

    def close(self) -> None:
        self.session.close()


_CLIENTS: dict[str, tuple[Any, FhirClient]] = {}
_CLIENTS_LOCK = threading.Lock()


def client_for(dest: models.Destination) -> FhirClient:
    """The destination's client, kept across deliveries (its connection pool and SMART token), and
    replaced when the destination's settings change."""
    stamp = (dest.updated_at, dest.base_url, dest.auth_kind)
    with _CLIENTS_LOCK:
        known = _CLIENTS.get(dest.id)
        if known is not None and known[0] == stamp:
            return known[1]
        if known is not None:
            known[1].close()
        # secrets are decrypted here, where requests are built, and live only in the client's auth
        client = FhirClient(dest.base_url, auth_kind=dest.auth_kind, auth_config=_opened(dest),
                            timeout=(dest.connect_timeout, dest.read_timeout), rate_limit=dest.rate_limit)
        _CLIENTS[dest.id] = (stamp, client)
        return client


def _opened(dest: models.Destination) -> dict[str, Any]:
    """The destination's auth settings with secrets decrypted by its session's cipher."""
    db = object_session(dest)
    cipher = db.info["encryption"] if db is not None and "encryption" in db.info else _no_cipher
    try:
        return open_auth(dest.auth_config or {}, cipher)
    except InvalidToken:  # the worker logs this and retries later; say which setting to look at
        raise RuntimeError(f"destination {dest.id}: no configured encryption key opens its secrets "
                           "(KETAMINE_FHIR_ENCRYPTION_KEYS or <data>/encryption.key)") from None


def _no_cipher() -> Any:
    raise RuntimeError("an encrypted destination secret needs a session from service.db.session_factory")
