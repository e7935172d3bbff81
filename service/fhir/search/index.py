"""The search index: every searchable value of every stored FHIR resource version, as typed rows.

``index_resource`` runs in the write's transaction, right after ``fhir_store`` stores a version
(or retires a resource). Rows are never rewritten in place: the rows of the version being
replaced get ``valid_to`` = the new write time, the new version's rows ``valid_from`` = it. A
search can therefore evaluate every page against the snapshot of its first page
(``query.run_search``); closed rows older than ``SNAPSHOT_RETENTION`` are pruned as their
resource is written again, which is why page tokens expire after that long.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import delete, insert, update
from sqlalchemy.orm import Session

from service.fhir.search._values import FAR_FUTURE, FAR_PAST, date_range, normalise
from service.fhir.search.params import SEARCH_PARAMS, SearchParam
from service.models import FhirResource, FhirSearchIndex

__all__ = ["SNAPSHOT_RETENTION", "extract_rows", "flush_index", "index_resource", "parse_reference", "queue_index"]

#: how long replaced index rows are kept, so that a search's later pages see its first page's snapshot
SNAPSHOT_RETENTION = timedelta(hours=1)

_REFERENCE = re.compile(r"(?:^|/)([A-Z][A-Za-z]+)/([A-Za-z0-9\-.]{1,64})(?:/_history/[^/]+)?$")

Row = dict[str, Any]
#: resolve(type, id): the current content of one of our resources, or None (``ref>path`` paths)
Resolver = Callable[[str, str], dict[str, Any] | None]

#: prune a resource's expired rows on every n-th version (and on delete): bounded growth, fewer statements
_PRUNE_EVERY = 8
#: every value column, so that one executemany inserts rows of all parameter types
_EMPTY: Row = dict.fromkeys(("valid_to", "token_system", "token_code", "string_norm", "string_exact", "date_start",
                             "date_end", "number", "ref_type", "ref_id"))


def parse_reference(text: str) -> tuple[str, str] | None:
    """``(type, id)`` of a literal reference — ``Type/id``, an absolute URL ending in ``Type/id``,
    either with ``/_history/n`` — or None (a contained ``#id`` or anything else)."""
    match = _REFERENCE.search(text)
    return (match.group(1), match.group(2)) if match else None


def _walk(node: Any, path: str) -> Iterator[Any]:
    """The values at a dotted path; a step over a list visits every item."""
    items = [node]
    for step in path.split("."):
        nxt: list[Any] = []
        for item in items:
            if isinstance(item, dict) and step in item:
                value = item[step]
                nxt.extend(value if isinstance(value, list) else [value])
        items = nxt
    yield from items


def _tokens(value: Any) -> Iterator[Row]:
    """Token rows of a code, Coding, CodeableConcept or Identifier (R4 search.html#token)."""
    if isinstance(value, bool):
        yield {"token_system": None, "token_code": "true" if value else "false"}
    elif isinstance(value, str):
        yield {"token_system": None, "token_code": value}
    elif isinstance(value, dict):
        if "coding" in value:
            for coding in value["coding"]:
                yield from _tokens(coding)
        elif "code" in value:
            yield {"token_system": value.get("system"), "token_code": value["code"]}
        elif "value" in value:
            yield {"token_system": value.get("system"), "token_code": str(value["value"])}


def _strings(value: Any) -> Iterator[Row]:
    """String rows; a HumanName gives one row per part (R4 search.html#string)."""
    if isinstance(value, str):
        yield {"string_norm": normalise(value), "string_exact": value}
    elif isinstance(value, dict):
        for key in ("text", "family", "given", "prefix", "suffix"):
            for part in _walk(value, key):
                yield from _strings(part)


def _dates(value: Any) -> Iterator[Row]:
    """Date rows: a date/dateTime/instant, or a Period (open ends unbounded)."""
    if isinstance(value, str):
        start, end = date_range(value)
        yield {"date_start": start, "date_end": end}
    elif isinstance(value, dict) and ("start" in value or "end" in value):
        start = date_range(value["start"])[0] if value.get("start") else FAR_PAST
        end = date_range(value["end"])[1] if value.get("end") else FAR_FUTURE
        yield {"date_start": start, "date_end": end}


def _references(value: Any, targets: tuple[str, ...]) -> Iterator[Row]:
    """A Reference's literal ``Type/id``; a canonical (``QuestionnaireResponse.questionnaire``, a
    string ``<base>/Questionnaire/<id>[|version]``) counts as a reference to the resource it names."""
    text = value.get("reference") if isinstance(value, dict) else value.split("|", 1)[0] if isinstance(
        value, str) else None
    if isinstance(text, str):
        parsed = parse_reference(text)
        if parsed and (not targets or "Resource" in targets or parsed[0] in targets):
            yield {"ref_type": parsed[0], "ref_id": parsed[1]}


def _quantities(value: Any) -> Iterator[Row]:
    """Quantity rows; a bare number (``valueInteger``) is a quantity without a unit."""
    if isinstance(value, dict) and isinstance(value.get("value"), int | float):
        yield {"number": float(value["value"]), "token_system": value.get("system"),
               "token_code": value.get("code")}
    elif isinstance(value, int | float) and not isinstance(value, bool):
        yield {"number": float(value), "token_system": None, "token_code": None}


def _values(param: SearchParam, value: Any) -> Iterator[Row]:
    if param.type == "token":
        return _tokens(value)
    if param.type == "string":
        return _strings(value)
    if param.type == "date":
        return _dates(value)
    if param.type == "reference":
        return _references(value, param.targets)
    if param.type == "quantity":
        return _quantities(value)
    return iter(())


def _path_values(resource: dict[str, Any], path: str, resolve: Resolver | None) -> Iterator[Any]:
    """The values at ``path``; ``ref>rest`` reads ``rest`` in the resources the references at
    ``ref`` point at (nothing without a resolver, or when the target is unknown)."""
    ref_path, _, rest = path.partition(">")
    if not rest:
        yield from _walk(resource, path)
        return
    if resolve is None:
        return
    for ref in _walk(resource, ref_path):
        parsed = parse_reference(ref["reference"]) if isinstance(ref, dict) and ref.get("reference") else None
        target = resolve(*parsed) if parsed else None
        if target is not None:
            yield from _walk(target, rest)


def extract_rows(resource: dict[str, Any], last_updated: datetime | None = None,
                 resolve: Resolver | None = None) -> list[Row]:
    """The index rows of one resource (without resource/version columns): ``param`` plus the
    typed value columns of that parameter's type. Duplicates are dropped.

    :param last_updated: the version's write time (default: ``meta.lastUpdated``)
    :param resolve: finds the targets of ``ref>path`` parameter paths (a dose's Medication). Their
        content must not change while the source's rows stand: it holds for a Medication, whose
        content is a function of its id (mappings/medication.py)
    """
    params = SEARCH_PARAMS.get(resource["resourceType"], {})
    rows: list[Row] = [{"param": "_id", "token_system": None, "token_code": resource["id"]}]
    if last_updated is None and resource.get("meta", {}).get("lastUpdated"):
        last_updated = date_range(resource["meta"]["lastUpdated"])[0]
    if last_updated is not None:
        rows.append({"param": "_lastUpdated", "date_start": last_updated,
                     "date_end": last_updated + timedelta(microseconds=1)})
    seen: set[tuple] = set()
    for param in params.values():
        if param.name in ("_id", "_lastUpdated"):
            continue
        for path in param.paths:
            for value in _path_values(resource, path, resolve):
                for row in _values(param, value):
                    key = (param.name, *sorted(row.items()))
                    if key not in seen:
                        seen.add(key)
                        rows.append({"param": param.name, **row})
    return rows


def index_resource(db: Session, resource: dict[str, Any], deleted: bool, *, version_id: int | None = None,
                   last_updated: datetime | None = None) -> None:
    """Replace a resource's index rows with those of its new version (none when ``deleted``).

    :param resource: the resource as mapped (``resourceType`` and ``id`` suffice when deleted)
    :param version_id: the new version (default: ``meta.versionId``, else 1)
    :param last_updated: its write time (default: ``meta.lastUpdated``, else now)
    """
    meta = resource.get("meta", {})
    version = version_id if version_id is not None else int(meta.get("versionId", 1))
    if last_updated is None:
        last_updated = date_range(meta["lastUpdated"])[0] if meta.get("lastUpdated") else datetime.now(UTC)
    rtype, rid = resource["resourceType"], resource["id"]
    if version > 1 or deleted:
        same = (FhirSearchIndex.resource_type == rtype, FhirSearchIndex.resource_id == rid)
        db.execute(update(FhirSearchIndex).where(*same, FhirSearchIndex.valid_to.is_(None))
                   .values(valid_to=last_updated).execution_options(synchronize_session=False))
        if deleted or version % _PRUNE_EVERY == 0:
            expired = FhirSearchIndex.valid_to < last_updated - SNAPSHOT_RETENTION
            db.execute(delete(FhirSearchIndex).where(*same, expired).execution_options(synchronize_session=False))
    if not deleted:
        db.execute(insert(FhirSearchIndex), [
            {**_EMPTY, "resource_type": rtype, "resource_id": rid, "version_id": version, "valid_from": last_updated,
             **row} for row in extract_rows(resource, last_updated, _resolver(db, {}))])


def queue_index(db: Session, resource: dict[str, Any], deleted: bool, *, version_id: int, last_updated: datetime,
                owner: Any) -> None:
    """Queue the index change of a stored resource version; ``flush_index`` writes the queue in bulk.

    Indexing row by row as resources are stored made every INSERT flush the ORM's pending rows
    first and doubled an /import's time. Only the last version a transaction stores of a resource
    is indexed: the ones before it were never visible to other transactions.

    :param owner: the stored FhirResource row; an entry whose row a rolled-back SAVEPOINT removed
        is dropped
    """
    pending: dict[tuple[str, str], dict[str, Any]] = db.info.setdefault("index_pending", {})
    key = (resource["resourceType"], resource["id"])
    first = pending[key]["first_version"] if key in pending else version_id
    pending[key] = {"resource": resource, "deleted": deleted, "version": version_id, "last_updated": last_updated,
                    "first_version": first, "owner": owner}


def flush_index(db: Session) -> None:
    """Write the queued index changes: close the rows of versions stored before this transaction,
    then insert every new version's rows in one statement."""
    from sqlalchemy import inspect

    pending: dict[tuple[str, str], dict[str, Any]] = db.info.pop("index_pending", {})
    rows: list[dict[str, Any]] = []
    resolve = _resolver(db, pending)
    for (rtype, rid), entry in pending.items():
        owner = entry["owner"]
        if not inspect(owner).persistent or owner.version_id != entry["version"]:
            continue  # undone by a rolled-back SAVEPOINT (the row is gone or back at an older version)
        if entry["first_version"] > 1 or entry["deleted"]:
            prune = entry["deleted"] or entry["version"] % _PRUNE_EVERY == 0
            _close(db, rtype, rid, entry["last_updated"], prune=prune)
        if not entry["deleted"]:
            rows += [{**_EMPTY, "resource_type": rtype, "resource_id": rid, "version_id": entry["version"],
                      "valid_from": entry["last_updated"], **row}
                     for row in extract_rows(entry["resource"], entry["last_updated"], resolve)]
    if rows:
        db.execute(insert(FhirSearchIndex), rows)


def _resolver(db: Session, pending: dict[tuple[str, str], dict[str, Any]]) -> Resolver:
    """Targets from this transaction's stored versions first, else from the stored resources."""
    def resolve(rtype: str, rid: str) -> dict[str, Any] | None:
        entry = pending.get((rtype, rid))
        if entry is not None:
            return None if entry["deleted"] else entry["resource"]
        stored = db.get(FhirResource, (rtype, rid))
        return json.loads(stored.content) if stored is not None and not stored.deleted else None

    return resolve


def _close(db: Session, rtype: str, rid: str, at: datetime, prune: bool) -> None:
    same = (FhirSearchIndex.resource_type == rtype, FhirSearchIndex.resource_id == rid)
    db.execute(update(FhirSearchIndex).where(*same, FhirSearchIndex.valid_to.is_(None))
               .values(valid_to=at).execution_options(synchronize_session=False))
    if prune:
        expired = FhirSearchIndex.valid_to < at - SNAPSHOT_RETENTION
        db.execute(delete(FhirSearchIndex).where(*same, expired).execution_options(synchronize_session=False))
