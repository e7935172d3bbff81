"""Retry policy, Retry-After, status classification and the circuit breaker (service.sync.retry)."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime

import pytest

from service.sync.retry import CircuitBreaker, CircuitState, RetryPolicy, classify, parse_retry_after

NOW = datetime(2026, 11, 23, 9, 0, tzinfo=UTC)
NO_JITTER = RetryPolicy(jitter=0)


def http_date(moment: datetime) -> str:
    return format_datetime(moment, usegmt=True)


# --- backoff ---


def test_the_delay_doubles_from_the_base():
    assert [NO_JITTER.delay(n) for n in (1, 2, 3, 4)] == [2.0, 4.0, 8.0, 16.0]


def test_the_delay_follows_base_and_factor():
    policy = RetryPolicy(base_seconds=1.5, factor=3, jitter=0)
    assert [policy.delay(n) for n in (1, 2, 3)] == [1.5, 4.5, 13.5]


def test_one_delay_never_exceeds_the_cap():
    assert NO_JITTER.delay(10) == 600.0
    assert NO_JITTER.delay(10_000) == 600.0  # no float overflow for absurd attempt counts


def test_jitter_draws_between_the_jitter_fraction_below_the_backoff_and_the_backoff():
    rng = random.Random(7)
    delays = [RetryPolicy(jitter=0.5).delay(4, rng=rng) for _ in range(500)]
    assert all(8.0 <= d <= 16.0 for d in delays)
    assert max(delays) - min(delays) > 6  # spread over the range, not a constant


def test_jitter_is_reproducible_with_a_seeded_rng():
    policy = RetryPolicy()
    assert policy.delay(3, rng=random.Random(1)) == policy.delay(3, rng=random.Random(1))


def test_full_jitter_may_retry_almost_at_once():
    delays = [RetryPolicy(jitter=1).delay(1, rng=random.Random(seed)) for seed in range(200)]
    assert all(0 <= d <= 2 for d in delays) and min(delays) < 0.1


def test_attempt_counts_failures_from_one():
    with pytest.raises(ValueError, match="starts at 1"):
        NO_JITTER.delay(0)


# --- Retry-After ---


def test_retry_after_in_seconds():
    assert parse_retry_after("120", NOW) == 120.0
    assert parse_retry_after(" 0 ", NOW) == 0.0


def test_retry_after_as_a_future_http_date_is_the_seconds_until_then():
    assert parse_retry_after(http_date(NOW + timedelta(seconds=90)), NOW) == 90.0


def test_retry_after_as_a_past_http_date_is_zero():
    assert parse_retry_after(http_date(NOW - timedelta(hours=1)), NOW) == 0.0


def test_retry_after_in_the_obsolete_rfc_850_form():
    assert parse_retry_after("Monday, 23-Nov-26 09:01:00 GMT", NOW) == 60.0


@pytest.mark.parametrize("value", [None, "", "   ", "soon", "-5", "1.5", "12 s", "Mon, 99 Foo 2026 25:61:00 GMT",
                                   "\u0663"])
def test_an_absent_or_unparseable_retry_after_is_none(value):
    assert parse_retry_after(value, NOW) is None


def test_retry_after_replaces_the_backoff_with_at_most_a_tenth_added():
    delays = [NO_JITTER.delay(n, retry_after=3, rng=random.Random(seed)) for n in (1, 5, 12) for seed in range(50)]
    assert min(delays) >= 3.0 and max(delays) <= 3.3  # not the 32 s backoff of a fifth failure
    assert len(set(delays)) > 1  # spread, so messages told the same time do not return in one burst


def test_retry_after_zero_or_past_waits_a_second_so_no_worker_resends_in_a_tight_loop():
    assert 1.0 <= NO_JITTER.delay(3, retry_after=0) <= 1.1


def test_retry_after_is_capped():
    assert 3600.0 <= NO_JITTER.delay(1, retry_after=86_400) <= 3960.0
    assert 60.0 <= RetryPolicy(jitter=0, max_retry_after=60).delay(1, retry_after=float("inf")) <= 66.0


def test_retry_after_may_exceed_the_backoff_cap():
    assert 300.0 <= RetryPolicy(jitter=0, max_seconds=10).delay(1, retry_after=300) <= 330.0


def test_only_failures_without_retry_after_count_toward_the_attempts():
    assert RetryPolicy.counts(None)
    assert not RetryPolicy.counts(1.0) and not RetryPolicy.counts(0.0)


# --- attempts ---


def test_the_policy_is_exhausted_after_max_attempts():
    policy = RetryPolicy(max_attempts=3)
    assert [policy.exhausted(n) for n in (1, 2, 3, 4)] == [False, False, True, True]


# --- classification ---


@pytest.mark.parametrize(("status", "meaning"), [
    (200, "ok"), (201, "ok"), (204, "ok"), (299, "ok"), (304, "ok"),
    (408, "retry"), (425, "retry"), (429, "retry"), (500, "retry"), (502, "retry"), (503, "retry"), (504, "retry"),
    (409, "reconcile"), (412, "reconcile"),
    (100, "dead"), (301, "dead"), (302, "dead"), (400, "dead"), (401, "dead"), (403, "dead"), (404, "dead"),
    (405, "dead"), (410, "dead"), (413, "dead"), (415, "dead"), (422, "dead"), (501, "dead"), (505, "dead"),
])
def test_classify(status, meaning):
    assert classify(status) == meaning


# --- settings ---


def test_a_policy_round_trips_through_its_dict():
    policy = RetryPolicy(base_seconds=1, factor=3, max_seconds=120, max_attempts=4, jitter=0.25, max_retry_after=600)
    assert RetryPolicy.from_dict(policy.to_dict()) == policy


def test_missing_settings_take_the_defaults():
    assert RetryPolicy.from_dict(None) == RetryPolicy.from_dict({}) == RetryPolicy()
    assert RetryPolicy.from_dict({"max_attempts": 3}) == RetryPolicy(max_attempts=3)


@pytest.mark.parametrize(("data", "field"), [
    ({"base_seconds": 0}, "base_seconds"),
    ({"base_seconds": -1}, "base_seconds"),
    ({"max_seconds": 0}, "max_seconds"),
    ({"max_retry_after": -5}, "max_retry_after"),
    ({"factor": 0.5}, "factor"),
    ({"jitter": -0.1}, "jitter"),
    ({"jitter": 1.5}, "jitter"),
    ({"max_attempts": 0}, "max_attempts"),
    ({"max_attempts": 2.5}, "max_attempts"),
    ({"max_attempts": True}, "max_attempts"),
    ({"base_seconds": "2"}, "base_seconds"),
    ({"max_seconds": float("nan")}, "max_seconds"),
    ({"factor": float("inf")}, "factor"),
    ({"retries": 3}, "retries"),
])
def test_bad_settings_are_refused_naming_the_field(data, field):
    with pytest.raises(ValueError, match=field):
        RetryPolicy.from_dict(data)


# --- circuit breaker ---

BREAKER = CircuitBreaker(failure_threshold=3, reset_seconds=30)


def fail(st: CircuitState, times: int, at: datetime = NOW) -> CircuitState:
    for _ in range(times):
        st = BREAKER.on_failure(st, at)
    return st


def test_a_closed_circuit_allows_and_counts_failures_below_the_threshold():
    st = fail(CircuitState(), 2)
    assert st == CircuitState("closed", 2, None)
    assert BREAKER.allows(st, NOW) and BREAKER.shown(st, NOW) == "closed"


def test_the_threshold_of_consecutive_failures_opens_the_circuit():
    assert fail(CircuitState(), 3) == CircuitState("open", 3, NOW)


def test_a_success_resets_the_count():
    st = BREAKER.on_success(fail(CircuitState(), 2))
    assert st == CircuitState("closed", 0, None)
    assert fail(st, 2).state == "closed"


def test_an_open_circuit_refuses_until_the_reset_time():
    st = fail(CircuitState(), 3)
    assert not BREAKER.allows(st, NOW + timedelta(seconds=29))
    assert BREAKER.shown(st, NOW + timedelta(seconds=29)) == "open"


def test_after_the_reset_time_an_open_circuit_allows_a_probe_and_shows_half_open():
    st = fail(CircuitState(), 3)
    later = NOW + timedelta(seconds=30)
    assert BREAKER.allows(st, later) and BREAKER.shown(st, later) == "half-open"


def test_a_half_open_circuit_allows():
    assert BREAKER.allows(CircuitState("half-open", 3, NOW), NOW)
    assert BREAKER.shown(CircuitState("half-open", 3, NOW), NOW) == "half-open"


def test_a_successful_probe_closes_the_circuit():
    assert BREAKER.on_success(CircuitState("half-open", 3, NOW)) == CircuitState("closed", 0, None)


@pytest.mark.parametrize("state", ["half-open", "open"])
def test_a_failed_probe_reopens_for_twice_the_reset_period(state):
    later = NOW + timedelta(seconds=40)
    st = BREAKER.on_failure(CircuitState(state, 3, NOW), later)
    assert st == CircuitState("open", 4, later)
    assert not BREAKER.allows(st, later + timedelta(seconds=59))
    assert BREAKER.allows(st, later + timedelta(seconds=60))


def test_the_wait_between_probes_doubles_up_to_the_maximum():
    breaker = CircuitBreaker(failure_threshold=5, reset_seconds=5, max_reset_seconds=300)
    waits = [breaker.reset_after(CircuitState("open", failures, NOW)) for failures in range(5, 14)]
    assert waits == [5, 10, 20, 40, 80, 160, 300, 300, 300]
    assert breaker.reset_after(CircuitState("open", 10_000, NOW)) == 300  # no overflow


def test_the_default_breaker_probes_a_short_outage_within_seconds():
    assert CircuitBreaker().reset_after(CircuitState("open", 5, NOW)) == 5.0


def test_a_failed_probe_reopens_even_below_the_threshold():
    assert BREAKER.on_failure(CircuitState("half-open", 0, NOW), NOW).state == "open"


def test_the_breaker_leaves_the_state_it_is_given_alone():
    st = CircuitState()
    BREAKER.on_failure(st, NOW)
    assert st == CircuitState()


def test_an_open_circuit_without_a_time_allows_a_probe():
    assert BREAKER.allows(CircuitState("open", 5, None), NOW)


def test_a_naive_opened_at_is_taken_as_utc():
    st = CircuitState("open", 3, NOW.replace(tzinfo=None))
    assert not BREAKER.allows(st, NOW + timedelta(seconds=10))
