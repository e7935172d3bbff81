"""The admin API: sync destinations, their queues, dead letters and delivery attempts.

Every route needs the ``admin`` scope; adding a destination, and a change that re-points it
(``url``, ``auth``), widens what it receives (``patients``, ``resource_types``, ``pull``) or
enables it, also needs ``admin:destinations`` (403 otherwise, before anything is read or
written). Responses carry settings, ids, statuses, codes and times:
never a secret (auth tokens, private keys) and never patient data. Status codes: a body that is
not a JSON object is 400, bad query parameters 400 with field errors, a destination or replay
body that fails validation 422 with field errors (a taken name too: it is a field error like
any other), an unknown destination 404. Listings page by keyset: ``after`` is the last id seen.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from flask import Blueprint, Response, current_app, jsonify, request, url_for
from marshmallow import RAISE, Schema, ValidationError, fields, validate
from sqlalchemy import select

from service import models
from service.admin import DESTINATIONS_SCOPE, needs_destinations_scope, remove_destination, save_destination
from service.auth import has_scope, require_scope
from service.clinic.fields import AwareDateTime
from service.clinic.importer import parse_json
from service.db import get_session
from service.errors import BadRequest, Forbidden, NotFound, UnprocessableEntity, flatten_errors
from service.sync import destinations, outbox, status

__all__ = ["bp"]

bp = Blueprint("admin", __name__, url_prefix="/admin")

#: ids are BIGINT on PostgreSQL: a larger number in a query is a bad request, not a database error
_ID = validate.Range(min=1, max=2**63 - 1)


class _Query(Schema):
    class Meta:
        unknown = RAISE

    limit = fields.Integer(validate=validate.Range(min=1, max=status.MAX_LIMIT), load_default=100)
    after = fields.Integer(validate=_ID)


class ListQuery(_Query):
    pass


class AttemptQuery(_Query):
    message_id = fields.Integer(validate=_ID)
    result = fields.String(validate=validate.OneOf(status.ATTEMPT_RESULTS))
    resource_type = fields.String(validate=validate.OneOf(destinations.SYNCABLE_TYPES))
    since = AwareDateTime()


class ReplayBody(Schema):
    class Meta:
        unknown = RAISE

    ids = fields.List(fields.Integer(strict=True, validate=_ID), validate=validate.Length(max=status.MAX_LIMIT))


def _now() -> datetime:
    return datetime.now(UTC)


def _destination(key: str) -> models.Destination:
    dest = destinations.get(get_session(), key)
    if dest is None:
        raise NotFound(f"no destination {key!r}")
    return dest


def _body(empty_ok: bool = False) -> dict[str, Any]:
    raw = request.get_data()
    if empty_ok and not raw.strip():
        return {}
    if request.mimetype != "application/json":
        raise BadRequest("the body must be JSON sent as Content-Type: application/json",
                         {"_request": [f"Content-Type {request.mimetype or '(none)'} is not application/json."]})
    try:
        body = parse_json(raw)
    except (ValueError, UnicodeDecodeError) as exc:
        raise BadRequest(errors={"_request": [f"Not valid JSON: {exc}"]}) from None
    if not isinstance(body, dict):
        raise BadRequest("the body must be a JSON object", {"_request": ["Not a JSON object."]})
    return body


def _args(schema: Schema) -> dict[str, Any]:
    try:
        return schema.load(request.args.to_dict())
    except ValidationError as exc:
        raise BadRequest("invalid query parameters", flatten_errors(exc.messages)) from None


def _save(dest: models.Destination | None, data: dict[str, Any]) -> tuple[models.Destination, int]:
    if needs_destinations_scope(dest, data) and not has_scope(DESTINATIONS_SCOPE):
        # the message names the scope only: nothing of the body or the destination is echoed
        raise Forbidden(f"adding, re-pointing, widening or enabling a destination needs the scope "
                        f"{DESTINATIONS_SCOPE!r}")
    try:
        return save_destination(get_session(), dest, data, _now(), current_app.config["SETTINGS"])
    except ValidationError as exc:
        raise UnprocessableEntity("the destination failed validation", flatten_errors(exc.messages)) from None


def _page(key: str, rows: list[dict[str, Any]], limit: int) -> Response:
    """One page of a keyset listing: ``next`` continues after its last row (rows were fetched limit + 1)."""
    more = len(rows) > limit
    rows = rows[:limit]
    if not more:
        return jsonify({key: rows, "next_after": None, "next": None})
    after = rows[-1]["id"]
    nxt = url_for(request.endpoint, **(request.view_args or {}), **(request.args.to_dict() | {"after": after}))
    return jsonify({key: rows, "next_after": after, "next": nxt})


@bp.get("/destinations")
@require_scope("admin")
def destination_list() -> Response:
    db, now = get_session(), _now()
    rows = db.scalars(select(models.Destination).order_by(models.Destination.name))
    return jsonify({"destinations": [status.describe(db, d, now) for d in rows]})


@bp.post("/destinations")
@require_scope("admin")
def destination_create() -> Response:
    dest, queued = _save(None, _body())
    response = jsonify(destinations.public_view(dest, _now()) | {"queued": queued})
    response.status_code = 201
    response.headers["Location"] = url_for("admin.destination", key=dest.id)
    return response


@bp.get("/destinations/<key>")
@require_scope("admin")
def destination(key: str) -> Response:
    return jsonify(status.describe(get_session(), _destination(key), _now()))


@bp.patch("/destinations/<key>")
@require_scope("admin")
def destination_update(key: str) -> Response:
    dest, queued = _save(_destination(key), _body())
    return jsonify(status.describe(get_session(), dest, _now()) | {"queued": queued})


@bp.delete("/destinations/<key>")
@require_scope("admin")
def destination_delete(key: str) -> Response:
    remove_destination(get_session(), _destination(key))
    return Response(status=204)


@bp.get("/destinations/<key>/status")
@require_scope("admin")
def destination_status(key: str) -> Response:
    return jsonify(status.destination_status(get_session(), _destination(key), _now()))


@bp.get("/destinations/<key>/dead-letters")
@require_scope("admin")
def dead_letters(key: str) -> Response:
    dest, args = _destination(key), _args(ListQuery())
    rows = status.dead_letters(get_session(), dest.id, args["limit"] + 1, args.get("after"))
    return _page("dead_letters", rows, args["limit"])


@bp.get("/destinations/<key>/waiting")
@require_scope("admin")
def waiting(key: str) -> Response:
    """What holds each waiting lane up (its oldest pending or in-flight message) and why."""
    dest, args = _destination(key), _args(ListQuery())
    rows = status.waiting(get_session(), dest.id, args["limit"] + 1, args.get("after"))
    return _page("waiting", rows, args["limit"])


@bp.post("/destinations/<key>/dead-letters/replay")
@require_scope("admin")
def dead_letters_replay(key: str) -> Response:
    """Dead letters back to pending: the ``ids`` given, or all of the destination's without ``ids``."""
    dest = _destination(key)
    try:
        ids = ReplayBody().load(_body(empty_ok=True)).get("ids")
    except ValidationError as exc:
        raise UnprocessableEntity("invalid replay request", flatten_errors(exc.messages)) from None
    db = get_session()
    replayed = outbox.replay(db, dest.id, ids, _now())
    db.commit()
    return jsonify({"replayed": replayed})


@bp.get("/destinations/<key>/attempts")
@require_scope("admin")
def attempts(key: str) -> Response:
    """The attempt log, newest first; ``after`` (an attempt id) continues with older attempts."""
    dest, args = _destination(key), _args(AttemptQuery())
    limit = args.pop("limit")
    rows = status.attempts(get_session(), dest.id, limit=limit + 1, after_id=args.pop("after", None), **args)
    return _page("attempts", rows, limit)


@bp.post("/destinations/<key>/sweep")
@require_scope("admin")
def sweep(key: str) -> Response:
    """Queue whatever the destination has not acknowledged and is not queued already."""
    dest, db = _destination(key), get_session()
    queued = outbox.sweep(db, dest, _now())
    db.commit()
    return jsonify({"queued": queued})
