"""Helpers for the SMART tests: key pairs, signed client assertions, a controllable clock."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from functools import cache
from typing import Any

import jwt
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from flask import Flask

from service.fhir.smart import smart_bp

TOKEN_URL = "http://localhost/auth/token"
JWT_BEARER = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
T0 = datetime(2026, 11, 23, 9, 0, tzinfo=UTC)


@dataclass
class KeyPair:
    alg: str
    kid: str
    private: Any
    jwk: dict[str, Any]  # the public JWK, as a client registers it


@cache
def rsa_key(kid: str = "rsa-1", bits: int = 2048) -> KeyPair:
    private = rsa.generate_private_key(public_exponent=65537, key_size=bits)
    jwk = jwt.algorithms.RSAAlgorithm.to_jwk(private.public_key(), as_dict=True)
    return KeyPair("RS384", kid, private, {**jwk, "kid": kid, "alg": "RS384", "use": "sig"})


@cache
def ec_key(kid: str = "ec-1", curve: type[ec.EllipticCurve] = ec.SECP384R1) -> KeyPair:
    private = ec.generate_private_key(curve())
    jwk = jwt.algorithms.ECAlgorithm.to_jwk(private.public_key(), as_dict=True)
    return KeyPair("ES384", kid, private, {**jwk, "kid": kid, "alg": "ES384"})


def jwks(*pairs: KeyPair) -> dict[str, Any]:
    return {"keys": [p.jwk for p in pairs]}


def assertion(key: KeyPair, client_id: str, at: datetime, *, lifetime: float = 240, drop: tuple[str, ...] = (),
              headers: dict[str, Any] | None = None, alg: str | None = None, signing_key: Any = None,
              **claims: Any) -> str:
    """A client assertion as a SMART backend client makes it; keyword arguments override claims."""
    payload: dict[str, Any] = {"iss": client_id, "sub": client_id, "aud": TOKEN_URL,
                               "exp": int((at + timedelta(seconds=lifetime)).timestamp()),
                               "jti": uuid.uuid4().hex, **claims}
    for name in drop:
        payload.pop(name)
    header = {name: value for name, value in {"kid": key.kid, **(headers or {})}.items() if value is not None}
    return jwt.encode(payload, signing_key if signing_key is not None else key.private, algorithm=alg or key.alg,
                      headers=header)


def token_form(client_assertion: str, scope: str = "system/*.rs", **fields: str) -> dict[str, str]:
    return {"grant_type": "client_credentials", "client_assertion_type": JWT_BEARER,
            "client_assertion": client_assertion, "scope": scope, **fields}


class Clock:
    """The time the SMART code sees (``app.config["SMART_CLOCK"]``); moved by hand, no sleeping."""

    def __init__(self, start: datetime = T0):
        self.now = start

    def __call__(self) -> datetime:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)


def with_smart(app: Flask, clock: Clock) -> Flask:
    """The app with the SMART blueprint (registered here until the app factory does it) and ``clock``."""
    if "smart" not in app.blueprints:
        app.register_blueprint(smart_bp)
    app.config["SMART_CLOCK"] = clock
    return app
