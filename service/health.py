"""Open probes for orchestrators: liveness and readiness (database reachable)."""

from __future__ import annotations

from flask import Blueprint, current_app, jsonify
from sqlalchemy.exc import SQLAlchemyError

from service.db import ping

__all__ = ["bp"]

bp = Blueprint("health", __name__)


@bp.get("/healthz")
def healthz():
    return jsonify({"status": "ok"})


@bp.get("/readyz")
def readyz():
    try:
        ping(current_app.extensions["db_engine"])
    except SQLAlchemyError as exc:
        current_app.logger.warning("readiness: database unreachable (%s)", exc.__class__.__name__)
        return jsonify({"status": "unavailable", "database": "unreachable"}), 503
    from service.audit import dropped

    # audit events lost since start (queue full or store failing): the service fails open, operators alert on it
    return jsonify({"status": "ok", "database": "ok", "audit_dropped": dropped(current_app)})
