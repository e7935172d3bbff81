"""Small pieces the FHIR handlers share: signed opaque tokens and version ids that fit the database.

Tokens we hand out in links (history ``_page``) are JSON, base64url-encoded and signed with
HMAC-SHA256 under a key derived from the service's random secret (service/keys.py) and the
token's purpose, so a token of one kind is never accepted as another. A token that fails the
check is treated as one we never issued (security review, finding 8).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from typing import Any

from sqlalchemy.orm import Session

__all__ = ["MAX_VERSION_ID", "sign", "unsign", "version_number"]

#: version ids are INTEGER columns (PostgreSQL int4): a larger one names no version (and used to be
#: an OverflowError, a 500, security review finding 10)
MAX_VERSION_ID = 2**31 - 1
_SIGNATURE_BYTES = 18


def version_number(text: str | None) -> int | None:
    """The version id ``text`` names, or None when it cannot name a stored version."""
    if not text or not text.isascii() or not text.isdigit() or len(text) > len(str(MAX_VERSION_ID)):
        return None
    number = int(text)
    return number if 1 <= number <= MAX_VERSION_ID else None


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _mac(db: Session, purpose: str, body: str) -> str:
    key = hmac.new(db.info["secret_key"](), f"ketamine-fhir {purpose}".encode(), hashlib.sha256).digest()
    return _b64(hmac.new(key, body.encode(), hashlib.sha256).digest()[:_SIGNATURE_BYTES])


def sign(db: Session, purpose: str, state: Any) -> str:
    """``state`` (JSON-serialisable) as an opaque signed token for ``purpose``."""
    body = _b64(json.dumps(state, separators=(",", ":")).encode())
    return f"{body}.{_mac(db, purpose, body)}"


def unsign(db: Session, purpose: str, token: str) -> Any:
    """The state of a token :func:`sign` made for ``purpose``.

    :raise ValueError: any other string (the caller answers 400)
    """
    body, _, signature = token.partition(".")
    if not body or not hmac.compare_digest(signature.encode(), _mac(db, purpose, body).encode()):
        raise ValueError("not a token this server issued")
    return json.loads(base64.urlsafe_b64decode(body + "=" * (-len(body) % 4)))
