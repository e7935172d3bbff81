"""When to retry a delivery, how long to wait, and when to stop calling a destination at all.

Pure logic, no IO: the delivery engine feeds it HTTP statuses, ``Retry-After`` headers and the
circuit state it keeps in the destination's row (shared by every worker), and stores what it returns.
"""

from __future__ import annotations

import math
import random
import re
from collections.abc import Mapping
from dataclasses import asdict, dataclass, fields
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Any, Literal

__all__ = ["MIN_RETRY_AFTER", "RECONCILE_STATUSES", "RETRYABLE_STATUSES", "CircuitBreaker", "CircuitState",
           "RetryPolicy", "classify", "parse_retry_after"]

#: transient failures: timeouts, too early/many, server errors (RFC 9110 §15.5-15.6, RFC 6585 §4, RFC 8470 §5.2)
RETRYABLE_STATUSES = frozenset({408, 425, 429, 500, 502, 503, 504})
#: the destination's copy disagrees with ours (version conflict, failed If-Match): look before sending again
RECONCILE_STATUSES = frozenset({409, 412})

#: the shortest wait a Retry-After can ask for (RetryPolicy.delay)
MIN_RETRY_AFTER = 1.0

_DELAY_SECONDS = re.compile(r"[0-9]+")  # RFC 9110 §10.2.3: delay-seconds = 1*DIGIT (ASCII digits only)


@dataclass(frozen=True)
class RetryPolicy:
    """Exponential backoff with jitter, per destination (stored as ``Destination.retry``).

    Jitter: the delay is drawn uniformly from ``[d * (1 - jitter), d]`` where ``d`` is the capped
    exponential delay. With the default 0.5 this is "equal jitter": retries of messages that failed
    together spread out, yet every retry still waits at least half the backoff, so a struggling
    server gets real relief (full jitter, ``jitter=1``, may retry almost at once).
    """

    base_seconds: float = 2.0
    factor: float = 2.0
    max_seconds: float = 600.0
    max_attempts: int = 15
    jitter: float = 0.5
    max_retry_after: float = 3600.0

    def __post_init__(self) -> None:
        for name in ("base_seconds", "factor", "max_seconds", "jitter", "max_retry_after"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
                raise ValueError(f"retry.{name} must be a finite number, not {value!r}")
        for name in ("base_seconds", "max_seconds", "max_retry_after"):
            if getattr(self, name) <= 0:
                raise ValueError(f"retry.{name} must be positive")
        if self.factor < 1:
            raise ValueError("retry.factor must be at least 1")
        if not 0 <= self.jitter <= 1:
            raise ValueError("retry.jitter must be between 0 and 1")
        if isinstance(self.max_attempts, bool) or not isinstance(self.max_attempts, int) or self.max_attempts < 1:
            raise ValueError(f"retry.max_attempts must be an integer of at least 1, not {self.max_attempts!r}")

    def delay(self, attempt: int, retry_after: float | None = None, rng: random.Random | None = None) -> float:
        """Seconds to wait before the next attempt.

        When the server sent ``Retry-After`` it said when to come back: wait that long (at least
        ``MIN_RETRY_AFTER``: "0" or a past date must not make a worker resend in a tight loop;
        at most ``max_retry_after``, so a hostile or broken header cannot park a message for ever)
        plus up to 10% so messages told the same time do not return in one burst. Otherwise exponential
        backoff with jitter over ``attempt``, the failures so far that counted (>= 1).
        """
        rng = rng or random
        if retry_after is not None:
            wait = min(max(retry_after, MIN_RETRY_AFTER), self.max_retry_after)
            return wait * (1 + rng.uniform(0, 0.1))
        if attempt < 1:
            raise ValueError(f"attempt counts failures so far and starts at 1, not {attempt}")
        try:
            backoff = min(self.base_seconds * self.factor ** (attempt - 1), self.max_seconds)
        except OverflowError:  # factor ** attempt beyond a float: far past the cap anyway
            backoff = self.max_seconds
        return rng.uniform(backoff * (1 - self.jitter), backoff)

    @staticmethod
    def counts(retry_after: float | None) -> bool:
        """Whether a failure counts toward ``max_attempts`` (and the backoff): only those the server
        gave no time for. A 429/503 with ``Retry-After`` is the server scheduling us, not the
        message failing: counting it would dead-letter good messages on a busy server (a third
        of requests answered 503 for an hour) and let a streak of them back off for minutes."""
        return retry_after is None

    def exhausted(self, attempts: int) -> bool:
        """True when ``attempts`` counted failures leave no retry: the message becomes a dead letter."""
        return attempts >= self.max_attempts

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any] | None) -> RetryPolicy:
        """A policy from stored or submitted settings; missing fields take the defaults.

        :raise ValueError: an unknown field or a bad value, naming the field
        """
        data = dict(data or {})
        unknown = sorted(set(data) - {f.name for f in fields(cls)})
        if unknown:
            raise ValueError(f"unknown retry setting(s): {', '.join(map(str, unknown))}")
        return cls(**data)


def parse_retry_after(value: str | None, now: datetime) -> float | None:
    """Seconds from ``now`` that a ``Retry-After`` header (RFC 9110 §10.2.3) asks to wait.

    Either delay-seconds or an HTTP-date; ``None`` when absent or unparseable; a past date is 0.
    The result is not capped (a huge value is possible): :meth:`RetryPolicy.delay` caps it.
    """
    if value is None or not value.strip():
        return None
    text = value.strip()
    if _DELAY_SECONDS.fullmatch(text):
        return float(text)
    try:
        when = parsedate_to_datetime(text)
    except (TypeError, ValueError, IndexError, OverflowError):
        return None
    return max(0.0, (_aware(when) - _aware(now)).total_seconds())


def _aware(moment: datetime) -> datetime:
    """Naive datetimes are UTC (an HTTP-date in ``-0000`` form parses naive)."""
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


def classify(status: int) -> Literal["ok", "retry", "reconcile", "dead"]:
    """What a destination's HTTP status means for the message.

    2xx (and 304: it has it already) is ok; a transient failure is retried; 409/412 need a
    reconciliation with the destination's copy; anything else will not get better by itself.
    """
    if 200 <= status < 300 or status == 304:
        return "ok"
    if status in RETRYABLE_STATUSES:
        return "retry"
    if status in RECONCILE_STATUSES:
        return "reconcile"
    return "dead"


# --- circuit breaker -------------------------------------------------------------------------


@dataclass
class CircuitState:
    """A destination's circuit as its row stores it."""

    state: str = "closed"  # closed | open | half-open
    failures: int = 0  # consecutive failures
    opened_at: datetime | None = None


@dataclass(frozen=True)
class CircuitBreaker:
    """Stop calling a destination after ``failure_threshold`` consecutive failures; probe it again later.

    The first probe goes out ``reset_seconds`` after opening; each failed probe doubles the wait,
    up to ``max_reset_seconds``: a short outage costs seconds, a long one costs the destination
    one request per ``max_reset_seconds``. Pure transitions over :class:`CircuitState`: the state
    lives in a database row that many workers share, so this class holds settings only and never
    mutates the state it is given.
    """

    failure_threshold: int = 5
    reset_seconds: float = 5.0
    max_reset_seconds: float = 300.0

    def allows(self, st: CircuitState, now: datetime) -> bool:
        """Whether a request may go out. An open circuit whose reset time has passed allows one
        probe: the caller then treats the circuit as half-open."""
        if st.state == "open":
            return self._reset_elapsed(st, now)
        return True

    def on_success(self, st: CircuitState) -> CircuitState:
        return CircuitState("closed", 0, None)

    def on_failure(self, st: CircuitState, now: datetime) -> CircuitState:
        """One more consecutive failure; a failed probe (open or half-open) reopens for a longer period."""
        failures = st.failures + 1
        if st.state in ("open", "half-open") or failures >= self.failure_threshold:
            return CircuitState("open", failures, now)
        return CircuitState("closed", failures, None)

    def reset_after(self, st: CircuitState) -> float:
        """Seconds an open circuit waits before its next probe."""
        failed_probes = max(0, st.failures - self.failure_threshold)
        return min(self.reset_seconds * 2 ** min(failed_probes, 32), self.max_reset_seconds)

    def shown(self, st: CircuitState, now: datetime) -> str:
        """The state as operators see it: an open circuit past its reset time is half-open."""
        if st.state == "open":
            return "half-open" if self._reset_elapsed(st, now) else "open"
        return st.state

    def _reset_elapsed(self, st: CircuitState, now: datetime) -> bool:
        if st.opened_at is None:  # open with no time: a damaged row must not lock the destination out
            return True
        return (_aware(now) - _aware(st.opened_at)).total_seconds() >= self.reset_after(st)
