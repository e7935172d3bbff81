"""Static bearer tokens: created by the CLI, stored as SHA-256 hashes, checked per request."""

from __future__ import annotations

import hashlib
import secrets
from collections.abc import Callable, Iterable
from datetime import UTC, datetime
from functools import wraps
from typing import TypeVar

from flask import g, request
from sqlalchemy import select
from sqlalchemy.orm import Session

from service.db import get_session
from service.errors import Forbidden, Unauthorized
from service.models import ApiToken

__all__ = [
    "SCOPES",
    "TokenError",
    "create_token",
    "list_tokens",
    "require_scope",
    "revoke_token",
    "token_scopes",
]

#: Scopes a static token can carry, and what each allows. SMART v2 system scopes
#: (``system/*.rs``, ``system/Observation.rs``, ``system/Patient.cruds``; service.fhir.scopes) are
#: accepted too and allow the matching /fhir interactions, nothing on /api/v1.
SCOPES = {
    "clinic:read": "read clinic records (GET on /api/v1)",
    "clinic:write": "create and replace clinic records, /import (PUT/POST on /api/v1)",
    "admin": "administration endpoints",
    "*": "everything (operator token), on /api/v1 and /fhir",
}
TOKEN_PREFIX = "kf_"

F = TypeVar("F", bound=Callable)


class TokenError(ValueError):
    """A token cannot be created as asked."""


def _hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def parse_scopes(scopes: Iterable[str]) -> list[str]:
    """Split and check scope strings (``"a b"`` or repeated options)."""
    parsed = sorted({part for s in scopes for part in s.replace(",", " ").split()})
    if not parsed:
        raise TokenError("at least one --scope is required")
    from service.fhir.scopes import is_smart_scope  # late: service.fhir imports this module

    unknown = [s for s in parsed if s not in SCOPES and not is_smart_scope(s)]
    if unknown:
        raise TokenError(f"unknown scope(s) {', '.join(unknown)}; known: {', '.join(SCOPES)} "
                         "and SMART system scopes such as system/*.rs, system/Patient.cruds")
    return parsed


def create_token(session: Session, name: str, scopes: Iterable[str]) -> str:
    """Store a new token named ``name`` and return its secret (shown once, never stored)."""
    scope_list = parse_scopes(scopes)
    if not name or len(name) > 128:
        raise TokenError("--name must be 1-128 characters")
    if session.scalar(select(ApiToken).where(ApiToken.name == name)) is not None:
        raise TokenError(f"a token named {name!r} exists already")
    secret = TOKEN_PREFIX + secrets.token_urlsafe(32)
    session.add(ApiToken(name=name, token_hash=_hash(secret), scopes=" ".join(scope_list),
                         created_at=datetime.now(UTC)))
    session.commit()
    return secret


def list_tokens(session: Session) -> list[ApiToken]:
    return list(session.scalars(select(ApiToken).order_by(ApiToken.id)))


def revoke_token(session: Session, name: str) -> bool:
    token = session.scalar(select(ApiToken).where(ApiToken.name == name))
    if token is None or token.revoked_at is not None:
        return False
    token.revoked_at = datetime.now(UTC)
    session.commit()
    return True


def _active_token(session: Session, secret: str) -> ApiToken | None:
    token = session.scalar(select(ApiToken).where(ApiToken.token_hash == _hash(secret)))
    return None if token is None or token.revoked_at is not None else token


def token_scopes(session: Session, secret: str) -> set[str] | None:
    """The scopes of an active static token, or None for an unknown or revoked one."""
    token = _active_token(session, secret)
    return None if token is None else set(token.scopes.split())


def _current_scopes() -> set[str]:
    header = request.headers.get("Authorization", "")
    scheme, _, secret = header.partition(" ")
    if scheme.lower() != "bearer" or not secret.strip():
        raise Unauthorized()
    token = _active_token(get_session(), secret.strip())
    if token is None:
        raise Unauthorized("the bearer token is unknown or revoked")
    g.token_name = token.name
    return set(token.scopes.split())


def require_scope(scope: str) -> Callable[[F], F]:
    """Decorate a view: 401 without a valid token, 403 without ``scope`` (or ``*``)."""

    def decorator(view: F) -> F:
        @wraps(view)
        def wrapper(*args, **kwargs):
            scopes = _current_scopes()
            if scope not in scopes and "*" not in scopes:
                raise Forbidden(f"this request needs the scope {scope!r}")
            return view(*args, **kwargs)

        return wrapper  # type: ignore[return-value]

    return decorator
