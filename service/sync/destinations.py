"""Destinations: the external FHIR servers the clinic's data is synced to, and what each receives.

A destination is configuration (URL, auth, which resource types and which patients, delivery
mode and limits, retry policy) plus shared runtime state (circuit, throttle, last success/error)
in one row. The admin API and the CLI both go through :func:`create`, :func:`update` and
:func:`public_view`; the latter never returns a secret.

Secrets (``SECRET_FIELDS`` of ``auth``) are stored encrypted: ``auth_config`` holds
``{"token": {"enc": "<Fernet token>"}}``, sealed with the session's ``encryption`` cipher
(``session.info``, service/db.py) and opened only where requests are built (:func:`open_auth`,
from service/sync/client.py). Rows written before encryption hold plain strings: they still work
and ``ketamine-fhir secrets rotate`` (:func:`rotate_auth`) encrypts them.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Callable, Iterable, Mapping
from datetime import datetime
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from marshmallow import RAISE, Schema, ValidationError, fields, validate, validates, validates_schema
from sqlalchemy import select
from sqlalchemy.orm import Session

from service import models
from service.sync.retry import CircuitBreaker, CircuitState, RetryPolicy

if TYPE_CHECKING:
    from cryptography.fernet import MultiFernet

__all__ = ["DEFAULT_TYPES", "MODES", "SYNCABLE_TYPES", "DestinationSchema", "create", "get", "interested_patients",
           "open_auth", "public_view", "rotate_auth", "seal_auth", "update"]

#: every type the mappings emit; Provenance is opt-in (one per write doubles the traffic)
SYNCABLE_TYPES = ("Organization", "Practitioner", "PractitionerRole", "Patient", "Condition", "ServiceRequest",
                  "CarePlan", "CareTeam", "Encounter", "Procedure", "Medication", "MedicationAdministration",
                  "QuestionnaireResponse", "Observation", "AdverseEvent",
                  "Flag", "Provenance")
DEFAULT_TYPES = tuple(t for t in SYNCABLE_TYPES if t != "Provenance")
#: types that belong to no patient: they travel in the ``shared`` lane to every destination (a
#: Medication, one product and lot, is named by the doses of many patients)
SHARED_TYPES = frozenset({"Organization", "Practitioner", "PractitionerRole", "Medication"})
MODES = ("transaction", "batch", "individual")
AUTH_KINDS = ("none", "bearer", "smart")
SECRET_FIELDS = ("token", "private_key")
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")


class AuthSchema(Schema):
    class Meta:
        unknown = RAISE

    kind = fields.String(required=True, validate=validate.OneOf(AUTH_KINDS))
    token = fields.String(validate=validate.Length(min=1, max=4096))
    client_id = fields.String(validate=validate.Length(min=1, max=255))
    token_url = fields.Url(schemes={"http", "https"}, require_tld=False)
    private_key = fields.String(validate=validate.Length(min=1, max=16384))
    kid = fields.String(validate=validate.Length(min=1, max=255))
    scopes = fields.String(validate=validate.Length(min=1, max=1024))

    @validates_schema
    def _complete(self, data: Mapping[str, Any], **_: Any) -> None:
        needed = {"none": (), "bearer": ("token",), "smart": ("client_id", "token_url", "private_key", "kid")}
        if "kind" not in data:  # a partial load (PATCH): the kind is required by the field itself
            return
        missing = [f for f in needed[data["kind"]] if f not in data]
        if missing:
            raise ValidationError({f: [f"required for {data['kind']} auth"] for f in missing})
        if data["kind"] == "smart":
            _check_private_key(data["private_key"])


def _check_private_key(pem: str) -> None:
    from cryptography.hazmat.primitives.asymmetric import ec, rsa
    from cryptography.hazmat.primitives.serialization import load_pem_private_key

    try:
        key = load_pem_private_key(pem.encode(), password=None)
    except (ValueError, TypeError):
        raise ValidationError({"private_key": ["not an unencrypted PEM private key"]}) from None
    if not isinstance(key, rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey) or (
            isinstance(key, ec.EllipticCurvePrivateKey) and key.curve.name != "secp384r1"):
        raise ValidationError({"private_key": ["must be an RSA key (RS384) or an EC P-384 key (ES384)"]})


class PatientsSchema(Schema):
    class Meta:
        unknown = RAISE

    kind = fields.String(required=True, validate=validate.OneOf(("all", "referred-by", "identifier-system")))
    practitioner_id = fields.String(validate=validate.Length(min=1, max=64))
    system = fields.String(validate=validate.Length(min=1, max=255))

    @validates_schema
    def _complete(self, data: Mapping[str, Any], **_: Any) -> None:
        field = {"referred-by": "practitioner_id", "identifier-system": "system"}.get(data.get("kind", ""))
        if field and field not in data:
            raise ValidationError({field: [f"required when kind is {data['kind']}"]})


class DestinationSchema(Schema):
    """A destination as the admin API takes it (PATCH loads it with ``partial=True``)."""

    class Meta:
        unknown = RAISE

    name = fields.String(required=True)
    url = fields.Url(required=True, schemes={"http", "https"}, require_tld=False, validate=validate.Length(max=1024))
    auth = fields.Nested(AuthSchema, load_default=lambda: {"kind": "none"})
    resource_types = fields.List(fields.String(validate=validate.OneOf(SYNCABLE_TYPES)),
                                 validate=validate.Length(min=1), load_default=lambda: list(DEFAULT_TYPES))
    patients = fields.Nested(PatientsSchema, load_default=lambda: {"kind": "all"})
    mode = fields.String(validate=validate.OneOf(MODES), load_default="transaction")
    max_bundle_entries = fields.Integer(strict=True, validate=validate.Range(1, 1000), load_default=8)
    rate_limit = fields.Float(allow_none=True, validate=validate.Range(min=0.1, max=10000), load_default=None)
    connect_timeout = fields.Float(validate=validate.Range(min=0.1, max=120), load_default=5.0)
    read_timeout = fields.Float(validate=validate.Range(min=0.1, max=600), load_default=30.0)
    retry = fields.Dict(load_default=dict)
    enabled = fields.Boolean(load_default=True)
    pull = fields.Boolean(load_default=False)

    @validates("name")
    def _name(self, value: str, **_: Any) -> None:
        if not _NAME.fullmatch(value):
            raise ValidationError("1-128 letters, digits, '.', '_' or '-', starting with a letter or digit")

    @validates("url")
    def _url(self, value: str, **_: Any) -> None:
        if urlsplit(value).query or urlsplit(value).fragment:
            raise ValidationError("the FHIR base URL takes no query or fragment")

    @validates("retry")
    def _retry(self, value: Mapping[str, Any], **_: Any) -> None:
        try:
            RetryPolicy.from_dict(value)
        except (ValueError, TypeError) as exc:
            raise ValidationError(str(exc)) from None


def _cipher(db: Session) -> MultiFernet:
    try:
        return db.info["encryption"]()
    except KeyError:  # a bare Session: refuse rather than store a secret in plaintext
        raise RuntimeError("this session has no encryption cipher: use service.db.session_factory") from None


def seal_auth(config: Mapping[str, Any], cipher: Callable[[], MultiFernet]) -> dict[str, Any]:
    """``auth_config`` as stored: each secret encrypted (``{"enc": ...}``), the rest as given.

    ``cipher`` is called only when there is a secret, so auth ``none`` needs no key.
    """
    sealed = dict(config)
    for key in SECRET_FIELDS:
        if isinstance(sealed.get(key), str):
            sealed[key] = {"enc": cipher().encrypt(sealed[key].encode()).decode()}
    return sealed


def open_auth(config: Mapping[str, Any], cipher: Callable[[], MultiFernet]) -> dict[str, Any]:
    """``auth_config`` with its secrets in clear, for building requests; plain (legacy) values pass.

    :raise cryptography.fernet.InvalidToken: no configured key opens a secret
    """
    opened = dict(config)
    for key in SECRET_FIELDS:
        value = opened.get(key)
        if isinstance(value, Mapping) and "enc" in value:
            opened[key] = cipher().decrypt(value["enc"].encode()).decode()
    return opened


def rotate_auth(config: Mapping[str, Any], cipher: Callable[[], MultiFernet]) -> dict[str, Any]:
    """``auth_config`` with every secret encrypted under the first key (plain values encrypted too)."""
    rotated = dict(config)
    for key in SECRET_FIELDS:
        value = rotated.get(key)
        if isinstance(value, Mapping) and "enc" in value:
            rotated[key] = {"enc": cipher().rotate(value["enc"].encode()).decode()}
        elif isinstance(value, str):
            rotated[key] = {"enc": cipher().encrypt(value.encode()).decode()}
    return rotated


def _apply(db: Session, dest: models.Destination, data: Mapping[str, Any]) -> None:
    simple = ("name", "mode", "max_bundle_entries", "rate_limit", "connect_timeout", "read_timeout", "enabled", "pull")
    for key in simple:
        if key in data:
            setattr(dest, key, data[key])
    if "url" in data:
        dest.base_url = data["url"].rstrip("/")
    if "auth" in data:
        dest.auth_kind = data["auth"]["kind"]
        dest.auth_config = seal_auth({k: v for k, v in data["auth"].items() if k != "kind"}, lambda: _cipher(db))
    if "resource_types" in data:
        dest.resource_types = [t for t in SYNCABLE_TYPES if t in set(data["resource_types"])]
    if "patients" in data:
        dest.patients = dict(data["patients"])
    if "retry" in data:
        dest.retry = RetryPolicy.from_dict(data["retry"]).to_dict()


def create(db: Session, data: Mapping[str, Any], now: datetime) -> models.Destination:
    """Add a destination and queue the clinic's existing data for it (the initial load).

    :raise ValidationError: bad fields (``DestinationSchema``), or the name is taken
    """
    loaded = DestinationSchema().load(dict(data))
    _unique_name(db, loaded["name"], None)
    dest = models.Destination(id=str(uuid.uuid4()), created_at=now, updated_at=now, pull_watermarks={},
                              circuit_state="closed", circuit_failures=0)
    _apply(db, dest, loaded)
    db.add(dest)
    db.flush()
    from service.sync.outbox import sweep  # late: outbox imports this module

    sweep(db, dest, now)
    return dest


def update(db: Session, dest: models.Destination, data: Mapping[str, Any], now: datetime) -> models.Destination:
    """Change a destination; a wider selection (types, patients) queues what it now adds."""
    loaded = DestinationSchema().load(dict(data), partial=True)
    if "name" in loaded:
        _unique_name(db, loaded["name"], dest.id)
    _apply(db, dest, loaded)
    dest.updated_at = now
    db.flush()
    from service.sync.outbox import sweep

    sweep(db, dest, now)
    return dest


def _unique_name(db: Session, name: str, own_id: str | None) -> None:
    other = db.scalar(select(models.Destination.id).where(models.Destination.name == name))
    if other is not None and other != own_id:
        raise ValidationError({"name": [f"a destination named {name!r} exists"]})


def get(db: Session, key: str) -> models.Destination | None:
    """A destination by id or by name."""
    by_name = select(models.Destination).where(models.Destination.name == key)
    return db.get(models.Destination, key) or db.scalar(by_name)


def policy(dest: models.Destination) -> RetryPolicy:
    return RetryPolicy.from_dict(dest.retry or {})


def circuit_state(dest: models.Destination) -> CircuitState:
    return CircuitState(dest.circuit_state, dest.circuit_failures, dest.circuit_opened_at)


BREAKER = CircuitBreaker()


def public_view(dest: models.Destination, now: datetime) -> dict[str, Any]:
    """The destination as the API and CLI show it: every setting, no secret."""
    auth = {"kind": dest.auth_kind, **{k: v for k, v in (dest.auth_config or {}).items() if k not in SECRET_FIELDS}}
    auth |= {f"{k}_set": True for k in SECRET_FIELDS if k in (dest.auth_config or {})}
    return {
        "id": dest.id, "name": dest.name, "url": dest.base_url, "auth": auth, "resource_types": dest.resource_types,
        "patients": dest.patients, "mode": dest.mode, "max_bundle_entries": dest.max_bundle_entries,
        "rate_limit": dest.rate_limit, "connect_timeout": dest.connect_timeout, "read_timeout": dest.read_timeout,
        "retry": policy(dest).to_dict(), "enabled": dest.enabled, "pull": dest.pull,
        "circuit": BREAKER.shown(circuit_state(dest), now),
        "created_at": dest.created_at.isoformat(), "updated_at": dest.updated_at.isoformat(),
    }


def interested_patients(db: Session, dest: models.Destination, patient_ids: Iterable[str]) -> set[str]:
    """Which of these clinic patients the destination receives (its ``patients`` selection)."""
    ids = set(patient_ids)
    kind = dest.patients.get("kind", "all")
    if kind == "all" or not ids:
        return ids
    if kind == "referred-by":
        who = dest.patients["practitioner_id"]
        direct = db.scalars(select(models.Patient.id).where(models.Patient.id.in_(ids),
                                                            models.Patient.referring_practitioner_id == who))
        referred = db.scalars(select(models.Referral.patient_id).where(
            models.Referral.patient_id.in_(ids), models.Referral.referrer_id == who,
            models.Referral.status != "entered-in-error"))
        return {*direct, *referred}
    return set(db.scalars(select(models.PatientIdentifier.patient_id).where(
        models.PatientIdentifier.patient_id.in_(ids), models.PatientIdentifier.system == dest.patients["system"])))
