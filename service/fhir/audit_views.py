"""``/fhir/AuditEvent``: read and search the audit trail (service/audit.py), nothing else.

Its own small view over the ``audit_events`` table (not the generic search: AuditEvents are not
mapped clinic resources and are not in the search index). Routes are static paths, so they win
over the blueprint's generic ``/<resource_type>`` rules. Only an explicit ``system/AuditEvent.rs``
scope (or ``.r``/``.s``) allows them: neither ``system/*.rs`` nor the operator ``*`` grants the
audit trail (service/fhir/scopes.py). The trail is append-only: every write interaction is 405.

Search parameters (R4 AuditEvent): ``date`` (recorded; eq, lt, le, gt, ge), ``agent-name``
(starts with, case-insensitive), ``entity`` and ``patient`` (references ``Type/id``), ``type``,
``subtype``, ``action``, ``outcome`` (tokens, ``system|code`` or ``code``). Commas are OR,
repeated parameters AND. ``_count`` (max 500) and keyset paging (``_page``), newest first.
"""

from __future__ import annotations

import base64
import json
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import quote

from flask import Response, request
from sqlalchemy import and_, func, or_, select
from sqlalchemy.sql.elements import ColumnElement

from service.audit import note
from service.db import get_session
from service.fhir.http import bundle_response, entry, resource_response
from service.fhir.outcomes import FhirError
from service.fhir.views import authorize, bp
from service.models import AuditEventRef, AuditEventRow
from service.urls import external

__all__ = ["SEARCH_PARAMS"]

TYPE = "AuditEvent"
DEFAULT_COUNT, MAX_COUNT = 50, 500
#: name -> FHIR search parameter type (for the CapabilityStatement)
SEARCH_PARAMS = {"date": "date", "agent-name": "string", "entity": "reference", "patient": "reference",
                 "type": "token", "subtype": "token", "action": "token", "outcome": "token"}
_CONTROL = ("_count", "_page", "_format", "_pretty")
_TOKEN_COLUMNS = {"type": AuditEventRow.type_code, "subtype": AuditEventRow.subtype,
                  "action": AuditEventRow.action, "outcome": AuditEventRow.outcome}


@bp.get(f"/{TYPE}/<event_id>")
def audit_read(event_id: str) -> Response:
    authorize(TYPE, "read")
    row = get_session().get(AuditEventRow, event_id)
    if row is None:
        raise FhirError(404, "not-found", f"{TYPE}/{event_id} is not known")
    note([(TYPE, row.id)])
    return resource_response(row.content, 1, row.recorded)


@bp.get(f"/{TYPE}")
def audit_search() -> Response:
    authorize(TYPE, "search")
    return _search(list(request.args.items(multi=True)))


@bp.post(f"/{TYPE}/_search")
def audit_search_post() -> Response:
    authorize(TYPE, "search")
    if request.mimetype != "application/x-www-form-urlencoded":
        raise FhirError(415, "not-supported", "POST _search takes application/x-www-form-urlencoded parameters")
    return _search(list(request.args.items(multi=True)) + list(request.form.items(multi=True)))


@bp.route(f"/{TYPE}", methods=["POST", "PUT", "DELETE", "PATCH"])
@bp.route(f"/{TYPE}/<event_id>", methods=["POST", "PUT", "DELETE", "PATCH"])
def audit_write(event_id: str | None = None) -> Response:
    raise FhirError(405, "not-supported", "the audit trail is append-only and written by this server alone",
                    headers={"Allow": "GET"})


# --- search --------------------------------------------------------------------------------------


def _search(params: list[tuple[str, str]]) -> Response:
    strict = "handling=strict" in request.headers.get("Prefer", "").replace(" ", "")
    conditions, applied = [], []
    for name, value in params:
        if name in _CONTROL:
            continue
        condition = _condition(name, value, strict)
        if condition is not None:
            conditions.append(condition)
            applied.append((name, value))
    count, after = _count(params), _page(params)
    db = get_session()
    where = and_(*conditions) if conditions else None
    total_query = select(func.count()).select_from(AuditEventRow)
    query = select(AuditEventRow)
    if where is not None:
        total_query, query = total_query.where(where), query.where(where)
    if after is not None:
        stamp, last_id = after
        query = query.where(or_(AuditEventRow.recorded < stamp,
                                and_(AuditEventRow.recorded == stamp, AuditEventRow.id < last_id)))
    rows = list(db.scalars(query.order_by(AuditEventRow.recorded.desc(), AuditEventRow.id.desc()).limit(count + 1)))
    more, rows = len(rows) > count, rows[:count]
    note((TYPE, r.id) for r in rows)
    base = external(f"/fhir/{TYPE}")
    links = [{"relation": "self", "url": _url(base, applied, count, None)}]
    if more:
        links.append({"relation": "next", "url": _url(base, applied, count, _encode(rows[-1]))})
    head: dict[str, Any] = {"resourceType": "Bundle", "type": "searchset", "total": db.scalar(total_query),
                            "link": links}
    return bundle_response(head, (entry(f"{base}/{r.id}", r.content, {"search": {"mode": "match"}}) for r in rows))


def _url(base: str, applied: list[tuple[str, str]], count: int, page: str | None) -> str:
    pairs = [*applied, ("_count", str(count))] + ([("_page", page)] if page else [])
    return f"{base}?" + "&".join(f"{quote(k, safe='')}={quote(v, safe='')}" for k, v in pairs)


def _condition(name: str, value: str, strict: bool) -> ColumnElement[bool] | None:
    base_name, _, modifier = name.partition(":")
    if base_name not in SEARCH_PARAMS or (modifier and not (base_name == "agent-name" and modifier == "exact")):
        if strict:
            raise FhirError(400, "not-supported", f"unknown search parameter {name!r} for {TYPE}; "
                            f"supported: {', '.join(SEARCH_PARAMS)}", [name])
        return None
    values = [v for v in value.split(",") if v]
    if not values:
        raise FhirError(400, "invalid", f"{name} needs a value", [name])
    if base_name == "date":
        return and_(*[_date(v) for v in values]) if len(values) == 1 else or_(*[_date(v) for v in values])
    if base_name == "agent-name":
        column = func.lower(AuditEventRow.agent_name)
        if modifier == "exact":
            return AuditEventRow.agent_name.in_(values)
        return or_(*[column.like(_escape(v.lower()) + "%", escape="\\") for v in values])
    if base_name in ("entity", "patient"):
        kind = "patient" if base_name == "patient" else "entity"
        refs = [_reference(v, "Patient" if kind == "patient" else None, name) for v in values]
        kinds = ("patient",) if kind == "patient" else ("entity", "patient")
        return AuditEventRow.id.in_(select(AuditEventRef.event_id).where(
            AuditEventRef.kind.in_(kinds), AuditEventRef.ref.in_(refs)))
    codes = [v.rpartition("|")[2] for v in values]
    return _TOKEN_COLUMNS[base_name].in_(codes)


def _escape(text: str) -> str:
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


def _reference(value: str, default_type: str | None, name: str) -> str:
    ref = value.split("/_history/")[0]
    parts = ref.rstrip("/").split("/")
    if len(parts) >= 2:
        return "/".join(parts[-2:])
    if default_type:
        return f"{default_type}/{ref}"
    raise FhirError(400, "invalid", f"{name} must be a reference Type/id", [name])


_PREFIXES = ("eq", "lt", "le", "gt", "ge")


def _date(value: str) -> ColumnElement[bool]:
    prefix = value[:2] if value[:2] in _PREFIXES else "eq"
    start, end = _range(value[2:] if value[:2] in _PREFIXES else value)
    column = AuditEventRow.recorded
    return {"eq": and_(column >= start, column < end), "lt": column < start, "le": column < end,
            "gt": column >= end, "ge": column >= start}[prefix]


def _range(text: str) -> tuple[datetime, datetime]:
    """The half-open UTC range a FHIR date(time) of any precision covers."""
    try:
        if len(text) == 4:
            start = datetime(int(text), 1, 1, tzinfo=UTC)
            return start, start.replace(year=start.year + 1)
        if len(text) == 7:
            start = datetime(int(text[:4]), int(text[5:7]), 1, tzinfo=UTC)
            return start, (start + timedelta(days=32)).replace(day=1)
        if len(text) == 10:
            start = datetime.fromisoformat(text).replace(tzinfo=UTC)
            return start, start + timedelta(days=1)
        moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise FhirError(400, "invalid", f"date {text!r} is not a FHIR date or dateTime", ["date"]) from None
    if moment.tzinfo is None:
        raise FhirError(400, "invalid", "a date with a time needs a time zone", ["date"])
    step = timedelta(milliseconds=1) if "." in text else timedelta(seconds=1)
    return moment, moment + step


def _count(params: list[tuple[str, str]]) -> int:
    raw = next((v for k, v in params if k == "_count"), str(DEFAULT_COUNT))
    if not raw.isdigit() or int(raw) < 1:
        raise FhirError(400, "invalid", "_count must be a whole number of at least 1", ["_count"])
    return min(int(raw), MAX_COUNT)


def _page(params: list[tuple[str, str]]) -> tuple[datetime, str] | None:
    token = next((v for k, v in params if k == "_page"), None)
    if not token:
        return None
    try:
        stamp, last_id = json.loads(base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)))
        return datetime.fromisoformat(stamp), str(last_id)
    except (ValueError, TypeError):
        raise FhirError(400, "invalid", "the _page token is not one this server issued", ["_page"]) from None


def _encode(row: AuditEventRow) -> str:
    raw = json.dumps([row.recorded.isoformat(), row.id]).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")
