"""``/import`` and ``ketamine-fhir import``: NDJSON of ``{"type": ..., "record": {...}}`` lines.

Each line is all-or-nothing (a SAVEPOINT), in file order, so a line may name a record from an
earlier line. Good lines are stored, bad lines are reported with their field errors.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any

from sqlalchemy.orm import Session

from service.clinic.collections import COLLECTIONS
from service.clinic.store import put_record
from service.errors import ServiceError

__all__ = ["import_lines", "parse_json", "parse_line"]

ENVELOPE_KEYS = {"type", "record"}


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
    if envelope.get("type") not in COLLECTIONS:
        errors["type"] = [f"Must be one of: {', '.join(COLLECTIONS)}."]
    if not isinstance(envelope.get("record"), dict):
        errors["record"] = ["Must be a JSON object."]
    return (None, errors) if errors else (envelope, None)


def import_lines(db: Session, lines: Iterable[str | bytes]) -> dict[str, Any]:
    """Apply NDJSON lines; return the report. The caller commits."""
    report: dict[str, Any] = {"accepted": 0, "rejected": 0, "created": 0, "updated": 0, "unchanged": 0,
                              "lines": [], "errors": []}
    for number, raw in enumerate(lines, start=1):
        text = raw.decode("utf-8", errors="replace") if isinstance(raw, bytes) else raw
        if not text.strip():
            continue
        envelope, errors = parse_line(text)
        if envelope is not None:
            try:
                result = put_record(db, COLLECTIONS[envelope["type"]], envelope["record"],
                                    envelope["record"].get("id"))
            except ServiceError as exc:
                errors = {f"record.{k}" if not k.startswith("_") else k: v for k, v in exc.errors.items()}
                status = exc.status
            else:
                report["accepted"] += 1
                report[result.outcome] += 1
                entry = {"line": number, "type": envelope["type"], "id": result.row.id, "outcome": result.outcome}
                if result.warnings:
                    entry["warnings"] = result.warnings
                report["lines"].append(entry)
                continue
        else:
            status = 400 if "_line" in (errors or {}) else 422
        report["rejected"] += 1
        report["errors"].append({"line": number, "status": status, "errors": errors})
    return report
