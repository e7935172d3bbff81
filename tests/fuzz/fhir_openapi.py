"""A hand-kept OpenAPI 3 document of the FHIR REST API at /fhir, for the fuzzer alone.

The FHIR API's published contract is its CapabilityStatement (``GET /fhir/metadata``), so this
document is no deliverable: it lives with the fuzz tests. It is Python rather than YAML so that
the parts that would drift are read from the code: the types (``MAPPED_TYPES``), the search
parameters of each (``SEARCH_PARAMS``), the page-token name and the writable types. The rest (paths,
headers, status codes) is kept by hand from README "FHIR R4 API for EHRs". Resources are loosely
typed (``resourceType`` and anything else): the FHIR structure is checked by fhir.resources, the
fuzzer's job here is the HTTP surface.
"""

from __future__ import annotations

from typing import Any

from mappings.resources import MAPPED_TYPES
from service.fhir.search.params import SEARCH_PARAMS
from service.fhir.search.request import PAGE_TOKEN_PARAM

__all__ = ["WRITABLE_TYPES", "build_fhir_spec"]

WRITABLE_TYPES = ("Patient", "Practitioner", "ServiceRequest")
FHIR_JSON = "application/fhir+json"

_RESOURCE = {"type": "object", "required": ["resourceType"], "properties": {"resourceType": {"type": "string"}}}
_OUTCOME = {"type": "object", "required": ["resourceType", "issue"], "properties": {
    "resourceType": {"type": "string", "enum": ["OperationOutcome"]}, "issue": {"type": "array", "minItems": 1}}}
_BUNDLE = {"type": "object", "required": ["resourceType", "type"], "properties": {
    "resourceType": {"type": "string", "enum": ["Bundle"]}, "type": {"type": "string"},
    "entry": {"type": "array", "items": {"type": "object"}}, "link": {"type": "array"}}}

#: what an error can be, and why (README): every error under /fhir is an OperationOutcome
_ERROR_TEXT = {400: "malformed request or parameter", 401: "no valid bearer token", 403: "scope does not allow it",
               404: "unknown type or id", 405: "interaction not supported on this type", 406: "XML asked for",
               409: "a unique value is taken", 410: "deleted, or an expired page token", 412: "precondition failed",
               413: "body too large", 414: "request line too long (HTTP server)", 415: "not FHIR JSON",
               422: "the clinic's rules refused the resource", 429: "rate limited",
               431: "headers too large (HTTP server)", 503: "database busy"}
_ALWAYS = (400, 401, 403, 404, 406, 414, 429, 431, 503)


def _ok(description: str, schema: dict[str, Any], status: str = "200") -> dict[str, Any]:
    return {status: {"description": description, "content": {FHIR_JSON: {"schema": schema}}}}


def _errors(*codes: int) -> dict[str, Any]:
    return {str(c): {"description": _ERROR_TEXT[c], "content": {FHIR_JSON: {"schema": _OUTCOME}}}
            for c in sorted({*codes, *_ALWAYS})}


def _q(name: str, description: str = "", schema: dict[str, Any] | None = None) -> dict[str, Any]:
    return {"name": name, "in": "query", "required": False, "description": description,
            "schema": schema or {"type": "string"}}


_PREFIX = "(eq|ne|gt|lt|ge|le|sa|eb|ap)?"
#: the shape of a value of each parameter type (R4 search.html), so that generated values reach the
#: parsers instead of stopping at the first character; invalid ones are generated too (400 expected)
VALUE_PATTERNS = {
    "date": rf"^{_PREFIX}[0-9]{{4}}(-[0-9]{{2}}(-[0-9]{{2}}(T[0-9]{{2}}:[0-9]{{2}}(:[0-9]{{2}}(\.[0-9]{{1,9}})?)?"
            r"(Z|[+-][0-9]{2}:[0-9]{2})?)?)?)?$",
    "quantity": rf"^{_PREFIX}-?[0-9]{{1,12}}(\.[0-9]{{1,6}})?([eE][-+]?[0-9]{{1,12}})?(\|[^|,]*(\|[^|,]*)?)?$",
    "token": r"^([^|,]*\|)?[^|,]*$",
    "reference": r"^(https?://[a-z.]+/fhir/)?([A-Z][A-Za-z]+/)?[A-Za-z0-9.-]{1,64}$",
    "string": r"^[^,]*$",
    "uri": r"^[^,\s]*$",
}
_LISTS = r"^{v}(,{v}){{0,5}}$"  # comma = OR


def _value_schema(type_: str) -> dict[str, Any]:
    one = VALUE_PATTERNS[type_].removeprefix("^").removesuffix("$")
    return {"type": "string", "pattern": _LISTS.format(v=f"({one})")}


def _search_fields(rtype: str) -> list[tuple[str, dict[str, Any]]]:
    """(name, schema) of every search parameter of the type, modifiers included, and the result
    parameters."""
    out: list[tuple[str, dict[str, Any]]] = []
    for p in SEARCH_PARAMS[rtype].values():
        out.append((p.name, _value_schema(p.type)))
        out.append((f"{p.name}:missing", {"type": "string", "enum": ["true", "false"]}))
        if p.type == "string":
            out += [(f"{p.name}:exact", {"type": "string"}), (f"{p.name}:contains", {"type": "string"})]
    text = {"type": "string"}
    out += [("_count", {"type": "integer"}), ("_sort", text), ("_include", text), ("_revinclude", text),
            ("_summary", {"type": "string", "enum": ["count", "false", "true"]}), ("_elements", text),
            ("_total", {"type": "string", "enum": ["accurate", "none", "estimate"]}), (PAGE_TOKEN_PARAM, text),
            ("_format", {"type": "string", "enum": ["json", "application/fhir+json"]}),
            ("_pretty", {"type": "string", "enum": ["true", "false"]})]
    return out


def _type_paths(rtype: str) -> dict[str, Any]:
    security = [{"bearer": []}]
    rid = {"name": "id", "in": "path", "required": True, "schema": {"type": "string"}}
    vid = {"name": "vid", "in": "path", "required": True, "schema": {"type": "string", "pattern": "^[0-9]{1,25}$"}}
    fields = _search_fields(rtype)
    history_q = [_q("_since", "an instant", {"type": "string", "format": "date-time"}),
                 _q("_count", "page size", {"type": "integer"}), _q("_page", "a token from a next link")]
    paths: dict[str, Any] = {
        f"/fhir/{rtype}": {"get": {
            "operationId": f"search-{rtype}", "security": security,
            "parameters": [_q(name, schema=schema) for name, schema in fields],
            "responses": {**_ok("searchset", _BUNDLE), **_errors(410)}}},
        f"/fhir/{rtype}/_search": {"post": {
            "operationId": f"search-post-{rtype}", "security": security,
            "requestBody": {"required": True, "content": {"application/x-www-form-urlencoded": {"schema": {
                "type": "object", "properties": dict(fields)}}}},
            "responses": {**_ok("searchset", _BUNDLE), **_errors(410, 413, 415)}}},
        f"/fhir/{rtype}/_history": {"get": {
            "operationId": f"history-type-{rtype}", "security": security, "parameters": history_q,
            "responses": {**_ok("history", _BUNDLE), **_errors()}}},
        f"/fhir/{rtype}/{{id}}": {"parameters": [rid], "get": {
            "operationId": f"read-{rtype}", "security": security,
            "parameters": [{"name": "If-None-Match", "in": "header", "required": False, "schema": {"type": "string"}}],
            "responses": {**_ok("the resource", _RESOURCE), "304": {"description": "not modified"},
                          **_errors(410)}}},
        f"/fhir/{rtype}/{{id}}/_history": {"parameters": [rid], "get": {
            "operationId": f"history-instance-{rtype}", "security": security, "parameters": history_q,
            "responses": {**_ok("history", _BUNDLE), **_errors()}}},
        f"/fhir/{rtype}/{{id}}/_history/{{vid}}": {"parameters": [rid, vid], "get": {
            "operationId": f"vread-{rtype}", "security": security,
            "responses": {**_ok("the version", _RESOURCE), **_errors(410)}}},
    }
    if rtype in WRITABLE_TYPES:
        _add_writes(paths, rtype, security, rid)
    return paths


def _add_writes(paths: dict[str, Any], rtype: str, security: list[Any], rid: dict[str, Any]) -> None:
    body = {"required": True, "content": {FHIR_JSON: {"schema": {
        "type": "object", "required": ["resourceType"], "properties": {
            "resourceType": {"type": "string", "enum": [rtype]}, "id": {"type": "string"},
            "identifier": {"type": "array", "items": {"type": "object", "properties": {
                "system": {"type": "string"}, "value": {"type": "string"}}}}}}}}}
    prefer = {"name": "Prefer", "in": "header", "required": False, "schema": {
        "type": "string", "enum": ["return=minimal", "return=representation", "return=OperationOutcome"]}}
    written = {**_ok("updated", _RESOURCE), **_ok("created", _RESOURCE, "201")}
    paths[f"/fhir/{rtype}"]["post"] = {
        "operationId": f"create-{rtype}", "security": security, "requestBody": body,
        "parameters": [prefer, {"name": "If-None-Exist", "in": "header", "required": False,
                                "schema": {"type": "string"}}],
        "responses": {**written, **_errors(409, 412, 413, 415, 422)}}
    paths[f"/fhir/{rtype}"]["put"] = {
        "operationId": f"conditional-update-{rtype}", "security": security, "requestBody": body,
        "parameters": [prefer, _q("identifier", "system|value")],
        "responses": {**written, **_errors(405, 409, 412, 413, 415, 422)}}
    paths[f"/fhir/{rtype}/{{id}}"]["put"] = {
        "operationId": f"update-{rtype}", "security": security, "requestBody": body,
        "parameters": [prefer, {"name": "If-Match", "in": "header", "required": False, "schema": {"type": "string"}}],
        "responses": {**written, **_errors(405, 409, 412, 413, 415, 422)}}


def _bundle_path() -> dict[str, Any]:
    entry = {"type": "object", "properties": {
        "fullUrl": {"type": "string"},
        "resource": {"type": "object", "properties": {"resourceType": {"type": "string", "enum": list(MAPPED_TYPES)},
                                                      "id": {"type": "string"}}},
        "request": {"type": "object", "required": ["method", "url"], "properties": {
            "method": {"type": "string", "enum": ["GET", "POST", "PUT", "DELETE", "PATCH", "HEAD"]},
            "url": {"type": "string"}, "ifNoneExist": {"type": "string"}, "ifMatch": {"type": "string"}}}}}
    bundle = {"type": "object", "required": ["resourceType", "type"], "properties": {
        "resourceType": {"type": "string", "enum": ["Bundle"]},
        "type": {"type": "string", "enum": ["transaction", "batch"]},
        "entry": {"type": "array", "items": entry, "maxItems": 20}}}
    return {"/fhir": {"post": {
        "operationId": "transaction-or-batch", "security": [{"bearer": []}],
        "requestBody": {"required": True, "content": {FHIR_JSON: {"schema": bundle}}},
        "responses": {**_ok("transaction-response / batch-response", _BUNDLE), **_errors(405, 409, 412, 413, 415,
                                                                                           422)}}}}


def build_fhir_spec() -> dict[str, Any]:
    """The OpenAPI 3.0 document of /fhir as a dict."""
    paths: dict[str, Any] = {"/fhir/metadata": {"get": {
        "operationId": "capabilities", "responses": {**_ok("CapabilityStatement", _RESOURCE),
                                                     **_errors()}}}}
    for rtype in MAPPED_TYPES:
        paths.update(_type_paths(rtype))
    paths.update(_bundle_path())
    return {"openapi": "3.0.3", "info": {"title": "ketamine-fhir FHIR R4 API (fuzzing)", "version": "1"},
            "servers": [{"url": "/"}], "paths": paths,
            "components": {"securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}}}}
