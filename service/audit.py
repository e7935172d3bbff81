"""The audit trail: one FHIR AuditEvent per access to patient data, written off the request path.

Requests never wait on audit writes. A view notes what it served (:func:`note`); after the
response is built, :func:`init_app`'s hook turns the request into :class:`Pending` facts (cheap:
ids and codes only) and puts them on an in-process bounded queue. A background thread writes them
in batches, each batch in its own transaction: it resolves whose patient data the resources are,
builds the AuditEvents (mappings/audit_event.py) and inserts them. On SQLite the writer, not the
request, waits for the database write lock, so a GET never queues behind an /import.

Failing open, by choice: when the queue is full or a batch cannot be written, the request has
already succeeded; the lost events are counted (:func:`dropped`, also in ``/readyz``) and logged
at ERROR with the exception's class only. Refusing clinical reads because the audit store is down
would stop care at the clinic and the EHRs; operators alert on the dropped count instead.

Workers (sync delivery and pull) are background already: they write their events at once, in
their own transaction (:func:`write_now`).
"""

from __future__ import annotations

import atexit
import logging
import queue
import re
import threading
import time
import uuid
import weakref
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from flask import Flask, Response, current_app, g, has_request_context, request
from sqlalchemy import insert, select, tuple_
from sqlalchemy.orm import Session, sessionmaker

from mappings import audit_event
from mappings.audit_event import Agent, AuditFacts, outcome_of
from mappings.context import MappingContext
from mappings.datatypes import fhir_id
from service import models

__all__ = ["Agent", "AuditLog", "Pending", "destination_change", "dropped", "flush", "init_app", "login", "note",
           "service_agents", "set_agent", "write_batch", "write_now"]

log = logging.getLogger("ketamine_fhir.audit")

#: events waiting at most; beyond, new ones are dropped (and counted)
QUEUE_SIZE = 10_000
#: events written per transaction
BATCH_SIZE = 200
#: the writer thread ends after this long without events (a new one starts with the next event)
IDLE_SECONDS = 5.0
#: SQLite: how long the writer waits for the write requests in flight to finish, and for the lock
DEFER_SECONDS, LOCK_SECONDS = 2.0, 0.25
#: tries of a batch that meets lock contention (another process, a long import) before it is dropped
WRITE_ATTEMPTS = 12
_REF = re.compile(r"[A-Z][A-Za-z]{1,63}/[A-Za-z0-9\-.]{1,64}")
_COLLECTION = re.compile(r"[a-z][a-z-]{0,31}")
_CLINIC_ID = re.compile(r"[A-Za-z0-9._-]{1,64}")
_SERVICE = Agent("service", None, None, requestor=True)

#: endpoint -> (restful-interaction subtype, action) of every audited request
ENDPOINTS: dict[str, tuple[str, str]] = {
    "fhir.read": ("read", "R"), "fhir.vread": ("vread", "R"),
    "fhir.instance_history": ("history-instance", "R"), "fhir.type_history": ("history-type", "R"),
    "fhir.search": ("search-type", "E"), "fhir.search_post": ("search-type", "E"),
    "fhir.create": ("create", "C"), "fhir.update": ("update", "U"), "fhir.conditional_update": ("update", "U"),
    "fhir.transaction_or_batch": ("transaction", "E"),
    "fhir.audit_search": ("search-type", "E"), "fhir.audit_search_post": ("search-type", "E"),
    "fhir.audit_read": ("read", "R"),
    "clinic.collection": ("search-type", "E"), "clinic.child_collection": ("search-type", "E"),
    "clinic.record": ("read", "R"), "clinic.child_record": ("read", "R"),
    "clinic.create": ("create", "C"), "clinic.child_create": ("create", "C"),
    "clinic.replace": ("update", "U"), "clinic.child_replace": ("update", "U"),
    "clinic.import_ndjson": ("batch", "C"),
}


@dataclass
class Pending:
    """The facts of one access, as the request (or worker) knows them; the writer completes them."""

    recorded: datetime
    subtype: str
    action: str
    outcome: str
    agents: Sequence[Agent]
    resources: list[str] = field(default_factory=list)
    records: list[tuple[str, str]] = field(default_factory=list)
    patients: set[str] = field(default_factory=set)  # clinic patient ids, when the caller knows them
    query: str | None = None
    login: bool = False


# --- in the request ----------------------------------------------------------------------------


def note(resources: Iterable[tuple[str, str]] = (), records: Iterable[tuple[str, str]] = (),
         patients: Iterable[str] = ()) -> None:
    """Remember what this request served or wrote: FHIR ``(type, id)``, clinic ``(collection, id)``."""
    if not has_request_context():
        return
    seen = g.setdefault("audit_seen", {"resources": [], "records": [], "patients": set()})
    seen["resources"] += [f"{t}/{i}" for t, i in resources]
    seen["records"] += list(records)
    seen["patients"].update(patients)


def set_agent(agent: Agent) -> None:
    """The identity behind this request's token (service/fhir/access.py; the clinic API's is g.token_name)."""
    if has_request_context():
        g.audit_agent = agent


def _request_agent() -> Agent:
    if "audit_agent" in g:
        return g.audit_agent
    if g.get("token_name"):
        return Agent("api-tokens", g.token_name, g.token_name)
    return Agent("unknown")


def _query() -> str | None:
    """The query the client sent (URL and, for POST _search, the form body): stored only in the audit trail."""
    text = request.query_string.decode("utf-8", "replace")
    if request.endpoint in ("fhir.search_post", "fhir.audit_search_post") and request.mimetype == \
            "application/x-www-form-urlencoded":
        body = request.get_data(cache=True).decode("utf-8", "replace")
        text = "&".join(p for p in (text, body) if p)
    return text or None


def _bundle_refs(response: Response) -> list[str]:
    """The resources a transaction/batch answer names (``location`` and returned resources)."""
    import json

    if response.is_streamed or response.mimetype not in ("application/fhir+json", "application/json"):
        return []
    try:
        body = json.loads(response.get_data())
    except ValueError:
        return []
    refs = []
    entries = body.get("entry") if isinstance(body, dict) else None
    for entry in entries if isinstance(entries, list) else ():
        if not isinstance(entry, dict):
            continue
        location = (entry.get("response") or {}).get("location")
        match = _REF.match(location) if isinstance(location, str) else None
        if match:
            refs.append(match.group(0))
        res = entry.get("resource")
        if isinstance(res, dict) and res.get("resourceType") and res.get("id"):
            refs.append(f"{res['resourceType']}/{res['id']}")
    return refs


def _subtype(endpoint: str, default: str) -> str:
    if endpoint == "fhir.transaction_or_batch":
        head = request.get_data(cache=True)[:4096]
        return "batch" if re.search(rb'"type"\s*:\s*"batch"', head) else "transaction"
    if endpoint in ("fhir.not_allowed",):
        return "delete" if request.method == "DELETE" else "patch"
    return default


def _from_request(response: Response) -> Pending | None:
    endpoint = request.endpoint or ""
    if endpoint == "fhir.not_allowed":
        subtype, action = _subtype(endpoint, ""), "D" if request.method == "DELETE" else "U"
    elif endpoint in ENDPOINTS:
        subtype, action = ENDPOINTS[endpoint]
        subtype = _subtype(endpoint, subtype)
    else:
        return None
    seen = g.get("audit_seen") or {"resources": [], "records": [], "patients": set()}
    pending = Pending(datetime.now(UTC), subtype, action, outcome_of(response.status_code), [_request_agent()],
                      list(seen["resources"]), list(seen["records"]), set(seen["patients"]))
    args = request.view_args or {}
    if not pending.resources and "resource_type" in args and "resource_id" in args:
        pending.resources.append(f"{args['resource_type']}/{args['resource_id']}")  # attempted, maybe refused
    if not pending.records and "record_id" in args:
        pending.records.append((args.get("child") or args.get("collection") or "", args["record_id"]))
    if endpoint == "fhir.transaction_or_batch":
        pending.resources += _bundle_refs(response)
    if subtype == "search-type":
        pending.query = _query()
    return pending


def destination_change(action: str, dest: models.Destination) -> None:
    """Audit an admin change of a sync destination (service/admin ``_audit_destination`` calls this).

    Recorded after the response, with its outcome: the change is not committed yet when this is
    called. Outside a request (the CLI) the ``ketamine_fhir.audit`` log line is the record.
    """
    if not has_request_context():
        return
    subtype, verb = {"create": ("create", "C"), "delete": ("delete", "D")}.get(action, ("update", "U"))
    g.setdefault("audit_extra", []).append(Pending(datetime.now(UTC), subtype, verb, "0", [_request_agent()],
                                                   records=[("sync-destinations", dest.id)]))


def login(assertion: str | None, status: int) -> None:
    """Audit a token request at /auth/token (success or refusal), named by the client id it claims."""
    import jwt

    client_id = None
    if assertion and len(assertion) <= 16_384:
        try:
            claimed = jwt.decode(assertion, options={"verify_signature": False}).get("iss")
            client_id = claimed[:255] if isinstance(claimed, str) and claimed else None
        except jwt.InvalidTokenError:
            client_id = None
    agent = Agent("smart-clients", client_id) if client_id else Agent("unknown")
    current_app.extensions["audit"].submit(Pending(datetime.now(UTC), "login", "E", outcome_of(status), [agent],
                                                   login=True))


def init_app(app: Flask, factory: sessionmaker[Session]) -> None:
    """Give the app its audit log and audit every request to an endpoint of :data:`ENDPOINTS`.

    ``app.config["AUDIT_SYNC"]`` (default: on under TESTING, else off) writes each event before the
    response leaves instead of queueing it: tests that touch the database between requests then
    never race the writer. Production keeps the queue.
    """
    audit_log = AuditLog(factory, sync=bool(app.config.get("AUDIT_SYNC", app.testing)))
    app.extensions["audit"] = audit_log

    @app.before_request
    def _enter() -> None:
        if request.method not in ("GET", "HEAD", "OPTIONS"):
            g.audit_gate = current_app.extensions["audit"].enter_write_request()

    @app.teardown_request
    def _leave(_exc: BaseException | None) -> None:
        if g.pop("audit_gate", False):
            current_app.extensions["audit"].leave_write_request()

    @app.after_request
    def _audit(response: Response) -> Response:
        try:
            pending = _from_request(response)
            for extra in g.pop("audit_extra", []):  # admin changes noted during the request
                extra.outcome = outcome_of(response.status_code)
                current_app.extensions["audit"].submit(extra)
            if pending is not None:
                current_app.extensions["audit"].submit(pending)
        except Exception as exc:
            current_app.extensions["audit"].count_dropped(1, exc)
        return response


def flush(app: Flask | None = None, timeout: float = 10.0) -> bool:
    """Wait until every queued event of the app is written (or dropped); False on timeout."""
    return (app or current_app).extensions["audit"].flush(timeout)


def dropped(app: Flask | None = None) -> int:
    """Events lost so far in this process: the app's queue and the workers' direct writes."""
    target = app or (current_app if has_request_context() else None)
    own = target.extensions["audit"].dropped if target is not None and "audit" in target.extensions else 0
    return own + _worker_dropped[0]


# --- the queue and its writer --------------------------------------------------------------------

_LOGS: weakref.WeakSet[AuditLog] = weakref.WeakSet()
_worker_dropped = [0]
_worker_lock = threading.Lock()


class AuditLog:
    """A bounded queue of pending events and the thread that writes them (module docstring).

    SQLite has one writer at a time, and a transaction that read before another one committed
    cannot write afterwards (it fails at once: a 503 for the request). So on SQLite the writer
    waits until no write request of this process is in flight (GETs do not count: they never
    write), at most ``DEFER_SECONDS``, and holds new write requests at the door while it inserts
    (milliseconds: it takes the database lock with a short busy timeout and, when another process
    holds it, lets go and tries again later, keeping the batch). PostgreSQL needs none of this.
    """

    def __init__(self, factory: sessionmaker[Session], maxsize: int = QUEUE_SIZE, sync: bool = False):
        self._factory, self.sync = factory, sync
        self._queue: queue.Queue[Pending] = queue.Queue(maxsize)
        self._lock = threading.Lock()
        self._idle = threading.Condition(self._lock)
        self._unwritten = 0
        self._thread: threading.Thread | None = None
        self.dropped = 0
        bind = factory.kw.get("bind")
        self._sqlite = getattr(getattr(bind, "dialect", None), "name", "") == "sqlite"
        self._gate = threading.Condition()
        self._writers_in_flight = 0  # write requests of this process (SQLite only)
        self._inserting = False
        _LOGS.add(self)

    # --- the SQLite gate ---

    def enter_write_request(self) -> bool:
        """A write request starts: wait while the audit writer inserts (SQLite only). True if counted."""
        if not self._sqlite or self.sync:
            return False
        with self._gate:
            self._gate.wait_for(lambda: not self._inserting, timeout=LOCK_SECONDS * 4)
            self._writers_in_flight += 1
        return True

    def leave_write_request(self) -> None:
        with self._gate:
            self._writers_in_flight -= 1
            self._gate.notify_all()

    # --- the queue ---

    def submit(self, pending: Pending) -> None:
        """Queue one event; never blocks (a full queue drops it and counts it). In ``sync`` mode
        write it now, after ending the request's own transaction (it could hold SQLite's lock)."""
        if self.sync:
            if has_request_context() and "db_session" in g:
                g.db_session.rollback()  # the views committed what they wrote; the rest is discarded anyway
            self._write([pending])
            return
        with self._lock:
            try:
                self._queue.put_nowait(pending)
            except queue.Full:
                self.dropped += 1
                log.error("audit: queue full, an event was dropped (%d so far)", self.dropped)
                return
            self._unwritten += 1
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="audit-writer", daemon=True)
                self._thread.start()

    def count_dropped(self, n: int, exc: BaseException) -> None:
        with self._lock:
            self.dropped += n
        log.error("audit: %d event(s) not written (%s)", n, type(exc).__name__)

    def flush(self, timeout: float = 10.0) -> bool:
        with self._idle:
            return self._idle.wait_for(lambda: self._unwritten == 0, timeout)

    def _run(self) -> None:
        while True:
            try:
                batch = [self._queue.get(timeout=IDLE_SECONDS)]
            except queue.Empty:
                with self._lock:
                    if self._queue.empty():
                        self._thread = None
                        return
                    continue
            while len(batch) < BATCH_SIZE:
                try:
                    batch.append(self._queue.get_nowait())
                except queue.Empty:
                    break
            self._write(batch)
            with self._idle:
                self._unwritten -= len(batch)
                self._idle.notify_all()

    def _write(self, batch: list[Pending]) -> None:
        """Write one batch; lock contention is retried (the batch is kept), anything else drops it."""
        from service.db import is_lock_contention

        attempts = 1 if self.sync else WRITE_ATTEMPTS  # in sync mode the request thread must not linger
        for attempt in range(attempts):
            try:
                if self._sqlite and not self.sync:
                    self._write_gated(batch)
                else:
                    write_batch(self._factory, batch)
                return
            except Exception as exc:
                if not is_lock_contention(exc) or attempt == attempts - 1:
                    self.count_dropped(len(batch), exc)
                    return
                time.sleep(min(0.05 * 2 ** attempt, 2.0))

    def _write_gated(self, batch: list[Pending]) -> None:
        with self._gate:
            self._gate.wait_for(lambda: self._writers_in_flight == 0, timeout=DEFER_SECONDS)
            self._inserting = True
        try:
            write_batch(self._factory, batch, busy_ms=int(LOCK_SECONDS * 1000))
        finally:
            with self._gate:
                self._inserting = False
                self._gate.notify_all()


@atexit.register
def _flush_all() -> None:
    for audit_log in list(_LOGS):
        audit_log.flush(5.0)


def write_now(factory: sessionmaker[Session], pending: Pending) -> None:
    """Write one event at once in its own transaction (workers); a failure is counted, never raised."""
    try:
        write_batch(factory, [pending])
    except Exception as exc:
        with _worker_lock:
            _worker_dropped[0] += 1
        log.error("audit: a worker event was not written (%s)", type(exc).__name__)


# --- building and storing ------------------------------------------------------------------------


def write_batch(factory: sessionmaker[Session], batch: Sequence[Pending], busy_ms: int | None = None) -> None:
    """Build and insert the AuditEvents of ``batch`` in one transaction.

    ``busy_ms`` (SQLite): wait at most this long for the write lock instead of the usual 30 s.
    """
    with factory() as db:
        if busy_ms is not None:
            db.connection().exec_driver_sql(f"PRAGMA busy_timeout={int(busy_ms)}")
        try:
            _insert(db, batch)
        finally:
            if busy_ms is not None:
                db.rollback()
                db.connection().exec_driver_sql("PRAGMA busy_timeout=30000")  # as service/db.py sets it


def _insert(db: Session, batch: Sequence[Pending]) -> None:
    ctx = MappingContext(base_uri=db.info["base_uri"], clinic_name=db.info["clinic_name"])
    rows: list[dict[str, Any]] = []
    refs: list[dict[str, str]] = []
    for pending in batch:
        row, row_refs = _build(db, ctx, pending)
        rows.append(row)
        refs += row_refs
    db.execute(insert(models.AuditEventRow), rows)
    if refs:
        db.execute(insert(models.AuditEventRef), refs)
    db.commit()


def _build(db: Session, ctx: MappingContext, pending: Pending) -> tuple[dict[str, Any], list[dict[str, str]]]:
    import json

    resources = [r for r in dict.fromkeys(pending.resources) if _REF.fullmatch(r)]
    # refused requests name what was asked for: keep only what looks like a collection and a clinic id
    records = [(c, i) for c, i in dict.fromkeys(pending.records) if _COLLECTION.fullmatch(c or "")
               and _CLINIC_ID.fullmatch(i or "")]
    clinic_patients = set(pending.patients) | _patients_of_resources(db, resources) | _patients_of_records(db, records)
    patients = sorted({fhir_id(ctx.base_uri, "Patient", "patients", p) for p in clinic_patients}
                      | {r[8:] for r in resources if r.startswith("Patient/")})
    event_id = str(uuid.uuid4())
    facts = AuditFacts(event_id, _instant(pending.recorded), pending.subtype, pending.action, pending.outcome,
                       pending.agents, resources, records, patients, pending.query,
                       len(resources) + len(records), pending.login)
    content = audit_event.to_fhir(facts, ctx)
    requestor = next((a for a in pending.agents if a.requestor), pending.agents[0])
    row = {"id": event_id, "recorded": pending.recorded, "type_code": content["type"]["code"],
           "subtype": content["subtype"][0]["code"], "action": pending.action, "outcome": pending.outcome,
           "agent_kind": requestor.kind, "agent": (requestor.value or "")[:255] or None,
           "agent_name": (requestor.name or "")[:255] or None,
           "content": json.dumps(content, separators=(",", ":"), ensure_ascii=False)}
    refs = [{"event_id": event_id, "kind": "patient", "ref": f"Patient/{p}"} for p in patients]
    refs += [{"event_id": event_id, "kind": "entity", "ref": r} for r in resources if not r.startswith("Patient/")]
    refs += [{"event_id": event_id, "kind": "record", "ref": f"{c}/{i}"[:200]} for c, i in dict.fromkeys(records)]
    return row, list({(r["kind"], r["ref"]): r for r in refs}.values())


def _instant(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _patients_of_resources(db: Session, refs: Sequence[str]) -> set[str]:
    """Clinic patient ids whose compartment holds these resources (every one, not only the listed)."""
    keys = [tuple(r.split("/", 1)) for r in refs]
    out: set[str] = set()
    for start in range(0, len(keys), 500):
        chunk = keys[start:start + 500]
        out.update(p for p in db.scalars(select(models.FhirResource.patient_id).where(
            tuple_(models.FhirResource.resource_type, models.FhirResource.id).in_(chunk))) if p)
    return out


def _patients_of_records(db: Session, records: Sequence[tuple[str, str]]) -> set[str]:
    from service.clinic.collections import COLLECTIONS

    out: set[str] = set()
    by_collection: dict[str, list[str]] = {}
    for collection, record_id in records:
        by_collection.setdefault(collection, []).append(record_id)
    for collection, ids in by_collection.items():
        coll = COLLECTIONS.get(collection)
        if coll is None or collection == "practitioners":
            continue
        column = coll.model.id if collection == "patients" else coll.model.patient_id
        for start in range(0, len(ids), 500):
            out.update(p for p in db.scalars(select(column).where(coll.model.id.in_(ids[start:start + 500]))) if p)
    return out


def service_agents(dest: models.Destination) -> list[Agent]:
    """The agents of a worker's event: the service (requestor) and the destination it talks to."""
    return [_SERVICE, Agent("sync-destinations", dest.id, dest.name, requestor=False)]
