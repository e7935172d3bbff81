"""Static bearer tokens: created by the CLI, stored as SHA-256 hashes, checked per request."""

from __future__ import annotations

import hashlib
import secrets
from collections.abc import Callable, Iterable
from datetime import UTC, datetime, timedelta
from functools import wraps
from typing import TypeVar

from flask import g, request
from sqlalchemy import or_, select
from sqlalchemy.orm import Session

from service.db import get_session
from service.errors import Forbidden, Unauthorized
from service.models import ApiToken

__all__ = [
    "SCOPES",
    "TokenError",
    "create_token",
    "has_scope",
    "list_tokens",
    "require_scope",
    "revoke_token",
    "rotate_token",
    "token_name",
    "token_scopes",
]

#: Scopes a static token can carry, and what each allows. SMART v2 system scopes
#: (``system/*.rs``, ``system/Observation.rs``, ``system/Patient.cruds``; service.fhir.scopes) are
#: accepted too and allow the matching /fhir interactions, nothing on /api/v1.
SCOPES = {
    "clinic:read": "read clinic records (GET on /api/v1)",
    "clinic:write": "create and replace clinic records, /import (PUT/POST on /api/v1)",
    "admin": "administration endpoints: destination status, pausing, replay, sweep, removal",
    "admin:destinations": "add sync destinations, re-point them (url, auth), widen what they receive, enable them",
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


def _now() -> datetime:
    """The current time (tests monkeypatch it to move static tokens past their expiry)."""
    return datetime.now(UTC)


def _check_expiry(expires_at: datetime | None, at: datetime) -> None:
    if expires_at is None:
        return
    if expires_at.tzinfo is None:  # a naive time is ambiguous: which zone would "09:00" be in?
        raise TokenError("the expiry needs a UTC offset (e.g. 2027-01-31T00:00:00Z)")
    if expires_at <= at:
        raise TokenError("the expiry must be in the future")


def create_token(session: Session, name: str, scopes: Iterable[str], expires_at: datetime | None = None) -> str:
    """Store a new token named ``name`` and return its secret (shown once, never stored).

    :param expires_at: when it stops working (401); None: until revoked
    """
    scope_list = parse_scopes(scopes)
    if not name or len(name) > 128:
        raise TokenError("--name must be 1-128 characters")
    at = _now()
    _check_expiry(expires_at, at)
    if session.scalar(select(ApiToken).where(ApiToken.name == name)) is not None:
        raise TokenError(f"a token named {name!r} exists already")
    secret = TOKEN_PREFIX + secrets.token_urlsafe(32)
    session.add(ApiToken(name=name, token_hash=_hash(secret), scopes=" ".join(scope_list),
                         created_at=at, expires_at=expires_at))
    session.commit()
    return secret


def rotate_token(session: Session, name: str, expires_at: datetime | None = None,
                 grace: timedelta = timedelta(0)) -> str:
    """Give the token ``name`` a new secret (same name and scopes) and return it (shown once).

    The old secret keeps working for ``grace`` (never past its own expiry), so a deployment can
    switch over; then it stops. A secret still in an earlier grace period stops at once.

    :param expires_at: the new secret's expiry; None: the old lifetime again (none if it had none,
        else as long as the old secret was valid for, counted from now). An expired token can be
        rotated (renewed); a revoked one cannot.
    """
    token = session.scalar(select(ApiToken).where(ApiToken.name == name))
    if token is None or token.revoked_at is not None:
        raise TokenError(f"no active token named {name!r}")
    if grace < timedelta(0):
        raise TokenError("--grace cannot be negative")
    at = _now()
    if expires_at is None and token.expires_at is not None:
        expires_at = at + (token.expires_at - (token.rotated_at or token.created_at))
    _check_expiry(expires_at, at)
    old_until = at + grace if token.expires_at is None else min(at + grace, token.expires_at)
    keep_old = grace > timedelta(0) and old_until > at
    secret = TOKEN_PREFIX + secrets.token_urlsafe(32)
    token.previous_token_hash = token.token_hash if keep_old else None
    token.previous_expires_at = old_until if keep_old else None
    token.token_hash, token.expires_at, token.rotated_at = _hash(secret), expires_at, at
    session.commit()
    return secret


def list_tokens(session: Session) -> list[ApiToken]:
    return list(session.scalars(select(ApiToken).order_by(ApiToken.id)))


def revoke_token(session: Session, name: str) -> bool:
    """Revoke ``name``: its secret, and a previous one in its grace period, stop at once."""
    token = session.scalar(select(ApiToken).where(ApiToken.name == name))
    if token is None or token.revoked_at is not None:
        return False
    token.revoked_at = _now()
    session.commit()
    return True


def _active_token(session: Session, secret: str, at: datetime | None = None) -> ApiToken | None:
    """The token whose current (or, in its grace period, previous) secret is ``secret``, if valid at ``at``."""
    at = at or _now()
    digest = _hash(secret)
    token = session.scalar(select(ApiToken).where(or_(ApiToken.token_hash == digest,
                                                      ApiToken.previous_token_hash == digest)))
    if token is None or token.revoked_at is not None:
        return None
    until = token.expires_at if token.token_hash == digest else token.previous_expires_at
    if token.token_hash != digest and until is None:  # a previous secret always has an end
        return None
    return token if until is None or until > at else None


def token_scopes(session: Session, secret: str, at: datetime | None = None) -> set[str] | None:
    """The scopes of an active static token, or None for an unknown, revoked or expired one."""
    token = _active_token(session, secret, at)
    return None if token is None else set(token.scopes.split())


def token_name(session: Session, secret: str, at: datetime | None = None) -> str | None:
    """The name of an active static token (who is calling, for rate limits), or None."""
    token = _active_token(session, secret, at)
    return None if token is None else token.name


def _current_scopes() -> set[str]:
    header = request.headers.get("Authorization", "")
    scheme, _, secret = header.partition(" ")
    if scheme.lower() != "bearer" or not secret.strip():
        raise Unauthorized()
    token = _active_token(get_session(), secret.strip())
    if token is None:
        raise Unauthorized("the bearer token is unknown, revoked or expired")
    g.token_name = token.name
    return set(token.scopes.split())


def has_scope(scope: str) -> bool:
    """Whether the request's token carries ``scope`` (or ``*``): for a second, finer check inside a
    view that :func:`require_scope` already let in."""
    scopes = _current_scopes()
    return scope in scopes or "*" in scopes


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
