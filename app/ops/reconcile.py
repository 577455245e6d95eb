"""Reconciliation: on a timer, redo the stage of every overdue request; report the books.

The owners of each request keep it in an outstanding table until it is terminal (see
:mod:`app.ops.outstanding`). Every ``POSTROOM_RECONCILE_INTERVAL_S`` each worker scans its
own partitions of those tables (in chunks, yielding to the event loop) and, for every request
past its deadline that has also made no progress for that long, appends a request to redo
the missing stage with the same ids: a ``RECONCILE`` event for an order (its saga
re-sends the payment, the lines that never reported, or the settlement, and after
``POSTROOM_RECONCILE_MAX_ATTEMPTS`` gives up: ``FAILED``, stock released, money refunded),
a ``RETRY`` step for a transfer (retried with backoff; never given up, because a refund
racing a late credit would create money). The receivers are idempotent, so a redo is safe.

A backlog is slow, not lost, and redoing queued work would only deepen it: while the
consumers are behind (total lag above ``POSTROOM_RECONCILE_PAUSE_LAG``) nothing is
re-dispatched, and an order counts as stalled only once it has also waited longer than orders
lately waited for their next step (the saga's :class:`~app.ops.outstanding.RecentWait`; the
internal topics' packs hide most of a backlog from the lag). A scan reads every outstanding
entry, so the rounds keep to a share of the worker's time (``SCAN_SHARE``): after a long one,
the next waits. The scan's summary (outstanding, overdue, the oldest accepted time) is kept
for ``GET /reconciliation``, the metrics and the throttle, so none of them reads the tables
again.
"""

from __future__ import annotations

import time
from contextlib import aclosing
from typing import Any

import orjson
from faust.web import View
from prometheus_client import Counter, Gauge, Histogram

from app.ops import outstanding as book
from app.orders.logic import reconcile_event
from app.payments.logic import retry_event
from app.runtime import Runtime, now_ms
from app.unit import Effort, TableStore, paced

# The most of the worker's time the rounds may take. A scan reads every outstanding entry, so
# a backlog makes it longer (about 2.5-4 us an entry: 62 ms at 25,000, 0.4 s at 100,000); the
# next round then waits until the last one is this share of the time since it began, so a
# backlog slows the rounds instead of the rounds slowing the backlog's drain.
SCAN_SHARE = 0.05
# The most requests a round looks up to see whether they moved (a state read each): a
# draining backlog keeps many requests overdue but moving, and a fault that stalls many
# has them redone a thousand a round rather than all at once.
READS_PER_ROUND = 1_000


def last_progress_ms(state: dict[str, Any] | None) -> int | None:
    """When a request last moved: the time of its newest event."""
    events = (state or {}).get("events") or []
    return max((int(e["at_ms"]) for e in events), default=None)


async def scan(table: TableStore, now: int, effort: Effort | None = None) -> book.Survey:
    """One pass over a table's local partitions, each entry decoded once. The survey keeps
    the overdue entries under their raw keys (JSON): most scans never need the keys."""
    survey = book.Survey(now)
    loads = orjson.loads
    async for raw_key, raw in paced(table.raw_items(), effort=effort):
        survey.add(raw_key, loads(raw))
    return survey


def summary_of(survey: book.Survey) -> dict[str, Any]:
    """What a scan leaves for the books: the survey's summary and the oldest acceptance."""
    return {**survey.summary(), "oldest_accepted_ms": survey.oldest_accepted_ms}


def register(rt: Runtime) -> None:
    app = rt.app
    settings = rt.settings
    tables = {
        "order": ("outstanding_orders", rt.tables["order_by_id"]),
        "transfer": ("outstanding_transfers", rt.tables["voucher_by_id"]),
    }
    events_out = rt.topics["postroom.inbox"]
    vouchers_out = rt.topics["postroom.vouchers"]
    registry = rt.metrics.registry
    redispatched = Counter("postroom_reconcile_redispatched", "Overdue requests re-dispatched",
                           ["kind"], registry=registry)
    paused = Counter("postroom_reconcile_paused", "Reconciliation rounds skipped while the "
                     "consumers are behind (a backlog is slow, not lost)", registry=registry)
    outstanding_gauge = Gauge("postroom_outstanding", "Requests not yet terminal", ["kind"],
                              registry=registry)
    overdue_gauge = Gauge("postroom_overdue", "Outstanding requests past their deadline",
                          ["kind"], registry=registry)
    oldest_gauge = Gauge("postroom_oldest_outstanding_age_seconds",
                         "Age of the oldest outstanding request", registry=registry)
    scan_seconds = Histogram(
        "postroom_reconcile_scan_seconds", "The worker's time one scan of the outstanding "
        "tables took (the turns it gave the other tasks not counted)", registry=registry,
        buckets=(0.001, 0.005, 0.02, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0))
    failed_gauge = Gauge("postroom_reconcile_failed", "Orders given up by reconciliation",
                         registry=registry)
    recently: dict[str, float] = {}  # "<id>:<attempt>" -> when sent; one send per attempt
    # When this worker last settled into its partitions (start or rebalance). Time the worker
    # was down or rebalancing is not time a request stalled: after a restart its backlog gets
    # one full deadline to show progress before anything is re-dispatched.
    last: dict[str, Any] = {"summaries": {}, "scanned_at_ms": None, "settled_ms": None,
                            "next_scan": 0.0}

    def oldest_outstanding_age_s() -> float | None:
        oldest = [s["oldest_accepted_ms"] for s in last["summaries"].values()
                  if s.get("oldest_accepted_ms") is not None]
        return max(0.0, (now_ms() - min(oldest)) / 1000) if oldest else None

    def books() -> dict[str, Any]:
        per_kind = {kind: {k: v for k, v in s.items() if k != "oldest_accepted_ms"}
                    for kind, s in last["summaries"].items()}
        failed = rt.metrics.orders_terminal.labels("FAILED")._value.get()
        return {
            "outstanding": sum(s["outstanding"] for s in per_kind.values()),
            "overdue": sum(s["overdue"] for s in per_kind.values()),
            "redispatched": {k: int(redispatched.labels(k)._value.get()) for k in tables},
            "failed": int(failed),
            "oldest_outstanding_age_s": oldest_outstanding_age_s(),
            # the longest an order waited lately for its next step; an overdue order is
            # re-dispatched only once it has also stalled for longer than this
            "order_wait_s": queued_ms("order", now_ms()) / 1000,
            "by_kind": per_kind,
            "scanned_at_ms": last["scanned_at_ms"],
            "settings": {
                "interval_s": settings.reconcile_interval_s,
                "deadline_s": settings.reconcile_deadline_s,
                "backoff": settings.reconcile_backoff,
                "max_attempts": settings.reconcile_max_attempts,
                "pause_lag": settings.reconcile_pause_lag,
            },
        }

    def refresh_metrics() -> None:
        report = books()
        for kind, s in report["by_kind"].items():
            outstanding_gauge.labels(kind).set(s["outstanding"])
            overdue_gauge.labels(kind).set(s["overdue"])
        oldest_gauge.set(report["oldest_outstanding_age_s"] or 0)
        failed_gauge.set(report["failed"])

    def queued_ms(kind: str, now: int) -> int:
        """How long an order may wait for its next step before it counts as stalled, beyond
        its deadline: the longest any order waited for one lately (0 for transfers)."""
        waits: book.RecentWait | None = rt.extras.get("order_waits")
        return waits.longest(now) if kind == "order" and waits is not None else 0

    def behind() -> bool:
        backlog = rt.extras.get("backlog")
        if backlog is None or not backlog.fresh():
            return False
        lag = backlog.total_lag()
        return lag is not None and lag > settings.reconcile_pause_lag

    rt.extras["oldest_outstanding_age_s"] = oldest_outstanding_age_s
    rt.extras.setdefault("metrics_refreshers", []).append(refresh_metrics)

    async def redispatch(kind: str, key: str, attempt: int, now: int) -> None:
        if kind == "order":
            await events_out.send(key=key.encode(), value=reconcile_event(key, attempt, now))
        else:
            retry = retry_event(key, attempt, "reconciler", now)
            await vouchers_out.send(key=key.encode(), value=retry)

    async def redo_stalled(kind: str, survey: book.Survey, now: int, clock: float,
                           effort: Effort) -> None:
        """Re-dispatch the overdue requests of one kind that have stalled, the most overdue
        first, looking up at most ``READS_PER_ROUND`` of them."""
        states = tables[kind][1]
        queued = queued_ms(kind, now)
        reads = 0
        # closed on leaving, so that a round stopped early counts all its effort
        async with aclosing(paced(survey.overdue(), effort=effort)) as overdue:
            async for raw_key, entry in overdue:
                if book.due_ms(entry, queued) > now:
                    continue  # queued behind the others, as far as anyone can tell
                key = str(orjson.loads(raw_key))
                attempt = int(entry.get("attempts", 0)) + 1
                sent = f"{key}:{attempt}"
                if sent in recently:
                    continue
                if reads == READS_PER_ROUND:
                    break  # the rest next round
                reads += 1
                progress = max(last_progress_ms(states.get(key)) or 0, last["settled_ms"])
                if book.stalled(entry, progress, now, settings.reconcile_deadline_s,
                                settings.reconcile_backoff, queued):
                    await redispatch(kind, key, attempt, now)
                    recently[sent] = clock
                    redispatched.labels(kind).inc()

    @app.timer(settings.reconcile_interval_s)
    async def reconcile_overdue() -> None:
        """Ask the owner of every stalled, overdue request to redo its stage."""
        if app.rebalancing:
            last["settled_ms"] = None
            return
        now = now_ms()
        if last["settled_ms"] is None:
            last["settled_ms"] = now
        clock = time.monotonic()
        if clock < last["next_scan"]:
            return  # the last round was long: the rounds keep to their share of the worker
        surveys: dict[str, book.Survey] = {}
        effort = Effort()
        for kind, (outstanding, _) in tables.items():
            surveys[kind] = await scan(rt.store(outstanding), now, effort)
            last["summaries"][kind] = summary_of(surveys[kind])
        last["scanned_at_ms"] = now
        scan_seconds.observe(effort.seconds)
        if behind():
            paused.inc()
        else:
            for stale in [k for k, t in recently.items() if clock - t > 600]:
                del recently[stale]
            for kind, survey in surveys.items():
                await redo_stalled(kind, survey, now, clock, effort)
        last["next_scan"] = clock + effort.seconds / SCAN_SHARE

    @app.page("/reconciliation")
    class Reconciliation(View):  # type: ignore[misc]
        async def get(self, request: Any) -> Any:
            return self.json(books())
