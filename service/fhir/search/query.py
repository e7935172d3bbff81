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
authorisation are re-applied from the request on each page. Every field of a signed token is
checked as well (``_checked_state``: a snapshot in the future, a keyset of the wrong length or
types, a negative total are 400), so no token reaches the database in a shape we did not make.

What a search-only token (``system/X.s``) can see through paging: resources as some search at an
issued snapshot ``T`` served them, ``T`` at most ``SNAPSHOT_RETENTION`` ago. It can choose when to
*start* a search, not which ``T`` a token carries, so a version it sees was current at a moment
it could have searched anyway; it cannot reach a version older than that (vread and history need
``r``). Tokens are not bound to the client that got them: one leaked in a log lets another
search-scoped client page that search as of its ``T``.

Caveat: T is a wall-clock time and the rows carry their write's start time, so a write
transaction that started before T and committed after the first page can still become visible
to later pages of that search (no skip or repeat unless it *changes* a resource already served).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import re
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import ColumnElement, and_, exists, func, literal, not_, or_, select, text, true, tuple_
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import Session
from sqlalchemy.sql.selectable import Subquery

from service.db import RETRY_AFTER_SECONDS
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

__all__ = ["MAX_INCLUDED", "SEARCH_SECONDS", "ResponseBudget", "SearchResult", "apply_elements", "run_search",
           "time_limit", "timeout_error"]

_INDEX = FhirSearchIndex.__table__
_RESOURCE_ID = re.compile(r"[A-Za-z0-9\-.]{1,64}")
#: a token's snapshot may be this far ahead of our clock (web machines' clocks differ slightly)
CLOCK_SKEW = timedelta(seconds=5)
#: the longest one search (all its statements) may run: a longer one is stopped and answered 503
#: ``timeout`` with Retry-After (security review, finding 4); tests shrink it
SEARCH_SECONDS = 10.0
#: most ``_include``/``_revinclude`` resources on one page (more: 413 ``too-costly``, finding 5)
MAX_INCLUDED = 1000
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


# --- cost bounds ------------------------------------------------------------------------------------------------------

class ResponseBudget:
    """The bytes an answer (a search page, or every entry of a Bundle) may still take
    (``KETAMINE_FHIR_MAX_RESPONSE_BYTES``): stored resources are counted as they are loaded, so an
    oversized answer stops before it is built (security review, finding 5)."""

    def __init__(self, limit: int):
        self.limit, self.used = limit, 0

    def spend(self, nbytes: int) -> None:
        """:raise FhirError: 413 ``too-costly`` once the answer would exceed the limit"""
        self.used += nbytes
        if self.used > self.limit:
            raise FhirError(413, "too-costly", f"the answer would be larger than {self.limit} bytes: ask for fewer "
                            "resources (_count, _include, _revinclude, _elements) or split the Bundle")


def timeout_error(seconds: float) -> FhirError:
    """503 ``timeout`` (a ``transient`` issue, R4 valueset-issue-type): the query may well succeed when
    the database is less busy, and a narrower one will; Retry-After says when to try again."""
    return FhirError(503, "timeout", f"the search ran longer than {seconds:g} s and was stopped: narrow it "
                     "(fewer values, a date range, a smaller _count) or retry later",
                     headers={"Retry-After": str(RETRY_AFTER_SECONDS)})


#: SQLite virtual-machine steps between two looks at the clock
_PROGRESS_STEPS = 10_000


@contextmanager
def time_limit(db: Session, seconds: float) -> Iterator[None]:
    """Stop the statements run inside after ``seconds`` (SQLite: a progress handler on the raw
    connection aborts the running statement; PostgreSQL: ``statement_timeout``, per statement, for
    this transaction only).

    :raise FhirError: 503 ``timeout`` (see :func:`timeout_error`)
    """
    conn = db.connection()
    if conn.dialect.name == "sqlite":
        raw = conn.connection.dbapi_connection
        deadline = time.monotonic() + seconds
        raw.set_progress_handler(lambda: int(time.monotonic() > deadline), _PROGRESS_STEPS)  # type: ignore[union-attr]
        try:
            yield
        except OperationalError as exc:
            if "interrupted" in str(exc.orig):
                raise timeout_error(seconds) from None
            raise
        finally:
            raw.set_progress_handler(None, _PROGRESS_STEPS)  # type: ignore[union-attr]
        return
    previous = db.scalar(text("SELECT current_setting('statement_timeout')"))
    limit = f"{max(1, int(seconds * 1000))}ms"  # 0 would mean no limit at all
    db.execute(text("SELECT set_config('statement_timeout', :ms, true)"), {"ms": limit})
    try:
        yield
    except OperationalError as exc:
        if getattr(exc.orig, "sqlstate", None) == "57014":  # query_canceled; the transaction is aborted
            raise timeout_error(seconds) from None
        raise
    db.execute(text("SELECT set_config('statement_timeout', :ms, true)"), {"ms": previous})


# --- page tokens ---------------------------------------------------------------------------------------------------

def _key(db: Session) -> bytes:
    """The HMAC key: the service's random secret (service/keys.py), never anything public."""
    return hmac.new(db.info["secret_key"](), b"ketamine-fhir search page token", hashlib.sha256).digest()


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _fingerprint(request: SearchRequest) -> str:
    return hashlib.sha256(request.fingerprint.encode()).hexdigest()[:24]


def _encode(db: Session, state: dict[str, Any]) -> str:
    body = _b64(json.dumps(state, separators=(",", ":")).encode())
    return body + "." + _b64(hmac.new(_key(db), body.encode(), hashlib.sha256).digest()[:18])


def _decode(db: Session, token: str, request: SearchRequest, now: datetime) -> dict[str, Any]:
    """The state of a token we issued for this search, every field checked (finding 8): a token
    that is not exactly what :func:`run_search` signs is a 400, never a 500."""
    invalid = FhirError(400, "invalid", "The page token is not valid for this search", [PAGE_TOKEN_PARAM])
    body, _, sig = token.partition(".")
    expected = _b64(hmac.new(_key(db), body.encode(), hashlib.sha256).digest()[:18])
    if not hmac.compare_digest(sig.encode(), expected.encode()):
        raise invalid
    try:
        state = json.loads(base64.urlsafe_b64decode(body + "=" * (-len(body) % 4)))
        state = _checked_state(state, request, now)
    except (ValueError, KeyError, TypeError) as exc:  # binascii.Error and UnicodeDecodeError are ValueErrors
        raise invalid from exc
    if state["f"] != _fingerprint(request):
        raise invalid
    if state["t"] < now - SNAPSHOT_RETENTION:
        raise FhirError(410, "processing", "The page token has expired: repeat the search", [PAGE_TOKEN_PARAM])
    return state


def _instant(value: Any) -> datetime:
    """An aware ISO instant (``datetime.fromisoformat`` alone takes naive times and dates)."""
    if not isinstance(value, str):
        raise TypeError("not a string")
    moment = datetime.fromisoformat(value)
    if moment.tzinfo is None or moment.utcoffset() is None:
        raise ValueError("not an instant")
    return moment


def _checked_state(state: Any, request: SearchRequest, now: datetime) -> dict[str, Any]:
    """``{"t": instant not after now, "d": "n"|"p", "k": [sort instants..., id], "n": int>=0|None,
    "f": str}`` with ``t`` and the sort keys parsed.

    :raise ValueError, TypeError: anything else
    """
    if not isinstance(state, dict) or set(state) != {"t", "d", "k", "n", "f"}:
        raise ValueError("fields")
    snapshot = _instant(state["t"])
    if snapshot > now + CLOCK_SKEW:
        raise ValueError("a snapshot in the future was never issued")
    key, total = state["k"], state["n"]
    if state["d"] not in ("n", "p") or not isinstance(state["f"], str):
        raise ValueError("d or f")
    if total is not None and (type(total) is not int or total < 0):
        raise ValueError("n")
    if not isinstance(key, list) or len(key) != len(request.sort) + 1:
        raise ValueError("k")
    if not isinstance(key[-1], str) or not _RESOURCE_ID.fullmatch(key[-1]):
        raise ValueError("k id")
    return {**state, "t": snapshot, "k": [_instant(k) for k in key[:-1]] + [key[-1]]}


# --- criteria --------------------------------------------------------------------------------------------------------

def _valid_at(t: Any, snapshot: datetime) -> ColumnElement[bool]:
    return and_(t.c.valid_from <= snapshot, or_(t.c.valid_to.is_(None), t.c.valid_to > snapshot))


def _date_clause(r: Any, v: DateValue, snapshot: datetime) -> ColumnElement[bool]:
    rs, re_ = r.c.date_start, r.c.date_end
    if v.prefix == "ap":
        window = max(abs(snapshot - v.start) / 10, AP_MIN_WINDOW)
        # clamped to the calendar: ``ap0001-01-01`` was an OverflowError (security review, finding 10)
        v = DateValue("ap", v.start - window if v.start - FAR_PAST > window else FAR_PAST,
                      v.end + window if FAR_FUTURE - v.end > window else FAR_FUTURE)
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
    """Rows strictly after (``forward``) or before ``key`` (sort instants, id: checked by
    :func:`_checked_state`) in the sort order ``k0.., rid``."""
    cols = [m.c[f"k{i}"] for i in range(len(request.sort))] + [m.c.rid]
    desc = [s.descending for s in request.sort] + [False]
    values = key
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


def _contents(db: Session, rtype: str, pairs: list[tuple[str, int]],
              budget: ResponseBudget | None = None) -> dict[tuple[str, int], FhirResourceVersion]:
    """The stored versions, loaded a few at a time and counted against ``budget`` as they come."""
    if not pairs:
        return {}
    rows = db.scalars(select(FhirResourceVersion).where(
        FhirResourceVersion.resource_type == rtype,
        tuple_(FhirResourceVersion.id, FhirResourceVersion.version_id).in_(pairs)).execution_options(yield_per=50))
    out = {}
    for r in rows:
        if budget is not None:
            budget.spend(len(r.content))
        out[(r.id, r.version_id)] = r
    return out


def _too_many_included() -> FhirError:
    return FhirError(413, "too-costly", f"more than {MAX_INCLUDED} resources to include on one page: use a "
                     "smaller _count or fewer _include/_revinclude", ["_include", "_revinclude"])


# --- includes --------------------------------------------------------------------------------------------------------

def _included(db: Session, request: SearchRequest, page: list[tuple[str, int]], snapshot: datetime,
              budget: ResponseBudget | None = None) -> list[FhirResourceVersion]:
    """``_include`` targets and ``_revinclude`` sources of the page, at the snapshot (search.html#include);
    at most :data:`MAX_INCLUDED` (a revinclude of a patient's every Observation has no natural bound).

    :raise FhirError: 413 ``too-costly`` for more
    """
    if not page or not (request.includes or request.revincludes):
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
        targets.update((t, i) for t, i in db.execute(stmt.limit(MAX_INCLUDED + 1)) if t is not None)
        if len(targets) > MAX_INCLUDED:
            raise _too_many_included()
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
                r.c.ref_id.in_(ids), _valid_at(r, snapshot)).limit(MAX_INCLUDED + 1)):
            wanted.setdefault(inc.source, set()).add((rid, ver))
        if sum(len(v) for v in wanted.values()) > MAX_INCLUDED:
            raise _too_many_included()
    wanted.get(request.resource_type, set()).difference_update(page)
    out = []
    for rtype in sorted(wanted):
        found = _contents(db, rtype, sorted(wanted[rtype]), budget)
        out += [found[k] for k in sorted(found)]
    return out


# --- the search ------------------------------------------------------------------------------------------------------

def run_search(db: Session, request: SearchRequest, page_token: str | None = None, *,
               now: datetime | None = None, budget: ResponseBudget | None = None) -> SearchResult:
    """One page of ``request``: the first page without ``page_token``, else the page it names,
    within :data:`SEARCH_SECONDS` and ``budget``.

    :raise FhirError: 400 for a token that is not valid for this search, 410 for an expired one,
        413 for a page over ``budget`` or :data:`MAX_INCLUDED`, 503 ``timeout`` for a slow search
    """
    with time_limit(db, SEARCH_SECONDS):
        return _run_search(db, request, page_token, now or datetime.now(UTC), budget)


def _run_search(db: Session, request: SearchRequest, page_token: str | None, now: datetime,
                budget: ResponseBudget | None) -> SearchResult:
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
    content = _contents(db, request.resource_type, [(row.rid, row.ver) for row in rows], budget)
    result.resources = [content[(row.rid, row.ver)] for row in rows if (row.rid, row.ver) in content]
    base = {"t": snapshot.isoformat(), "f": _fingerprint(request), "n": total}
    if rows:
        has_next = more if forward else True
        has_previous = (state["k"] is not None) if forward else more
        if has_next:
            result.next = _encode(db, {**base, "d": "n", "k": _key_of(rows[-1], request)})
        if has_previous:
            result.previous = _encode(db, {**base, "d": "p", "k": _key_of(rows[0], request)})
    result.included = _included(db, request, [(row.rid, row.ver) for row in rows], snapshot, budget)
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
