"""How large a request body may be, decided once per request before anything reads it.

One record's size (``KETAMINE_FHIR_MAX_BODY_BYTES``) everywhere, but ``/import`` (a whole clinic)
and FHIR Bundles (:func:`service.fhir.bundles.max_bundle_bytes`). With a ``Content-Length`` a body
over the limit is refused (413) before a byte is read. A chunked body has no length: Werkzeug would
silently cut it at the limit (a truncated import would look like a smaller one), so its stream is
wrapped instead, and reading past the limit is the same 413 (security review, finding 6).
"""

from __future__ import annotations

from typing import Any

from flask import Flask, request
from werkzeug.exceptions import RequestEntityTooLarge

from service.config import Settings

__all__ = ["CappedStream", "body_limit", "init_app"]


def body_limit(endpoint: str | None, settings: Settings) -> int:
    """The largest body ``endpoint`` takes."""
    if endpoint == "clinic.import_ndjson":
        return settings.max_import_bytes
    if endpoint == "fhir.transaction_or_batch":
        from service.fhir.bundles import max_bundle_bytes

        return max_bundle_bytes(settings.max_body_bytes)
    return settings.max_body_bytes


class CappedStream:
    """A WSGI input that raises 413 once more than ``limit`` bytes have been read from it."""

    def __init__(self, stream: Any, limit: int):
        self.stream, self.limit, self.seen = stream, limit, 0

    def _count(self, data: bytes) -> bytes:
        self.seen += len(data)
        if self.seen > self.limit:
            raise RequestEntityTooLarge()
        return data

    def read(self, size: int = -1) -> bytes:
        # never ask for more than one byte past the limit: an endless body is not buffered whole
        room = self.limit + 1 - self.seen
        return self._count(self.stream.read(room if size is None or size < 0 else min(size, room)))

    def readline(self, size: int = -1) -> bytes:
        room = self.limit + 1 - self.seen
        return self._count(self.stream.readline(room if size is None or size < 0 else min(size, room)))

    def __iter__(self):
        return iter(self.readline, b"")


def init_app(app: Flask, settings: Settings) -> None:
    @app.before_request
    def _limit_body() -> None:
        limit = body_limit(request.endpoint, settings)
        if request.content_length is None and "wsgi.input" in request.environ:
            request.environ["wsgi.input"] = CappedStream(request.environ["wsgi.input"], limit)
            # the capped stream decides; Werkzeug's own cap would truncate silently at the limit
            # (None falls back to the app's MAX_CONTENT_LENGTH)
            request.max_content_length = limit + 1
        else:
            request.max_content_length = limit
