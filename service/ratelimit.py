"""Rate limits (issue 10, finding 11): per client, per IP, and stricter at the token endpoint.

Flask-Limiter (on ``limits``) counts every request before its view runs, in four buckets, each an
application-wide counter:

* ``client``: requests with a valid bearer token, keyed by who holds it: the static token's name
  (``token:<name>``) or the SMART client (``smart:<client_id>``), never the secret itself, so a
  client cannot multiply its allowance by minting more access tokens;
* ``ip``: every other request (no token, an unknown, revoked or expired one, the open endpoints
  ``/fhir/metadata``, ``/.well-known/smart-configuration``, ``/api/v1/openapi.json``,
  ``/auth/token``, unknown paths), keyed by ``request.remote_addr``;
* ``token-ip`` and ``token-client``: ``POST /auth/token`` again, per IP and per the assertion's
  (unverified, hashed) ``iss``, counted before the assertion is checked, so failed ones count.

``/healthz`` and ``/readyz`` are never limited (orchestrators poll them). A refused request is 429
with ``Retry-After`` (seconds) and a body in its area's error shape, naming the limit and nothing
else. The counters live in memory (each process its own) or in Redis (shared by every worker and
machine). If Redis goes away, each process falls back to its own memory counters rather than
refusing or failing requests.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import time

import jwt
from flask import Flask, Response, current_app, g, jsonify, request
from flask_limiter import ApplicationLimit, Limiter, RateLimitExceeded
from sqlalchemy import select
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session
from werkzeug.middleware.proxy_fix import ProxyFix

from service.config import Settings
from service.errors import REQUEST

__all__ = ["client_identity", "init_app"]

#: never limited
EXEMPT = frozenset({"health.healthz", "health.readyz"})
#: open endpoints, counted per IP even when a token is sent (no token lookup for them)
IP_ONLY = frozenset({"fhir.metadata", "smart.smart_configuration", "openapi", "smart.token"})
TOKEN_ENDPOINT = "smart.token"
#: a weighted count of this and the previous window: smooth (no double burst at a window's edge,
#: as fixed windows allow) and O(1) per key (a moving window keeps every hit's timestamp)
STRATEGY = "sliding-window-counter"
DEFAULT_KEY_PREFIX = "ketamine-fhir"
_MAX_SECRET_CHARS = 4096
_MAX_ASSERTION_CHARS = 16_384

# Flask-Limiter logs each breach at INFO with its key (a token name, an IP, an unverified iss):
# keep that out of the logs; the access log already records the 429 with its route pattern.
logging.getLogger("flask-limiter").setLevel(logging.WARNING)


def init_app(app: Flask, settings: Settings) -> None:
    """Trust ``settings.trusted_proxies`` for the client address; install the limits unless off.

    ``app.config["RATELIMIT_KEY_PREFIX"]`` (default ``ketamine-fhir``) prefixes the storage keys.
    """
    if settings.trusted_proxies:  # each proxy appends the address it saw; trust only that many
        app.wsgi_app = ProxyFix(app.wsgi_app, x_for=settings.trusted_proxies, x_proto=0, x_host=0)  # type: ignore[method-assign]
    if not settings.rate_limits:
        return
    limits = [
        ApplicationLimit(limit_provider=settings.rate_limit_ip, key_function=_ip, scope="ip",
                         exempt_when=lambda: _client() is not None),
        ApplicationLimit(limit_provider=settings.rate_limit_client, key_function=_client_key, scope="client",
                         exempt_when=lambda: _client() is None),
        ApplicationLimit(limit_provider=settings.rate_limit_token, key_function=_ip, scope="token-ip",
                         exempt_when=lambda: request.endpoint != TOKEN_ENDPOINT),
        ApplicationLimit(limit_provider=settings.rate_limit_token_client, key_function=_issuer_key,
                         scope="token-client", exempt_when=lambda: _issuer() is None),
    ]
    limiter = Limiter(
        _ip, application_limits=limits, strategy=STRATEGY, storage_uri=settings.rate_limit_storage,
        key_prefix=app.config.get("RATELIMIT_KEY_PREFIX") or DEFAULT_KEY_PREFIX,
        # unmatched paths get a name, so that scanning for URLs is counted too (an empty one is exempt)
        request_identifier=lambda: request.endpoint or "(unmatched)",
        headers_enabled=False,  # X-RateLimit-* would cost a storage round trip on every answer
        in_memory_fallback_enabled=True, swallow_errors=True,
    )
    limiter.request_filter(lambda: request.endpoint in EXEMPT)
    limiter.init_app(app)
    app.extensions["rate_limiter"] = limiter
    app.register_error_handler(RateLimitExceeded, _too_many_requests)


# --- keys ------------------------------------------------------------------------------------


def _ip() -> str:
    return request.remote_addr or "unknown"


def _bearer() -> str | None:
    scheme, _, secret = request.headers.get("Authorization", "").partition(" ")
    secret = secret.strip()
    return secret if scheme.lower() == "bearer" and 0 < len(secret) <= _MAX_SECRET_CHARS else None


def client_identity(session: Session, secret: str) -> str | None:
    """Who holds a valid bearer token: ``smart:<client_id>`` or ``token:<name>``; None if it is not valid."""
    from service.auth import token_name  # late: service.fhir imports service.auth
    from service.fhir.smart import hash_token, now
    from service.models import SmartAccessToken, SmartClient

    at = now()
    client_id = session.scalar(
        select(SmartAccessToken.client_id)
        .join(SmartClient, SmartClient.client_id == SmartAccessToken.client_id)
        .where(SmartAccessToken.token_hash == hash_token(secret), SmartAccessToken.expires_at > at,
               SmartClient.revoked_at.is_(None)))
    if client_id is not None:
        return f"smart:{client_id}"
    name = token_name(session, secret, at)
    return f"token:{name}" if name is not None else None


def _client() -> str | None:
    """The request's client identity, looked up once per request."""
    if "rate_limit_client" not in g:
        g.rate_limit_client = _look_up_client()
    return g.rate_limit_client


def _look_up_client() -> str | None:
    secret = _bearer()
    if secret is None or request.endpoint in IP_ONLY:
        return None
    try:
        # a session of its own, closed at once: the request's session must start its transaction
        # itself (smart.py and the clinic store write first on SQLite, see issue_token)
        with current_app.extensions["db_sessionmaker"]() as session:
            return client_identity(session, secret)
    except SQLAlchemyError:  # the view answers 503; meanwhile this request counts per IP
        return None


def _client_key() -> str:
    return _client() or "none"


def _issuer() -> str | None:
    """SHA-256 of the token request's assertion ``iss`` (unverified: it is only a counter's key;
    hashed: it is attacker-controlled text of any length)."""
    if request.endpoint != TOKEN_ENDPOINT:
        return None
    if "rate_limit_issuer" not in g:
        try:
            assertion = request.form.get("client_assertion", "")
        except Exception:  # a body over its limit: the view answers 413; a raise here would fail the limiter
            assertion = ""
        g.rate_limit_issuer = _unverified_issuer(assertion)
    return g.rate_limit_issuer


def _unverified_issuer(assertion: str) -> str | None:
    if not assertion or len(assertion) > _MAX_ASSERTION_CHARS:
        return None
    try:
        iss = jwt.decode(assertion, options={"verify_signature": False}).get("iss")
    except (jwt.PyJWTError, ValueError, AttributeError):
        return None
    return hashlib.sha256(iss.encode()).hexdigest() if isinstance(iss, str) and iss else None


def _issuer_key() -> str:
    return _issuer() or "none"


# --- the answer ------------------------------------------------------------------------------


def _retry_after(exc: RateLimitExceeded) -> int:
    """Whole seconds until the breached limit lets a request through again: 1 up to its window."""
    limiter: Limiter = current_app.extensions["rate_limiter"]
    window = exc.limit.limit.get_expiry()
    try:
        current = limiter.current_limit
        seconds = current.reset_at - time.time() if current is not None else window
    except Exception:  # the storage went away between the hit and now: the window is the safe answer
        seconds = window
    # the storages' clocks and rounding can put the reset a moment past the window: never promise more
    return max(1, min(window, math.ceil(seconds)))


def _too_many_requests(exc: RateLimitExceeded) -> Response:
    """429 in the area's error shape: OperationOutcome on /fhir, RFC 6749-style at the SMART
    endpoints, the clinic API's ``{"message", "errors"}`` elsewhere. No data, no keys."""
    retry = _retry_after(exc)
    message = f"too many requests: the limit is {exc.limit.limit}; retry after {retry} s"
    if request.path == "/fhir" or request.path.startswith("/fhir/"):
        from service.fhir.outcomes import operation_outcome

        response = Response(json.dumps(operation_outcome("error", "throttled", message)),
                            mimetype="application/fhir+json")
    elif request.blueprint == "smart":
        # RFC 6749 §5.2 has no code for this; slow_down is RFC 8628's (§3.5) for polling too fast
        response = jsonify({"error": "slow_down", "error_description": message})
        response.headers["Cache-Control"] = "no-store"
    else:
        response = jsonify({"message": message, "errors": {REQUEST: [message]}})
    response.status_code = 429
    response.headers["Retry-After"] = str(retry)
    return response
