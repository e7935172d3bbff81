"""Run a parsed search against the index, one page at a time, stable under concurrent writes.

**Paging scheme.** The first page fixes a snapshot time ``T`` (now). Every page matches the
*version of each resource that was current at T*: index rows are versioned (``valid_from`` <= T
< ``valid_to``, see index.py), and a page serves that version's stored content from
``fhir_resource_versions``. A resource written after T is therefore served as it was at T (or
not at all, if it was created or deleted after T) on every page, so its position in the order
never moves. Pages are cut by a keyset over the sort keys plus the resource id (a total order),
so no match is skipped or repeated however the data changes between requests. The next/previous
tokens carry T, the keyset position, the total and a fingerprint of the search, signed with
HMAC-SHA256; a token that fails the check is a 400, one older than ``SNAPSHOT_RETENTION`` (the
replaced versions' rows are pruned after that) a 410. The token grants nothing: criteria and
authorisation are re-applied from the request on each page.

Caveat: T is a wall-clock time and the rows carry their write's start time, so a write
transaction that started before T and committed after the first page can still become visible
to later pages of that search (no skip or repeat unless it *changes* a resource already served).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import ColumnElement, and_, exists, func, literal, not_, or_, select, true, tuple_
from sqlalchemy.orm import Session
from sqlalchemy.sql.selectable import Subquery

from service.fhir.outcomes import FhirError
from service.fhir.search._values import FAR_FUTURE, FAR_PAST
from service.fhir.search.index import SNAPSHOT_RETENTION
from service.fhir.search.request import (
    AP_MIN_WINDOW,
    PAGE_TOKEN_PARAM,
    Criterion,
    DateValue,
    NumberValue,
    ReferenceValue,
    SearchRequest,
    StringValue,
    TokenValue,
)
from service.models import FhirResourceVersion, FhirSearchIndex, UTCDateTime

__all__ = ["SearchResult", "apply_elements", "run_search"]

_INDEX = FhirSearchIndex.__table__
_SUBSETTED = {"system": "http://terminology.hl7.org/CodeSystem/v3-ObservationValue", "code": "SUBSETTED",
              "display": "subsetted"}


@dataclass
class SearchResult:
    """One page of a search.

    :param total: matches at the snapshot (None under ``_total=none``)
    :param resources: the page's matches in order, as their snapshot version (``.content`` is the
        stored JSON)
    :param included: ``_include``/``_revinclude`` resources, deduplicated, not in ``total``
    :param next: token for the next page (pass as ``_page_token``), None on the last page
    :param previous: token for the previous page, None on the first
    """

    total: int | None
    resources: list[FhirResourceVersion] = field(default_factory=list)
    included: list[FhirResourceVersion] = field(default_factory=list)
    next: str | None = None
    previous: str | None = None
    snapshot: datetime | None = None


# --- page tokens ---------------------------------------------------------------------------------------------------

def _key(db: Session) -> bytes:
    """The HMAC key: ``db.info["search_token_key"]`` if the app sets one, else derived from the base URI
    (integrity, not secrecy: a forged token could only page the requester's own search)."""
    configured = db.info.get("search_token_key")
    if configured:
        return configured if isinstance(configured, bytes) else str(configured).encode()
    return hashlib.sha256(b"ketamine-fhir search page token|" + str(db.info.get("base_uri", "")).encode()).digest()


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _fingerprint(request: SearchRequest) -> str:
    return hashlib.sha256(request.fingerprint.encode()).hexdigest()[:24]


def _encode(db: Session, state: dict[str, Any]) -> str:
    body = _b64(json.dumps(state, separators=(",", ":")).encode())
    return body + "." + _b64(hmac.new(_key(db), body.encode(), hashlib.sha256).digest()[:18])


def _decode(db: Session, token: str, request: SearchRequest, now: datetime) -> dict[str, Any]:
    invalid = FhirError(400, "invalid", "The page token is not valid for this search", [PAGE_TOKEN_PARAM])
    body, _, sig = token.partition(".")
    expected = _b64(hmac.new(_key(db), body.encode(), hashlib.sha256).digest()[:18])
    if not hmac.compare_digest(sig, expected):
        raise invalid
    try:
        state = json.loads(base64.urlsafe_b64decode(body + "=" * (-len(body) % 4)))
        state["t"] = datetime.fromisoformat(state["t"])
    except (ValueError, KeyError, TypeError) as exc:
        raise invalid from exc
    if state.get("f") != _fingerprint(request):
        raise invalid
    if state["t"] < now - SNAPSHOT_RETENTION:
        raise FhirError(410, "processing", "The page token has expired: repeat the search", [PAGE_TOKEN_PARAM])
    return state


# --- criteria --------------------------------------------------------------------------------------------------------

def _valid_at(t: Any, snapshot: datetime) -> ColumnElement[bool]:
    return and_(t.c.valid_from <= snapshot, or_(t.c.valid_to.is_(None), t.c.valid_to > snapshot))


def _date_clause(r: Any, v: DateValue, snapshot: datetime) -> ColumnElement[bool]:
    rs, re_ = r.c.date_start, r.c.date_end
    if v.prefix == "ap":
        window = max(abs(snapshot - v.start) / 10, AP_MIN_WINDOW)
        v = DateValue("ap", v.start - window, v.end + window)
    eq = and_(rs >= v.start, re_ <= v.end)
    return {"eq": eq, "ne": not_(eq), "gt": re_ > v.end, "lt": rs < v.start, "ge": re_ > v.start,
            "le": rs < v.end, "sa": rs >= v.end, "eb": re_ <= v.start,
            "ap": and_(rs < v.end, re_ > v.start)}[v.prefix]


def _number_clause(r: Any, v: NumberValue) -> ColumnElement[bool]:
    n, value = r.c.number, float(v.value)
    within = and_(n >= float(v.low), n < float(v.high))
    clause = {"eq": within, "ap": within, "ne": not_(within), "gt": n > value, "sa": n > value, "lt": n < value,
              "eb": n < value, "ge": n >= value, "le": n <= value}[v.prefix]
    if v.system:
        clause = and_(clause, r.c.token_system == v.system)
    if v.code:
        clause = and_(clause, r.c.token_code == v.code)
    return clause


def _value_clause(r: Any, crit: Criterion, v: Any, snapshot: datetime) -> ColumnElement[bool]:
    if isinstance(v, TokenValue):
        parts = [] if v.code is None else [r.c.token_code == v.code]
        if not v.any_system:
            parts.append(r.c.token_system == v.system if v.system else r.c.token_system.is_(None))
        return and_(true(), *parts)
    if isinstance(v, StringValue):
        if crit.modifier == "exact":
            return r.c.string_exact == v.text
        if crit.modifier == "contains":
            return r.c.string_norm.contains(v.norm, autoescape=True)
        return r.c.string_norm.startswith(v.norm, autoescape=True)
    if isinstance(v, DateValue):
        return _date_clause(r, v, snapshot)
    if isinstance(v, NumberValue):
        return _number_clause(r, v)
    assert isinstance(v, ReferenceValue)
    clause = r.c.ref_id == v.id
    return and_(clause, r.c.ref_type == v.type) if v.type else clause


def _same_version(r: Any, b: Any, param: str) -> list[ColumnElement[bool]]:
    return [r.c.resource_type == b.c.resource_type, r.c.resource_id == b.c.resource_id,
            r.c.version_id == b.c.version_id, r.c.param == param]


def _criterion_clause(b: Any, crit: Criterion, snapshot: datetime) -> ColumnElement[bool]:
    """One parameter occurrence: some index row of the matched version satisfies one of its values."""
    r = _INDEX.alias()
    where = _same_version(r, b, crit.param.name)
    if crit.missing is not None:
        found = exists(select(1).select_from(r).where(*where))
        return not_(found) if crit.missing else found
    values = or_(*(_value_clause(r, crit, v, snapshot) for v in crit.values))
    return exists(select(1).select_from(r).where(*where, values))


def _sort_column(b: Any, name: str, descending: bool) -> ColumnElement[Any]:
    """The start of the parameter's value (lowest ascending, highest descending); missing sorts last."""
    r = _INDEX.alias()
    agg = func.max(r.c.date_start) if descending else func.min(r.c.date_start)
    value = select(agg).where(*_same_version(r, b, name)).scalar_subquery()
    return func.coalesce(value, literal(FAR_PAST if descending else FAR_FUTURE, UTCDateTime()), type_=UTCDateTime())


def _matches(request: SearchRequest, snapshot: datetime) -> Subquery:
    """``rid``, ``ver`` and sort keys ``k0..`` of every match: the versions current at the snapshot."""
    b = _INDEX.alias("b")
    sort = [_sort_column(b, s.param, s.descending).label(f"k{i}") for i, s in enumerate(request.sort)]
    stmt = select(b.c.resource_id.label("rid"), b.c.version_id.label("ver"), *sort).where(
        b.c.resource_type == request.resource_type, b.c.param == "_id", _valid_at(b, snapshot))
    for crit in request.criteria:
        stmt = stmt.where(_criterion_clause(b, crit, snapshot))
    return stmt.subquery("m")


# --- paging ----------------------------------------------------------------------------------------------------------

def _keyset(m: Subquery, request: SearchRequest, key: list[Any], forward: bool) -> ColumnElement[bool]:
    """Rows strictly after (``forward``) or before ``key`` in the sort order ``k0.., rid``."""
    cols = [m.c[f"k{i}"] for i in range(len(request.sort))] + [m.c.rid]
    desc = [s.descending for s in request.sort] + [False]
    values = [datetime.fromisoformat(k) for k in key[:-1]] + [key[-1]]
    ors = []
    for i, col in enumerate(cols):
        after = (col < values[i]) if desc[i] == forward else (col > values[i])
        ors.append(and_(*(cols[j] == values[j] for j in range(i)), after))
    return or_(*ors)


def _order(m: Subquery, request: SearchRequest, forward: bool) -> list[Any]:
    cols = [(m.c[f"k{i}"], s.descending) for i, s in enumerate(request.sort)] + [(m.c.rid, False)]
    return [col.desc() if desc == forward else col.asc() for col, desc in cols]


def _key_of(row: Any, request: SearchRequest) -> list[Any]:
    return [getattr(row, f"k{i}").isoformat() for i in range(len(request.sort))] + [row.rid]


def _contents(db: Session, rtype: str, pairs: list[tuple[str, int]]) -> dict[tuple[str, int], FhirResourceVersion]:
    if not pairs:
        return {}
    rows = db.scalars(select(FhirResourceVersion).where(
        FhirResourceVersion.resource_type == rtype,
        tuple_(FhirResourceVersion.id, FhirResourceVersion.version_id).in_(pairs)))
    return {(r.id, r.version_id): r for r in rows}


# --- includes --------------------------------------------------------------------------------------------------------

def _included(db: Session, request: SearchRequest, page: list[tuple[str, int]],
              snapshot: datetime) -> list[FhirResourceVersion]:
    """``_include`` targets and ``_revinclude`` sources of the page, at the snapshot (search.html#include)."""
    if not page:
        return []
    wanted: dict[str, set[tuple[str, int]]] = {}
    r = _INDEX.alias()
    targets: set[tuple[str, str]] = set()
    for inc in request.includes:
        stmt = select(r.c.ref_type, r.c.ref_id).where(
            r.c.resource_type == request.resource_type, r.c.param == inc.param,
            tuple_(r.c.resource_id, r.c.version_id).in_(page))
        if inc.target:
            stmt = stmt.where(r.c.ref_type == inc.target)
        targets.update((t, i) for t, i in db.execute(stmt) if t is not None)
    if targets:
        b = _INDEX.alias()
        for rtype, rid, ver in db.execute(select(b.c.resource_type, b.c.resource_id, b.c.version_id).where(
                b.c.param == "_id", tuple_(b.c.resource_type, b.c.resource_id).in_(sorted(targets)),
                _valid_at(b, snapshot))):
            wanted.setdefault(rtype, set()).add((rid, ver))
    ids = sorted({rid for rid, _ in page})
    for inc in request.revincludes:
        if inc.target and inc.target != request.resource_type:
            continue
        for rid, ver in db.execute(select(r.c.resource_id, r.c.version_id).where(
                r.c.resource_type == inc.source, r.c.param == inc.param, r.c.ref_type == request.resource_type,
                r.c.ref_id.in_(ids), _valid_at(r, snapshot))):
            wanted.setdefault(inc.source, set()).add((rid, ver))
    wanted.get(request.resource_type, set()).difference_update(page)
    out = []
    for rtype in sorted(wanted):
        found = _contents(db, rtype, sorted(wanted[rtype]))
        out += [found[k] for k in sorted(found)]
    return out


# --- the search ------------------------------------------------------------------------------------------------------

def run_search(db: Session, request: SearchRequest, page_token: str | None = None, *,
               now: datetime | None = None) -> SearchResult:
    """One page of ``request``: the first page without ``page_token``, else the page it names.

    :raise FhirError: 400 for a token that is not valid for this search, 410 for an expired one
    """
    now = now or datetime.now(UTC)
    state = _decode(db, page_token, request, now) if page_token else {"t": now, "d": "n", "k": None, "n": None}
    snapshot: datetime = state["t"]
    m = _matches(request, snapshot)
    total = state["n"]
    if total is None and (request.total != "none" or request.summary_count):
        total = db.scalar(select(func.count()).select_from(m))
    result = SearchResult(total=total if request.total != "none" or request.summary_count else None,
                          snapshot=snapshot)
    if request.summary_count or request.count == 0:
        return result
    forward = state["d"] == "n"
    stmt = select(m)
    if state["k"] is not None:
        stmt = stmt.where(_keyset(m, request, state["k"], forward))
    rows = list(db.execute(stmt.order_by(*_order(m, request, forward)).limit(request.count + 1)))
    more = len(rows) > request.count
    rows = rows[:request.count] if forward else list(reversed(rows[:request.count]))
    content = _contents(db, request.resource_type, [(row.rid, row.ver) for row in rows])
    result.resources = [content[(row.rid, row.ver)] for row in rows if (row.rid, row.ver) in content]
    base = {"t": snapshot.isoformat(), "f": _fingerprint(request), "n": total}
    if rows:
        has_next = more if forward else True
        has_previous = (state["k"] is not None) if forward else more
        if has_next:
            result.next = _encode(db, {**base, "d": "n", "k": _key_of(rows[-1], request)})
        if has_previous:
            result.previous = _encode(db, {**base, "d": "p", "k": _key_of(rows[0], request)})
    result.included = _included(db, request, [(row.rid, row.ver) for row in rows], snapshot)
    return result


def apply_elements(resource: dict[str, Any], elements: tuple[str, ...]) -> dict[str, Any]:
    """``_elements``: keep ``resourceType``, ``id``, ``meta`` and the named top-level elements, and
    tag the result SUBSETTED (search.html#elements)."""
    keep = {"resourceType", "id", "meta", *elements}
    out = {k: v for k, v in resource.items() if k in keep}
    meta = dict(out.get("meta", {}))
    meta["tag"] = [*meta.get("tag", []), _SUBSETTED]
    out["meta"] = meta
    return out
