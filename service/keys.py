"""The service's own secret: a random key from the environment or generated once into the data folder.

It signs what the service hands out and must be able to check later (FHIR page tokens, history
page tokens). It never derives from anything public: the base URI is public, so a key derived
from it would let anyone forge a token (security review, finding 8).

``KETAMINE_FHIR_SECRET_KEY`` (at least 32 characters) wins; else ``<data folder>/secret.key`` is
read, or created with 32 random bytes and mode 0600 on first start. Deployments with several web
machines set the variable, so every machine checks what another signed.

The Fernet keys that encrypt destination secrets at rest (:func:`encryption_keys`, security review
finding 12) follow the same pattern: ``KETAMINE_FHIR_ENCRYPTION_KEYS``, else ``<data>/encryption.key``.
"""

from __future__ import annotations

import os
import secrets
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from cryptography.fernet import MultiFernet

    from service.config import Settings

__all__ = ["app_secret", "encryption_keys", "private_file", "secrets_cipher"]

SECRET_FILE = "secret.key"


def private_file(path: Path, data: bytes) -> bytes:
    """Create ``path`` with ``data`` and mode 0600 unless it exists; return what the file holds.

    ``O_EXCL`` makes two processes starting at once agree: the loser reads the winner's bytes.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return _read_complete(path)
    with os.fdopen(fd, "wb") as out:
        out.write(data)
    return data


def _read_complete(path: Path) -> bytes:
    """The file's bytes; a file another process is still writing is read again until it is whole."""
    for _ in range(50):
        data = path.read_bytes()
        if data:
            return data
        import time

        time.sleep(0.02)
    raise RuntimeError(f"{path} is empty: remove it to generate a new key")


def app_secret(settings: Settings) -> bytes:
    """The HMAC key for tokens this service issues (``settings.secret_key``, else the key file)."""
    if settings.secret_key:
        return settings.secret_key.encode()
    return private_file(settings.data_dir / SECRET_FILE, secrets.token_hex(32).encode()).strip()


ENCRYPTION_KEY_FILE = "encryption.key"


def encryption_keys(settings: Settings) -> list[bytes]:
    """The Fernet keys for secrets at rest, the one that encrypts first.

    ``KETAMINE_FHIR_ENCRYPTION_KEYS`` wins; else ``<data folder>/encryption.key`` (one key a line,
    first encrypts), created with one new key and mode 0600 on first use. Deployments where workers
    run on other machines than the web service set the variable: each machine would make its own file.
    """
    if settings.encryption_keys:
        return [k.encode() for k in settings.encryption_keys]
    from cryptography.fernet import Fernet

    held = private_file(settings.data_dir / ENCRYPTION_KEY_FILE, Fernet.generate_key() + b"\n")
    keys = [line.strip() for line in held.splitlines() if line.strip()]
    if not keys:
        raise RuntimeError(f"{settings.data_dir / ENCRYPTION_KEY_FILE} holds no key")
    return keys


def secrets_cipher(settings: Settings) -> MultiFernet:
    """Encrypts with the first key, decrypts with any (rotation: ``ketamine-fhir secrets rotate``)."""
    from cryptography.fernet import Fernet, MultiFernet

    return MultiFernet([Fernet(k) for k in encryption_keys(settings)])
