"""Shared harness of the treatment mapping tests (CarePlan, Encounter, Procedure,
MedicationAdministration, AdverseEvent): golden cases under tests/fixtures/<resource type>/ and the
synthetic clinic, each with a MappingContext that answers from the records at hand, as the
service answers from its database."""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterable, Iterator, Mapping
from functools import cache
from pathlib import Path
from typing import Any

from mappings import checks
from mappings.context import MappingContext
from mappings.terminology import SYSTEM
from service.synthetic import clinic_records
from tests.fhir_checks import terminology_problems

BASE_URI = "https://clinic.example.org/fhir"
FIXTURES = Path(__file__).resolve().parent.parent / "fixtures"

Record = Mapping[str, Any]
Mapper = Callable[[Record, MappingContext], Any]

#: children(parent_id, collection): the field naming the parent, and the sort key (as the service)
_PARENT = {"administrations": ("session_id", "start"), "vitals": ("session_id", "effective"),
           "sessions": ("course_id", "start")}


def context(records: Iterable[tuple[str, Record]]) -> MappingContext:
    """A MappingContext whose lookup and children answer from (collection, record) pairs."""
    by_id = {(collection, record["id"]): record for collection, record in records}

    def lookup(collection: str, record_id: str) -> Record | None:
        return by_id.get((collection, record_id))

    def children(parent_id: str, collection: str) -> list[Record]:
        field, order = _PARENT[collection]
        kids = [r for (c, _), r in by_id.items() if c == collection and r.get(field) == parent_id]
        return sorted(kids, key=lambda r: (r[order], r["id"]))

    return MappingContext(base_uri=BASE_URI, lookup=lookup, children=children)


def cases(folder: str) -> list[str]:
    """Names of the golden cases of one resource type (tests/fixtures/<folder>/<case>.input.json)."""
    return sorted(p.name.removesuffix(".input.json") for p in (FIXTURES / folder).glob("*.input.json"))


def load_case(folder: str, name: str) -> tuple[Record, MappingContext, Any]:
    """The clinic record of a golden case, its context and the expected FHIR output."""
    given = json.loads((FIXTURES / folder / f"{name}.input.json").read_text())
    related = [(c, r) for c, rs in given.get("related", {}).items() for r in rs]
    expected = json.loads((FIXTURES / folder / f"{name}.expected.json").read_text())
    return given["record"], context(related), expected


def as_list(output: Any) -> list[dict[str, Any]]:
    return output if isinstance(output, list) else [output]


def golden_outputs(folder: str, mapper: Mapper) -> Iterator[tuple[str, Record, dict[str, Any]]]:
    """(case, input record, resource) for every resource the golden cases of ``folder`` produce."""
    for name in cases(folder):
        record, ctx, _ = load_case(folder, name)
        for resource in as_list(mapper(record, ctx)):
            yield name, record, resource


@cache
def synthetic_clinic(patients: int = 24) -> tuple[tuple[tuple[str, Record], ...], MappingContext]:
    """The synthetic clinic's records, each with the warnings the service's checks give it, and
    administrations carrying their session's ``patient_id`` as the service adds it."""
    raw = list(clinic_records(patients))
    sessions = {r["id"]: r for c, r in raw if c == "sessions"}
    raw = [(c, {**r, "patient_id": sessions[r["session_id"]]["patient_id"]} if c == "administrations" else r)
           for c, r in raw]
    ctx = context(raw)
    out = []
    for collection, record in raw:
        found = checks.warnings_for(collection, record, ctx)
        if collection == "sessions":
            found += checks.session_rems(record, ctx)
        out.append((collection, {**record, "warnings": found} if found else record))
    return tuple(out), context(out)


def synthetic_outputs(collection: str, mapper: Mapper) -> list[tuple[Record, dict[str, Any]]]:
    """(record, resource) for every resource ``mapper`` makes from the synthetic clinic's records
    of ``collection``."""
    records, ctx = synthetic_clinic()
    return [(record, resource) for c, record in records if c == collection
            for resource in as_list(mapper(record, ctx))]


def synthetic_records(collection: str) -> list[Record]:
    return [record for c, record in synthetic_clinic()[0] if c == collection]


def clinic_supplied_snomed(record: Record) -> set[str]:
    """SNOMED CT codes the clinic itself sent (adverse-event codes): passed through unchanged, so
    not the clinical reference's to vouch for."""
    return {e["code"] for e in record.get("adverse_events") or [] if e.get("code")}


def own_terminology_problems(resource: dict[str, Any], record: Record) -> list[str]:
    """terminology_problems, with the clinic-supplied SNOMED codes passed through."""
    return terminology_problems(resource, BASE_URI, {(SYSTEM["snomed"], c) for c in clinic_supplied_snomed(record)})


def snomed_codings(resource: Any) -> set[str]:
    """The SNOMED CT codes anywhere in a resource (to prove pass-through codes really are there)."""
    text = json.dumps(resource)
    return set(re.findall(r'"system": "http://snomed\.info/sct", "code": "(\d+)"', text))
