"""``/import`` and ``ketamine-fhir import``: NDJSON of ``{"type": ..., "record": {...}}`` lines.

Each line is all-or-nothing (a SAVEPOINT), in file order, so a line may name a record from an
earlier line. Good lines are stored, bad lines are reported with their field errors.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from typing import IO, Any

from sqlalchemy.orm import Session

from service.clinic.collections import COLLECTIONS
from service.clinic.store import put_record
from service.errors import ServiceError

__all__ = ["DEFAULT_MAX_ERRORS", "DEFAULT_MAX_LINE_BYTES", "import_lines", "parse_json", "parse_line", "read_lines"]

ENVELOPE_KEYS = {"type", "record"}

#: defaults of KETAMINE_FHIR_MAX_IMPORT_LINE_BYTES (a line is one record: the single-write body
#: limit) and KETAMINE_FHIR_MAX_IMPORT_ERRORS
DEFAULT_MAX_LINE_BYTES = 1024 * 1024
DEFAULT_MAX_ERRORS = 1000
#: a listed error's size: an unknown field's name is the client's text, so is any message that quotes
#: a value; a megabyte line must not make a megabyte report entry
MAX_FIELDS_PER_ERROR = 20
MAX_MESSAGES_PER_FIELD = 5
MAX_TEXT_CHARS = 200
_READ_CHUNK = 64 * 1024


def parse_json(text: str | bytes) -> Any:
    """Parse JSON strictly: NaN and Infinity are not JSON."""

    def _reject(constant: str) -> None:
        raise ValueError(f"{constant} is not valid JSON")

    try:
        return json.loads(text, parse_constant=_reject)
    except RecursionError:
        raise ValueError("nested too deeply") from None


def parse_line(raw: str) -> tuple[dict[str, Any] | None, dict[str, list[str]] | None]:
    try:
        envelope = parse_json(raw)
    except ValueError as exc:
        return None, {"_line": [f"Not valid JSON: {exc}"]}
    if not isinstance(envelope, dict):
        return None, {"_line": ["Must be a JSON object {\"type\": ..., \"record\": {...}}."]}
    errors: dict[str, list[str]] = {}
    for key in envelope.keys() - ENVELOPE_KEYS:
        errors[key] = ["Unknown field."]
    # a str first: a JSON object or array as "type" is unhashable, and the lookup would raise (a 500)
    if not isinstance(envelope.get("type"), str) or envelope["type"] not in COLLECTIONS:
        errors["type"] = [f"Must be one of: {', '.join(COLLECTIONS)}."]
    if not isinstance(envelope.get("record"), dict):
        errors["record"] = ["Must be a JSON object."]
    return (None, errors) if errors else (envelope, None)


def read_lines(stream: IO[bytes], max_line_bytes: int = DEFAULT_MAX_LINE_BYTES) -> Iterator[bytes]:
    """The lines of a binary stream, read as they come. A line longer than ``max_line_bytes`` is
    not held in memory: only its first ``max_line_bytes + 2`` bytes are yielded (enough for
    :func:`import_lines` to see it is too long), the rest is skipped."""
    limit = max_line_bytes + 2  # room for the line's own "\r\n"
    while line := stream.readline(limit):
        if len(line) == limit and not line.endswith(b"\n"):
            while (rest := stream.readline(_READ_CHUNK)) and not rest.endswith(b"\n"):
                pass
        yield line


def import_lines(db: Session, lines: Iterable[str | bytes], *, max_line_bytes: int = DEFAULT_MAX_LINE_BYTES,
                 max_errors: int = DEFAULT_MAX_ERRORS) -> dict[str, Any]:
    """Apply NDJSON lines; return the report. The caller commits.

    A line longer than ``max_line_bytes`` is rejected (413) unparsed. The report lists the first
    ``max_errors`` rejected lines (``errors_truncated`` says whether there were more) and counts all.
    """
    report: dict[str, Any] = {"accepted": 0, "rejected": 0, "created": 0, "updated": 0, "unchanged": 0,
                              "lines": [], "errors": [], "errors_truncated": False}
    for number, raw in enumerate(lines, start=1):
        status, errors = _import_line(db, raw, number, max_line_bytes, report)
        if status is None:
            continue
        report["rejected"] += 1
        if len(report["errors"]) < max_errors:
            report["errors"].append({"line": number, "status": status, "errors": _bounded(errors)})
        else:
            report["errors_truncated"] = True
    return report


def _import_line(db: Session, raw: str | bytes, number: int, max_line_bytes: int,
                 report: dict[str, Any]) -> tuple[int | None, dict[str, list[str]]]:
    """Apply one line. ``(None, {})`` when it was accepted (or blank), else its status and errors."""
    if _too_long(raw, max_line_bytes):
        return 413, {"_line": [f"Longer than {max_line_bytes} bytes; not read. Send one record a line."]}
    text = raw.decode("utf-8", errors="replace") if isinstance(raw, bytes) else raw
    if not text.strip():
        return None, {}
    envelope, errors = parse_line(text)
    if envelope is None:
        return (400 if "_line" in (errors or {}) else 422), errors or {}
    try:
        result = put_record(db, COLLECTIONS[envelope["type"]], envelope["record"], envelope["record"].get("id"))
    except ServiceError as exc:
        return exc.status, {f"record.{k}" if not k.startswith("_") else k: v for k, v in exc.errors.items()}
    report["accepted"] += 1
    report[result.outcome] += 1
    entry = {"line": number, "type": envelope["type"], "id": result.row.id, "outcome": result.outcome}
    if result.warnings:
        entry["warnings"] = result.warnings
    report["lines"].append(entry)
    return None, {}


def _too_long(raw: str | bytes, max_line_bytes: int) -> bool:
    if isinstance(raw, str):
        # a character is at most 4 bytes in UTF-8: encode only the lines that might be too long
        if len(raw) * 4 <= max_line_bytes:
            return False
        raw = raw.encode("utf-8", errors="surrogatepass")
    return len(raw.rstrip(b"\r\n")) > max_line_bytes


def _bounded(errors: dict[str, list[str]]) -> dict[str, list[str]]:
    """At most MAX_FIELDS_PER_ERROR fields of at most MAX_MESSAGES_PER_FIELD messages, each text cut
    to MAX_TEXT_CHARS: a report entry stays a few kilobytes whatever the line held."""
    items = list(errors.items())
    bounded = {_cut(key): [_cut(str(m)) for m in messages[:MAX_MESSAGES_PER_FIELD]]
               for key, messages in items[:MAX_FIELDS_PER_ERROR]}
    if len(items) > MAX_FIELDS_PER_ERROR:
        bounded.setdefault("_line", []).append(f"{len(items) - MAX_FIELDS_PER_ERROR} more fields have errors.")
    return bounded


def _cut(text: str) -> str:
    return text if len(text) <= MAX_TEXT_CHARS else text[:MAX_TEXT_CHARS] + "…"
