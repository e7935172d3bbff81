"""FHIR's HTTP conventions: content negotiation, ``_format`` / ``_pretty``, ETags, and answers.

R4 http.html: JSON is ``application/fhir+json`` (``application/json`` accepted too); a client that
can only take XML gets 406 with an OperationOutcome, since the service speaks JSON only.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from datetime import datetime
from email.utils import format_datetime
from typing import Any

from flask import Request, Response, request

from service.fhir.outcomes import FhirError

__all__ = ["FHIR_JSON", "bundle_response", "entry", "negotiate", "resource_response"]

FHIR_JSON = "application/fhir+json"
_JSON_FORMATS = {"json", FHIR_JSON, "application/json", "application/json+fhir"}
_XML_FORMATS = {"xml", "application/fhir+xml", "application/xml", "text/xml", "application/xml+fhir"}


def negotiate(req: Request) -> str:
    """The response media type; 406 for XML-only clients (``_format`` wins over ``Accept``)."""
    fmt = req.args.get("_format")
    if fmt:
        base = fmt.split(";")[0].strip().lower()
        if base in _JSON_FORMATS:
            return "application/json" if base == "application/json" else FHIR_JSON
        if base in _XML_FORMATS:
            raise FhirError(406, "not-supported", "this server speaks FHIR JSON only; use _format=json",
                            ["_format"])
        raise FhirError(406, "not-supported", f"unknown _format {fmt!r}; use _format=json", ["_format"])
    accept = req.accept_mimetypes
    if not accept:
        return FHIR_JSON
    best = accept.best_match([FHIR_JSON, "application/json"])
    if best is None:
        raise FhirError(406, "not-supported", "this server answers application/fhir+json only (Accept)")
    return best


def _pretty() -> bool:
    return request.args.get("_pretty", "false").lower() == "true"


def _body(raw: str) -> str:
    """Stored JSON as served: compact, or indented under ``_pretty=true``."""
    return json.dumps(json.loads(raw), indent=2, ensure_ascii=False) if _pretty() else raw


def _http_date(moment: datetime) -> str:
    return format_datetime(moment, usegmt=True)


def resource_response(content: str, version_id: int | None = None, last_updated: datetime | None = None,
                      status: int = 200, headers: dict[str, str] | None = None) -> Response:
    """One resource (stored JSON text) with ETag and Last-Modified."""
    response = Response(_body(content), status=status, mimetype=negotiate(request))
    response.charset = "utf-8"
    if version_id is not None:
        response.headers["ETag"] = f'W/"{version_id}"'
    if last_updated is not None:
        response.headers["Last-Modified"] = _http_date(last_updated)
    response.headers.update(headers or {})
    return response


def bundle_response(bundle_head: dict[str, Any], entries: Iterable[str]) -> Response:
    """A Bundle whose entries are pre-serialised JSON objects (stored bytes are not re-parsed)."""
    head = json.dumps(bundle_head, ensure_ascii=False, separators=(",", ":"))
    listed = list(entries)
    raw = head[:-1] + ',"entry":[' + ",".join(listed) + "]}" if listed else head
    return resource_response(raw)


def entry(full_url: str, content: str, extra: dict[str, Any] | None = None) -> str:
    """A Bundle entry around stored resource JSON."""
    tail = "".join(f',"{k}":{json.dumps(v, separators=(",", ":"))}' for k, v in (extra or {}).items())
    return f'{{"fullUrl":{json.dumps(full_url)},"resource":{content}{tail}}}'
