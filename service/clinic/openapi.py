"""OpenAPI 3 document of the clinic API, generated from the marshmallow schemas with apispec.

The document is held to what the API does by schemathesis (tests/fuzz/test_clinic_api_fuzz.py,
every check on): a value the schema allows must not be refused for that field alone, a response
must match its schema, every status the API can answer is listed.
"""

from __future__ import annotations

import copy
from typing import Any

from apispec import APISpec
from apispec.ext.marshmallow import MarshmallowPlugin
from marshmallow import fields, validate

from service.auth import SCOPES
from service.clinic.collections import COLLECTIONS, Collection
from service.clinic.fields import NOT_BLANK, WHITE_SPACE
from service.clinic.views import ListQuery

__all__ = ["build_spec"]

ERROR = {"$ref": "#/components/schemas/Error"}

#: characters no stored string may hold (service/clinic/store.py ``_UNSTORABLE``: C0 controls but
#: tab and line breaks, and DEL); every free-text field's documented pattern excludes them
_CONTROL = r"\x00-\x08\x0b\x0c\x0e-\x1f\x7f"
#: ``Text`` fields: no control character, at least one character that is not white space
TEXT_PATTERN = rf"^[^{_CONTROL}]*[^{_CONTROL}{WHITE_SPACE}][^{_CONTROL}]*$"
#: any other free string
PLAIN_PATTERN = rf"^[^{_CONTROL}]*$"

_STATUS_TEXT = {
    400: "Body is not JSON or not the declared content type",
    401: "No valid bearer token",
    403: "Token lacks the scope",
    404: "Unknown id, or a nested record under an unknown session",
    409: "Names another patient's record, or a unique value (MRN, NPI, identifier, session number) is taken",
    413: "Body larger than the limit (KETAMINE_FHIR_MAX_BODY_BYTES; /import: KETAMINE_FHIR_MAX_IMPORT_BYTES)",
    414: "Request line (path and query) too long: answered by the HTTP server before the API sees it",
    422: "Validation failed: field-path errors",
    429: "Rate limit exceeded; Retry-After says when to come back",
    431: "Request headers too large: answered by the HTTP server before the API sees it",
    503: "The database is busy with another write; retry after Retry-After seconds",
}
#: what any request may be answered, whatever the operation
_ALWAYS = (401, 414, 429, 431, 503)


def _errors(*codes: int) -> dict[str, Any]:
    """Error responses: the given codes plus those any request can get."""
    out: dict[str, Any] = {}
    for code in sorted({*codes, *_ALWAYS}):
        out[str(code)] = {"description": _STATUS_TEXT[code], "content": {"application/json": {"schema": ERROR}}}
        if code in (429, 503):
            out[str(code)]["headers"] = {"Retry-After": {"schema": {"type": "integer"}}}
    return out


def _bounds(self: Any, field: fields.Field, **kwargs: Any) -> dict[str, Any]:
    """OpenAPI 3.0 ``exclusiveMinimum``/``exclusiveMaximum`` for ``Range(min_inclusive=False)``:
    apispec writes the bound as ``minimum`` alone, which lets ``dose_mg: 0.0`` through the schema
    that the API then refuses."""
    out: dict[str, Any] = {}
    for v in field.validators:
        if isinstance(v, validate.Range):
            if v.min is not None and not v.min_inclusive:
                out["exclusiveMinimum"] = True
            if v.max is not None and not v.max_inclusive:
                out["exclusiveMaximum"] = True
    return out


def _string_pattern(self: Any, field: fields.Field, ret: dict[str, Any], **kwargs: Any) -> dict[str, Any]:
    """The documented pattern of free strings also excludes the control characters the API refuses.
    Fields with a pattern of their own (ids, codes, phone, URI) allow none already."""
    if ret.get("type") != "string" or "enum" in ret or "format" in ret:
        return {}
    if ret.get("pattern") == NOT_BLANK:
        return {"pattern": TEXT_PATTERN}
    return {} if "pattern" in ret else {"pattern": PLAIN_PATTERN}


def _plugin() -> MarshmallowPlugin:
    plugin = MarshmallowPlugin()
    original = plugin.init_spec

    def init_spec(spec: APISpec) -> None:
        original(spec)
        plugin.converter.add_attribute_function(_bounds)
        plugin.converter.add_attribute_function(_string_pattern)

    plugin.init_spec = init_spec  # type: ignore[method-assign]
    return plugin


_META = {"type": "object", "readOnly": True, "required": ["version", "created_at", "updated_at"],
         "properties": {"version": {"type": "integer"}, "created_at": {"type": "string", "format": "date-time"},
                        "updated_at": {"type": "string", "format": "date-time"}}}
_WARNINGS = {"type": "array", "readOnly": True, "items": {
    "type": "object", "properties": {k: {"type": "string"} for k in ("code", "field", "message")}}}
_FHIR = {"type": "object", "readOnly": True,
         "description": "The FHIR resources the record maps to: resource type -> relative URL, or a list of them "
                        "where the record yields several of one type",
         "additionalProperties": {"oneOf": [{"type": "string"}, {"type": "array", "items": {"type": "string"}}]}}


def _record_components(spec: APISpec, coll: Collection) -> None:
    """``<Name>`` (the body: ``meta``, ``warnings`` and ``fhir`` are read-only, accepted and
    ignored on input) and ``<Name>Response`` (what the API answers: the same closed object with
    ``meta`` and ``warnings`` always there)."""
    name = _name(coll)
    spec.components.schema(name, schema=coll.schema)
    body = spec.components.schemas[name]
    body["properties"].update(meta=_META, warnings=_WARNINGS, fhir=_FHIR)
    response = copy.deepcopy(body)
    response["required"] = sorted({*body.get("required", ()), "id", "meta", "warnings"})
    for prop in ("meta", "warnings", "fhir"):
        response["properties"][prop] = {k: v for k, v in response["properties"][prop].items() if k != "readOnly"}
    spec.components.schema(f"{name}Response", response)


def _name(coll: Collection) -> str:
    return coll.schema.__name__.removesuffix("Schema")


def _record_responses(name: str, created: bool) -> dict[str, Any]:
    ok = {"content": {"application/json": {"schema": {"$ref": f"#/components/schemas/{name}Response"}}}}
    out = {"200": {"description": "Stored record (replaced, or unchanged when identical)", **ok}}
    if created:
        out["201"] = {"description": "Created", **ok}
    return out


def _list_parameters(coll: Collection) -> list[dict[str, Any]]:
    """The list query; ``patient_id`` only where records are per patient (patients: the id itself)."""
    params = [{"in": "query", "schema": ListQuery}]
    if coll.name == "practitioners":
        params = [{"in": "query", "schema": ListQuery(exclude=("patient_id",))}]
    return params


def _body(coll: Collection, nested: bool) -> dict[str, Any]:
    """Top-level writes of nested records name their session in the body; under
    ``/sessions/{session_id}/...`` the URL does."""
    ref = {"$ref": f"#/components/schemas/{_name(coll)}"}
    schema = {"allOf": [ref, {"required": ["session_id"]}]} if coll.parent and not nested else ref
    return {"required": True, "content": {"application/json": {"schema": schema}}}


def _paths(spec: APISpec, coll: Collection, nested: bool) -> None:
    """Document a collection's routes; nested ones (administrations, vitals) are also reachable at
    the top level, where the body carries ``session_id``."""
    name = _name(coll)
    body = _body(coll, nested)
    prefix = f"/sessions/{{session_id}}/{coll.name}" if nested else f"/{coll.name}"
    id_schema = {"type": "string", "pattern": "^[A-Za-z0-9._-]{1,64}$"}
    id_param = {"name": "id", "in": "path", "required": True, "schema": id_schema}
    parent = [{"name": "session_id", "in": "path", "required": True, "schema": id_schema}] if nested else []
    security_r = [{"bearer": ["clinic:read"]}]
    security_w = [{"bearer": ["clinic:write"]}]
    item = {"$ref": f"#/components/schemas/{name}Response"}
    page = {"type": "object", "required": ["items", "limit", "next_cursor"], "additionalProperties": False,
            "properties": {"items": {"type": "array", "items": item}, "limit": {"type": "integer"},
                           "next_cursor": {"type": "string", "nullable": True}, "next": {"type": "string"}}}
    not_found = (404,) if nested else ()
    spec.path(path=prefix, parameters=parent, operations={
        "get": {"summary": f"List {coll.name}", "tags": [coll.name], "security": security_r,
                "parameters": _list_parameters(coll),
                "responses": {"200": {"description": "A page", "content": {"application/json": {"schema": page}}},
                              **_errors(403, *not_found, 422)}},
        "post": {"summary": f"Create a {coll.label} (server-assigned id unless given)", "tags": [coll.name],
                 "security": security_w, "requestBody": body,
                 "responses": {**_record_responses(name, True), **_errors(400, 403, 404, 409, 413, 422)}},
    })
    spec.path(path=f"{prefix}/{{id}}", parameters=[*parent, id_param], operations={
        "get": {"summary": f"Read a {coll.label}", "tags": [coll.name], "security": security_r,
                "responses": {**_record_responses(name, False), **_errors(403, 404)}},
        "put": {"summary": f"Create or replace a {coll.label} (idempotent)", "tags": [coll.name],
                "security": security_w, "requestBody": body,
                "responses": {**_record_responses(name, True), **_errors(400, 403, 404, 409, 413, 422)}},
    })


_IMPORT_REPORT = {"type": "object", "required": ["accepted", "rejected", "created", "updated", "unchanged",
                                                 "lines", "errors"],
                  "properties": {**{k: {"type": "integer", "minimum": 0}
                                    for k in ("accepted", "rejected", "created", "updated", "unchanged")},
                                 "lines": {"type": "array", "items": {"type": "object"}},
                                 "errors": {"type": "array", "items": {"type": "object"}},
                                 "errors_truncated": {"type": "boolean"}}}


#: the body: NDJSON, one envelope a line (documented as the array of its lines' JSON values)
_IMPORT_LINES = {"type": "array", "description": "NDJSON: each item is one line", "items": {
    "type": "object", "required": ["type", "record"], "additionalProperties": False, "properties": {
        "type": {"type": "string", "enum": list(COLLECTIONS)}, "record": {"type": "object"}}}}


def _import_path(spec: APISpec) -> None:
    spec.path(path="/import", operations={"post": {
        "summary": "Bulk upload: NDJSON, one {\"type\": collection, \"record\": {...}} a line",
        "tags": ["import"], "security": [{"bearer": ["clinic:write"]}],
        "requestBody": {"required": True, "content": {"application/x-ndjson": {"schema": _IMPORT_LINES}}},
        "responses": {"200": {"description": "Per-line report: accepted lines and each rejected line's errors",
                              "content": {"application/json": {"schema": _IMPORT_REPORT}}},
                      **_errors(400, 403, 413)}}})


def build_spec(server_url: str = "/api/v1") -> dict[str, Any]:
    """The OpenAPI 3.0 document as a dict."""
    spec = APISpec(title="ketamine-fhir clinic API", version="1.0.0", openapi_version="3.0.3",
                   plugins=[_plugin()], servers=[{"url": server_url}],
                   info={"description": "The clinic's records in; see README and docs for FHIR mapping. "
                         "Methods a path does not list answer 405 with Allow; DELETE is never allowed "
                         "(a record made in error is PUT with status entered-in-error)."})
    spec.components.security_scheme("bearer", {"type": "http", "scheme": "bearer",
                                               "description": "Scopes: " + "; ".join(
                                                   f"{k}: {v}" for k, v in SCOPES.items())})
    spec.components.schema("Error", {"type": "object", "required": ["message", "errors"], "properties": {
        "message": {"type": "string"},
        "errors": {"type": "object", "additionalProperties": {"type": "array", "items": {"type": "string"}}}}})
    for coll in COLLECTIONS.values():
        _record_components(spec, coll)
        _paths(spec, coll, nested=False)
        if coll.parent:
            _paths(spec, coll, nested=True)
    _import_path(spec)
    return spec.to_dict()
