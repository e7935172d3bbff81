"""Inbound pull: new and changed Patients and referrals (ServiceRequests) from a destination.

Per destination and type (Patients first: referrals name them), a search
``<Type>?_lastUpdated=gt<watermark>&_sort=_lastUpdated&_count=N`` is paged through its ``next``
links. Each resource goes through the reverse mappings (service/fhir/writes.py) as a conditional
update, so pulling the same resource twice changes nothing:

- their references become ours through ``sync_remote`` (their id → our FHIR id); a referral's
  patient or requester that we do not know yet is fetched from the destination and applied first;
- the write matches on the id we already map their resource to, else on our business identifier,
  else on the EHR's own identifier (NPI first for practitioners); no identifier, no write;
- ``sync_remote`` then maps our resource to theirs with the content hash we now hold, so the push
  engine updates their resource by id and never sends back what it just received;
- an echo of a version we pushed (their copy, in our ids, equals what they acknowledged) is not
  applied at all: the reverse mappings drop fields FHIR does not carry (a patient's weight).

A pull is bounded (issue 10: a hostile or broken destination): it searches only the types of
``PULLED_TYPES`` the destination receives (its ``resource_types``), fetches a referral's
dependencies only of types it receives, and takes at most ``max_records`` resources per run (the
run then stops and the rest waits for the next one). It may create patients, referrals and
practitioners, but it updates only records within the destination's own patient selection
(``destinations.interested_patients``, judged before the write) or records this destination's
pulls created (``sync_remote.created_by_pull``); a practitioner it did not create is linked to
theirs but never changed. Anything else is skipped and reported without data. The pull's writes
name the destination as their Provenance's author, and each run is one AuditEvent (service/audit.py).

A resource that cannot be applied (not a valid clinic record, an unknown patient) is reported and
skipped; the watermark moves past it. A throttled, failing or unreachable destination ends the run
and keeps the watermark: the next run repeats the page, which is idempotent. Errors and logs name
types, their ids, HTTP statuses and FHIR issue codes only, never data.
"""

from __future__ import annotations

import copy
import json
import logging
import re
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit

import requests
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from mappings._identity import resolve_reference
from mappings.audit_event import agent_system
from mappings.datatypes import fhir_id
from service import audit, fhir_store, models
from service.fhir.outcomes import FhirError
from service.fhir.writes import WRITABLE, take_write_lock, update_resource, validate_structure
from service.fhir.writes import _matches as match_identifier  # the records a conditional write would change
from service.sync import destinations
from service.sync.client import FhirClient, client_for
from service.sync.retry import parse_retry_after
from service.sync.smart_client import SmartAuthError

__all__ = ["MAX_RECORDS_PER_RUN", "PULLED_TYPES", "PullStats", "pull", "pull_all"]

log = logging.getLogger(__name__)

#: pulled in this order: a referral's patient is known by the time the referral is applied
PULLED_TYPES = ("Patient", "ServiceRequest")
NPI_SYSTEM = "http://hl7.org/fhir/sid/us-npi"
#: at most this many resources are taken from a destination per pull run (searched and fetched)
MAX_RECORDS_PER_RUN = 1000
#: the references a referral cannot do without, fetched from the destination when unknown
_REQUIRED = {"ServiceRequest": (("subject", "Patient"), ("requester", "Practitioner"))}
#: R4 Meta elements; servers add their own (Medplum: author, project) that R4 models reject
_META = ("versionId", "lastUpdated", "source", "profile", "security", "tag", "id", "extension")
_MAX_ERROR = 1000


@dataclass
class PullStats:
    """One pull run. ``errors``: one line per resource not applied, then why the run stopped early."""

    fetched: int = 0
    applied: int = 0  # created or changed
    unchanged: int = 0
    skipped: int = 0
    errors: list[str] = field(default_factory=list)


class _Stop(Exception):
    """The destination cannot answer now: end the run, keep the watermarks."""

    def __init__(self, reason: str, retry_after: float | None = None):
        super().__init__(reason)
        self.retry_after = retry_after


class _Skip(Exception):
    """This resource cannot be applied; the message says why, without data."""


def utcnow() -> datetime:
    return datetime.now(UTC)


def pull(factory: sessionmaker[Session], dest_id: str, *, now: datetime | None = None,
         page_size: int = 100, max_records: int = MAX_RECORDS_PER_RUN) -> PullStats:
    """Pull new and changed Patients and ServiceRequests from one destination (module docstring).

    Runs whatever the destination's ``pull`` and ``enabled`` flags say (:func:`pull_all` honours
    them), but not while the destination asked us to wait (``paused_until``, a 429).

    :raise LookupError: no such destination
    """
    now = now or utcnow()
    with factory() as db:
        dest = db.get(models.Destination, dest_id)
        if dest is None:
            raise LookupError(f"no destination {dest_id}")
        if dest.paused_until is not None and dest.paused_until > now:
            return PullStats(errors=[f"paused until {dest.paused_until.isoformat()}"])
        run = _Run(db, dest, now, max_records)
        stop: _Stop | None = None
        try:
            for resource_type in PULLED_TYPES:
                if resource_type in run.types:  # never ask for (or take) what the destination does not receive
                    run.pull_type(resource_type, page_size)
        except _Stop as exc:
            stop = exc
            run.stats.errors.append(str(exc))
        _finish(db, dest_id, run.stats, stop, now)
        _audit(factory, db, dest_id, run, stop)
    log.info("pull %s: fetched %d, applied %d, unchanged %d, skipped %d%s", dest_id, run.stats.fetched,
             run.stats.applied, run.stats.unchanged, run.stats.skipped, f", stopped: {stop}" if stop else "")
    return run.stats


def pull_all(factory: sessionmaker[Session], *, now: datetime | None = None) -> dict[str, PullStats]:
    """One pull from every enabled destination that pulls, by destination id."""
    with factory() as db:
        ids = list(db.scalars(select(models.Destination.id).where(
            models.Destination.enabled.is_(True), models.Destination.pull.is_(True))
            .order_by(models.Destination.created_at)))
    return {dest_id: pull(factory, dest_id, now=now) for dest_id in ids}


def _audit(factory: sessionmaker[Session], db: Session, dest_id: str, run: _Run, stop: _Stop | None) -> None:
    """One AuditEvent per run: the destination searched, the records applied here (service/audit.py).
    Outcome 8 when the destination stopped the run, 4 when resources were skipped, else 0."""
    dest = db.get(models.Destination, dest_id)
    agents = audit.service_agents(dest)
    db.rollback()  # no read snapshot held open across the audit write (SQLite)
    outcome = "8" if stop is not None else "4" if run.stats.skipped else "0"
    audit.write_now(factory, audit.Pending(utcnow(), "search-type", "E", outcome, agents,
                                           resources=list(run.applied)))


def _finish(db: Session, dest_id: str, stats: PullStats, stop: _Stop | None, now: datetime) -> None:
    """Record the run on the destination: when, and what went wrong (why it stopped first)."""
    db.rollback()  # nothing is pending; start from the committed row
    dest = db.get(models.Destination, dest_id)
    problems = [str(stop), *stats.errors[:-1]] if stop else stats.errors
    dest.last_pull_at = now
    dest.last_pull_error = "; ".join(problems)[:_MAX_ERROR] or None
    if stop is not None and stop.retry_after:  # the server's Retry-After holds pushes back too
        wait = min(stop.retry_after, destinations.policy(dest).max_retry_after)
        dest.paused_until = now + timedelta(seconds=wait)
    db.commit()


class _Run:
    """One pull run over one destination."""

    def __init__(self, db: Session, dest: models.Destination, now: datetime, max_records: int = MAX_RECORDS_PER_RUN):
        self.db, self.dest_id, self.now, self.max_records = db, dest.id, now, max_records
        self.types = frozenset(dest.resource_types or ())
        self.applied: list[str] = []  # "Type/id" of ours each applied write created or changed (the audit)
        # the Provenance of this run's writes names the destination (service/fhir_store.py)
        db.info["agent"] = {"system": agent_system(db.info["base_uri"], "sync-destinations"), "value": dest.id,
                            "display": dest.name}
        self.base_url = dest.base_url.rstrip("/")
        self.client: FhirClient = client_for(dest)
        self.stats = PullStats()
        self._failed: dict[tuple[str, str], str] = {}  # dependencies that could not be applied this run
        self._literal = re.compile(rf"^(?:{re.escape(self.base_url)}/)?(?P<type>[A-Z][A-Za-z]+)/"
                                   r"(?P<id>[A-Za-z0-9\-.]{1,64})(?:/_history/[^/]+)?$")

    # --- paging ---

    def pull_type(self, resource_type: str, page_size: int) -> None:
        """Every page of the type's changes; the watermark moves after each applied page."""
        params = {"_sort": "_lastUpdated", "_count": str(page_size)}
        mark = self._watermark(resource_type)
        if mark:
            params["_lastUpdated"] = f"gt{mark}"
        url: str | None = resource_type
        query: dict[str, str] | None = params
        seen: set[str] = set()
        while url:
            bundle = self._search(url, query)
            newest = mark
            for resource in _matches(bundle, resource_type):
                self._count_one()
                self._take(resource)
                newest = _later(newest, (resource.get("meta") or {}).get("lastUpdated"))
            if newest != mark:
                self._advance(resource_type, newest)
                mark = newest
            seen.add(url)
            url, query = self._next(bundle, seen), None

    def _watermark(self, resource_type: str) -> str | None:
        dest = self.db.get(models.Destination, self.dest_id)
        return (dest.pull_watermarks or {}).get(resource_type)

    def _advance(self, resource_type: str, mark: str) -> None:
        self.db.rollback()  # each resource committed on its own; read the row afresh
        dest = self.db.get(models.Destination, self.dest_id)
        marks = dict(dest.pull_watermarks or {})
        marks[resource_type] = _later(marks.get(resource_type), mark)
        dest.pull_watermarks = marks  # a new dict: the JSON column sees the change
        self.db.commit()

    def _next(self, bundle: dict[str, Any], seen: set[str]) -> str | None:
        url = next((link.get("url") for link in bundle.get("link") or () if isinstance(link, dict)
                    and link.get("relation") == "next"), None)
        if not url or url in seen:
            return None
        base, there = urlsplit(self.base_url), urlsplit(url)
        if (there.scheme, there.netloc) != (base.scheme, base.netloc) or not there.path.startswith(base.path):
            raise _Stop("a next link outside the destination's base URL")  # never send our credentials elsewhere
        return url

    # --- HTTP ---

    def _get(self, url: str, params: dict[str, str] | None = None) -> requests.Response:
        try:
            return self.client.request("GET", url, params=params)
        except SmartAuthError as exc:
            raise _Stop(f"token endpoint: {exc.error or type(exc).__name__}") from None
        except requests.RequestException as exc:
            raise _Stop(type(exc).__name__) from None

    def _search(self, url: str, params: dict[str, str] | None) -> dict[str, Any]:
        resp = self._get(url, params)
        if resp.status_code != 200:
            raise _Stop(f"HTTP {resp.status_code}", parse_retry_after(resp.headers.get("Retry-After"), self.now)
                        if resp.status_code == 429 else None)
        body = _json(resp)
        if body.get("resourceType") != "Bundle":
            raise _Stop("the search answer is not a Bundle")
        return body

    def _fetch(self, resource_type: str, their_id: str) -> dict[str, Any]:
        """One resource a referral needs; gone or unknown there is this resource's problem, not the run's."""
        resp = self._get(f"{resource_type}/{their_id}")
        if resp.status_code in (404, 410):
            raise _Skip(f"HTTP {resp.status_code}")
        if resp.status_code != 200:
            raise _Stop(f"HTTP {resp.status_code}", parse_retry_after(resp.headers.get("Retry-After"), self.now)
                        if resp.status_code == 429 else None)
        body = _json(resp)
        if body.get("resourceType") != resource_type:
            raise _Skip(f"not a {resource_type}")
        self._count_one()
        return body

    def _count_one(self) -> None:
        """Count one resource taken from the destination; past the cap the run ends (the page is kept)."""
        if self.stats.fetched >= self.max_records:
            raise _Stop(f"the cap of {self.max_records} records per run was reached")
        self.stats.fetched += 1

    # --- one resource ---

    def _take(self, resource: dict[str, Any]) -> None:
        """Apply one pulled resource and count what happened."""
        name = f"{resource['resourceType']}/{resource.get('id')}"
        try:
            changed = self._apply(resource)
        except _Skip as exc:
            self.stats.skipped += 1
            self.stats.errors.append(f"{name}: {exc}")
            return
        if changed:
            self.stats.applied += 1
        else:
            self.stats.unchanged += 1

    def _apply(self, resource: dict[str, Any]) -> bool:
        """Write one resource of theirs as a clinic record; True when that created or changed it."""
        resource_type, their_id = resource["resourceType"], resource.get("id")
        if not isinstance(their_id, str):
            raise _Skip("no id")
        if resource_type not in self.types or resource_type not in WRITABLE:
            raise _Skip("a type this destination does not receive")
        try:
            validate_structure(_r4_only(resource))
        except FhirError as exc:
            raise _Skip(f"{exc.status} {exc.code}") from None
        ours = self._ours(resource)
        self._require(ours)
        mapped = self._mapped(resource_type, their_id)
        if mapped is not None and self._echo(ours, mapped):
            return False
        if mapped is not None:
            ours["id"] = mapped.resource_id
            return self._write(ours, their_id, mapped.resource_id, None)
        ours.pop("id", None)
        criteria = self._criteria(ours)
        if criteria is None:
            raise _Skip("no identifier")
        return self._write(ours, their_id, None, criteria)

    def _write(self, resource: dict[str, Any], their_id: str, our_id: str | None, criteria: str | None) -> bool:
        """Write, retrying once when a concurrent write of the same record won (the retry finds it)."""
        for _ in range(2):
            try:
                return self._write_once(resource, their_id, our_id, criteria)
            except IntegrityError:
                self.db.rollback()
        raise _Skip("409 conflict")

    def _write_once(self, resource: dict[str, Any], their_id: str, our_id: str | None, criteria: str | None) -> bool:
        """The conditional update (or update by our id) and the id map, in one transaction."""
        # a fresh transaction: on SQLite (WAL) one that read before another writer's commit (the
        # lookups above, made while we waited on the EHR) can never take the write lock
        self.db.rollback()
        take_write_lock(self.db)  # SQLite: hold the write lock from the start, as a standalone write does
        linked = self._bound(resource["resourceType"], their_id, our_id, criteria)
        if linked is not None:
            return linked
        started = utcnow()
        try:
            outcome = update_resource(self.db, resource["resourceType"], resource, our_id, criteria,
                                      standalone=False)
        except FhirError as exc:
            self.db.rollback()
            raise _Skip(f"{exc.status} {exc.code}") from None
        fhir_store.flush_pending(self.db)  # the stored content is final before we remember its hash
        stored = outcome.stored
        changed = outcome.status == 201 or stored.last_updated >= started
        self._remember(resource["resourceType"], stored, their_id, created=outcome.status == 201)
        self.db.commit()
        if changed:
            self.applied.append(f"{resource['resourceType']}/{stored.id}")
        return changed

    # --- the bound: what this destination may change ---

    def _bound(self, resource_type: str, their_id: str, our_id: str | None, criteria: str | None) -> bool | None:
        """Refuse a write that would change a record outside the destination's reach (module docstring).

        Judged before the write, so the write itself (a referral naming their practitioner, a new
        identifier) cannot bring a record into reach. Returns None to go on; for a practitioner it
        may not change, False after linking theirs to ours (nothing written).
        :raise _Skip: the record is another destination's or the clinic's
        """
        targets = self._targets(resource_type, our_id, criteria)
        collection = WRITABLE[resource_type].collection
        dest = self.db.get(models.Destination, self.dest_id)
        for clinic_id in targets:
            our_fhir_id = fhir_id(self.db.info["base_uri"], resource_type, collection, clinic_id)
            row = self.db.get(models.RemoteResource, (self.dest_id, resource_type, our_fhir_id))
            if row is not None and row.created_by_pull:
                continue
            if resource_type == "Practitioner":
                if len(targets) != 1:
                    break  # several matches: the write answers 412 by itself
                stored = self.db.get(models.FhirResource, (resource_type, our_fhir_id))
                if stored is None:
                    self.db.rollback()
                    raise _Skip("outside this destination's reach")
                self._remember(resource_type, stored, their_id, created=False, content=False)
                self.db.commit()
                return False
            patient = clinic_id if resource_type == "Patient" else self.db.scalar(
                select(models.Referral.patient_id).where(models.Referral.id == clinic_id))
            if patient is None or not destinations.interested_patients(self.db, dest, {patient}):
                self.db.rollback()
                raise _Skip("outside this destination's patient selection")
        return None

    def _targets(self, resource_type: str, our_id: str | None, criteria: str | None) -> list[str]:
        """The clinic ids of the existing records the write would change (none: it creates)."""
        if our_id is not None:
            stored = self.db.get(models.FhirResource, (resource_type, our_id))
            return [stored.source_id] if stored is not None else []
        params = parse_qsl(criteria or "")
        if len(params) != 1 or params[0][0] != "identifier":
            return []
        system, sep, value = params[0][1].partition("|")
        return match_identifier(self.db, resource_type, (system or None) if sep else None, value if sep else system)

    def _remember(self, resource_type: str, stored: models.FhirResource, their_id: str, *, created: bool,
                  content: bool = True) -> None:
        """Their id for our resource, with the content we now hold: the push engine has nothing to send.

        ``created``: this pull created our record (so later pulls may update it); ``content`` False:
        their resource was only linked to ours, not applied (the push engine then sends ours)."""
        row = self.db.get(models.RemoteResource, (self.dest_id, resource_type, stored.id))
        if row is not None and row.remote_id not in (None, their_id) and not row.deleted:
            return  # ours is already theirs under another id (duplicates there): keep pushing to that one
        if row is None:
            row = models.RemoteResource(destination_id=self.dest_id, resource_type=resource_type,
                                        resource_id=stored.id)
            self.db.add(row)
        row.remote_id, row.deleted, row.updated_at = their_id, False, self.now
        if content:
            row.content_hash, row.version_id = stored.content_hash, stored.version_id
        row.created_by_pull = bool(row.created_by_pull) or created

    def _criteria(self, resource: dict[str, Any]) -> str | None:
        """``identifier=system|value``: our business identifier, else an NPI, else the EHR's first."""
        own = f"{self.db.info['base_uri'].rstrip('/')}/{WRITABLE[resource['resourceType']].collection}"
        idents = [i for i in resource.get("identifier") or () if i.get("system") and i.get("value")]
        ranked = ([i for i in idents if i["system"] == own]
                  + [i for i in idents if i["system"] == NPI_SYSTEM and resource["resourceType"] == "Practitioner"]
                  + idents)
        return urlencode({"identifier": f"{ranked[0]['system']}|{ranked[0]['value']}"}) if ranked else None

    # --- ids: theirs and ours ---

    def _mapped(self, resource_type: str, their_id: str) -> models.RemoteResource | None:
        """Our resource that is theirs under ``their_id`` (and still ours to write)."""
        rows = self.db.scalars(select(models.RemoteResource).where(
            models.RemoteResource.destination_id == self.dest_id, models.RemoteResource.resource_type == resource_type,
            models.RemoteResource.remote_id == their_id, models.RemoteResource.deleted.is_(False))
            .order_by(models.RemoteResource.resource_id))
        for row in rows:
            stored = self.db.get(models.FhirResource, (resource_type, row.resource_id))
            if stored is not None and not stored.deleted:
                return row
        return None

    def _ours(self, resource: dict[str, Any]) -> dict[str, Any]:
        """A copy whose references to their resources we know point at ours instead."""
        def rewrite(value: Any) -> Any:
            if isinstance(value, list):
                return [rewrite(v) for v in value]
            if not isinstance(value, dict):
                return value
            out = {k: rewrite(v) for k, v in value.items()}
            match = self._literal.match(value["reference"]) if isinstance(value.get("reference"), str) else None
            mapped = self._mapped(match["type"], match["id"]) if match else None
            if mapped is not None:
                out["reference"] = f"{match['type']}/{mapped.resource_id}"
            return out

        return rewrite(copy.deepcopy(resource))

    def _require(self, resource: dict[str, Any]) -> None:
        """A referral's patient and requester must be ours: fetch and apply the ones we do not know."""
        ctx = fhir_store.context(self.db)
        for element, target in _REQUIRED.get(resource["resourceType"], ()):
            ref = resource.get(element)
            if not isinstance(ref, dict) or resolve_reference(ref, ctx, target, WRITABLE[target].collection):
                continue  # missing: the reverse mapping says so; resolved: nothing to do
            match = self._literal.match(ref.get("reference") or "")
            if match is None or match["type"] != target:
                raise _Skip(f"{element} is not a {target} of this destination")
            try:
                ref["reference"] = f"{target}/{self._obtain(target, match['id'])}"
            except _Skip as exc:
                raise _Skip(f"{element} {target}/{match['id']}: {exc}") from None

    def _obtain(self, resource_type: str, their_id: str) -> str:
        """Our FHIR id of their resource, fetching and applying it when we do not map it yet."""
        key = (resource_type, their_id)
        if key in self._failed:
            raise _Skip(self._failed[key])
        try:
            changed = self._apply(self._fetch(resource_type, their_id))
        except _Skip as exc:
            self._failed[key] = str(exc)
            raise
        if changed:
            self.stats.applied += 1
        else:
            self.stats.unchanged += 1
        mapped = self._mapped(resource_type, their_id)
        if mapped is None:  # they answered another resource than the one asked for
            self._failed[key] = "not mapped"
            raise _Skip("not mapped")
        return mapped.resource_id

    def _echo(self, resource: dict[str, Any], mapped: models.RemoteResource) -> bool:
        """Whether their copy (in our ids) is the version of ours they acknowledged."""
        sent = None
        if mapped.version_id is not None:
            version = self.db.get(models.FhirResourceVersion, (resource["resourceType"], mapped.resource_id,
                                                               mapped.version_id))
            sent = version.content if version is not None and not version.deleted else None
        if sent is None:
            stored = self.db.get(models.FhirResource, (resource["resourceType"], mapped.resource_id))
            sent = stored.content if stored is not None and stored.content_hash == mapped.content_hash else None
        return sent is not None and _comparable(resource) == _comparable(json.loads(sent))


# --- helpers ---


def _matches(bundle: dict[str, Any], resource_type: str) -> list[dict[str, Any]]:
    """The search matches of the type (no included resources, no OperationOutcomes)."""
    out = []
    for entry in bundle.get("entry") or ():
        resource = entry.get("resource") if isinstance(entry, dict) else None
        mode = (entry.get("search") or {}).get("mode", "match") if isinstance(entry, dict) else None
        if isinstance(resource, dict) and resource.get("resourceType") == resource_type and mode == "match":
            out.append(resource)
    return out


def _instant(value: str) -> datetime | None:
    try:
        moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except (AttributeError, ValueError):
        return None
    return moment if moment.tzinfo is not None else None


def _later(mark: str | None, candidate: str | None) -> str | None:
    """The later of two FHIR instants, as given (the server's own spelling goes back to it)."""
    when = _instant(candidate) if isinstance(candidate, str) else None
    if when is None:
        return mark
    current = _instant(mark) if mark else None
    return candidate if current is None or when > current else mark


def _r4_only(resource: dict[str, Any]) -> dict[str, Any]:
    """The resource without the Meta elements a server adds beyond R4 (Medplum: author, project)."""
    if not isinstance(resource.get("meta"), dict):
        return resource
    meta = {k: v for k, v in resource["meta"].items() if k in _META}
    return {**resource, "meta": meta} if meta else {k: v for k, v in resource.items() if k != "meta"}


def _comparable(resource: dict[str, Any]) -> dict[str, Any]:
    """A resource without what every server sets its own way: id, version, narrative."""
    meta = resource.get("meta") or {}
    out = {k: v for k, v in resource.items() if k not in ("id", "meta", "text")}
    kept = {k: meta[k] for k in ("profile", "tag", "security") if meta.get(k)}
    if kept:
        out["meta"] = kept
    return out


def _json(resp: requests.Response) -> dict[str, Any]:
    try:
        body = resp.json()
    except ValueError:
        return {}
    return body if isinstance(body, dict) else {}
