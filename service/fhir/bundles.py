"""Transaction and batch Bundles at ``POST /fhir`` (R4 http.html#transaction, bundle.html#transaction).

* **transaction**: every entry runs in one database transaction; the first failing entry rolls all
  of them back (clinic records included) and the answer is that entry's error as one
  OperationOutcome whose ``expression`` names it (``Bundle.entry[3]``). On success the answer is a
  ``transaction-response`` Bundle, one entry per request entry, in the same order.
* **batch**: every entry runs in its own SAVEPOINT and succeeds or fails alone; the answer is a
  ``batch-response`` Bundle whose failed entries carry ``response.outcome``.

Entries are processed in the spec's order (http.html#trules): DELETE, POST, PUT/PATCH, GET/HEAD, so
the GETs of a transaction see its writes.

**Locking and the GET entries (security review, finding 4).** No search runs under the database
write lock. A transaction is checked first, before any work: every entry's scopes, every search's
parameters (``parse_search``), every read and vread target (it must exist already: ids are
server-assigned, so no entry of this transaction can create it). Then its writes run under the
write lock and are committed, and only then do its GET entries run, each in its own SAVEPOINT of
a fresh read transaction: they see the transaction's writes (and anything committed since). A
GET entry that fails after the commit (a search that ran too long, 503; an answer over the size
budget, 413) is answered in its own entry, because the writes are stored and a failed answer
would make a client send them again; a transaction without writes fails as a whole instead. A
batch works the same way: writes (each in a SAVEPOINT) under the lock, commit, then the GETs.
Conditional references (below) take ``identifier=system|value`` only, an index lookup, since
they are resolved under the lock. Supported: POST (create, ``ifNoneExist``) and PUT (update
by id with ``ifMatch``, conditional update ``Type?identifier=...``) of the types
:data:`service.fhir.writes.WRITABLE` takes, and GET (read, vread, search) of every served type.
DELETE, PATCH and HEAD are answered 405, other types 404.

In a transaction, a reference to the ``fullUrl`` of another entry (``urn:uuid:`` / ``urn:oid:``) is
replaced by the id the server gives that entry's resource (writes that others reference are
processed first, keeping the spec's order otherwise); a conditional reference
(``Patient?identifier=system|value``, http.html#trules) is replaced by its single match, in both
Bundle types (no match or several: 412 for that entry).

Limits (issue 4, item 4; security review, findings 4 and 5): at most :data:`MAX_ENTRIES` entries,
:data:`MAX_SEARCHES` search entries and :func:`max_bundle_bytes` bytes, else 413 before any work;
each search within ``SEARCH_SECONDS`` (service/fhir/search/query.py, else 503 ``timeout``); the
whole answer within ``KETAMINE_FHIR_MAX_RESPONSE_BYTES``: in a batch the entry that would exceed it
gets 413 in its own entry, a transaction that has not committed fails with 413 as a whole. An
unexpected error in one batch entry is that entry's 500; the others keep their results. Lock
contention (another writer holding the database) is answered 503 with Retry-After.
"""

from __future__ import annotations

import copy
import json
import logging
import re
import secrets
from collections.abc import Iterable
from dataclasses import dataclass, field
from http import HTTPStatus
from typing import Any
from urllib.parse import parse_qsl, urlsplit

from pydantic import ValidationError
from sqlalchemy.exc import IntegrityError, OperationalError
from sqlalchemy.orm import Session

from mappings.resources import MAPPED_TYPES
from service import fhir_store, models
from service.db import RETRY_AFTER_SECONDS, is_lock_contention
from service.fhir import writes
from service.fhir.outcomes import FhirError, operation_outcome
from service.fhir.scopes import INTERACTIONS, allows
from service.fhir.search import ResponseBudget, SearchRequest
from service.fhir.tokens import version_number

__all__ = ["MAX_ENTRIES", "MAX_SEARCHES", "BundleResult", "RawJSON", "max_bundle_bytes", "process_bundle"]

log = logging.getLogger("ketamine_fhir.fhir.bundles")

#: most entries one transaction or batch Bundle may hold (more: 413)
MAX_ENTRIES = 500
#: most search entries (``GET Type?...``) one Bundle may hold (more: 413 before any work): a
#: Bundle of 25 heavy searches held the write lock 14 s (security review, finding 4)
MAX_SEARCHES = 20
#: the default answer budget when the caller gives none (KETAMINE_FHIR_MAX_RESPONSE_BYTES)
DEFAULT_RESPONSE_BYTES = 32 * 1024 * 1024
_WRITES = ("create", "update", "cupdate")
#: a Bundle body may be this many times KETAMINE_FHIR_MAX_BODY_BYTES (4 MiB by default; more: 413)
BODY_FACTOR = 4

_METHODS = ("GET", "HEAD", "POST", "PUT", "DELETE", "PATCH")
#: processing order (http.html#trules)
_ORDER = {"DELETE": 0, "POST": 1, "PUT": 2, "PATCH": 2, "GET": 3, "HEAD": 3}
_LOCAL_FULL_URL = re.compile(r"^urn:(uuid|oid):\S+$")
_CONDITIONAL_REF = re.compile(r"^(?P<type>[A-Z][A-Za-z]+)\?(?P<query>.+)$")
_TYPE = re.compile(r"^[A-Z][A-Za-z]+$")
_ID = re.compile(r"^[A-Za-z0-9\-.]{1,64}$")
#: expressions of the single-write errors (HTTP headers, the query) -> the entry.request element
_REQUEST_FIELDS = {"If-None-Exist": "ifNoneExist", "If-Match": "ifMatch", "identifier": "url"}


def max_bundle_bytes(max_body_bytes: int) -> int:
    """The largest Bundle body: :data:`BODY_FACTOR` times the single-write body limit."""
    return BODY_FACTOR * max_body_bytes


@dataclass
class _Entry:
    """One request entry, parsed: ``kind`` is create, update, cupdate, read, vread, search or unsupported."""

    index: int
    method: str
    url: str
    resource_type: str
    kind: str
    resource_id: str | None = None
    version_id: str | None = None
    query: str = ""
    resource: dict[str, Any] | None = None
    full_url: str | None = None
    if_none_exist: str | None = None
    if_match: str | None = None
    problem: FhirError | None = None  # answered for this entry (404/405), not a malformed Bundle
    search: SearchRequest | None = None  # a transaction's search, parsed before any work

    @property
    def conditional(self) -> bool:
        """A conditional create or update: it searches before it writes."""
        return (self.kind == "create" and bool(self.if_none_exist)) or self.kind == "cupdate"

    @property
    def interaction(self) -> str | None:
        return {"create": "create", "update": "update", "cupdate": "update", "read": "read", "vread": "vread",
                "search": "search"}.get(self.kind)


@dataclass
class BundleResult:
    """The answer: HTTP status and body (a response Bundle or an OperationOutcome); stored
    resources in it are :class:`RawJSON`, serialised by :meth:`to_json`."""

    status: int
    body: dict[str, Any]
    headers: dict[str, str] = field(default_factory=dict)

    def to_json(self) -> str:
        """The body as compact JSON, stored resources spliced in as stored: parsing them into
        Python objects took several times their size in memory (security review, finding 5)."""
        raws: list[str] = []
        nonce = secrets.token_hex(8)  # JSON escapes NUL, so no value of the body can look like a marker

        def marker(value: Any) -> str:
            if not isinstance(value, RawJSON):
                raise TypeError(f"{type(value).__name__} is not JSON")
            raws.append(value.text)
            return f"\x00{nonce}:{len(raws) - 1}\x00"

        out = json.dumps(self.body, separators=(",", ":"), ensure_ascii=False, default=marker)
        return re.sub(r'"\\u0000' + nonce + r':(\d+)\\u0000"', lambda m: raws[int(m[1])], out)


@dataclass(frozen=True)
class RawJSON:
    """Stored resource JSON, put into an answer without being parsed."""

    text: str


def _bad(diagnostics: str, expression: str | None = None) -> FhirError:
    return FhirError(400, "invalid", diagnostics, [expression] if expression else None)


def _no_constant(name: str) -> None:
    raise ValueError(f"{name} is not JSON")


def _parse_json(raw: bytes) -> dict[str, Any]:
    try:
        body = json.loads(raw, parse_constant=_no_constant)
    except (ValueError, RecursionError, UnicodeDecodeError) as exc:
        raise _bad(f"the body is not valid JSON: {exc}") from None
    if not isinstance(body, dict) or body.get("resourceType") != "Bundle":
        raise _bad("POST /fhir takes a Bundle (resourceType Bundle) of type transaction or batch",
                   "Bundle.resourceType")
    if body.get("type") not in ("transaction", "batch"):
        raise _bad(f"Bundle.type must be transaction or batch, not {body.get('type')!r}", "Bundle.type")
    entries = body.get("entry", [])
    if not isinstance(entries, list):
        raise _bad("Bundle.entry must be a list", "Bundle.entry")
    if len(entries) > MAX_ENTRIES:
        raise FhirError(413, "too-costly", f"a Bundle may hold at most {MAX_ENTRIES} entries; this one has "
                        f"{len(entries)}: split it", ["Bundle.entry"])
    return body


def _validate_shell(body: dict[str, Any]) -> None:
    """The Bundle against the R4 structure (fhir.resources R4B), entry resources left out (they
    are checked one by one, so a batch answers a bad resource in its own entry)."""
    from fhir.resources.R4B import get_fhir_model_class

    shell = dict(body)
    shell["entry"] = [{k: v for k, v in e.items() if k != "resource"} if isinstance(e, dict) else e
                      for e in body.get("entry", [])]
    try:
        get_fhir_model_class("Bundle").model_validate(shell)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first.get("loc", ()))
        raise _bad(f"the Bundle is not valid R4: {first.get('msg')} at {where}",
                   f"Bundle.{where}" if where else None) from None
    except (KeyError, TypeError, ValueError) as exc:
        raise _bad(f"the Bundle is not valid R4: {exc!r}") from None


def _known_resource_type(name: Any, where: str) -> None:
    """fhir.resources raises a bare KeyError for an unknown type: a 400 here, never a 500."""
    from fhir.resources.R4B import get_fhir_model_class

    try:
        get_fhir_model_class(name)
    except (KeyError, TypeError, ValueError, AttributeError):
        raise _bad(f"{name!r} is not an R4 resource type", where) from None


def _relative(url: str, base: str) -> str:
    if url.startswith(("http://", "https://")):
        if not url.startswith(base.rstrip("/") + "/"):
            raise _bad(f"request.url {url!r} is not on this server ({base})")
        url = url[len(base.rstrip("/")) + 1:]
    return url.lstrip("/")


def _parse_entry(index: int, raw: Any, base: str) -> _Entry:
    where = f"Bundle.entry[{index}]"
    if not isinstance(raw, dict):
        raise _bad("an entry must be an object", where)
    req = raw.get("request")
    if not isinstance(req, dict):
        raise _bad("every entry of a transaction or batch needs a request (method and url)", f"{where}.request")
    method, url = req.get("method"), req.get("url")
    if method not in _METHODS:
        raise _bad(f"request.method must be one of {', '.join(_METHODS)}, not {method!r}", f"{where}.request.method")
    if not isinstance(url, str) or not url.strip():
        raise _bad("request.url must be a relative URL such as Patient or Patient/123", f"{where}.request.url")
    resource = raw.get("resource")
    if resource is not None:
        if not isinstance(resource, dict):
            raise _bad("entry.resource must be a resource object", f"{where}.resource")
        _known_resource_type(resource.get("resourceType"), f"{where}.resource.resourceType")
    full_url = raw.get("fullUrl")
    if full_url is not None and not isinstance(full_url, str):
        raise _bad("fullUrl must be a string", f"{where}.fullUrl")
    split = urlsplit(_relative(url.strip(), base))
    parts = [p for p in split.path.split("/") if p]
    if not parts or not _TYPE.match(parts[0]):
        raise _bad(f"request.url {url!r} does not name a resource type", f"{where}.request.url")
    entry = _Entry(index, method, url, parts[0], "unsupported", resource=resource, full_url=full_url,
                   query=split.query, if_none_exist=req.get("ifNoneExist"), if_match=req.get("ifMatch"))
    _classify(entry, parts, where)
    return entry


def _classify(entry: _Entry, parts: list[str], where: str) -> None:
    """The interaction of an entry; unsupported ones get their 404/405 for later."""
    method, rtype = entry.method, entry.resource_type
    if len(parts) > 1 and not _ID.match(parts[1]):
        raise _bad(f"request.url {entry.url!r}: {parts[1]!r} is not a resource id", f"{where}.request.url")
    shape = (len(parts), parts[2] if len(parts) > 2 else None)
    if method in ("POST", "PUT"):
        if entry.resource is None:
            raise _bad(f"a {method} entry needs a resource", f"{where}.resource")
        if entry.resource.get("resourceType") != rtype:
            raise _bad(f"the resource is a {entry.resource.get('resourceType')}, the url names {rtype}",
                       f"{where}.resource.resourceType")
    if method == "POST" and shape == (1, None) and not entry.query:
        entry.kind = "create"
    elif method == "PUT" and shape == (1, None) and entry.query:
        entry.kind = "cupdate"
    elif method == "PUT" and shape == (2, None) and not entry.query:
        entry.kind, entry.resource_id = "update", parts[1]
    elif method == "GET" and shape == (1, None):
        entry.kind = "search"
    elif method == "GET" and shape == (2, None):
        entry.kind, entry.resource_id = "read", parts[1]
    elif method == "GET" and len(parts) == 4 and parts[2] == "_history":
        entry.kind, entry.resource_id, entry.version_id = "vread", parts[1], parts[3]
    elif method in ("POST", "PUT", "GET"):
        raise _bad(f"{method} {entry.url!r} is not an interaction a Bundle entry can carry", f"{where}.request.url")
    if rtype not in MAPPED_TYPES:
        entry.problem = FhirError(404, "not-supported", f"resource type {rtype!r} is not served here")
    elif entry.kind == "unsupported":
        entry.problem = FhirError(405, "not-supported", f"{method} is not supported; the clinic marks a record "
                                  "made in error as entered-in-error instead of deleting it, and PATCH is not taken")
    elif entry.kind in ("create", "update", "cupdate") and rtype not in writes.WRITABLE:
        entry.problem = FhirError(405, "not-supported", f"{rtype} resources are owned by the clinic and read-only "
                                  "over FHIR; writable: " + ", ".join(writes.WRITABLE))


def _references(value: Any) -> Iterable[dict[str, Any]]:
    """Every object with a string ``reference`` inside a resource."""
    if isinstance(value, dict):
        if isinstance(value.get("reference"), str):
            yield value
        for item in value.values():
            yield from _references(item)
    elif isinstance(value, list):
        for item in value:
            yield from _references(item)


def _order(entries: list[_Entry], transaction: bool) -> list[_Entry]:
    """Spec order (DELETE, POST, PUT/PATCH, GET/HEAD; Bundle order within each), except that in a
    transaction a write whose fullUrl another write references comes before it.

    :raise FhirError: 400 for a cycle of such references
    """
    ordered = sorted(entries, key=lambda e: (_ORDER[e.method], e.index))
    if not transaction:
        return ordered
    by_url = {e.full_url: e for e in entries if e.full_url and _LOCAL_FULL_URL.match(e.full_url)
              and e.kind in ("create", "update", "cupdate")}
    needs = {e.index: {by_url[r["reference"]].index for r in _references(e.resource)
                       if r["reference"] in by_url and by_url[r["reference"]] is not e} for e in entries}
    done: set[int] = set()
    out: list[_Entry] = []
    pending = list(ordered)
    while pending:
        ready = next((e for e in pending if needs[e.index] <= done), None)
        if ready is None:
            raise _bad("the entries' references to each other's fullUrl form a cycle",
                       f"Bundle.entry[{pending[0].index}]")
        pending.remove(ready)
        done.add(ready.index)
        out.append(ready)
    return out


@dataclass
class _Run:
    db: Session
    base: str
    scopes: frozenset[str]
    prefer: str
    transaction: bool
    budget: ResponseBudget
    resolved: dict[str, str] = field(default_factory=dict)

    def resolve(self, entry: _Entry) -> dict[str, Any]:
        """The entry's resource with its local and conditional references resolved (a copy)."""
        resource = copy.deepcopy(entry.resource or {})
        for ref in _references(resource):
            target = ref["reference"]
            if target in self.resolved:
                ref["reference"] = self.resolved[target]
            elif _LOCAL_FULL_URL.match(target):
                raise FhirError(400, "invalid", f"the reference {target} is not the fullUrl of a "
                                f"{'written entry of this transaction' if self.transaction else 'resource here'}"
                                " (a batch cannot reference its own entries)", [f"{entry.resource_type}.reference"])
            elif (m := _CONDITIONAL_REF.match(target)) is not None:
                ref["reference"] = self.conditional(m["type"], m["query"])
        return resource

    def conditional(self, rtype: str, query: str) -> str:
        """A conditional reference's single match (http.html#trules), as Type/id."""
        if rtype not in MAPPED_TYPES:
            raise FhirError(404, "not-supported", f"conditional reference to {rtype}, a type not served here")
        self.allow(rtype, "search")
        from service.fhir.search import parse_search, run_search

        criteria = parse_qsl(query, keep_blank_values=True)
        if len(criteria) != 1 or criteria[0][0] != "identifier" or not criteria[0][1]:
            # resolved under the write lock: an index lookup only (as conditional writes, writes.py)
            raise FhirError(400, "not-supported", f"the conditional reference {rtype}?{query[:100]} must be "
                            "identifier=system|value (one identifier)", [f"{rtype}.reference"])
        self.visible()
        params = [*criteria, ("_count", "2")]
        ids = [row.id for row in run_search(self.db, parse_search(rtype, params, True)).resources]
        if len(ids) != 1:
            raise FhirError(412, "not-found" if not ids else "multiple-matches",
                            f"the conditional reference {rtype}?{query} matches "
                            f"{'no' if not ids else 'more than one'} {rtype}")
        return f"{rtype}/{ids[0]}"

    def visible(self) -> None:
        """Make the writes so far searchable: the search index (and Provenance) of a write is
        otherwise stored when the transaction commits (service/fhir_store.py)."""
        fhir_store.flush_pending(self.db)
        self.db.flush()

    def allow(self, rtype: str, interaction: str) -> None:
        if not allows(self.scopes, rtype, interaction):
            needed = f"system/{rtype}.{INTERACTIONS[interaction]}"
            raise FhirError(403, "forbidden", f"{interaction} on {rtype} needs the scope {needed} (or "
                            f"system/*.{INTERACTIONS[interaction]})")

    def run(self, entry: _Entry) -> dict[str, Any]:
        """One entry: its response entry (``response`` and maybe ``resource``, ``fullUrl``)."""
        if entry.problem is not None:
            raise entry.problem
        interaction = entry.interaction
        assert interaction is not None
        self.allow(entry.resource_type, interaction)
        if entry.conditional:
            self.allow(entry.resource_type, "search")  # a conditional write is a search (finding 1)
        if entry.kind in ("create", "update", "cupdate"):
            return self.write(entry)
        return self.read(entry)

    def write(self, entry: _Entry) -> dict[str, Any]:
        writes.validate_structure(entry.resource or {})
        resource = self.resolve(entry)
        rtype = entry.resource_type
        if entry.kind == "create":
            outcome = writes.create_resource(self.db, rtype, resource, entry.if_none_exist, standalone=False)
        else:
            outcome = writes.update_resource(self.db, rtype, resource, entry.resource_id,
                                             entry.query if entry.kind == "cupdate" else None, entry.if_match,
                                             standalone=False)
        stored = outcome.stored
        if entry.full_url and _LOCAL_FULL_URL.match(entry.full_url):
            self.resolved[entry.full_url] = f"{rtype}/{stored.id}"
        response: dict[str, Any] = {"status": _status(outcome.status), "etag": f'W/"{stored.version_id}"',
                                    "lastModified": _instant(stored.last_updated)}
        if outcome.status == 201:
            response["location"] = f"{rtype}/{stored.id}/_history/{stored.version_id}"
        out: dict[str, Any] = {"fullUrl": f"{self.base}/{rtype}/{stored.id}"}
        if "return=representation" in self.prefer and writes.shows_resource(
                outcome.status, allows(self.scopes, rtype, "read")):
            self.budget.spend(len(stored.content))
            out["resource"] = RawJSON(stored.content)
        elif "return=OperationOutcome" in self.prefer:
            response["outcome"] = operation_outcome("information", "informational", f"{rtype}/{stored.id} stored")
        out["response"] = response
        return out

    def parse(self, entry: _Entry) -> SearchRequest:
        """The entry's search, parsed (400 for bad parameters)."""
        from service.fhir.search import parse_search

        if entry.search is None:
            strict = "handling=strict" in self.prefer.replace(" ", "")
            entry.search = parse_search(entry.resource_type, parse_qsl(entry.query, keep_blank_values=True), strict)
        return entry.search

    def searchset(self, rtype: str, search: SearchRequest) -> dict[str, Any]:
        """search-type inside a Bundle: a searchset Bundle (R4 search.html) with total and a self link;
        further pages are fetched with GET on its ``next`` link."""
        from urllib.parse import quote

        from service.fhir.search import PAGE_TOKEN_PARAM, apply_elements, run_search

        self.visible()
        result = run_search(self.db, search, search.page_token, budget=self.budget)

        def link(relation: str, token: str | None = None) -> dict[str, str]:
            pairs = list(search.applied) + ([(PAGE_TOKEN_PARAM, token)] if token else [])
            query = "&".join(f"{quote(k, safe='')}={quote(v, safe='')}" for k, v in pairs)
            return {"relation": relation, "url": f"{self.base}/{rtype}" + (f"?{query}" if query else "")}

        bundle: dict[str, Any] = {"resourceType": "Bundle", "type": "searchset"}
        if result.total is not None:
            bundle["total"] = result.total
        bundle["link"] = [link("self", search.page_token)] + ([link("next", result.next)] if result.next else [])
        found = []
        for row in result.resources:
            content = RawJSON(row.content) if search.elements is None else apply_elements(
                json.loads(row.content), search.elements)
            found.append({"fullUrl": f"{self.base}/{row.resource_type}/{row.id}", "resource": content,
                          "search": {"mode": "match"}})
        found += [{"fullUrl": f"{self.base}/{row.resource_type}/{row.id}", "resource": RawJSON(row.content),
                   "search": {"mode": "include"}} for row in result.included
                  if allows(self.scopes, row.resource_type, "read")]
        if found:
            bundle["entry"] = found
        return bundle

    def read(self, entry: _Entry) -> dict[str, Any]:
        rtype, rid = entry.resource_type, entry.resource_id
        if entry.kind == "search":
            return {"resource": self.searchset(rtype, self.parse(entry)), "response": {"status": "200 OK"}}
        self.db.flush()
        row = self.target(entry)
        self.budget.spend(len(row.content))
        return {"fullUrl": f"{self.base}/{rtype}/{rid}", "resource": RawJSON(row.content),
                "response": {"status": "200 OK", "etag": f'W/"{row.version_id}"',
                             "lastModified": _instant(row.last_updated)}}


    def target(self, entry: _Entry) -> Any:
        """The stored resource (read) or version (vread) an entry names.

        :raise FhirError: 404 unknown (a version id too large for the database included), 410 deleted
        """
        rtype, rid = entry.resource_type, entry.resource_id
        row: Any
        if entry.kind == "read":
            row = self.db.get(models.FhirResource, (rtype, rid))
            label = f"{rtype}/{rid}"
        else:
            number = version_number(entry.version_id)
            row = self.db.get(models.FhirResourceVersion, (rtype, rid, number)) if number is not None else None
            label = f"version {(entry.version_id or '')[:32]} of {rtype}/{rid}"
        if row is None:
            raise FhirError(404, "not-found", f"{label} is not known")
        if row.deleted:
            raise FhirError(410, "deleted", f"{label} was deleted")
        return row

    def check(self, entry: _Entry) -> None:
        """A transaction's entry, before any work: its problem, scopes, search parameters and
        read target (an existing resource: this transaction cannot create it, ids are ours; a
        vread of a version it creates is checked when it runs)."""
        if entry.problem is not None:
            raise entry.problem
        assert entry.interaction is not None
        self.allow(entry.resource_type, entry.interaction)
        if entry.conditional:
            self.allow(entry.resource_type, "search")
        if entry.kind == "search":
            self.parse(entry)
        elif entry.kind == "read":
            self.target(entry)
        elif entry.kind == "vread":
            current = self.db.get(models.FhirResource, (entry.resource_type, entry.resource_id))
            number = version_number(entry.version_id)
            if current is None or number is None or number <= current.version_id:
                self.target(entry)


def _status(code: int) -> str:
    return f"{code} {HTTPStatus(code).phrase}"


def _instant(moment: Any) -> str:
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _at_entry(exc: FhirError, entry: _Entry) -> FhirError:
    """The entry's error, located in the Bundle (``Bundle.entry[i]``)."""
    where = f"Bundle.entry[{entry.index}]"
    inner = [f"{where}.resource{e[len(entry.resource_type):]}" if e.startswith(entry.resource_type + ".")
             else f"{where}.request.{_REQUEST_FIELDS[e]}" if e in _REQUEST_FIELDS else f"{where}.{e}"
             for e in exc.expression or []]
    return FhirError(exc.status, exc.code, f"entry {entry.index} ({entry.method} {entry.url}): {exc.diagnostics}",
                     [where, *inner], exc.headers)


def _conflict(entry: _Entry) -> FhirError:
    return FhirError(409, "conflict", f"a concurrent write conflicted with this {entry.resource_type}")


def process_bundle(db: Session, raw: bytes, *, base: str, scopes: frozenset[str], prefer: str,
                   max_response_bytes: int = DEFAULT_RESPONSE_BYTES) -> BundleResult:
    """Process a transaction or batch Bundle (R4 http.html#transaction) and commit it (see the
    module docstring for the order of work and the locking).

    :param base: this server's FHIR base URL (for ``fullUrl`` and absolute ``request.url``)
    :param scopes: the bearer token's scopes; each entry's interaction is checked against them
    :param prefer: the ``Prefer`` header (``return=minimal|representation|OperationOutcome``)
    :param max_response_bytes: the answer's budget (KETAMINE_FHIR_MAX_RESPONSE_BYTES)
    :raise FhirError: 400 malformed Bundle, 413 too many entries or searches; for a transaction, the
        first failing entry's error (nothing is stored)
    """
    body = _parse_json(raw)
    _validate_shell(body)
    transaction = body["type"] == "transaction"
    entries = [_parse_entry(i, e, base) for i, e in enumerate(body.get("entry", []))]
    searches = sum(e.kind == "search" for e in entries)
    if searches > MAX_SEARCHES:
        raise FhirError(413, "too-costly", f"a Bundle may hold at most {MAX_SEARCHES} searches; this one has "
                        f"{searches}: split it", ["Bundle.entry"])
    if transaction:
        full_urls = [e.full_url for e in entries if e.full_url]
        if len(full_urls) != len(set(full_urls)):
            raise _bad("two entries share a fullUrl (bdl-7)", "Bundle.entry.fullUrl")
    run = _Run(db, base, scopes, prefer, transaction, ResponseBudget(max_response_bytes))
    order = _order(entries, transaction)
    changes = [e for e in order if e.kind not in ("read", "vread", "search")]
    gets = [e for e in order if e.kind in ("read", "vread", "search")]
    answers: dict[int, dict[str, Any]] = {}
    if transaction:
        for entry in entries:  # refuse before any work: one bad entry fails the whole transaction
            try:
                run.check(entry)
            except FhirError as exc:
                raise _at_entry(exc, entry) from None
        _transaction_writes(run, changes, answers)
    else:
        _batch_writes(run, changes, answers)
    wrote = any(e.kind in _WRITES for e in changes)
    for entry in gets:  # after the commit, outside the write lock
        _get(run, entry, answers, fail_whole=transaction and not wrote)
    db.commit()  # ends the read transaction
    response_type = "transaction-response" if transaction else "batch-response"
    return BundleResult(200, {"resourceType": "Bundle", "type": response_type,
                              "entry": [answers[e.index] for e in entries]})


def _lock_error() -> FhirError:
    """503 ``lock-error`` for one batch entry: another writer holds the database (PostgreSQL row
    locks; on SQLite the Bundle holds the write lock, so only taking it can fail, answered by views.py)."""
    return FhirError(503, "lock-error", "the database is busy (locked by another write); retry after a few "
                     "seconds", headers={"Retry-After": str(RETRY_AFTER_SECONDS)})


def _commit(db: Session) -> None:
    """Commit the writes; lock contention is a 503 (views.py), other failures a 409."""
    try:
        db.commit()
    except (IntegrityError, OperationalError) as exc:
        db.rollback()
        if is_lock_contention(exc):
            raise
        raise FhirError(409, "conflict", "a concurrent write conflicted with this Bundle; nothing was stored") from None


def _transaction_writes(run: _Run, changes: list[_Entry], answers: dict[int, dict[str, Any]]) -> None:
    """A transaction's writes, all or nothing, under the write lock; committed."""
    db = run.db
    if not changes:
        return
    writes.take_write_lock(db)
    for entry in changes:
        try:
            answers[entry.index] = run.run(entry)
        except FhirError as exc:
            db.rollback()
            raise _at_entry(exc, entry) from None
        except (IntegrityError, OperationalError) as exc:
            db.rollback()
            if is_lock_contention(exc):
                raise
            raise _at_entry(_conflict(entry), entry) from None
    _commit(db)


def _batch_writes(run: _Run, changes: list[_Entry], answers: dict[int, dict[str, Any]]) -> None:
    """A batch's writes (and unsupported entries), each alone in a SAVEPOINT, under the write lock; committed."""
    db = run.db
    if any(e.kind in _WRITES and e.problem is None for e in changes):
        writes.take_write_lock(db)
    for entry in changes:
        _batch_entry(run, entry, answers)
    _commit(db)


def _batch_entry(run: _Run, entry: _Entry, answers: dict[int, dict[str, Any]]) -> None:
    """One entry in its own SAVEPOINT; whatever goes wrong stays in its answer."""
    db, spent = run.db, run.budget.used
    try:
        with db.begin_nested():
            answer = run.run(entry)
            # finish the entry inside its SAVEPOINT: a later entry's rolled-back SAVEPOINT
            # drops the session's pending mapping work (service/fhir_store.py)
            fhir_store.flush_pending(db)
        answers[entry.index] = answer
        return
    except FhirError as exc:
        failure = exc
    except (IntegrityError, OperationalError) as exc:
        failure = _lock_error() if is_lock_contention(exc) else _conflict(entry)
    except Exception as exc:
        # The batch boundary (R4 http.html#transaction: batch entries succeed or fail alone): an
        # unexpected error in one entry must not turn the others' stored results into a 500. Its
        # SAVEPOINT is rolled back; only the class is logged, the message may hold request data.
        log.error("batch entry %d failed: %s", entry.index, type(exc).__name__)
        failure = FhirError(500, "exception", "this entry failed on the server; the other entries were processed")
    run.budget.used = spent  # the failed entry's answer is an OperationOutcome, not what it loaded
    answers[entry.index] = _failed(_at_entry(failure, entry))


def _get(run: _Run, entry: _Entry, answers: dict[int, dict[str, Any]], *, fail_whole: bool) -> None:
    """One GET entry after the writes, in its own SAVEPOINT (a timed-out PostgreSQL statement
    aborts only it). ``fail_whole``: a transaction that wrote nothing fails as a whole."""
    if not fail_whole:
        _batch_entry(run, entry, answers)
        return
    try:
        with run.db.begin_nested():
            answers[entry.index] = run.run(entry)
    except FhirError as exc:
        run.db.rollback()
        raise _at_entry(exc, entry) from None


def _failed(exc: FhirError) -> dict[str, Any]:
    return {"response": {"status": _status(exc.status), "outcome": exc.outcome()}}
