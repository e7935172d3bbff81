"""ketamine-fhir: the Flask application factory."""

from __future__ import annotations

import logging
import time
from datetime import UTC, datetime
from typing import Any

from flask import Flask, g, jsonify, request

from service import body_limits, db, errors, headers, logs, ratelimit
from service.config import Settings

__all__ = ["create_app"]

log = logging.getLogger("ketamine_fhir.access")


def create_app(settings: Settings | None = None, **config: Any) -> Flask:
    """Build the WSGI app. Nothing global: engine and sessions hang off the app."""
    settings = settings or Settings.from_env()
    app = _App(__name__)
    # every body is one record's size unless its endpoint says otherwise (/import, Bundles)
    app.config.update(SETTINGS=settings, MAX_CONTENT_LENGTH=settings.max_body_bytes,
                      STARTED_AT=datetime.now(UTC), **config)
    app.json.sort_keys = False
    logs.configure(settings.log_level)

    db.init_app(app, settings)
    errors.init_app(app)
    headers.init_app(app, settings)
    body_limits.init_app(app, settings)
    ratelimit.init_app(app, settings)  # after body_limits: the token endpoint's limit reads its form

    from service import audit, health
    from service.admin.views import bp as admin_bp
    from service.clinic.openapi import build_spec
    from service.clinic.views import bp as clinic_bp
    from service.fhir import audit_views  # noqa: F401  (its /fhir/AuditEvent routes join the fhir blueprint)
    from service.fhir import views as fhir_views
    from service.fhir.smart import smart_bp

    audit.init_app(app, app.extensions["db_sessionmaker"])  # the audit trail of every patient-data access
    app.register_blueprint(health.bp)
    app.register_blueprint(clinic_bp)
    app.register_blueprint(fhir_views.bp)
    app.register_blueprint(smart_bp)
    app.register_blueprint(admin_bp)
    fhir_views.register_errors(app)
    spec = build_spec()
    app.add_url_rule("/api/v1/openapi.json", "openapi", lambda: jsonify(spec))
    _access_log(app)
    return app


class _App(Flask):
    def log_exception(self, exc_info) -> None:
        # Flask's own line names request.path, and paths carry record ids: name the route pattern
        rule = request.url_rule.rule if request.url_rule else "(unmatched)"
        self.logger.error("Exception on %s [%s]", rule, request.method, exc_info=exc_info)


def _access_log(app: Flask) -> None:
    """One line per request: method, route pattern, status, time. No ids, bodies or query strings,
    so no patient data reaches the logs."""

    @app.before_request
    def _start() -> None:
        g.started = time.perf_counter()

    @app.after_request
    def _log(response):
        rule = request.url_rule.rule if request.url_rule else "(unmatched)"
        elapsed = (time.perf_counter() - g.get("started", time.perf_counter())) * 1000
        log.info("%s %s %s %.1fms", request.method, rule, response.status_code, elapsed)
        return response
