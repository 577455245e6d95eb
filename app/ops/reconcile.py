"""Reconciliation: on a timer, redo the stage of every overdue request; report the books.

The owners of each request keep it in an outstanding table until it is terminal (see
:mod:`app.ops.outstanding`). Every ``POSTROOM_RECONCILE_INTERVAL_S`` each worker scans its
own partitions of those tables and, for every request past its deadline, appends a request
to redo the missing stage with the same ids: a ``RECONCILE`` event for an order (its saga
re-sends the payment, the lines that never reported, or the settlement, and after
``POSTROOM_RECONCILE_MAX_ATTEMPTS`` gives up: ``FAILED``, stock released, money refunded),
a ``RETRY`` step for a transfer (retried with backoff; never given up, because a refund
racing a late credit would create money). The receivers are idempotent, so a redo is safe.
"""

from __future__ import annotations

import time
from typing import Any

from faust.web import View
from prometheus_client import Counter, Gauge

from app.ops import outstanding as book
from app.orders.logic import reconcile_event
from app.payments.logic import retry_event
from app.runtime import Runtime, now_ms


def _key(raw: Any) -> str:
    return raw.decode() if isinstance(raw, bytes) else str(raw)


def register(rt: Runtime) -> None:
    app = rt.app
    settings = rt.settings
    orders = rt.tables["outstanding_orders"]
    transfers = rt.tables["outstanding_transfers"]
    events_out = rt.topics["orders.events"]
    vouchers_out = rt.topics["postroom.vouchers"]
    registry = rt.metrics.registry
    redispatched = Counter("postroom_reconcile_redispatched", "Overdue requests re-dispatched",
                           ["kind"], registry=registry)
    outstanding_gauge = Gauge("postroom_outstanding", "Requests not yet terminal", ["kind"],
                              registry=registry)
    overdue_gauge = Gauge("postroom_overdue", "Outstanding requests past their deadline",
                          ["kind"], registry=registry)
    oldest_gauge = Gauge("postroom_oldest_outstanding_age_seconds",
                         "Age of the oldest outstanding request", registry=registry)
    failed_gauge = Gauge("postroom_reconcile_failed", "Orders given up by reconciliation",
                         registry=registry)
    recently: dict[str, float] = {}  # "<id>:<attempt>" -> when sent; one send per attempt

    def books() -> dict[str, Any]:
        now = now_ms()
        per_kind = {
            "orders": book.summary(orders.values(), now),
            "transfers": book.summary(transfers.values(), now),
        }
        ages = [s["oldest_outstanding_age_s"] for s in per_kind.values()
                if s["oldest_outstanding_age_s"] is not None]
        failed = rt.metrics.orders_terminal.labels("FAILED")._value.get()
        return {
            "outstanding": sum(s["outstanding"] for s in per_kind.values()),
            "overdue": sum(s["overdue"] for s in per_kind.values()),
            "redispatched": {k: int(redispatched.labels(k)._value.get())
                             for k in ("order", "transfer")},
            "failed": int(failed),
            "oldest_outstanding_age_s": max(ages) if ages else None,
            "by_kind": per_kind,
            "settings": {
                "interval_s": settings.reconcile_interval_s,
                "deadline_s": settings.reconcile_deadline_s,
                "backoff": settings.reconcile_backoff,
                "max_attempts": settings.reconcile_max_attempts,
            },
        }

    def refresh_metrics() -> None:
        report = books()
        for kind, s in report["by_kind"].items():
            outstanding_gauge.labels(kind).set(s["outstanding"])
            overdue_gauge.labels(kind).set(s["overdue"])
        oldest_gauge.set(report["oldest_outstanding_age_s"] or 0)
        failed_gauge.set(report["failed"])

    def oldest_outstanding_age_s() -> float | None:
        ages = [book.summary(t.values(), now_ms())["oldest_outstanding_age_s"]
                for t in (orders, transfers)]
        known = [a for a in ages if a is not None]
        return max(known) if known else None

    rt.extras["oldest_outstanding_age_s"] = oldest_outstanding_age_s
    rt.extras.setdefault("metrics_refreshers", []).append(refresh_metrics)

    @app.timer(settings.reconcile_interval_s)
    async def reconcile_overdue() -> None:
        """Ask the owner of every overdue request to redo its stage."""
        if app.rebalancing:
            return
        now = now_ms()
        clock = time.monotonic()
        for stale in [k for k, t in recently.items() if clock - t > 600]:
            del recently[stale]
        for raw, entry in book.overdue(list(orders.items()), now):
            order_id, attempt = _key(raw), int(entry.get("attempts", 0)) + 1
            if f"{order_id}:{attempt}" in recently:
                continue
            await events_out.send(key=order_id.encode(),
                                  value=reconcile_event(order_id, attempt, now))
            recently[f"{order_id}:{attempt}"] = clock
            redispatched.labels("order").inc()
        for raw, entry in book.overdue(list(transfers.items()), now):
            voucher_id, attempt = _key(raw), int(entry.get("attempts", 0)) + 1
            if f"{voucher_id}:{attempt}" in recently:
                continue
            retry = retry_event(voucher_id, attempt, "reconciler", now)
            await vouchers_out.send(key=voucher_id.encode(), value=retry)
            recently[f"{voucher_id}:{attempt}"] = clock
            redispatched.labels("transfer").inc()

    @app.page("/reconciliation")
    class Reconciliation(View):  # type: ignore[misc]
        async def get(self, request: Any) -> Any:
            return self.json(books())
