"""SMART Backend Services: this service as the authorization server of system clients.

SMART App Launch v2, backend-services.html and client-confidential-asymmetric.html: a registered
client signs a short-lived JWT (``private_key_jwt``, RS384 or ES384) with a key of the JWKS it
registered, and trades it at ``POST /auth/token`` (``client_credentials`` grant) for an opaque access
token of at most 300 s carrying SMART v2 ``system/`` scopes, which ``service.fhir.access`` checks on
every /fhir request. Discovery is ``GET /.well-known/smart-configuration``.

Client registration (``ketamine-fhir client register``) goes through :func:`register_client`.
JWTs are checked with PyJWT + cryptography (fhir-and-libraries.md: authlib's client-assertion
defaults do not fit SMART).
"""

from __future__ import annotations

import hashlib
import math
import secrets
from collections.abc import Callable, Iterable, Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

import jwt
from flask import Blueprint, current_app, jsonify, request, url_for
from sqlalchemy import delete, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from service.db import get_session
from service.fhir.scopes import ScopeError, grant, parse_scope
from service.models import SmartAccessToken, SmartAssertionJti, SmartClient
from service.urls import external

__all__ = [
    "ACCESS_TOKEN_SECONDS",
    "ClientError",
    "OAuthError",
    "hash_token",
    "issue_token",
    "list_clients",
    "now",
    "register_client",
    "revoke_client",
    "security_component",
    "smart_bp",
    "token_endpoint",
    "validate_jwks",
]

smart_bp = Blueprint("smart", __name__)

#: Lifetime of an issued access token (SMART backend-services.html: "SHOULD NOT exceed 300 s").
ACCESS_TOKEN_SECONDS = 300
#: Longest accepted assertion lifetime (backend-services.html: ``exp`` "no more than five minutes in the future").
MAX_ASSERTION_SECONDS = 300
#: Clock skew tolerated when deciding an assertion has expired (and only then).
CLOCK_SKEW_SECONDS = 60
ALGORITHMS = {"RS384": "RSA", "ES384": "EC"}  # alg -> the JWK kty it needs
JWT_BEARER = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
CAPABILITIES = ["client-confidential-asymmetric", "permission-v2"]
SCOPES_SUPPORTED = ["system/*.rs", "system/*.cruds", "system/*.read", "system/*.write",
                    "system/AuditEvent.rs"]  # the audit trail: no wildcard grants it (service/fhir/scopes.py)
TOKEN_PREFIX = "kfs_"
_MAX_ASSERTION_CHARS = 16_384
_PRIVATE_MEMBERS = ("d", "p", "q", "dp", "dq", "qi", "oth", "k")  # RFC 7518 §6.2.2, §6.3.2, §6.4


class ClientError(ValueError):
    """A client cannot be registered as asked (bad name, JWKS or scopes)."""


class OAuthError(Exception):
    """A token request refused with an RFC 6749 §5.2 error (``invalid_client`` is 401, the rest 400)."""

    def __init__(self, error: str, description: str):
        super().__init__(description)
        self.error, self.description = error, description
        self.status = 401 if error == "invalid_client" else 400


def now() -> datetime:
    """The current time; tests set ``app.config["SMART_CLOCK"]`` (a callable) to control it."""
    clock: Callable[[], datetime] | None = current_app.config.get("SMART_CLOCK")
    return clock() if clock is not None else datetime.now(UTC)


def hash_token(secret: str) -> str:
    """How access tokens are stored: SHA-256 hex, as static tokens are (service.auth)."""
    return hashlib.sha256(secret.encode()).hexdigest()


# --- client registry -------------------------------------------------------------------------


def validate_jwks(jwks: Any) -> dict[str, list[dict[str, Any]]]:
    """Check a client's JWKS: public RSA (>= 2048 bit) or EC P-384 signing keys, each with a unique kid.

    client-confidential-asymmetric.html, "Registering a client": the client registers public keys
    only; private key material (RFC 7518 members ``d``, ``p``, ``q``, ... or a symmetric ``k``) is
    refused so that a leaked private key is never stored here.

    :raise ClientError: naming the offending key
    """
    if not isinstance(jwks, Mapping) or not isinstance(jwks.get("keys"), list) or not jwks["keys"]:
        raise ClientError('the JWKS must be a JSON object {"keys": [...]} with at least one key')
    kids: set[str] = set()
    for index, key in enumerate(jwks["keys"]):
        kid = _check_key(index, key)
        if kid in kids:
            raise ClientError(f"key {index}: kid {kid!r} is used twice")
        kids.add(kid)
    return {"keys": [dict(key) for key in jwks["keys"]]}


def _check_key(index: int, key: Any) -> str:
    if not isinstance(key, Mapping):
        raise ClientError(f"key {index} is not a JSON object")
    private = [m for m in _PRIVATE_MEMBERS if m in key]
    if private:
        raise ClientError(f"key {index} holds private key material ({', '.join(private)}): register public keys only")
    kid, kty, alg = key.get("kid"), key.get("kty"), key.get("alg")
    if not isinstance(kid, str) or not kid:
        raise ClientError(f"key {index} has no kid")
    if kty not in ("RSA", "EC"):
        raise ClientError(f"key {kid!r}: kty must be RSA or EC, not {kty!r}")
    wanted = "RS384" if kty == "RSA" else "ES384"
    if alg is not None and alg != wanted:
        raise ClientError(f"key {kid!r}: alg must be {wanted} for a {kty} key, not {alg!r}")
    if key.get("use", "sig") != "sig":
        raise ClientError(f"key {kid!r}: use must be sig")
    if kty == "EC" and key.get("crv") != "P-384":
        raise ClientError(f"key {kid!r}: an EC key must be on curve P-384 (ES384)")
    public = _public_key(key, wanted)
    if public is None:
        raise ClientError(f"key {kid!r} is not a valid {kty} public key")
    if kty == "RSA" and public.key_size < 2048:
        raise ClientError(f"key {kid!r}: RSA keys need at least 2048 bits")
    return kid


def _public_key(key: Mapping[str, Any], alg: str) -> Any | None:
    """The cryptography public key of a JWK, or None when the JWK does not make one."""
    try:
        return jwt.PyJWK(dict(key), algorithm=alg).key
    except (jwt.PyJWKError, jwt.InvalidKeyError, ValueError, TypeError, KeyError):
        return None


def register_client(session: Session, name: str, jwks: Any, scopes: Iterable[str]) -> SmartClient:
    """Register a backend client allowed ``scopes`` (SMART system scopes); commit and return it.

    The ``client_id`` is random (the client puts it in ``iss`` and ``sub`` of its assertions).
    """
    if not name or len(name) > 128:
        raise ClientError("--name must be 1-128 characters")
    scope_list = sorted({part for s in scopes for part in s.replace(",", " ").split()})
    if not scope_list:
        raise ClientError("at least one --scope is required")
    for scope in scope_list:
        try:
            parse_scope(scope)
        except ScopeError as exc:
            raise ClientError(f"{exc} ('*' is for operator tokens, not clients)") from None
    checked = validate_jwks(jwks)
    if session.scalar(select(SmartClient).where(SmartClient.name == name)) is not None:
        raise ClientError(f"a client named {name!r} exists already")
    client = SmartClient(client_id=secrets.token_urlsafe(24), name=name, jwks=checked,
                         scopes=" ".join(scope_list), created_at=datetime.now(UTC))
    session.add(client)
    session.commit()
    return client


def list_clients(session: Session) -> list[SmartClient]:
    return list(session.scalars(select(SmartClient).order_by(SmartClient.created_at, SmartClient.name)))


def revoke_client(session: Session, name: str) -> bool:
    """Revoke a client: no new tokens, and its unexpired tokens stop working (service.fhir.access)."""
    client = session.scalar(select(SmartClient).where(SmartClient.name == name))
    if client is None or client.revoked_at is not None:
        return False
    client.revoked_at = datetime.now(UTC)
    session.commit()
    return True


# --- the token endpoint ----------------------------------------------------------------------


def issue_token(session: Session, form: Mapping[str, list[str]], token_url: str, at: datetime) -> dict[str, Any]:
    """Answer a ``client_credentials`` token request (backend-services.html, "Obtaining an access token").

    :param form: the request's form fields, each a list of its values
    :param token_url: this endpoint's absolute URL, the only accepted assertion ``aud``
    :param at: the current time
    :raise OAuthError: for every refusal; nothing is stored then
    """
    grant_type = _single(form, "grant_type")
    if grant_type != "client_credentials":
        raise OAuthError("unsupported_grant_type", f"grant_type {grant_type!r}: only client_credentials")
    if _single(form, "client_assertion_type", "invalid_client") != JWT_BEARER:
        raise OAuthError("invalid_client", f"client_assertion_type must be {JWT_BEARER} (private_key_jwt)")
    requested = _requested_scopes(_single(form, "scope"))
    client_assertion = _single(form, "client_assertion", "invalid_client")
    # Write first: on SQLite a transaction that reads and then writes fails at once ("database is
    # locked") when another writer committed in between; one that starts with a write waits its turn.
    _purge_expired(session, at)
    client, jti, exp = _authenticate(session, client_assertion, token_url, at)
    granted = grant(requested, client.scopes.split())
    if not granted:
        raise OAuthError("invalid_scope", "none of the requested scopes is allowed for this client")
    _remember_jti(session, client.client_id, jti, exp)
    secret = TOKEN_PREFIX + secrets.token_urlsafe(32)
    session.add(SmartAccessToken(token_hash=hash_token(secret), client_id=client.client_id, scopes=" ".join(granted),
                                 expires_at=at + timedelta(seconds=ACCESS_TOKEN_SECONDS)))
    session.commit()
    return {"access_token": secret, "token_type": "bearer", "expires_in": ACCESS_TOKEN_SECONDS,
            "scope": " ".join(granted)}


def _single(form: Mapping[str, list[str]], name: str, missing: str = "invalid_request") -> str:
    """The one value of a form field (RFC 6749 §3.2: parameters MUST NOT be repeated)."""
    values = form.get(name) or []
    if len(values) > 1:
        raise OAuthError("invalid_request", f"{name} is repeated")
    if not values or not values[0]:
        raise OAuthError(missing, f"{name} is required")
    return values[0]


def _requested_scopes(text: str) -> list[str]:
    try:
        return [str(parse_scope(s)) for s in text.split()]
    except ScopeError as exc:
        raise OAuthError("invalid_scope", str(exc)) from None


def _authenticate(session: Session, assertion: str, token_url: str, at: datetime) -> tuple[SmartClient, str, float]:
    """Check the client assertion (client-confidential-asymmetric.html, "Signature verification").

    Every failure is ``invalid_client`` (ibid.: "the server SHALL respond with an invalid_client error").
    """
    if len(assertion) > _MAX_ASSERTION_CHARS:
        raise OAuthError("invalid_client", "client_assertion is too long")
    try:
        header = jwt.get_unverified_header(assertion)
        unverified = jwt.decode(assertion, options={"verify_signature": False})
    except jwt.InvalidTokenError as exc:
        raise OAuthError("invalid_client", f"client_assertion is not a JWT: {exc}") from None
    alg, kid = header.get("alg"), header.get("kid")
    if alg not in ALGORITHMS:
        raise OAuthError("invalid_client", f"alg must be one of {', '.join(ALGORITHMS)}, not {alg!r}")
    if not isinstance(kid, str) or not kid:
        raise OAuthError("invalid_client", "the JWT header needs the kid of a registered key")
    client = _client_of(session, unverified)
    claims = _verify(assertion, _key_for(client, kid, alg), alg)
    _check_claims(claims, client.client_id, token_url, at)
    return client, claims["jti"], float(claims["exp"])


def _client_of(session: Session, claims: Mapping[str, Any]) -> SmartClient:
    iss, sub = claims.get("iss"), claims.get("sub")
    if not isinstance(iss, str) or not iss or iss != sub:
        raise OAuthError("invalid_client", "iss and sub must both be the client_id")
    client = session.get(SmartClient, iss)
    if client is None or client.revoked_at is not None:
        raise OAuthError("invalid_client", "unknown or revoked client")
    return client


def _key_for(client: SmartClient, kid: str, alg: str) -> Any:
    for key in client.jwks.get("keys", []):
        if key.get("kid") != kid:
            continue
        if key.get("kty") != ALGORITHMS[alg] or key.get("alg", alg) != alg:
            raise OAuthError("invalid_client", f"key {kid!r} is not a {alg} key")
        public = _public_key(key, alg)
        if public is None:  # registration checked it; a hand-edited row must not become a 500
            raise OAuthError("invalid_client", f"key {kid!r} is not usable")
        return public
    raise OAuthError("invalid_client", f"no registered key has kid {kid!r}")


def _verify(assertion: str, key: Any, alg: str) -> dict[str, Any]:
    """Verify the signature; claim checks are ours (:func:`_check_claims`), against our clock."""
    options = {"require": ["iss", "sub", "aud", "exp", "jti"], "verify_aud": False, "verify_exp": False,
               "verify_iat": False, "verify_nbf": False, "verify_iss": False}
    try:
        return jwt.decode(assertion, key=key, algorithms=[alg], options=options)
    except jwt.InvalidTokenError as exc:
        raise OAuthError("invalid_client", f"client_assertion rejected: {exc}") from None


def _check_claims(claims: Mapping[str, Any], client_id: str, token_url: str, at: datetime) -> None:
    aud, exp, jti = claims.get("aud"), claims.get("exp"), claims.get("jti")
    if not (aud == token_url or (isinstance(aud, list) and token_url in aud)):
        raise OAuthError("invalid_client", f"aud must be the token endpoint {token_url}")
    if isinstance(exp, bool) or not isinstance(exp, int | float) or not math.isfinite(exp):
        raise OAuthError("invalid_client", "exp must be a number (seconds since the epoch)")
    current = at.timestamp()
    if exp <= current - CLOCK_SKEW_SECONDS:
        raise OAuthError("invalid_client", "the client assertion has expired")
    if exp > current + MAX_ASSERTION_SECONDS:
        raise OAuthError("invalid_client", f"exp may be at most {MAX_ASSERTION_SECONDS} s in the future")
    nbf = claims.get("nbf")
    if isinstance(nbf, int | float) and not isinstance(nbf, bool) and nbf > current + CLOCK_SKEW_SECONDS:
        raise OAuthError("invalid_client", "the client assertion is not valid yet (nbf)")
    if not isinstance(jti, str) or not 0 < len(jti) <= 255:
        raise OAuthError("invalid_client", "jti must be a string of 1-255 characters")


def _remember_jti(session: Session, client_id: str, jti: str, exp: float) -> None:
    """Store the jti until the assertion can no longer be accepted; a second use is refused.

    The primary key (client_id, jti) makes this race-free: of two concurrent uses one insert fails.
    """
    if session.get(SmartAssertionJti, (client_id, jti)) is not None:
        raise OAuthError("invalid_client", "this client assertion (jti) was used already")
    until = datetime.fromtimestamp(exp + CLOCK_SKEW_SECONDS, UTC)
    try:
        with session.begin_nested():
            session.add(SmartAssertionJti(client_id=client_id, jti=jti, expires_at=until))
    except IntegrityError:
        raise OAuthError("invalid_client", "this client assertion (jti) was used already") from None


def _purge_expired(session: Session, at: datetime) -> None:
    """Forget jtis that can no longer be replayed and tokens that have expired."""
    session.execute(delete(SmartAssertionJti).where(SmartAssertionJti.expires_at < at))
    session.execute(delete(SmartAccessToken).where(SmartAccessToken.expires_at < at))


# --- HTTP ------------------------------------------------------------------------------------


def token_endpoint() -> str:
    """The token endpoint's absolute URL on the configured public URL (never the Host header)."""
    return external(url_for("smart.token"))


def security_component(token_url: str) -> dict[str, Any]:
    """``CapabilityStatement.rest.security`` announcing SMART (conformance.html, "Using the oauth-uris")."""
    return {
        "service": [{"coding": [{"system": "http://terminology.hl7.org/CodeSystem/restful-security-service",
                                 "code": "SMART-on-FHIR", "display": "SMART-on-FHIR"}]}],
        "extension": [{"url": "http://fhir-registry.smarthealthit.org/StructureDefinition/oauth-uris",
                       "extension": [{"url": "token", "valueUri": token_url}]}],
        "description": "SMART Backend Services (client_credentials, private_key_jwt RS384/ES384); "
                       "SMART v2 system scopes; see /.well-known/smart-configuration",
    }


@smart_bp.get("/.well-known/smart-configuration")
def smart_configuration():
    """SMART discovery (conformance.html, "Metadata"): open, no token needed."""
    return jsonify({
        "token_endpoint": token_endpoint(),
        "grant_types_supported": ["client_credentials"],
        "token_endpoint_auth_methods_supported": ["private_key_jwt"],
        "token_endpoint_auth_signing_alg_values_supported": list(ALGORITHMS),
        "scopes_supported": SCOPES_SUPPORTED,
        "capabilities": CAPABILITIES,
    })


@smart_bp.post("/auth/token")
def token():
    """The token endpoint: a bearer token for a valid signed assertion, else an RFC 6749 §5.2 error."""
    session = get_session()
    try:
        if request.mimetype != "application/x-www-form-urlencoded":
            raise OAuthError("invalid_request", "send the request as application/x-www-form-urlencoded")
        body, status = issue_token(session, request.form.to_dict(flat=False), token_endpoint(), now()), 200
    except OAuthError as exc:
        session.rollback()
        body, status = {"error": exc.error, "error_description": exc.description}, exc.status
    from service import audit

    audit.login(request.form.get("client_assertion"), status)  # every token request, issued or refused
    response = jsonify(body)
    response.status_code = status
    response.headers["Cache-Control"] = "no-store"
    response.headers["Pragma"] = "no-cache"
    return response
