"""Watch the backlog: consumer lag on a timer, ``GET /lag``, its gauges, and the throttle.

::

    timer (every lag_refresh_s) --thread--> LagReader.read --> Backlog.record
                                                          \\-> Backlog.decide --> verdict
    POST /orders  --rt.extras["throttle"]-->  Backlog.verdict   (429 + Retry-After, or None)
    GET /lag      --> Backlog.as_json
    GET /metrics  --> postroom_consumer_lag{group,topic,partition}, ..._total, ...
                      (the oldest-age gauge is the reconciler's, next to its source)

Every worker reads the lag of the whole group, so each front desk decides on its own.
The age of the oldest outstanding request comes from ``rt.extras["oldest_outstanding_age_s"]``
when that seam is wired (a callable returning seconds or None).
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import Any

from faust.web import View
from prometheus_client import Counter, Gauge

from app.errors import RetryableError
from app.ops.lag import (
    LagReader,
    PartitionLag,
    Sample,
    consume_rate,
    drain_estimate,
    drain_rate,
    lag_by_topic,
    rounded,
    sample,
    total_lag,
)
from app.ops.throttle import Limits, Verdict, decide
from app.runtime import Runtime

# A reading older than this many refresh intervals is stale: nobody throttles on it.
STALE_AFTER_REFRESHES = 5
# Readings the drain rate is measured over.
RATE_WINDOW = 10

AgeSource = Callable[[], float | None]


class Backlog:
    """The latest lag reading of one group, its trend, and the throttle's verdict."""

    def __init__(
        self,
        group: str,
        limits: Limits,
        refresh_s: float,
        *,
        clock: Callable[[], float] = time.monotonic,
        wall: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self.group = group
        self.limits = limits
        self.stale_after_s = max(STALE_AFTER_REFRESHES * refresh_s, 1.0)
        self.window_s = RATE_WINDOW * refresh_s
        self.clock = clock
        self.wall = wall
        self.rows: tuple[PartitionLag, ...] = ()
        self.samples: deque[Sample] = deque(maxlen=RATE_WINDOW)
        self.read_at: float | None = None
        self.read_s: float | None = None
        self.measured_at: datetime | None = None
        self.error: str | None = None
        self.oldest_age_s: float | None = None
        self._verdict: Verdict | None = None
        self._decided_at: float | None = None

    def record(self, rows: Sequence[PartitionLag], read_s: float) -> None:
        """Keep a successful reading."""
        now = self.clock()
        self.rows = tuple(rows)
        self.read_at = now
        self.read_s = read_s
        self.measured_at = self.wall()
        self.error = None
        self.samples.append(sample(self.rows, now))

    def record_failure(self, error: str) -> None:
        self.error = error

    def fresh(self) -> bool:
        return self.read_at is not None and self.clock() - self.read_at <= self.stale_after_s

    def total_lag(self) -> int | None:
        return total_lag(self.rows) if self.read_at is not None else None

    def _recent(self) -> list[Sample]:
        since = self.clock() - self.window_s - self.stale_after_s
        return [s for s in self.samples if s.at >= since] if self.fresh() else []

    def drain_rate(self) -> float | None:
        return drain_rate(self._recent())

    def consume_rate(self) -> float | None:
        return consume_rate(self._recent())

    def decide(self, oldest_age_s: float | None) -> Verdict | None:
        """Decide anew (once per refresh); a stale reading counts as no reading."""
        self.oldest_age_s = oldest_age_s
        self._verdict = decide(
            self.total_lag() if self.fresh() else None,
            oldest_age_s,
            drain_estimate(self._recent()),
            self.limits,
            throttled=self._verdict is not None,
        )
        self._decided_at = self.clock()
        return self._verdict

    def verdict(self) -> Verdict | None:
        """The front desk's throttle: the last decision, unless it is stale."""
        if self._decided_at is None or self.clock() - self._decided_at > self.stale_after_s:
            return None
        return self._verdict

    def as_json(self, oldest_age_s: float | None) -> dict[str, Any]:
        """The body of ``GET /lag``."""
        verdict = self.verdict()
        return {
            "group": self.group,
            "partitions": [r.as_dict() for r in self.rows],
            "total_lag": self.total_lag(),
            "by_topic": lag_by_topic(self.rows),
            "drain_rate_per_s": rounded(self.drain_rate()),
            "consume_rate_per_s": rounded(self.consume_rate()),
            "oldest_outstanding_age_s": None if oldest_age_s is None else round(oldest_age_s, 3),
            "measured_at": None if self.measured_at is None else iso(self.measured_at),
            "read_ms": None if self.read_s is None else round(self.read_s * 1000, 1),
            "stale": not self.fresh(),
            "error": self.error,
            "throttling": None if verdict is None else verdict.as_dict(),
            "limits": {
                "max_lag": self.limits.max_lag,
                "max_oldest_age_s": self.limits.max_oldest_age_s,
                "release_ratio": self.limits.release_ratio,
            },
        }


def iso(when: datetime) -> str:
    return when.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def register(rt: Runtime) -> None:
    """Measure the backlog on a timer; serve ``GET /lag``; install the front desk's throttle."""
    app = rt.app
    settings = rt.settings
    registry = rt.metrics.registry
    group = settings.app_id
    consumed = [rt.topic_name(declared) for declared in rt.sources]
    reader = LagReader(settings.kafka_bootstrap, group, consumed)
    backlog = Backlog(
        group,
        Limits(settings.throttle_max_lag, settings.throttle_max_oldest_age_s),
        settings.lag_refresh_s,
    )
    lag_gauge = rt.metrics.consumer_lag
    total_gauge = Gauge(
        "postroom_consumer_lag_total", "Sum of the consumer lag over the consumed topics",
        ["group"], registry=registry,
    )
    drain_gauge = Gauge(
        "postroom_backlog_drain_rate", "Messages per second the total lag fell (negative: grew)",
        ["group"], registry=registry,
    )
    reading_age_gauge = Gauge(
        "postroom_lag_reading_age_seconds", "Seconds since the consumer lag was last read",
        registry=registry,
    )
    throttling_gauge = Gauge(
        "postroom_throttling", "1 while the front desk refuses new orders", registry=registry
    )
    read_failures = Counter(
        "postroom_lag_read_failures", "Readings of the consumer lag that failed", registry=registry
    )
    age_failures = Counter(
        "postroom_oldest_age_failures", "Failed calls for the oldest outstanding age",
        registry=registry,
    )

    def oldest_age() -> float | None:
        source: AgeSource | None = rt.extras.get("oldest_outstanding_age_s")
        if source is None:
            return None
        try:
            return source()
        except Exception:
            age_failures.inc()
            app.log.exception("oldest outstanding age: the source failed")
            return None

    async def refresh_backlog() -> None:
        try:
            rows, read_s = await asyncio.to_thread(reader.read)
        except RetryableError as exc:
            read_failures.inc()
            if backlog.error is None:
                app.log.warning("consumer lag: %s", exc)
            backlog.record_failure(str(exc))
        except Exception as exc:
            read_failures.inc()
            app.log.exception("consumer lag: reading failed")
            backlog.record_failure(repr(exc))
        else:
            if backlog.error is not None:
                app.log.info("consumer lag: read again after: %s", backlog.error)
            backlog.record(rows, read_s)
            for row in rows:
                lag_gauge.labels(group, row.topic, str(row.partition)).set(row.lag)
            total_gauge.labels(group).set(total_lag(rows))
            rate = backlog.drain_rate()
            if rate is not None:
                drain_gauge.labels(group).set(rate)
        verdict = backlog.decide(oldest_age())
        throttling_gauge.set(0 if verdict is None else 1)

    def refresh_metrics() -> None:
        if backlog.read_at is not None:
            reading_age_gauge.set(backlog.clock() - backlog.read_at)
        throttling_gauge.set(0 if backlog.verdict() is None else 1)

    app.timer(settings.lag_refresh_s, name="refresh_backlog")(refresh_backlog)
    rt.extras.setdefault("metrics_refreshers", []).append(refresh_metrics)
    rt.extras["throttle"] = backlog.verdict
    rt.extras["backlog"] = backlog

    @app.page("/lag")
    class Lag(View):  # type: ignore[misc]
        async def get(self, request: Any) -> Any:
            return self.json(backlog.as_json(oldest_age()))
