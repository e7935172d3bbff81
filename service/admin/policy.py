"""Where sync destinations may point: the operator's host allow-list, https, loopback http on request.

A destination receives PHI and, with SMART auth, its ``token_url`` receives assertions signed with
our key: both URLs go through :func:`url_errors` before a destination is added or re-pointed
(security review, finding 2). The policy lives here, in the layer the admin API and the CLI
share, not in ``service.sync.destinations``, so the engine's tests can still make destinations of
any URL directly.

Settings: ``destination_hosts`` (``KETAMINE_FHIR_DESTINATION_HOSTS``: ``host``, ``*.suffix``,
either with an optional ``:port``; without a port any port of that host) and
``allow_http_loopback`` (``KETAMINE_FHIR_ALLOW_HTTP_LOOPBACK``).
"""

from __future__ import annotations

import ipaddress
from urllib.parse import SplitResult, urlsplit

from service.config import Settings

__all__ = ["is_loopback", "url_errors"]

_DEFAULT_PORTS = {"http": 80, "https": 443}


def url_errors(url: str, settings: Settings) -> list[str]:
    """Why ``url`` may not receive our data (empty: it may).

    A URL that is not http(s) with a host is left to the schema, which names that problem.
    """
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        return []
    if parts.scheme not in _DEFAULT_PORTS or not parts.hostname:
        return []
    errors = []
    if parts.username is not None or parts.password is not None:
        errors.append("the URL takes no user name or password: give credentials as auth")
    if parts.scheme == "http" and not (settings.allow_http_loopback and is_loopback(parts.hostname)):
        errors.append("must be https (http only to a loopback address, with KETAMINE_FHIR_ALLOW_HTTP_LOOPBACK=true)")
    errors.extend(_host_errors(parts, port or _DEFAULT_PORTS[parts.scheme], settings.destination_hosts))
    return errors


def _host_errors(parts: SplitResult, port: int, allowed: tuple[str, ...]) -> list[str]:
    if not allowed:
        return ["no destination host is allowed: the operator lists them in KETAMINE_FHIR_DESTINATION_HOSTS"]
    host = (parts.hostname or "").rstrip(".")
    if any(_matches(host, port, entry) for entry in allowed):
        return []
    return [f"host {host}:{port} is not in KETAMINE_FHIR_DESTINATION_HOSTS"]


def _matches(host: str, port: int, entry: str) -> bool:
    pattern, want_port = _split_entry(entry)
    if want_port is not None and want_port != port:
        return False
    if pattern.startswith("*."):  # any name under the suffix, not the suffix itself
        return host.endswith(pattern[1:]) and len(host) > len(pattern) - 1
    return host == pattern


def _split_entry(entry: str) -> tuple[str, int | None]:
    """``host``, ``host:port``, ``[v6]``, ``[v6]:port`` or a bare IPv6 address."""
    if entry.startswith("["):
        address, _, rest = entry[1:].partition("]")
        return address, int(rest[1:]) if rest.startswith(":") and rest[1:].isdigit() else None
    name, colon, port = entry.rpartition(":")
    if colon and port.isdigit() and ":" not in name:
        return name, int(port)
    return entry, None


def is_loopback(host: str) -> bool:
    """127.0.0.0/8, ::1 or ``localhost`` (no name lookup: the name is what the URL says)."""
    if host.rstrip(".").lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
