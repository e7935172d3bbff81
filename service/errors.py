"""The service's exceptions and the one place that turns them into HTTP answers.

Views and storage raise these; ``init_app`` registers handlers that answer the clinic API's
error shape ``{"message": ..., "errors": {"field.path": ["message", ...]}}``. Library
exceptions (marshmallow, Werkzeug) are mapped here, at the boundary, never deeper.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from flask import Flask, jsonify
from sqlalchemy.exc import DBAPIError
from werkzeug.exceptions import HTTPException

__all__ = [
    "BadRequest",
    "Conflict",
    "Forbidden",
    "NotFound",
    "ServiceError",
    "Unauthorized",
    "UnprocessableEntity",
    "flatten_errors",
    "init_app",
]

REQUEST = "_request"  # the error key for problems with the request as a whole


class ServiceError(Exception):
    """Base class: an HTTP status, a message and field-level errors."""

    status = 500
    default_message = "internal error"

    def __init__(self, message: str | None = None, errors: Mapping[str, list[str]] | None = None):
        self.message = message or self.default_message
        self.errors = dict(errors) if errors else {REQUEST: [self.message]}
        super().__init__(self.message)

    def body(self) -> dict[str, Any]:
        return {"message": self.message, "errors": self.errors}


class BadRequest(ServiceError):
    status = 400
    default_message = "the request body is not valid JSON"


class Unauthorized(ServiceError):
    status = 401
    default_message = "a valid bearer token is required"


class Forbidden(ServiceError):
    status = 403
    default_message = "the token lacks the scope this request needs"


class NotFound(ServiceError):
    status = 404
    default_message = "no such record"


class Conflict(ServiceError):
    status = 409
    default_message = "the request conflicts with stored records"


class UnprocessableEntity(ServiceError):
    status = 422
    default_message = "the record failed validation"


def flatten_errors(messages: Any, prefix: str = "") -> dict[str, list[str]]:
    """Turn marshmallow's nested error dict into ``{"a.b.0.c": [msg, ...]}``."""
    flat: dict[str, list[str]] = {}
    if isinstance(messages, Mapping):
        for key, value in messages.items():
            path = f"{prefix}.{key}" if prefix else str(key)
            if key == "_schema":
                path = prefix or REQUEST
            for sub_key, sub_msgs in flatten_errors(value, path).items():
                flat.setdefault(sub_key, []).extend(sub_msgs)
    elif isinstance(messages, list) and all(isinstance(m, str) for m in messages):
        flat[prefix or REQUEST] = list(messages)
    elif isinstance(messages, list):
        for item in messages:
            for sub_key, sub_msgs in flatten_errors(item, prefix).items():
                flat.setdefault(sub_key, []).extend(sub_msgs)
    else:
        flat[prefix or REQUEST] = [str(messages)]
    return flat


def init_app(app: Flask) -> None:
    """Register JSON error handlers for service errors and Werkzeug's HTTP errors."""

    @app.errorhandler(ServiceError)
    def _service_error(exc: ServiceError):
        response = jsonify(exc.body())
        response.status_code = exc.status
        if exc.status == 401:
            response.headers["WWW-Authenticate"] = 'Bearer realm="ketamine-fhir"'
        return response

    @app.errorhandler(DBAPIError)
    def _database_error(exc: DBAPIError):
        """Lock contention (another writer, a long import) is "try again shortly": 503 with
        Retry-After, not a 500 (security review, finding 4). Any other database error stays a 500."""
        from service.db import RETRY_AFTER_SECONDS, is_lock_contention

        if not is_lock_contention(exc):
            raise exc
        message = "the database is busy with another write; retry after a few seconds"
        response = jsonify({"message": message, "errors": {REQUEST: [message]}})
        response.status_code = 503
        response.headers["Retry-After"] = str(RETRY_AFTER_SECONDS)
        return response

    @app.errorhandler(HTTPException)
    def _http_error(exc: HTTPException):
        messages = {
            413: "the request body is larger than this endpoint accepts",
            405: "this method is not allowed on this path",
            404: "no such path",
        }
        message = messages.get(exc.code or 500, exc.description or exc.name)
        response = jsonify({"message": message, "errors": {REQUEST: [message]}})
        response.status_code = exc.code or 500
        if exc.code == 405 and hasattr(exc, "valid_methods") and exc.valid_methods:
            response.headers["Allow"] = ", ".join(exc.valid_methods)
        return response
