"""Shared harness of the measurement mapping tests (outcome scores and vital signs): golden cases
under tests/fixtures/observation/ and the synthetic clinic, each with a MappingContext that
answers from the records at hand (as the service answers from its database)."""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from functools import cache
from pathlib import Path
from typing import Any

from mappings import checks
from mappings.context import MappingContext
from service.synthetic import clinic_records

BASE_URI = "https://clinic.example.org/fhir"
FIXTURES = Path(__file__).resolve().parent.parent / "fixtures" / "observation"

Record = Mapping[str, Any]

#: children(parent_id, collection): the field naming the parent, and the sort key (as the service)
_PARENT = {"administrations": ("session_id", "start"), "vitals": ("session_id", "effective"),
           "sessions": ("course_id", "start")}


def context(records: Iterable[tuple[str, Record]]) -> MappingContext:
    """A MappingContext whose lookup and children answer from (collection, record) pairs."""
    by_id: dict[tuple[str, str], Record] = {}
    for collection, record in records:
        by_id[(collection, record["id"])] = record

    def lookup(collection: str, record_id: str) -> Record | None:
        return by_id.get((collection, record_id))

    def children(parent_id: str, collection: str) -> list[Record]:
        field, order = _PARENT[collection]
        kids = [r for (c, _), r in by_id.items() if c == collection and r.get(field) == parent_id]
        return sorted(kids, key=lambda r: (r[order], r["id"]))

    return MappingContext(base_uri=BASE_URI, lookup=lookup, children=children)


def cases(prefix: str) -> list[str]:
    """Names of the golden cases whose files start with ``prefix``."""
    return sorted(p.name.removesuffix(".input.json") for p in FIXTURES.glob(f"{prefix}*.input.json"))


def load_case(name: str) -> tuple[Record, MappingContext, Any]:
    """The clinic record of a golden case, its context and the expected FHIR output."""
    given = json.loads((FIXTURES / f"{name}.input.json").read_text())
    related = [(c, r) for c, rs in given.get("related", {}).items() for r in rs]
    expected = json.loads((FIXTURES / f"{name}.expected.json").read_text())
    return given["record"], context(related), expected


@cache
def synthetic_clinic(patients: int = 24) -> tuple[tuple[tuple[str, Record], ...], MappingContext]:
    """The synthetic clinic's records, each with the warnings the service's checks give it."""
    raw = list(clinic_records(patients))
    ctx = context(raw)
    out = []
    for collection, record in raw:
        warnings = checks.warnings_for(collection, record, ctx)
        out.append((collection, {**record, "warnings": warnings} if warnings else record))
    return tuple(out), context(out)
