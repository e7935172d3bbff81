"""Delivery: claim a destination's lanes, send what changed, settle each message by the answer.

A message is marked delivered only after the destination acknowledged it. Per answer:

- 2xx: delivered; their id is remembered (``sync_remote``) for later updates and references.
- 429/503/5xx/408, timeouts and dropped connections: retried. With ``Retry-After``: after that
  time, not counted as a failed attempt; a 429 also pauses the whole destination. Without:
  exponential backoff with jitter, counted toward ``max_attempts`` and the circuit breaker.
- any other 4xx on a multi-entry transaction or batch: split in halves and resent (a limit we
  exceeded, such as Medplum's 8 conditional entries): never resent unchanged. When both halves
  then pass it was the size: the destination's limit is learned. On one entry: a dead letter
  keeping the destination's OperationOutcome.
- 409/412 on one entry: reconcile: search their copies by our identifier; one → update it by
  id; several → dead letter (duplicates there need a human).

A lane stops at its first message that cannot go now (retry, or a reference the destination
does not hold yet), so a patient's messages never overtake each other.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
import requests
from sqlalchemy import insert, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from service import audit, models
from service.sync import destinations, outbox
from service.sync.client import FhirClient, client_for
from service.sync.entries import Item, Unresolved, entry_for, order, references, remote_id_of
from service.sync.retry import classify, parse_retry_after
from service.sync.smart_client import SmartAuthError

__all__ = ["RunStats", "deliver", "deliver_all"]

log = logging.getLogger(__name__)

#: a message waiting for a reference target the outbox does not hold (not queued, or a dead letter)
#: is looked at again after DEFER_SECONDS (10x that after ten tries), and dead after MAX_DEFERRALS;
#: one waiting for a queued target is looked at again when that target is due
DEFER_SECONDS = 1.0
MAX_DEFERRALS = 120


def utcnow() -> datetime:
    return datetime.now(UTC)


@dataclass
class Result:
    """How one item fared in one request."""

    result: str  # delivered | unchanged | retry | dead | deferred
    status: int | None = None
    error: str | None = None
    remote_id: str | None = None
    retry_after: float | None = None
    outcome: dict[str, Any] | None = None


@dataclass
class RunStats:
    delivered: int = 0
    unchanged: int = 0
    retried: int = 0
    dead: int = 0
    deferred: int = 0
    requests: int = 0
    lanes: int = 0

    def add(self, result: str, n: int = 1) -> None:
        name = {"delivered": "delivered", "unchanged": "unchanged", "retry": "retried", "dead": "dead",
                "deferred": "deferred"}[result]
        setattr(self, name, getattr(self, name) + n)


class _Stop(Exception):
    """The destination cannot take more now (circuit open, throttled)."""


@dataclass
class _Msg:
    id: int
    resource_type: str
    resource_id: str
    attempts: int
    deferrals: int


@dataclass
class _Lane:
    name: str
    msgs: list[_Msg]
    items: list[Item] = field(default_factory=list)


#: per destination: the Bundle size it accepted after refusing twice as many (per process)
_LEARNED_LIMIT: dict[str, int] = {}


@dataclass
class _Split:
    """A refused Bundle being resent in halves: if both halves pass, its size was the problem;
    if one is refused too, an entry was (it splits further and ends as a dead letter)."""

    half: int
    left: int = 2
    clean: bool = True

    def passed(self, results: Sequence[Result]) -> bool:
        """Count one half sent; True when this was the second and both passed."""
        self.left -= 1
        self.clean = self.clean and all(r.result in ("delivered", "unchanged") for r in results)
        return self.left == 0 and self.clean


class Delivery:
    """One worker's deliveries to one destination."""

    def __init__(self, factory: sessionmaker[Session], dest_id: str, worker: str, *,
                 clock: Callable[[], datetime] = utcnow, rng: random.Random | None = None,
                 lease: timedelta = timedelta(seconds=60), lanes_per_claim: int = 4, per_lane: int = 48):
        self.factory, self.dest_id, self.worker = factory, dest_id, worker
        self.clock, self.rng, self.lease, self.lanes_per_claim = clock, rng or random.Random(), lease, lanes_per_claim
        # a lane is claimed a few Bundles at a time: after a retry, the next claim reads only those again
        self.per_lane = per_lane
        self.stats = RunStats()
        self._settled: set[int] = set()  # message ids given a final or retry state in this claim
        self._last_ms = 0

    # --- the loop ---

    def run(self, budget_seconds: float | None = None) -> RunStats:
        """Deliver until nothing is due, the destination refuses more, or the budget is spent."""
        started = time.monotonic()
        with self.factory() as db:
            while budget_seconds is None or time.monotonic() - started < budget_seconds:
                dest = db.get(models.Destination, self.dest_id, populate_existing=True)
                if dest is None or not dest.enabled or not self._open_for_traffic(dest):
                    break
                claimed = outbox.claim(db, self.dest_id, self.worker, self.clock(), lanes=self.lanes_per_claim,
                                       per_lane=self.per_lane, lease=self.lease)
                if not claimed:
                    break
                # what this claim settles: a message retried earlier in this run and claimed again
                # must be released again if its lane stops before it (else it sits out its lease)
                self._settled = set()
                lanes = [_Lane(c.lane, [_Msg(m.id, m.resource_type, m.resource_id, m.attempts, m.deferrals)
                                        for m in c.messages]) for c in claimed]
                done = 0
                try:
                    for lane in lanes:
                        self.stats.lanes += 1
                        self._deliver_lane(db, dest, lane)
                        done += 1
                except _Stop:
                    self._release(db, [m for lane in lanes[done:] for m in lane.msgs])
                    break
                except IntegrityError:
                    db.rollback()
                    if db.get(models.Destination, self.dest_id, populate_existing=True) is None:
                        log.info("destination %s was removed during a delivery", self.dest_id)
                        break  # its messages went with it (ON DELETE CASCADE): nothing to settle
                    raise
                except BaseException:
                    db.rollback()  # the lease runs out and another worker takes the lanes
                    raise
        return self.stats

    def _open_for_traffic(self, dest: models.Destination) -> bool:
        now = self.clock()
        if dest.paused_until is not None and dest.paused_until > now:
            return False
        return destinations.BREAKER.allows(destinations.circuit_state(dest), now)

    # --- one lane ---

    def _deliver_lane(self, db: Session, dest: models.Destination, lane: _Lane) -> None:
        self._sent_types = set(dest.resource_types)
        items = self._items(db, dest, lane.msgs)
        unchanged = [i for i in items if _unchanged(i, self._remote_rows.get(i.key))]
        for item in unchanged:
            self._settle(db, dest, [item], [Result("unchanged")], "none")
        queue = order((i for i in items if i not in unchanged), _refs)
        split: _Split | None = None
        while queue:
            if not self._open_for_traffic(dest):
                raise _Stop
            limit = min(dest.max_bundle_entries, _LEARNED_LIMIT.get(dest.id, dest.max_bundle_entries),
                        split.half if split else dest.max_bundle_entries)
            chunk, entries, blocked = self._chunk(dest, queue, 1 if dest.mode == "individual" else limit)
            if not chunk:
                if blocked and self._claim_target(db, lane, blocked):
                    return self._deliver_lane(db, dest, lane)  # plan again, the target included
                self._defer(db, dest, queue, blocked)
                return
            # end the read transaction before waiting on the destination: on SQLite (WAL) a
            # transaction that read before another writer's commit can never write afterwards
            db.commit()
            results, request = self._send(dest, chunk, entries)
            if results is None:  # refused whole: resend in halves, never unchanged
                split = _Split(half=(len(chunk) + 1) // 2)
                self._log_split(db, dest, chunk, request)
                continue
            self._settle(db, dest, chunk, results, request)
            if split is not None and split.passed(results):
                _LEARNED_LIMIT[dest.id] = split.half  # both halves passed: it was the size
            if split is not None and split.left == 0:
                split = None
            queue = [i for i in queue if i not in chunk]
            if any(r.result in ("retry", "deferred") for r in results):
                self._release(db, [m for i in queue for m in self._msgs_of(i)])
                return

    def _claim_target(self, db: Session, lane: _Lane, target: tuple[str, str]) -> bool:
        """The lane's next resource references one of the lane's own that lies beyond this claim
        (a lane is claimed a few Bundles at a time): take that resource's rows too."""
        if any((m.resource_type, m.resource_id) == target for m in lane.msgs):
            return False  # claimed already: it is blocked itself (a reference cycle); wait
        rows = outbox.claim_resource(db, self.dest_id, lane.name, target, self.worker, self.clock(), self.lease)
        lane.msgs = [m for m in lane.msgs if m.id not in self._settled] + [
            _Msg(r.id, r.resource_type, r.resource_id, r.attempts, r.deferrals) for r in rows]
        return bool(rows)

    def _items(self, db: Session, dest: models.Destination, msgs: Sequence[_Msg]) -> list[Item]:
        """The current stored resource behind each message (several messages of one resource: one item)."""
        keys: dict[tuple[str, str], list[int]] = {}
        for m in msgs:
            keys.setdefault((m.resource_type, m.resource_id), []).append(m.id)
        self._by_id = {m.id: m for m in msgs}
        rows = _stored(db, keys)
        self._remote_rows = _remote(db, dest.id, keys)
        items = []
        for key, ids in keys.items():
            row = rows.get(key)
            if row is None:  # never stored: nothing to send
                continue
            remote = self._remote_rows.get(key)
            items.append(Item(key[0], key[1], row.version_id, orjson.loads(row.content), row.content_hash,
                              row.deleted, remote.remote_id if remote and not remote.deleted else None, ids))
        missing = [i for k, ids in keys.items() if k not in rows for i in ids]
        if missing:
            self._settle_ids(db, dest, missing, Result("unchanged"), "none")
        targets = {t for i in items for t in _refs(i)}
        self._remote_map = {k: r.remote_id for k, r in _remote(db, dest.id, {**dict.fromkeys(targets),
                                                                             **keys}).items()
                            if r.remote_id and not r.deleted}
        return items

    def _msgs_of(self, item: Item) -> list[_Msg]:
        return [self._by_id[i] for i in item.message_ids]

    def _chunk(self, dest: models.Destination, queue: Sequence[Item],
               limit: int) -> tuple[list[Item], list[dict[str, Any]], tuple[str, str] | None]:
        """The next items that can go in one request, in order; stops at the first that cannot."""
        sent_types = set(dest.resource_types)
        chunk: list[Item] = []
        entries: list[dict[str, Any]] = []
        in_bundle: set[tuple[str, str]] = set()
        for item in queue:
            if len(chunk) >= limit:
                break
            try:
                entry = entry_for(item, self._remote_map, in_bundle if dest.mode == "transaction" else set(),
                                  sent_types)
            except Unresolved as exc:
                return chunk, entries, (None if chunk else exc.target)
            chunk.append(item)
            entries.append(entry)
            in_bundle.add(item.key)
        return chunk, entries, None

    # --- sending ---

    def _send(self, dest: models.Destination, chunk: list[Item],
              entries: list[dict[str, Any] | None]) -> tuple[list[Result] | None, str]:
        client = client_for(dest)
        live = [(i, e) for i, e in zip(chunk, entries, strict=True) if e is not None]
        results: dict[int, Result] = {id(i): Result("unchanged") for i, e in zip(chunk, entries, strict=True)
                                      if e is None}
        if not live:
            return [results[id(i)] for i in chunk], "none"
        if dest.mode == "individual" or (len(live) == 1 and dest.mode != "batch"):
            item, entry = live[0]
            request = f"{entry['request']['method']} {item.resource_type}"
            results[id(item)] = self._single(client, item, entry)
        else:
            request = f"{dest.mode} {len(live)}"
            got = self._bundle(client, dest.mode, live)
            if got is None:
                return None, request
            results.update(got)
        return [results[id(i)] for i in chunk], request

    def _request(self, client: FhirClient, method: str, url: str, body: Any = None) -> requests.Response | Result:
        self.stats.requests += 1
        started = time.monotonic()
        try:
            return client.request(method, url, body)
        except SmartAuthError as exc:
            return Result("retry", exc.status, f"token endpoint: {exc.error or type(exc).__name__}")
        except (requests.ConnectionError, requests.Timeout) as exc:
            return Result("retry", None, type(exc).__name__)
        except requests.RequestException as exc:
            return Result("retry", None, type(exc).__name__)
        finally:
            self._last_ms = int((time.monotonic() - started) * 1000)

    def _single(self, client: FhirClient, item: Item, entry: dict[str, Any]) -> Result:
        req = entry["request"]
        resp = self._request(client, req["method"], req["url"], entry.get("resource"))
        if isinstance(resp, Result):
            return resp
        if req["method"] == "DELETE" and resp.status_code in (404, 410):
            return Result("delivered", resp.status_code)
        verdict = classify(resp.status_code)
        if verdict == "ok":
            return Result("delivered", resp.status_code, remote_id=_remote_id(resp, item))
        if verdict == "reconcile" and req["method"] == "PUT":
            return self._reconcile(client, item, entry, resp.status_code)
        return _failure(resp, self.clock())

    def _bundle(self, client: FhirClient, mode: str,
                live: list[tuple[Item, dict[str, Any]]]) -> dict[int, Result] | None:
        bundle = {"resourceType": "Bundle", "type": mode, "entry": [
            e if mode == "transaction" else {k: v for k, v in e.items() if k != "fullUrl"} for _, e in live]}
        resp = self._request(client, "POST", "", bundle)
        if isinstance(resp, Result):
            return {id(i): resp for i, _ in live}
        verdict = classify(resp.status_code)
        if verdict in ("dead", "reconcile") and len(live) > 1:
            return None  # split (a size or isolation limit, or one bad entry: halves find it)
        if verdict != "ok":
            if verdict == "reconcile":
                return {id(live[0][0]): self._reconcile(client, live[0][0], live[0][1], resp.status_code)}
            return {id(i): _failure(resp, self.clock()) for i, _ in live}
        answers = _json(resp).get("entry") or []
        out: dict[int, Result] = {}
        for n, (item, entry) in enumerate(live):
            answer = answers[n] if n < len(answers) and isinstance(answers[n], dict) else {}
            out[id(item)] = self._entry_result(client, item, entry, answer.get("response") or {},
                                               answer.get("resource"), resp.status_code)
        return out

    def _entry_result(self, client: FhirClient, item: Item, entry: dict[str, Any], response: dict[str, Any],
                      resource: Any, bundle_status: int) -> Result:
        status = _status_of(response.get("status"), bundle_status)
        if entry["request"]["method"] == "DELETE" and status in (404, 410):
            return Result("delivered", status)
        verdict = classify(status)
        if verdict == "ok":
            rid = remote_id_of(response.get("location"), resource if isinstance(resource, dict) else None)
            return Result("delivered", status, remote_id=rid or item.remote_id)
        if verdict == "reconcile":
            return self._reconcile(client, item, entry, status)
        outcome = response.get("outcome") if isinstance(response.get("outcome"), dict) else None
        error = f"HTTP {status}" + _issue_codes(outcome)
        if verdict == "retry":
            return Result("retry", status, error)
        return Result("dead", status, error, outcome=outcome)

    def _reconcile(self, client: FhirClient, item: Item, entry: dict[str, Any], status: int) -> Result:
        """409/412: find their copies by our identifier; exactly one → update it by id."""
        from mappings.bundle import conditional_url

        url = conditional_url(item.content)
        if url is None:
            return Result("dead", status, f"HTTP {status} and no identifier to reconcile on")
        resp = self._request(client, "GET", url + "&_count=5")
        if isinstance(resp, Result):
            return resp
        if classify(resp.status_code) != "ok":
            return _failure(resp, self.clock())
        found = [e.get("resource", {}).get("id") for e in _json(resp).get("entry") or []
                 if (e.get("search") or {}).get("mode", "match") == "match"]
        if len(found) > 1:
            return Result("dead", status, f"HTTP {status}: {len(found)} resources there carry this identifier; "
                          "remove the duplicates there, then replay")
        if not found:
            return Result("retry", status, f"HTTP {status}, and no resource there carries this identifier")
        item.remote_id = found[0]
        fixed = entry_for(item, self._remote_map, set(), self._sent_types)
        put = self._request(client, "PUT", fixed["request"]["url"], fixed["resource"])
        if isinstance(put, Result):
            return put
        if classify(put.status_code) == "ok":
            return Result("delivered", put.status_code, remote_id=found[0])
        return _failure(put, self.clock())

    # --- settling ---

    def _settle(self, db: Session, dest: models.Destination, chunk: Sequence[Item], results: Sequence[Result],
                request: str) -> None:
        now = self.clock()
        policy = destinations.policy(dest)
        attempts: list[dict[str, Any]] = []
        done: dict[int | None, list[_Msg]] = {}  # delivered, in one UPDATE per answer status
        superseded: list[_Msg] = []
        for item, res in zip(chunk, results, strict=True):
            msgs = self._msgs_of(item)
            if res.result == "retry":
                tries = max(m.attempts for m in msgs) + policy.counts(res.retry_after)
                if policy.counts(res.retry_after) and policy.exhausted(tries):
                    res = Result("dead", res.status, f"{res.error} (gave up after {tries} attempts)",
                                 outcome=res.outcome)
                else:
                    wait = policy.delay(tries, res.retry_after, self.rng)
                    self._update(db, msgs, status="pending", attempts=tries, next_attempt_at=now + timedelta(
                        seconds=wait), last_status=res.status, last_error=res.error)
            if res.result in ("delivered", "unchanged"):
                # several versions of one resource went as its current content: the newest row is
                # the delivered one, the older ones were superseded by it
                latest = max(msgs, key=lambda m: m.id)
                done.setdefault(res.status, []).append(latest)
                superseded += [m for m in msgs if m is not latest]
                self._remember(db, dest, item, res, now)
            elif res.result == "dead":
                self._update(db, msgs, status="dead", last_status=res.status, last_error=res.error,
                             outcome=res.outcome, attempts=max(m.attempts for m in msgs) + 1)
            self.stats.add(res.result, len(msgs))
            if request != "none":
                attempts += [_attempt(m.id, dest.id, now, self.worker, request, res, self._last_ms) for m in msgs]
        for status, msgs in done.items():
            self._update(db, msgs, status="delivered", delivered_at=now, last_status=status, last_error=None)
        if superseded:
            self._update(db, superseded, status="superseded", delivered_at=now, last_error=None)
        if attempts:
            db.execute(insert(models.DeliveryAttempt), attempts)
        if request != "none":
            self._health(db, dest, results, now)
        db.commit()
        if request != "none":
            _audit(self.factory, dest, chunk, results, request)

    def _settle_ids(self, db: Session, dest: models.Destination, ids: list[int], res: Result, request: str) -> None:
        now = self.clock()
        db.execute(update(models.OutboxMessage).where(models.OutboxMessage.id.in_(ids)).values(
            status="delivered", delivered_at=now, claimed_by=None, lease_until=None))
        self._settled.update(ids)
        self.stats.add(res.result, len(ids))
        db.commit()

    def _update(self, db: Session, msgs: Sequence[_Msg], **values: Any) -> None:
        values |= {"claimed_by": None, "lease_until": None}
        if values.get("status") != "pending" or "attempts" in values or "deferrals" in values:
            self._settled.update(m.id for m in msgs)
        db.execute(update(models.OutboxMessage).where(models.OutboxMessage.id.in_([m.id for m in msgs]))
                   .values(**values).execution_options(synchronize_session=False))

    def _remember(self, db: Session, dest: models.Destination, item: Item, res: Result, now: datetime) -> None:
        row = self._remote_rows.get(item.key)  # loaded with the lane; a resource is in one lane only
        if row is None:
            row = models.RemoteResource(destination_id=dest.id, resource_type=item.resource_type,
                                        resource_id=item.resource_id)
            db.add(row)
            self._remote_rows[item.key] = row
        row.remote_id = res.remote_id or item.remote_id or row.remote_id
        row.content_hash, row.version_id, row.deleted, row.updated_at = (item.content_hash, item.version_id,
                                                                         item.deleted, now)
        if row.remote_id and not item.deleted:
            self._remote_map[item.key] = row.remote_id
        else:
            self._remote_map.pop(item.key, None)

    def _health(self, db: Session, dest: models.Destination, results: Sequence[Result], now: datetime) -> None:
        """Circuit breaker and last success/error, shared by every worker (the destination row)."""
        state = destinations.circuit_state(dest)
        transport = [r for r in results if r.result == "retry"]
        if transport:
            dest.last_error_at, dest.last_error = now, transport[0].error
            throttled = [r.retry_after for r in transport if r.status == 429 and r.retry_after]
            if throttled:
                dest.paused_until = now + timedelta(seconds=min(max(throttled), destinations.policy(dest)
                                                                .max_retry_after))
            # only failures the server gave no Retry-After for: one that schedules us is up
            if any(r.retry_after is None for r in transport):
                state = destinations.BREAKER.on_failure(state, now)
            else:
                state = destinations.BREAKER.on_success(state)
        else:
            state = destinations.BREAKER.on_success(state)
            dest.last_success_at = now
            dead = [r for r in results if r.result == "dead"]
            if dead:
                dest.last_error_at, dest.last_error = now, dead[0].error
        dest.circuit_state, dest.circuit_failures, dest.circuit_opened_at = state.state, state.failures, state.opened_at

    def _defer(self, db: Session, dest: models.Destination, queue: list[Item], blocked: tuple[str, str] | None) -> None:
        """The lane's next item references a resource the destination does not hold yet: wait."""
        now = self.clock()
        head, rest = queue[0], queue[1:]
        msgs = self._msgs_of(head)
        target = f"{blocked[0]}/{blocked[1]}" if blocked else "a reference"
        coming = outbox.next_attempt_of(db, dest.id, blocked) if blocked else None
        if coming is not None:
            # queued in another lane (lanes never wait on each other in a circle: patients' lanes
            # reference the shared one only): look again just after it is due; not counted
            self._update(db, msgs, status="pending", last_error=f"waiting for {target}",
                         next_attempt_at=max(coming, now) + timedelta(seconds=DEFER_SECONDS / 2))
            self.stats.add("deferred", len(msgs))
            self._release(db, [m for i in rest for m in self._msgs_of(i)])
            return
        tries = max(m.deferrals for m in msgs) + 1
        if tries > MAX_DEFERRALS:
            self._update(db, msgs, status="dead", last_error=f"waited {tries - 1} times for {target}, which the "
                         "destination does not hold (is it a dead letter?)")
            self.stats.add("dead", len(msgs))
        else:
            wait = DEFER_SECONDS if tries <= 10 else 10 * DEFER_SECONDS
            self._update(db, msgs, status="pending", deferrals=tries, next_attempt_at=now + timedelta(seconds=wait),
                         last_error=f"waiting for {target}")
            self.stats.add("deferred", len(msgs))
        self._release(db, [m for i in rest for m in self._msgs_of(i)])

    def _release(self, db: Session, msgs: Sequence[_Msg]) -> None:
        """Give back claimed messages this run did not settle: pending, due as they were."""
        msgs = [m for m in msgs if m.id not in self._settled]
        if msgs:
            self._update(db, msgs, status="pending")
        db.commit()

    def _log_split(self, db: Session, dest: models.Destination, chunk: Sequence[Item], request: str) -> None:
        now = self.clock()
        db.execute(insert(models.DeliveryAttempt), [
            _attempt(m.id, dest.id, now, self.worker, request, Result("split", None, "refused whole; resent in halves"),
                     self._last_ms)
            for i in chunk for m in self._msgs_of(i)])
        db.commit()


# --- helpers ---


def _unchanged(item: Item, remote: models.RemoteResource | None) -> bool:
    if item.deleted:
        return remote is None or remote.deleted
    return remote is not None and not remote.deleted and remote.content_hash == item.content_hash and bool(
        remote.remote_id)


#: the references of a content, by content hash: a lane retried after a 503 is read again, and
#: walking every resource's JSON for references again was most of a fault run's CPU time
_REFS: dict[str, frozenset[tuple[str, str]]] = {}
_REFS_MAX = 50_000


def _refs(item: Item) -> frozenset[tuple[str, str]]:
    found = _REFS.get(item.content_hash)
    if found is None:
        if len(_REFS) >= _REFS_MAX:
            _REFS.clear()
        found = _REFS[item.content_hash] = frozenset(references(item.content))
    return found


def _stored(db: Session, keys: dict[tuple[str, str], Any]) -> dict[tuple[str, str], models.FhirResource]:
    out: dict[tuple[str, str], models.FhirResource] = {}
    by_type: dict[str, list[str]] = {}
    for rtype, rid in keys:
        by_type.setdefault(rtype, []).append(rid)
    for rtype, ids in by_type.items():
        for row in db.scalars(select(models.FhirResource).where(models.FhirResource.resource_type == rtype,
                                                                models.FhirResource.id.in_(ids))):
            out[(rtype, row.id)] = row
    return out


def _remote(db: Session, dest_id: str,
            keys: dict[tuple[str, str], Any]) -> dict[tuple[str, str], models.RemoteResource]:
    out: dict[tuple[str, str], models.RemoteResource] = {}
    by_type: dict[str, list[str]] = {}
    for rtype, rid in keys:
        by_type.setdefault(rtype, []).append(rid)
    for rtype, ids in by_type.items():
        for row in db.scalars(select(models.RemoteResource).where(
                models.RemoteResource.destination_id == dest_id, models.RemoteResource.resource_type == rtype,
                models.RemoteResource.resource_id.in_(ids))):
            out[(rtype, row.resource_id)] = row
    return out


def _json(resp: requests.Response) -> dict[str, Any]:
    try:
        body = resp.json()
    except ValueError:
        return {}
    return body if isinstance(body, dict) else {}


def _remote_id(resp: requests.Response, item: Item) -> str | None:
    body = _json(resp)
    return remote_id_of(resp.headers.get("Location") or resp.headers.get("Content-Location"),
                        body if body.get("resourceType") == item.resource_type else None) or item.remote_id


def _status_of(value: Any, default: int) -> int:
    try:
        return int(str(value).split()[0])
    except (ValueError, IndexError):
        return default


def _issue_codes(outcome: dict[str, Any] | None) -> str:
    """The OperationOutcome's issue codes: what went wrong, without its diagnostics (which may quote data)."""
    codes = [str(i.get("code")) for i in (outcome or {}).get("issue") or [] if isinstance(i, dict) and i.get("code")]
    return f" ({', '.join(dict.fromkeys(codes))})" if codes else ""


def _failure(resp: requests.Response, now: datetime) -> Result:
    body = _json(resp)
    outcome = body if body.get("resourceType") == "OperationOutcome" else None
    error = f"HTTP {resp.status_code}" + _issue_codes(outcome)
    if classify(resp.status_code) == "retry":
        return Result("retry", resp.status_code, error, retry_after=parse_retry_after(resp.headers.get("Retry-After"),
                                                                                      now))
    return Result("dead", resp.status_code, error, outcome=outcome)


#: the first word of a request's name (``_send``) -> its restful-interaction subtype and AuditEvent action
_REQUEST_AUDIT = {"transaction": ("transaction", "E"), "batch": ("batch", "E"), "PUT": ("update", "U"),
                  "POST": ("create", "C"), "DELETE": ("delete", "D")}


def _audit(factory: sessionmaker[Session], dest: models.Destination, chunk: Sequence[Item],
           results: Sequence[Result], request: str) -> None:
    """One AuditEvent per request sent: the destination, the resources in it, and how it ended
    (8 when it is to be retried: a 5xx, a timeout; 4 when refused for good; else 0)."""
    subtype, action = _REQUEST_AUDIT.get(request.split(" ", 1)[0], ("transaction", "E"))
    kinds = {r.result for r in results}
    outcome = "8" if "retry" in kinds else "4" if "dead" in kinds else "0"
    audit.write_now(factory, audit.Pending(utcnow(), subtype, action, outcome, audit.service_agents(dest),
                                           resources=[f"{i.resource_type}/{i.resource_id}" for i in chunk]))


def _attempt(message_id: int, dest_id: str, at: datetime, worker: str, request: str, res: Result,
             duration_ms: int) -> dict[str, Any]:
    return {"message_id": message_id, "destination_id": dest_id, "at": at, "worker": worker[:128],
            "request": request[:64], "status_code": res.status, "result": res.result[:16],
            "error": (res.error or "")[:500] or None, "duration_ms": duration_ms}


def deliver(factory: sessionmaker[Session], dest_id: str, worker: str, budget_seconds: float | None = None,
            **options: Any) -> RunStats:
    """Deliver what is due to one destination (see the module docstring)."""
    return Delivery(factory, dest_id, worker, **options).run(budget_seconds)


def deliver_all(factory: sessionmaker[Session], worker: str, budget_seconds: float | None = None,
                **options: Any) -> dict[str, RunStats]:
    """One round over every enabled destination."""
    with factory() as db:
        ids = list(db.scalars(select(models.Destination.id).where(models.Destination.enabled.is_(True))
                              .order_by(models.Destination.created_at)))
    return {d: deliver(factory, d, worker, budget_seconds, **options) for d in ids}

