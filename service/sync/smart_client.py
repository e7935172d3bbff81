"""SMART Backend Services client: access tokens for destinations that require SMART.

SMART App Launch v2, backend-services.html and client-confidential-asymmetric.html: we sign a
short-lived JWT with our private key (RS384 for RSA, ES384 for EC P-384) and trade it at the
destination's token endpoint (``client_credentials`` grant) for a bearer token, cached until
shortly before it expires.
"""

from __future__ import annotations

import math
import threading
import time
import uuid
from collections.abc import Callable
from typing import Any

import jwt
import requests
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.serialization import load_pem_private_key

__all__ = ["ASSERTION_SECONDS", "JWT_BEARER", "SmartAuthError", "SmartTokenProvider", "signing_algorithm"]

JWT_BEARER = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
#: assertion lifetime: backend-services.html allows at most 300 s; 240 leaves room for clock skew
ASSERTION_SECONDS = 240
#: token lifetime assumed when the response has no ``expires_in`` (the SMART maximum)
DEFAULT_EXPIRES_IN = 300.0


class SmartAuthError(Exception):
    """The token endpoint refused us or could not be reached.

    ``status`` is the HTTP status (None when no answer came), ``error`` the OAuth error code
    (RFC 6749 §5.2) when the endpoint sent one. The message never holds a secret.
    """

    def __init__(self, message: str, *, status: int | None = None, error: str | None = None):
        super().__init__(message)
        self.status, self.error = status, error


def signing_algorithm(key: Any) -> str:
    """The SMART JWS algorithm for a private key: RS384 (RSA) or ES384 (EC P-384).

    :raise ValueError: any other key
    """
    if isinstance(key, rsa.RSAPrivateKey):
        return "RS384"
    if isinstance(key, ec.EllipticCurvePrivateKey) and isinstance(key.curve, ec.SECP384R1):
        return "ES384"
    raise ValueError("the SMART private key must be an RSA key (RS384) or an EC P-384 key (ES384)")


def _load_key(pem: str) -> Any:
    try:
        return load_pem_private_key(pem.encode(), password=None)
    except (ValueError, TypeError, UnsupportedAlgorithm) as exc:  # say why without echoing the key
        raise ValueError(f"the SMART private key is not a usable unencrypted PEM key ({type(exc).__name__})") from None


class SmartTokenProvider:
    """Access tokens of one SMART client at one token endpoint; thread-safe, cached."""

    def __init__(self, session: requests.Session, *, client_id: str, token_url: str, private_key_pem: str, kid: str,
                 scopes: str, timeout: tuple[float, float] = (5.0, 30.0), clock: Callable[[], float] = time.time,
                 refresh_margin: float = 30.0):
        self._key = _load_key(private_key_pem)
        self.algorithm = signing_algorithm(self._key)
        self.session, self.client_id, self.token_url, self.kid, self.scopes = session, client_id, token_url, kid, scopes
        self.timeout, self.clock, self.refresh_margin = timeout, clock, refresh_margin
        self._lock = threading.Lock()
        self._token: str | None = None
        self._refresh_at = 0.0

    def token(self) -> str:
        """A valid access token: the cached one, or a new one once the cached one nears expiry.

        Callers wait on the lock while one of them fetches, so a burst of workers costs one request.

        :raise SmartAuthError: the token endpoint refused or did not answer
        """
        with self._lock:
            if self._token is None or self.clock() >= self._refresh_at:
                self._token, self._refresh_at = self._fetch()
            return self._token

    def invalidate(self, stale: str | None = None) -> None:
        """Forget the cached token (the resource server rejected it).

        With ``stale``, only if that is still the cached token: a token another thread has just
        fetched is kept.
        """
        with self._lock:
            if stale is None or stale == self._token:
                self._token = None

    def assertion(self) -> str:
        """A fresh signed client assertion (client-confidential-asymmetric.html: iss = sub = client_id,
        aud = the token URL, exp at most 300 s ahead, a unique jti)."""
        issued = int(self.clock())
        claims = {"iss": self.client_id, "sub": self.client_id, "aud": self.token_url, "iat": issued,
                  "exp": issued + ASSERTION_SECONDS, "jti": uuid.uuid4().hex}
        return jwt.encode(claims, self._key, algorithm=self.algorithm, headers={"kid": self.kid, "typ": "JWT"})

    def _fetch(self) -> tuple[str, float]:
        """A new token and the clock time to refresh it at."""
        form = {"grant_type": "client_credentials", "scope": self.scopes, "client_assertion_type": JWT_BEARER,
                "client_assertion": self.assertion()}
        started = self.clock()
        try:
            response = self.session.post(self.token_url, data=form, headers={"Accept": "application/json"},
                                         timeout=self.timeout)
        except requests.RequestException as exc:
            raise SmartAuthError(f"token endpoint {self.token_url} unreachable: {type(exc).__name__}") from None
        if not 200 <= response.status_code < 300:
            raise _refusal(self.token_url, response)
        token, expires_in = _parse_token(self.token_url, response)
        # A token shorter-lived than twice the margin is still used for half its life, not refetched each call.
        margin = min(self.refresh_margin, expires_in / 2)
        return token, started + expires_in - margin


def _json(response: requests.Response) -> Any:
    try:
        return response.json()
    except ValueError:
        return None


def _refusal(token_url: str, response: requests.Response) -> SmartAuthError:
    body = _json(response)
    body = body if isinstance(body, dict) else {}
    error = body.get("error") if isinstance(body.get("error"), str) else None
    description = body.get("error_description") if isinstance(body.get("error_description"), str) else ""
    detail = ": ".join(part for part in (error, description[:200]) if part)
    return SmartAuthError(f"token endpoint {token_url} refused: HTTP {response.status_code}"
                          + (f" {detail}" if detail else ""), status=response.status_code, error=error)


def _parse_token(token_url: str, response: requests.Response) -> tuple[str, float]:
    """``access_token`` and ``expires_in`` of a token response (RFC 6749 §5.1)."""
    body = _json(response)

    def bad(why: str) -> SmartAuthError:
        return SmartAuthError(f"token endpoint {token_url} answered {why}", status=response.status_code)

    if not isinstance(body, dict):
        raise bad("no JSON object")
    token, token_type = body.get("access_token"), body.get("token_type")
    if not isinstance(token, str) or not token:
        raise bad("no access_token")
    if not isinstance(token_type, str) or token_type.lower() != "bearer":
        raise bad(f"token_type {token_type!r}, not bearer")
    expires_in = body.get("expires_in", DEFAULT_EXPIRES_IN)
    try:
        seconds = float(expires_in)
    except (TypeError, ValueError):
        raise bad(f"expires_in {expires_in!r}, not a number") from None
    if not math.isfinite(seconds):
        raise bad(f"expires_in {expires_in!r}, not a number")
    return token, max(seconds, 0.0)
