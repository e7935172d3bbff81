"""``ketamine-fhir map``: clinic NDJSON in, FHIR out — no server, no database.

The dry run an integration engineer uses before connecting an EHR. Lines are checked as
``/import`` checks them (schemas, references to records of earlier lines, same patient); bad lines
are reported with their line number and field errors, good lines still map. The output is the
final state of every resource after the whole file, as the service would store it. Provenance,
which records each write, is left out unless asked for (``provenance_recorded``): then each record
gets the Provenance of its last write in the file, over the resources it maps to, with the author
and transmitter the service would name (the service's Provenance of a write also targets what the
write re-mapped in other records, and is recorded at the write's time).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from mappings import provenance
from mappings.checks import session_rems, warnings_for
from mappings.context import MappingContext
from mappings.resources import clinic_organization, resources_for
from mappings.security_labels import SecurityPolicy, label
from service.clinic.collections import COLLECTIONS, Collection
from service.clinic.importer import parse_line
from service.clinic.store import load, ref_values
from service.errors import ServiceError

__all__ = ["MapResult", "map_lines"]

#: how a parent's children are found and ordered: collection -> (parent field, time field)
_CHILD_KEYS = {"administrations": ("session_id", "start"), "vitals": ("session_id", "effective"),
               "sessions": ("course_id", "start")}


@dataclass
class MapResult:
    resources: list[dict[str, Any]] = field(default_factory=list)
    errors: list[dict[str, Any]] = field(default_factory=list)  # {"line", "errors": {path: [msg]}}
    records: int = 0


class _Memory:
    """The records read so far, answering MappingContext lookups."""

    def __init__(self) -> None:
        self.records: dict[str, dict[str, dict[str, Any]]] = {name: {} for name in COLLECTIONS}
        self.order: list[tuple[str, str]] = []
        #: how many lines wrote each record: its version after the file, as /import would number it
        self.versions: dict[tuple[str, str], int] = {}
        #: (collection, parent id) -> ids of its records, so children() does not scan a whole clinic
        self._by_parent: dict[tuple[str, str], set[str]] = {}

    def lookup(self, collection: str, record_id: str) -> dict[str, Any] | None:
        return self.records[collection].get(record_id)

    def children(self, parent_id: str, collection: str) -> list[dict[str, Any]]:
        _, time_key = _CHILD_KEYS[collection]
        found = [self.records[collection][i] for i in self._by_parent.get((collection, parent_id), ())]
        return sorted(found, key=lambda r: (r[time_key], r["id"]))

    def add(self, collection: str, record: dict[str, Any]) -> None:
        previous = self.records[collection].get(record["id"])
        if previous is None:
            self.order.append((collection, record["id"]))
        key = (collection, record["id"])
        if previous != record:  # /import: an identical line changes nothing, so no new version
            self.versions[key] = self.versions.get(key, 0) + 1
        if collection in _CHILD_KEYS:
            parent_key = _CHILD_KEYS[collection][0]
            if previous is not None and previous.get(parent_key):
                self._by_parent[(collection, previous[parent_key])].discard(record["id"])
            if record.get(parent_key):
                self._by_parent.setdefault((collection, record[parent_key]), set()).add(record["id"])
        self.records[collection][record["id"]] = record


def _check_refs(memory: _Memory, coll: Collection, record: dict[str, Any]) -> dict[str, list[str]]:
    errors: dict[str, list[str]] = {}
    for ref in coll.refs:
        target = COLLECTIONS[ref.target]
        for path, value in ref_values(record, ref):
            found = memory.lookup(ref.target, value)
            if found is None:
                errors[path] = [f"No {target.label} with id {value!r} earlier in this file."]
            elif ref.same_patient and found.get("patient_id") != record.get("patient_id"):
                errors[path] = [f"{target.label.capitalize()} {value!r} belongs to another patient."]
    return errors


def _read(memory: _Memory, number: int, text: str) -> dict[str, list[str]] | None:
    envelope, errors = parse_line(text)
    if envelope is None:
        return errors
    coll = COLLECTIONS[envelope["type"]]
    try:
        record = load(coll, envelope["record"])
    except ServiceError as exc:
        return {f"record.{k}": v for k, v in exc.errors.items()}
    record.setdefault("id", f"line-{number}")  # deterministic, unlike /import's server-assigned UUIDs
    if coll.parent and not record.get("session_id"):
        return {"record.session_id": ["Missing data for required field."]}
    ref_errors = _check_refs(memory, coll, record)
    if ref_errors:
        return {f"record.{k}": v for k, v in ref_errors.items()}
    if coll.parent:
        record["patient_id"] = memory.lookup("sessions", record["session_id"])["patient_id"]
    memory.add(coll.name, record)
    return None


def map_lines(lines: Iterable[str | bytes], base_uri: str, clinic_name: str,
              security: SecurityPolicy | None = None, provenance_recorded: str | None = None) -> MapResult:
    """Check and map clinic NDJSON lines; see the module docstring.

    :param provenance_recorded: an instant (with seconds and offset): also emit one Provenance per
        record, recorded then
    """
    result, memory = MapResult(), _Memory()
    for number, raw in enumerate(lines, start=1):
        text = raw.decode("utf-8", errors="replace") if isinstance(raw, bytes) else raw
        if not text.strip():
            continue
        errors = _read(memory, number, text)
        if errors:
            result.errors.append({"line": number, "errors": errors})
    ctx = MappingContext(base_uri=base_uri, clinic_name=clinic_name, lookup=memory.lookup, children=memory.children,
                         security=security or SecurityPolicy())
    for collection, record_id in memory.order:  # warnings need the whole file (a session's REMS its vitals)
        record = memory.records[collection][record_id]
        found = warnings_for(collection, record, ctx) + (session_rems(record, ctx) if collection == "sessions" else [])
        if found:
            record["warnings"] = found
    produced: dict[tuple[str, str], dict[str, Any]] = {}
    organization = clinic_organization(ctx)
    produced[("Organization", organization["id"])] = organization
    provenances: list[dict[str, Any]] = []
    for collection, record_id in memory.order:
        record = memory.records[collection][record_id]
        mine = resources_for(collection, record, ctx)
        for resource in mine:
            produced[(resource["resourceType"], resource["id"])] = resource
        if provenance_recorded is not None:
            provenances.append(_provenance(collection, record, mine, memory, ctx, provenance_recorded))
    result.resources = list(produced.values()) + provenances
    result.records = len(memory.order)
    return result


def _provenance(collection: str, record: dict[str, Any], resources: list[dict[str, Any]], memory: _Memory,
                ctx: MappingContext, recorded: str) -> dict[str, Any]:
    """The Provenance of a record's last write, labelled as the service labels it."""
    meta = {"version": memory.versions[(collection, record["id"])], "updated_at": recorded}
    targets = [f"{r['resourceType']}/{r['id']}" for r in resources]
    about_patient = collection == "patients" or bool(record.get("patient_id"))
    return label(provenance.to_fhir(collection, record, meta, targets, ctx), ctx.security, about_patient=about_patient)
