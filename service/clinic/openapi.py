"""OpenAPI 3 document of the clinic API, generated from the marshmallow schemas with apispec."""

from __future__ import annotations

from typing import Any

from apispec import APISpec
from apispec.ext.marshmallow import MarshmallowPlugin

from service.auth import SCOPES
from service.clinic.collections import COLLECTIONS, Collection
from service.clinic.views import ListQuery

__all__ = ["build_spec"]

ERROR = {"$ref": "#/components/schemas/Error"}


def _errors(*codes: int) -> dict[str, Any]:
    text = {400: "Body is not JSON or not the declared content type", 401: "No valid bearer token",
            403: "Token lacks the scope", 404: "Unknown id", 409: "Names another patient's record, or a unique "
            "value (MRN, NPI, identifier, session number) is taken", 413: "Body too large",
            422: "Validation failed: field-path errors"}
    return {str(c): {"description": text[c], "content": {"application/json": {"schema": ERROR}}} for c in codes}


def _record_responses(name: str, created: bool) -> dict[str, Any]:
    ok = {"content": {"application/json": {"schema": {"$ref": f"#/components/schemas/{name}Response"}}}}
    out = {"200": {"description": "Stored record (replaced, or unchanged when identical)", **ok}}
    if created:
        out["201"] = {"description": "Created", **ok}
    return out


def _paths(spec: APISpec, coll: Collection, nested: bool) -> None:
    """Document a collection's routes; nested ones (administrations, vitals) are also reachable at
    the top level, where the body carries ``session_id``."""
    name = coll.schema.__name__.removesuffix("Schema")
    body = {"required": True, "content": {"application/json": {"schema": name}}}
    prefix = f"/sessions/{{session_id}}/{coll.name}" if nested else f"/{coll.name}"
    id_param = {"name": "id", "in": "path", "required": True, "schema": {"type": "string", "pattern":
                "^[A-Za-z0-9._-]{1,64}$"}}
    parent = [{"name": "session_id", "in": "path", "required": True, "schema": {"type": "string"}}] \
        if nested else []
    security_r = [{"bearer": ["clinic:read"]}]
    security_w = [{"bearer": ["clinic:write"]}]
    spec.path(path=prefix, parameters=parent, operations={
        "get": {"summary": f"List {coll.name}", "tags": [coll.name], "security": security_r,
                "parameters": [{"in": "query", "schema": ListQuery}],
                "responses": {"200": {"description": "A page", "content": {"application/json": {"schema": {
                    "type": "object", "properties": {
                        "items": {"type": "array", "items": {"$ref": f"#/components/schemas/{name}Response"}},
                        "limit": {"type": "integer"}, "next_cursor": {"type": "string", "nullable": True},
                        "next": {"type": "string"}}}}}}, **_errors(401, 403, 404, 422)}},
        "post": {"summary": f"Create a {coll.label} (server-assigned id unless given)", "tags": [coll.name],
                 "security": security_w, "requestBody": body,
                 "responses": {**_record_responses(name, True), **_errors(400, 401, 403, 404, 409, 413, 422)}},
    })
    spec.path(path=f"{prefix}/{{id}}", parameters=[*parent, id_param], operations={
        "get": {"summary": f"Read a {coll.label}", "tags": [coll.name], "security": security_r,
                "responses": {**_record_responses(name, False), **_errors(401, 403, 404)}},
        "put": {"summary": f"Create or replace a {coll.label} (idempotent)", "tags": [coll.name],
                "security": security_w, "requestBody": body,
                "responses": {**_record_responses(name, True), **_errors(400, 401, 403, 404, 409, 413, 422)}},
    })


def build_spec(server_url: str = "/api/v1") -> dict[str, Any]:
    """The OpenAPI 3.0 document as a dict."""
    spec = APISpec(title="ketamine-fhir clinic API", version="1.0.0", openapi_version="3.0.3",
                   plugins=[MarshmallowPlugin()], servers=[{"url": server_url}],
                   info={"description": "The clinic's records in; see README and docs for FHIR mapping."})
    spec.components.security_scheme("bearer", {"type": "http", "scheme": "bearer",
                                               "description": "Scopes: " + "; ".join(
                                                   f"{k}: {v}" for k, v in SCOPES.items())})
    spec.components.schema("Error", {"type": "object", "properties": {
        "message": {"type": "string"},
        "errors": {"type": "object", "additionalProperties": {"type": "array", "items": {"type": "string"}}}}})
    warning = {"type": "object", "properties": {k: {"type": "string"} for k in ("code", "field", "message")}}
    for coll in COLLECTIONS.values():
        name = coll.schema.__name__.removesuffix("Schema")
        spec.components.schema(name, schema=coll.schema)
        spec.components.schema(f"{name}Response", {"allOf": [
            {"$ref": f"#/components/schemas/{name}"},
            {"type": "object", "properties": {
                "meta": {"type": "object", "properties": {"version": {"type": "integer"},
                                                          "created_at": {"type": "string", "format": "date-time"},
                                                          "updated_at": {"type": "string", "format": "date-time"}}},
                "warnings": {"type": "array", "items": warning},
                "fhir": {"type": "object", "description": "The FHIR resources the record maps to: resource type "
                         "-> relative URL, or a list of them where the record yields several of one type",
                         "additionalProperties": {"oneOf": [{"type": "string"},
                                                            {"type": "array", "items": {"type": "string"}}]}},
            }}]})
        _paths(spec, coll, nested=False)
        if coll.parent:
            _paths(spec, coll, nested=True)
    spec.path(path="/import", operations={"post": {
        "summary": "Bulk upload: NDJSON, one {\"type\": collection, \"record\": {...}} a line",
        "tags": ["import"], "security": [{"bearer": ["clinic:write"]}],
        "requestBody": {"required": True, "content": {"application/x-ndjson": {"schema": {"type": "string"}}}},
        "responses": {"200": {"description": "Per-line report: accepted lines and each rejected line's errors"},
                      **_errors(400, 401, 403, 413)}}})
    return spec.to_dict()
