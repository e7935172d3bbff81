"""Absolute URLs this service hands out, built from the configured public URL.

Never from the request's ``Host`` header: a client sending ``Host: evil.example`` must not make
discovery, the CapabilityStatement, ``Location`` headers or paging links point elsewhere, nor get
a SMART token for an assertion whose ``aud`` names another host (security review, finding 7).
"""

from __future__ import annotations

from flask import current_app, request

__all__ = ["external", "public_url", "request_url"]


def public_url() -> str:
    """``KETAMINE_FHIR_PUBLIC_URL`` without a trailing slash (the app's settings)."""
    return current_app.config["SETTINGS"].public_url


def external(path: str) -> str:
    """The absolute URL of ``path`` (an absolute path such as ``/fhir/Patient``) on this service."""
    return public_url() + path


def request_url(query: str | None = None) -> str:
    """This request's own URL on the public base (path, and ``query`` or the request's query string)."""
    query = request.query_string.decode("latin-1") if query is None else query
    return external(request.path) + (f"?{query}" if query else "")
