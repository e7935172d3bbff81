"""Headers every answer carries (security review, finding 15).

* ``Cache-Control: no-store``: answers hold patient data, and no proxy or browser may keep them
  (an answer that chose its own caching, such as a 304, keeps it);
* ``X-Content-Type-Options: nosniff``: JSON is never sniffed into something a browser runs;
* ``Strict-Transport-Security`` when the public URL is https (the service sits behind TLS);
* no ``Server`` banner: the app sets none, and service/gunicorn_worker.py drops gunicorn's.
"""

from __future__ import annotations

from flask import Flask, Response

from service.config import Settings

__all__ = ["HSTS", "init_app"]

HSTS = "max-age=31536000; includeSubDomains"


def init_app(app: Flask, settings: Settings) -> None:
    """Add the headers to every response of ``app``."""
    behind_tls = settings.public_url.startswith("https://")

    @app.after_request
    def _security_headers(response: Response) -> Response:
        response.headers.setdefault("Cache-Control", "no-store")
        response.headers["X-Content-Type-Options"] = "nosniff"
        if behind_tls:
            response.headers["Strict-Transport-Security"] = HSTS
        response.headers.pop("Server", None)
        return response
