"""The FHIR R4 REST API for EHRs at /fhir: thin handlers over the stored resources.

Reads serve the JSON stored at write time (service/fhir_store.py) without rebuilding models.
Every error is an OperationOutcome (service/fhir/outcomes.py), answered in one place.
"""

from __future__ import annotations

import json
import re
from datetime import datetime
from typing import Any
from urllib.parse import quote

from flask import Blueprint, Response, current_app, request
from sqlalchemy import and_, or_, select

from mappings.resources import MAPPED_TYPES
from service.audit import note
from service.db import get_session
from service.fhir import writes
from service.fhir.capability import capability_statement
from service.fhir.http import bundle_response, entry, negotiate, resource_response
from service.fhir.outcomes import FhirError
from service.fhir.tokens import sign, unsign, version_number
from service.models import FhirResource, FhirResourceVersion
from service.urls import external, request_url

__all__ = ["bp"]

bp = Blueprint("fhir", __name__, url_prefix="/fhir")

#: clinical resources the clinic owns: read-only over FHIR (issue 4 item 3)
READ_ONLY_TYPES = tuple(t for t in MAPPED_TYPES if t not in ("Patient", "Practitioner", "ServiceRequest"))
DEFAULT_HISTORY_COUNT = 50
MAX_HISTORY_COUNT = 500


def authorize(resource_type: str, interaction: str) -> None:
    """Check the bearer token's scopes for this interaction (SMART v2, service/fhir/access.py)."""
    from service.fhir.access import require

    require(resource_type, interaction)


def _known_type(resource_type: str) -> str:
    if resource_type not in MAPPED_TYPES:
        raise FhirError(404, "not-supported", f"resource type {resource_type!r} is not served here; "
                        f"types: {', '.join(MAPPED_TYPES)}")
    return resource_type


def _base() -> str:
    return external(bp.url_prefix)


def _current(resource_type: str, resource_id: str) -> FhirResource:
    row = get_session().get(FhirResource, (resource_type, resource_id))
    if row is None:
        raise FhirError(404, "not-found", f"{resource_type}/{resource_id} is not known")
    if row.deleted:
        raise FhirError(410, "deleted", f"{resource_type}/{resource_id} was deleted (version {row.version_id})")
    return row


@bp.get("/metadata")
def metadata() -> Response:
    """The CapabilityStatement (open: clients read it before they authenticate)."""
    from importlib.metadata import version

    statement = capability_statement(_base(), version("ketamine-fhir"), _search_params(), _token_url(),
                                     current_app.config["STARTED_AT"].date().isoformat())
    return resource_response(json.dumps(statement, separators=(",", ":")))


def _search_params() -> dict[str, dict[str, Any]]:
    """Per type, the search parameters the search module supports (none until it is installed)."""
    if "fhir.search" not in current_app.view_functions:
        return {}
    from service.fhir.search.params import SEARCH_PARAMS

    return SEARCH_PARAMS


def _token_url() -> str | None:
    from service.fhir.smart import token_endpoint

    return token_endpoint() if "smart.token" in current_app.view_functions else None


@bp.get("/<resource_type>/<resource_id>")
def read(resource_type: str, resource_id: str) -> Response:
    """read (R4 http.html#read): ETag W/"<version>", Last-Modified; If-None-Match gives 304."""
    authorize(_known_type(resource_type), "read")
    row = _current(resource_type, resource_id)
    if request.headers.get("If-None-Match") in (f'W/"{row.version_id}"', f'"{row.version_id}"'):
        return Response(status=304, headers={"ETag": f'W/"{row.version_id}"'})
    return resource_response(row.content, row.version_id, row.last_updated)


@bp.get("/<resource_type>/<resource_id>/_history/<version_id>")
def vread(resource_type: str, resource_id: str, version_id: str) -> Response:
    """vread (R4 http.html#vread); a deleted version answers 410."""
    authorize(_known_type(resource_type), "vread")
    number = version_number(version_id)
    if number is None:
        raise FhirError(404, "not-found", f"version {version_id[:32]!r} of {resource_type}/{resource_id} is not known")
    row = get_session().get(FhirResourceVersion, (resource_type, resource_id, number))
    if row is None:
        raise FhirError(404, "not-found", f"version {version_id} of {resource_type}/{resource_id} is not known")
    if row.deleted:
        raise FhirError(410, "deleted", f"version {version_id} of {resource_type}/{resource_id} is a deletion")
    return resource_response(row.content, row.version_id, row.last_updated)


def _history_args(scope: str) -> tuple[datetime | None, int, tuple[datetime, str, int] | None]:
    since_raw = request.args.get("_since")
    since = None
    if since_raw:
        try:
            since = datetime.fromisoformat(since_raw.replace("Z", "+00:00"))
        except ValueError:
            raise FhirError(400, "invalid", f"_since {since_raw!r} is not an instant", ["_since"]) from None
        if since.tzinfo is None:
            raise FhirError(400, "invalid", "_since needs a time zone (an instant)", ["_since"])
    try:
        count = int(request.args.get("_count", DEFAULT_HISTORY_COUNT))
    except ValueError:
        raise FhirError(400, "invalid", "_count must be a whole number", ["_count"]) from None
    if count < 1:
        raise FhirError(400, "invalid", "_count must be at least 1", ["_count"])
    return since, min(count, MAX_HISTORY_COUNT), _decode_page(request.args.get("_page"), scope)


#: what a history ``_page`` token is signed for (service/fhir/tokens.py)
_HISTORY_TOKEN = "history page token"
_ID = re.compile(r"[A-Za-z0-9\-.]{1,64}")


def _decode_page(token: str | None, scope: str) -> tuple[datetime, str, int] | None:
    """The position after which a history page starts: (lastUpdated, id, version), from a token we
    signed for this same history (``scope``: ``Type/id`` or ``Type``). Anything else is a 400: the
    token used to be unsigned base64, and a forged one reached the database (a 500, finding 10)."""
    if not token:
        return None
    try:
        state = unsign(get_session(), _HISTORY_TOKEN, token)
        if not isinstance(state, dict) or set(state) != {"u", "i", "v", "h"} or state["h"] != scope:
            raise ValueError("fields")
        stamp, rid, version = datetime.fromisoformat(state["u"]), state["i"], state["v"]
        if stamp.tzinfo is None or not (isinstance(rid, str) and _ID.fullmatch(rid)) or type(version) is not int \
                or version_number(str(version)) is None:
            raise ValueError("values")
    except (ValueError, TypeError):  # binascii.Error and UnicodeDecodeError are ValueErrors
        raise FhirError(400, "invalid", "the _page token is not one this server issued for this history",
                        ["_page"]) from None
    return stamp, rid, version


def _encode_page(row: FhirResourceVersion, scope: str) -> str:
    return sign(get_session(), _HISTORY_TOKEN,
                {"u": row.last_updated.isoformat(), "i": row.id, "v": row.version_id, "h": scope})


def _history(resource_type: str, resource_id: str | None) -> Response:
    """A history Bundle, newest first; paging by keyset so concurrent writes never shift a page."""
    scope = resource_type if resource_id is None else f"{resource_type}/{resource_id}"
    since, count, after = _history_args(scope)
    v = FhirResourceVersion
    query = select(v).where(v.resource_type == resource_type)
    if resource_id is not None:
        query = query.where(v.id == resource_id)
    if since is not None:
        query = query.where(v.last_updated >= since)
    if after is not None:
        stamp, rid, version = after
        query = query.where(or_(v.last_updated < stamp, and_(v.last_updated == stamp, or_(
            v.id > rid, and_(v.id == rid, v.version_id < version)))))
    rows = []
    budget = _budget()
    for row in get_session().scalars(query.order_by(v.last_updated.desc(), v.id, v.version_id.desc())
                                      .limit(count + 1).execution_options(yield_per=50)):
        budget.spend(len(row.content or ""))
        rows.append(row)
    more, rows = len(rows) > count, rows[:count]
    note((r.resource_type, r.id) for r in rows)  # the audit trail: what was served
    links = [{"relation": "self", "url": request_url()}]
    if more:
        args = request.args.to_dict() | {"_page": _encode_page(rows[-1], scope)}
        links.append({"relation": "next", "url": f"{external(request.path)}?" + "&".join(
            f"{k}={_quote(val)}" for k, val in args.items())})
    head: dict[str, Any] = {"resourceType": "Bundle", "type": "history", "link": links}
    return bundle_response(head, (_history_entry(r) for r in rows))


def _budget() -> Any:
    """The byte budget of this request's answer (KETAMINE_FHIR_MAX_RESPONSE_BYTES, finding 5)."""
    from service.fhir.search import ResponseBudget

    return ResponseBudget(current_app.config["SETTINGS"].max_response_bytes)


def _quote(value: str) -> str:
    return quote(value, safe="")


def _history_entry(row: FhirResourceVersion) -> str:
    url = f"{_base()}/{row.resource_type}/{row.id}"
    method = "DELETE" if row.deleted else ("POST" if row.version_id == 1 else "PUT")
    request_part = {"method": method, "url": f"{row.resource_type}/{row.id}" if method != "POST" else row.resource_type}
    response_part = {"status": "410 Gone" if row.deleted else ("201 Created" if row.version_id == 1 else "200 OK"),
                     "etag": f'W/"{row.version_id}"',
                     "lastModified": row.last_updated.isoformat(timespec="milliseconds").replace("+00:00", "Z")}
    if row.deleted:  # a deletion has no resource (R4 bundle.html#history)
        return json.dumps({"fullUrl": url, "request": request_part, "response": response_part},
                          separators=(",", ":"))
    return entry(url, row.content, {"request": request_part, "response": response_part})


@bp.get("/<resource_type>/<resource_id>/_history")
def instance_history(resource_type: str, resource_id: str) -> Response:
    authorize(_known_type(resource_type), "history")
    if get_session().get(FhirResource, (resource_type, resource_id)) is None:
        raise FhirError(404, "not-found", f"{resource_type}/{resource_id} is not known")
    return _history(resource_type, resource_id)


@bp.get("/<resource_type>/_history")
def type_history(resource_type: str) -> Response:
    authorize(_known_type(resource_type), "history")
    return _history(resource_type, None)


#: parameters the HTTP layer handles, not the search
_HTTP_PARAMS = ("_format", "_pretty")


def _search(resource_type: str, params: list[tuple[str, str]]) -> Response:
    """search-type (R4 search.html): a searchset Bundle with total and self/next/previous links."""
    from service.fhir.access import fhir_scopes
    from service.fhir.scopes import allows
    from service.fhir.search import PAGE_TOKEN_PARAM, apply_elements, parse_search, run_search

    strict = "handling=strict" in request.headers.get("Prefer", "").replace(" ", "")
    search = parse_search(resource_type, [(k, v) for k, v in params if k not in _HTTP_PARAMS], strict)
    result = run_search(get_session(), search, search.page_token, budget=_budget())
    scopes = fhir_scopes()

    def link(relation: str, token: str | None = None) -> dict[str, str]:
        pairs = list(search.applied) + ([(PAGE_TOKEN_PARAM, token)] if token else [])
        query = "&".join(f"{_quote(k)}={_quote(v)}" for k, v in pairs)
        return {"relation": relation, "url": f"{_base()}/{resource_type}" + (f"?{query}" if query else "")}

    links = [link("self", search.page_token)]
    links += [link("next", result.next)] if result.next else []
    links += [link("previous", result.previous)] if result.previous else []
    head: dict[str, Any] = {"resourceType": "Bundle", "type": "searchset"}
    if result.total is not None:
        head["total"] = result.total
    head["link"] = links

    def content(row: Any) -> str:
        if search.elements is None:
            return row.content
        return json.dumps(apply_elements(json.loads(row.content), search.elements), separators=(",", ":"))

    entries = [entry(f"{_base()}/{r.resource_type}/{r.id}", content(r), {"search": {"mode": "match"}})
               for r in result.resources]
    included = [r for r in result.included if allows(scopes, r.resource_type, "read")]
    entries += [entry(f"{_base()}/{r.resource_type}/{r.id}", r.content, {"search": {"mode": "include"}})
                for r in included]
    note((r.resource_type, r.id) for r in [*result.resources, *included])  # the audit trail: what was served
    return bundle_response(head, entries)


@bp.get("/<resource_type>")
def search(resource_type: str) -> Response:
    authorize(_known_type(resource_type), "search")
    return _search(resource_type, list(request.args.items(multi=True)))


@bp.post("/<resource_type>/_search")
def search_post(resource_type: str) -> Response:
    """POST _search: parameters in the form body (and the URL), as R4 search.html#Introduction."""
    authorize(_known_type(resource_type), "search")
    if request.mimetype != "application/x-www-form-urlencoded":
        raise FhirError(415, "not-supported", "POST _search takes application/x-www-form-urlencoded parameters")
    return _search(resource_type, list(request.args.items(multi=True)) + list(request.form.items(multi=True)))


def _writable(resource_type: str) -> None:
    _known_type(resource_type)
    if resource_type in READ_ONLY_TYPES:
        raise FhirError(405, "not-supported", f"{resource_type} resources are owned by the clinic and read-only "
                        "over FHIR; the clinic records them through its own API", headers={"Allow": "GET"})


@bp.post("/<resource_type>")
def create(resource_type: str) -> Response:
    """create / conditional create (Patient, Practitioner, ServiceRequest)."""
    _writable(resource_type)
    authorize(resource_type, "create")
    if request.headers.get("If-None-Exist"):
        authorize(resource_type, "search")  # a conditional create is a search: its answer says who matched
    return writes.create(get_session(), resource_type, _may_read(resource_type))


@bp.put("/<resource_type>")
def conditional_update(resource_type: str) -> Response:
    _writable(resource_type)
    authorize(resource_type, "update")
    authorize(resource_type, "search")  # a conditional update is a search (created or matched tells)
    return writes.update(get_session(), resource_type, None, _may_read(resource_type))


@bp.put("/<resource_type>/<resource_id>")
def update(resource_type: str, resource_id: str) -> Response:
    _writable(resource_type)
    authorize(resource_type, "update")
    return writes.update(get_session(), resource_type, resource_id, _may_read(resource_type))


def _may_read(resource_type: str) -> bool:
    """Whether a write may answer the stored resource: only to a token that could read it."""
    from service.fhir.access import fhir_scopes
    from service.fhir.scopes import allows

    return allows(fhir_scopes(), resource_type, "read")


@bp.post("/")
@bp.post("")
def transaction_or_batch() -> Response:
    """POST /fhir: a transaction or batch Bundle (R4 http.html#transaction, service/fhir/bundles.py)."""
    from service.fhir.access import fhir_scopes
    from service.fhir.bundles import process_bundle

    scopes = fhir_scopes()
    if request.mimetype not in writes.FHIR_CONTENT:
        raise FhirError(415, "not-supported", "send a FHIR JSON Bundle (Content-Type application/fhir+json), "
                        f"not {request.mimetype or 'nothing'}")
    result = process_bundle(get_session(), request.get_data(), base=_base(), scopes=scopes,
                            prefer=request.headers.get("Prefer", ""),
                            max_response_bytes=current_app.config["SETTINGS"].max_response_bytes)
    return resource_response(result.to_json(), status=result.status,
                             headers=result.headers)


@bp.route("/<resource_type>", methods=["DELETE", "PATCH"])
@bp.route("/<resource_type>/<resource_id>", methods=["DELETE", "PATCH"])
def not_allowed(resource_type: str, resource_id: str | None = None) -> Response:
    """Clinical data is never deleted (a record made in error is marked entered-in-error), and
    PATCH is not supported."""
    _writable(resource_type)
    raise FhirError(405, "not-supported", f"{request.method} is not supported; the clinic marks a record made in "
                    "error as entered-in-error instead of deleting it", headers={"Allow": "GET, POST, PUT"})


@bp.before_request
def _negotiate_first() -> None:
    negotiate(request)  # 406 before any work


def register_errors(app: Any) -> None:
    """OperationOutcomes for FhirErrors and for Werkzeug errors on /fhir paths."""
    from werkzeug.exceptions import HTTPException

    @app.errorhandler(FhirError)
    def _fhir_error(exc: FhirError) -> Response:
        response = Response(json.dumps(exc.outcome()), status=exc.status, mimetype="application/fhir+json")
        response.headers.update(exc.headers)
        return response

    _register_database_errors(app, _fhir_error)
    previous = app.error_handler_spec[None][None].get(HTTPException)

    @app.errorhandler(HTTPException)
    def _http_error(exc: HTTPException):
        if request.path.startswith("/fhir"):
            code = {404: "not-found", 405: "not-supported", 413: "too-costly", 415: "not-supported"}.get(
                exc.code or 500, "processing")
            return _fhir_error(FhirError(exc.code or 500, code, exc.description or exc.name))
        return previous(exc) if previous else exc



def _register_database_errors(app: Any, answer: Any) -> None:
    """Lock contention under /fhir: 503 ``lock-error`` (a ``transient`` issue, R4
    valueset-issue-type) with Retry-After, never a 500 (security review, finding 4); elsewhere the
    clinic API's handler (service/errors.py), which this one replaces on the app."""
    from sqlalchemy.exc import DBAPIError

    from service.db import RETRY_AFTER_SECONDS, is_lock_contention

    previous = app.error_handler_spec[None][None].get(DBAPIError)

    @app.errorhandler(DBAPIError)
    def _database_error(exc: DBAPIError) -> Any:
        if request.path.startswith("/fhir") and is_lock_contention(exc):
            return answer(FhirError(503, "lock-error", "the database is busy (locked by another write); "
                                    "retry after a few seconds",
                                    headers={"Retry-After": str(RETRY_AFTER_SECONDS)}))
        if previous is not None:
            return previous(exc)
        raise exc
