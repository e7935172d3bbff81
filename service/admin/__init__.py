"""Administration of sync destinations: the /admin API (views.py) and the writes it shares with the CLI.

Reads go through service/sync/status.py; settings through service/sync/destinations.py.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any

from marshmallow import ValidationError
from sqlalchemy.exc import DataError, IntegrityError
from sqlalchemy.orm import Session

from service import models
from service.sync import destinations, outbox

__all__ = ["remove_destination", "save_destination"]


def _messages(db: Session, dest_id: str) -> int:
    return sum(outbox.counts(db, dest_id).values())


def save_destination(db: Session, dest: models.Destination | None, data: Mapping[str, Any],
                     now: datetime) -> tuple[models.Destination, int]:
    """Create (``dest`` None) or change a destination and commit.

    Returns the destination and how many outbox messages that queued (the initial load, or what
    a wider selection adds).

    :raise ValidationError: bad fields or a name already taken; nothing is written
    """
    _kinds_named(data)
    before = 0 if dest is None else _messages(db, dest.id)
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
    return saved, queued


def _kinds_named(data: Mapping[str, Any]) -> None:
    """``auth`` and ``patients`` are replaced whole, even by a partial update: each must name its kind."""
    missing = [key for key in ("auth", "patients") if isinstance(data.get(key), Mapping) and "kind" not in data[key]]
    if missing:
        raise ValidationError({key: {"kind": ["Missing data for required field."]} for key in missing})


def remove_destination(db: Session, dest: models.Destination) -> None:
    """Delete a destination; the database cascades to its outbox, attempts and remote records."""
    db.delete(dest)
    db.commit()
