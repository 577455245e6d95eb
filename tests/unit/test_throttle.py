"""The front desk's throttle: when it engages, when it lets go, what Retry-After says."""

from __future__ import annotations

from datetime import UTC, datetime

from app.ops.backlog import Backlog
from app.ops.lag import PartitionLag
from app.ops.throttle import Limits, decide, retry_after

LIMITS = Limits(max_lag=1000, max_oldest_age_s=60.0)


def test_a_small_backlog_is_accepted() -> None:
    assert decide(1000, 10.0, 50.0, LIMITS, throttled=False) is None


def test_a_backlog_over_the_limit_is_refused_with_429() -> None:
    verdict = decide(1001, None, 50.0, LIMITS, throttled=False)
    assert verdict is not None
    assert verdict.status == 429
    assert "1001" in verdict.reason


def test_an_old_outstanding_request_is_refused_even_without_lag() -> None:
    verdict = decide(0, 61.0, 100.0, LIMITS, throttled=False)
    assert verdict is not None and verdict.status == 429
    assert "oldest outstanding" in verdict.reason
    assert verdict.retry_after_s == 5  # nothing to drain: not back at once either
    behind = decide(3000, 61.0, 100.0, Limits(0, 60.0), throttled=False)
    assert behind is not None and behind.retry_after_s == 30  # behind 3000 at 100/s


def test_unknown_values_never_throttle() -> None:
    assert decide(None, None, None, LIMITS, throttled=False) is None
    assert decide(None, None, None, LIMITS, throttled=True) is None


def test_throttling_holds_until_the_backlog_falls_under_the_release_level() -> None:
    # Engaged at 1001; 900 and 800 are under the limit but not under 80% of it.
    assert decide(900, None, 50.0, LIMITS, throttled=True) is not None
    assert decide(800, None, 50.0, LIMITS, throttled=True) is not None
    assert decide(799, None, 50.0, LIMITS, throttled=True) is None
    # Once released, 900 is accepted again: no flapping between 800 and 1000.
    assert decide(900, None, 50.0, LIMITS, throttled=False) is None


def test_age_hysteresis_too() -> None:
    assert decide(0, 50.0, None, LIMITS, throttled=True) is not None
    assert decide(0, 47.9, None, LIMITS, throttled=True) is None


def test_a_limit_of_zero_turns_that_check_off() -> None:
    limits = Limits(max_lag=0, max_oldest_age_s=0.0)
    assert decide(10**9, 10**6, 1.0, limits, throttled=False) is None


def test_retry_after_is_the_time_to_drain_back_under_the_release_level() -> None:
    # 2000 - 800 = 1200 messages to drain at 100/s: 12 s.
    verdict = decide(2000, None, 100.0, LIMITS, throttled=False)
    assert verdict is not None and verdict.retry_after_s == 12
    # Rounded up, never 0.
    assert retry_after(1, 1000.0, LIMITS) == 1
    assert retry_after(0, 1000.0, LIMITS) == 1


def test_retry_after_is_capped() -> None:
    verdict = decide(10**6, None, 10.0, LIMITS, throttled=False)
    assert verdict is not None and verdict.retry_after_s == 60


def test_retry_after_when_nothing_drains_is_the_cap() -> None:
    for rate in (0.0, -50.0):
        verdict = decide(5000, None, rate, LIMITS, throttled=False)
        assert verdict is not None and verdict.retry_after_s == 60, rate


def test_retry_after_before_any_drain_is_measured_is_short() -> None:
    for rate in (None, float("nan")):
        verdict = decide(5000, None, rate, LIMITS, throttled=False)
        assert verdict is not None and verdict.retry_after_s == 5, rate


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def rows(lag: int, end: int = 10_000) -> list[PartitionLag]:
    return [PartitionLag("g", "t", 0, end - lag, end, lag)]


def backlog(clock: Clock) -> Backlog:
    return Backlog("g", LIMITS, 1.0, clock=clock, wall=lambda: datetime(2030, 1, 1, tzinfo=UTC))


def test_the_desk_throttles_on_a_fresh_reading_and_releases_as_it_drains() -> None:
    clock = Clock()
    b = backlog(clock)
    b.record(rows(5000, end=10_000), 0.01)
    assert b.decide(None) is not None
    for lag in (3000, 1500, 900, 700):
        clock.now += 1.0
        b.record(rows(lag, end=10_000), 0.01)
        b.decide(None)
    assert b.verdict() is None
    body = b.as_json(None)
    assert body["total_lag"] == 700
    assert body["throttling"] is None
    assert body["drain_rate_per_s"] == 1075.0  # (5000 - 700) / 4 s
    assert body["measured_at"] == "2030-01-01T00:00:00.000Z"


def test_retry_after_follows_the_measured_drain() -> None:
    clock = Clock()
    b = backlog(clock)
    b.record(rows(5000, end=10_000), 0.01)
    first = b.decide(None)
    assert first is not None and first.retry_after_s == 5  # one reading: no rate yet
    clock.now += 2.0
    b.record(rows(4800, end=10_000), 0.01)  # 100/s: (4800 - 800) / 100 = 40 s
    second = b.decide(None)
    assert second is not None and second.retry_after_s == 40


def test_a_stale_reading_does_not_throttle() -> None:
    clock = Clock()
    b = backlog(clock)
    b.record(rows(5000), 0.01)
    assert b.decide(None) is not None
    clock.now += 6.0  # more than five refresh intervals without a reading
    b.record_failure("cannot read offsets from 127.0.0.1:1: transport failure")
    assert b.decide(None) is None
    body = b.as_json(None)
    assert body["stale"] is True
    assert body["error"].startswith("cannot read offsets")
    assert body["total_lag"] == 5000  # the last reading stays visible, marked stale


def test_a_verdict_nobody_renewed_expires() -> None:
    clock = Clock()
    b = backlog(clock)
    b.record(rows(5000), 0.01)
    b.decide(None)
    assert b.verdict() is not None
    clock.now += 6.0  # the timer stopped deciding (stuck or gone)
    assert b.verdict() is None
