"""HTTP to one destination's FHIR server: a pooled ``requests.Session`` per destination, explicit
connect/read timeouts, the destination's auth, and its requests-per-second limit.

No retries here (``max_retries=0``): retrying is the engine's decision, recorded in the outbox.
"""

from __future__ import annotations

import threading
import time
from typing import Any

import requests
from requests.adapters import HTTPAdapter

from service import models
from service.sync.auth import auth_for

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
        return self.session.request(method, url, json=body, params=params, headers={**extra, **(headers or {})},
                                    timeout=self.timeout)

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
        client = FhirClient(dest.base_url, auth_kind=dest.auth_kind, auth_config=dict(dest.auth_config or {}),
                            timeout=(dest.connect_timeout, dest.read_timeout), rate_limit=dest.rate_limit)
        _CLIENTS[dest.id] = (stamp, client)
        return client
