"""The clinic API v1 blueprint: thin views over ``service.clinic.store``."""

from __future__ import annotations

import io
from typing import Any

from flask import Blueprint, Response, current_app, jsonify, request, url_for
from marshmallow import Schema, ValidationError, fields, validate

from service.audit import note
from service.auth import require_scope
from service.clinic.collections import COLLECTIONS, Collection
from service.clinic.fields import ID_PATTERN, AwareDateTime, FullMatch
from service.clinic.importer import import_lines, parse_json, read_lines
from service.clinic.store import get_record, list_records, put_record, to_response
from service.db import ANALYZE_AFTER_LINES, analyze, get_session
from service.errors import BadRequest, NotFound, UnprocessableEntity, flatten_errors
from service.fhir_store import links_of

__all__ = ["bp"]

bp = Blueprint("clinic", __name__, url_prefix="/api/v1")

NDJSON_TYPES = ("application/x-ndjson", "application/ndjson", "application/jsonl")
CHILDREN = {name for name, c in COLLECTIONS.items() if c.parent}
# Routes name the collections (Werkzeug's ``any`` converter) instead of taking any segment, so a
# path that is no collection is not routed to one: ``GET /import`` answers 405 with ``Allow: POST``
# (not the 404 of an unknown collection), and OPTIONS lists only the methods a path supports.
COLLECTION = "<any(" + ", ".join(COLLECTIONS) + "):collection>"
CHILD = "<any(" + ", ".join(sorted(CHILDREN)) + "):child>"


class ListQuery(Schema):
    patient_id = fields.String(validate=FullMatch(ID_PATTERN, error="Must be 1-64 characters of A-Z a-z 0-9 . _ -."))
    since = AwareDateTime()
    status = fields.String(validate=FullMatch(r"^[a-z-]{1,32}$", error="Must be 1-32 characters of a-z and -."))
    limit = fields.Integer(validate=validate.Range(min=1))
    cursor = fields.String(validate=validate.Length(min=1, max=512), metadata={
        "description": "Opaque: the next_cursor of the previous page, as returned. Any other value is 422."})


_list_query = ListQuery()


def _collection(name: str) -> Collection:
    coll = COLLECTIONS.get(name)
    if coll is None:
        raise NotFound(f"no collection {name!r}; collections: {', '.join(COLLECTIONS)}")
    return coll


def _child(name: str) -> Collection:
    if name not in CHILDREN:
        raise NotFound(f"no nested collection {name!r} under sessions; nested: {', '.join(sorted(CHILDREN))}")
    return COLLECTIONS[name]


def _json_body() -> Any:
    if request.mimetype != "application/json" and not request.mimetype.endswith("+json"):
        raise BadRequest("the body must be JSON sent as Content-Type: application/json",
                         {"_request": [f"Content-Type {request.mimetype or '(none)'} is not application/json."]})
    try:
        return parse_json(request.get_data())
    except (ValueError, UnicodeDecodeError) as exc:
        raise BadRequest(errors={"_request": [f"Not valid JSON: {exc}"]}) from None


def _write_response(coll: Collection, result: Any) -> Response:
    note(records=[(coll.name, result.row.id)])  # the audit trail: the record written
    body = to_response(result.row)
    body["warnings"] = result.warnings
    body["fhir"] = result.fhir
    response = jsonify(body)
    response.headers["X-Write-Outcome"] = result.outcome
    if result.outcome == "created":
        response.status_code = 201
        response.headers["Location"] = _location(coll, result.row)
    return response


def _read_response(coll: Collection, row: Any) -> Response:
    note(records=[(coll.name, row.id)])  # the audit trail: the record served
    body = to_response(row)
    body["fhir"] = links_of(get_session(), coll.name, row.id)
    return jsonify(body)


def _location(coll: Collection, row: Any) -> str:
    if coll.parent:
        return url_for("clinic.child_record", parent_id=row.session_id, child=coll.name, record_id=row.id)
    return url_for("clinic.record", collection=coll.name, record_id=row.id)


def _write(coll: Collection, record_id: str | None, parent_id: str | None, create_only: bool) -> Response:
    db = get_session()
    result = put_record(db, coll, _json_body(), record_id, parent_id=parent_id, create_only=create_only)
    db.commit()
    return _write_response(coll, result)


def _list(coll: Collection, parent_id: str | None = None) -> Response:
    unknown = set(request.args) - set(ListQuery._declared_fields)
    try:
        if unknown:
            raise ValidationError({k: ["Unknown query parameter."] for k in sorted(unknown)})
        args = _list_query.load(request.args.to_dict())
    except ValidationError as exc:
        raise UnprocessableEntity("invalid query parameters", flatten_errors(exc.messages)) from None
    settings = current_app.config["SETTINGS"]
    limit = min(args.pop("limit", settings.page_size), settings.max_page_size)
    page = list_records(get_session(), coll, limit=limit, parent_id=parent_id, **args)
    note(records=[(coll.name, item["id"]) for item in page.items])  # the audit trail: what was served
    body: dict[str, Any] = {"items": page.items, "limit": limit, "next_cursor": page.next_cursor}
    if page.next_cursor:
        nxt = request.args.to_dict() | {"cursor": page.next_cursor}
        body["next"] = url_for(request.endpoint, **(request.view_args or {}), **nxt)
    return jsonify(body)


@bp.get(f"/{COLLECTION}")
@require_scope("clinic:read")
def collection(collection: str) -> Response:
    return _list(_collection(collection))


@bp.post(f"/{COLLECTION}")
@require_scope("clinic:write")
def create(collection: str) -> Response:
    return _write(_collection(collection), None, None, create_only=True)


@bp.get(f"/{COLLECTION}/<record_id>")
@require_scope("clinic:read")
def record(collection: str, record_id: str) -> Response:
    coll = _collection(collection)
    return _read_response(coll, get_record(get_session(), coll, record_id))


@bp.put(f"/{COLLECTION}/<record_id>")
@require_scope("clinic:write")
def replace(collection: str, record_id: str) -> Response:
    return _write(_collection(collection), record_id, None, create_only=False)


@bp.get(f"/sessions/<parent_id>/{CHILD}")
@require_scope("clinic:read")
def child_collection(parent_id: str, child: str) -> Response:
    return _list(_child(child), parent_id)


@bp.post(f"/sessions/<parent_id>/{CHILD}")
@require_scope("clinic:write")
def child_create(parent_id: str, child: str) -> Response:
    return _write(_child(child), None, parent_id, create_only=True)


@bp.get(f"/sessions/<parent_id>/{CHILD}/<record_id>")
@require_scope("clinic:read")
def child_record(parent_id: str, child: str, record_id: str) -> Response:
    coll = _child(child)
    return _read_response(coll, get_record(get_session(), coll, record_id, parent_id))


@bp.put(f"/sessions/<parent_id>/{CHILD}/<record_id>")
@require_scope("clinic:write")
def child_replace(parent_id: str, child: str, record_id: str) -> Response:
    return _write(_child(child), record_id, parent_id, create_only=False)


@bp.post("/import")
@require_scope("clinic:write")
def import_ndjson() -> Response:
    if request.mimetype not in NDJSON_TYPES:
        raise BadRequest("the body must be NDJSON sent as Content-Type: application/x-ndjson",
                         {"_request": [f"Content-Type {request.mimetype or '(none)'} is not application/x-ndjson."]})
    settings = current_app.config["SETTINGS"]
    db = get_session()
    # the whole body (at most max_import_bytes) as today, so whatever else reads it still can; a
    # line over the cap is rejected unparsed
    lines = read_lines(io.BytesIO(request.get_data()), settings.max_import_line_bytes)
    report = import_lines(db, lines, max_line_bytes=settings.max_import_line_bytes,
                          max_errors=settings.max_import_errors)
    db.commit()
    note(records=[(line["type"], line["id"]) for line in report["lines"]])  # the audit trail: what was written
    if report["created"] + report["updated"] >= ANALYZE_AFTER_LINES:
        analyze(db)
    response = jsonify(report)
    response.status_code = 200
    return response
