"""Administration of sync destinations: the /admin API (views.py) and the writes it shares with the CLI.

Reads go through service/sync/status.py; settings through service/sync/destinations.py.

What this layer adds to ``destinations.create/update`` (security review, finding 2): the URL
policy (service/admin/policy.py), a new destination starts paused, re-pointing one (``url``,
``auth``) pauses it unless the same change enables it, and every change is audited by
:func:`_audit_destination`. Which changes need the ``admin:destinations`` scope is
:func:`needs_destinations_scope`; the API checks it, the CLI is the operator.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from datetime import datetime
from typing import Any

from marshmallow import ValidationError
from sqlalchemy.exc import DataError, IntegrityError
from sqlalchemy.orm import Session

from service import models
from service.admin.policy import url_errors
from service.config import Settings
from service.sync import destinations, outbox

__all__ = ["DESTINATIONS_SCOPE", "PRIVILEGED_FIELDS", "needs_destinations_scope", "remove_destination",
           "save_destination"]

audit_log = logging.getLogger("ketamine_fhir.audit")

DESTINATIONS_SCOPE = "admin:destinations"
#: a change of any of these decides where data goes, or how much: it needs ``admin:destinations``
PRIVILEGED_FIELDS = ("url", "auth", "patients", "resource_types", "pull")
#: a change of these pauses the destination: the new server has not been checked yet
_REPOINTING = ("url", "auth")
#: what the audit line compares (never a secret: ``public_view`` has none)
_AUDITED = ("name", "url", "auth", "resource_types", "patients", "mode", "max_bundle_entries", "rate_limit",
            "connect_timeout", "read_timeout", "retry", "enabled", "pull")


def needs_destinations_scope(dest: models.Destination | None, data: Mapping[str, Any]) -> bool:
    """Whether this create (``dest`` None) or change needs ``admin:destinations``: creating, any
    privileged field, or enabling. Pausing, renaming, timeouts and the like need only ``admin``."""
    return dest is None or any(key in data for key in PRIVILEGED_FIELDS) or data.get("enabled") is True


def _messages(db: Session, dest_id: str) -> int:
    return sum(outbox.counts(db, dest_id).values())


def save_destination(db: Session, dest: models.Destination | None, data: Mapping[str, Any],
                     now: datetime, settings: Settings) -> tuple[models.Destination, int]:
    """Create (``dest`` None) or change a destination and commit.

    A new destination is disabled whatever ``data`` says (its initial load waits, queued); a
    change of ``url`` or ``auth`` disables it unless ``data`` sets ``enabled: true``.

    Returns the destination and how many outbox messages that queued (the initial load, or what
    a wider selection adds).

    :raise ValidationError: bad fields, a URL the policy refuses, or a name already taken; nothing
        is written
    """
    _kinds_named(data)
    data = _paused(dest, data)
    _check_policy(dest, data, settings)
    before = 0 if dest is None else _messages(db, dest.id)
    old = None if dest is None else _audited_view(dest, now)
    try:
        saved = destinations.create(db, data, now) if dest is None else destinations.update(db, dest, data, now)
        queued = _messages(db, saved.id) - before
        db.commit()
    except IntegrityError:  # a concurrent create took the name between the check and the insert
        db.rollback()
        raise ValidationError({"name": ["a destination with this name exists"]}) from None
    except DataError:  # a value the schema let through is longer than its column
        db.rollback()
        raise ValidationError(["a value is longer than the database stores"]) from None
    _audit_destination(_action(old, saved), saved, _changed(old, _audited_view(saved, now), data))
    return saved, queued


def _paused(dest: models.Destination | None, data: Mapping[str, Any]) -> dict[str, Any]:
    """``data`` with the enabled state this layer decides: off on create, off on re-pointing."""
    data = dict(data)
    if dest is None:
        data["enabled"] = False  # enabling is a separate, audited step
    elif any(key in data for key in _REPOINTING) and data.get("enabled") is not True:
        data["enabled"] = False
    return data


def _check_policy(dest: models.Destination | None, data: Mapping[str, Any], settings: Settings) -> None:
    """Refuse a URL or SMART token URL outside the policy, with the schema's other errors alongside.

    Enabling checks the URLs it keeps too: a destination made before the policy (or before the
    allow-list was narrowed) is not switched back on to a host the operator no longer allows.
    """
    errors: dict[str, Any] = {}
    url, auth = data.get("url"), data.get("auth")
    if dest is not None and data.get("enabled") is True:
        url = url if "url" in data else dest.base_url
        auth = auth if "auth" in data else dest.auth_config
    if isinstance(url, str) and (problems := url_errors(url, settings)):
        errors["url"] = problems
    if isinstance(auth, Mapping) and isinstance(auth.get("token_url"), str) and (
            problems := url_errors(auth["token_url"], settings)):
        errors["auth"] = {"token_url": problems}
    if not errors:
        return
    try:
        destinations.DestinationSchema().load(dict(data), partial=dest is not None)
    except ValidationError as exc:
        if isinstance(exc.messages, Mapping):
            errors = _merge(dict(exc.messages), errors)
    raise ValidationError(errors)


def _merge(into: dict[str, Any], extra: Mapping[str, Any]) -> dict[str, Any]:
    for key, value in extra.items():
        if isinstance(value, Mapping) and isinstance(into.get(key), Mapping):
            into[key] = _merge(dict(into[key]), value)
        elif isinstance(value, list) and isinstance(into.get(key), list):
            into[key] = [*into[key], *value]
        else:
            into[key] = value
    return into


def _audited_view(dest: models.Destination, now: datetime) -> dict[str, Any]:
    view = destinations.public_view(dest, now)
    return {key: view[key] for key in _AUDITED}


def _action(old: Mapping[str, Any] | None, saved: models.Destination) -> str:
    if old is None:
        return "create"
    if old["enabled"] != saved.enabled:
        return "enable" if saved.enabled else "pause"
    return "update"


def _changed(old: Mapping[str, Any] | None, new: Mapping[str, Any], data: Mapping[str, Any]) -> list[str]:
    """The fields that changed; ``auth`` whenever it was given (a new secret looks the same in a view)."""
    if old is None:
        return sorted(key for key in _AUDITED if key in data or key == "enabled")
    return sorted({key for key in _AUDITED if old[key] != new[key]} | ({"auth"} & set(data)))


def _audit_destination(action: str, dest: models.Destination, fields: list[str]) -> None:
    """One structured line per destination change on ``ketamine_fhir.audit``: who, what, which
    fields — never a value (no secret, no URL, no PHI). The single place to route these to the
    FHIR AuditEvent store (service/audit.py) once it exists."""
    event = {"event": "destination", "action": action, "destination_id": dest.id, "destination_name": dest.name,
             "actor": _actor(), "fields": fields, "enabled": dest.enabled}
    audit_log.info(json.dumps(event, sort_keys=True), extra={"audit": event})
    from service.audit import destination_change  # late: the FHIR AuditEvent store (issue 10)

    destination_change(action, dest)


def _actor() -> str:
    """The API token's name in a request, else ``cli`` (the CLI is run by the operator)."""
    from flask import g, has_app_context

    return (g.get("token_name") if has_app_context() else None) or "cli"


def _kinds_named(data: Mapping[str, Any]) -> None:
    """``auth`` and ``patients`` are replaced whole, even by a partial update: each must name its kind."""
    missing = [key for key in ("auth", "patients") if isinstance(data.get(key), Mapping) and "kind" not in data[key]]
    if missing:
        raise ValidationError({key: {"kind": ["Missing data for required field."]} for key in missing})


def remove_destination(db: Session, dest: models.Destination) -> None:
    """Delete a destination; the database cascades to its outbox, attempts and remote records."""
    db.delete(dest)
    db.commit()
    _audit_destination("delete", dest, [])
