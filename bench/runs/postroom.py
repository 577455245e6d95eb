"""Runs 3 and 4: Postroom end to end, merging on and off at full speed, and at half load.

The worker is ``python -m app worker`` on its own topic prefix (``tests.support.Worker``);
orders go to ``orders.requests`` with confluent-kafka and the terminal events are read from
``orders.events``. Stock is set with ``PUT /inventory/{sku}`` and checked with ``GET``.
"""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from app.settings import Settings
from bench.measure import avro_progress
from bench.runs.common import Context, RunResult, System, run_pipeline, stock_checks
from tests.support import Worker, call, samples


def put_all(url: str, method: str, path: str, bodies: dict[str, Any]) -> None:
    """One call per key (8 at a time); every one must answer 202."""

    def one(key: str) -> int:
        return call(method, url + path.format(key), bodies[key]).status

    with ThreadPoolExecutor(8) as pool:
        statuses = list(pool.map(one, bodies))
    bad = [k for k, st in zip(bodies, statuses, strict=True) if st != 202]
    if bad:
        raise RuntimeError(f"{method} {path} refused for {len(bad)} keys, e.g. {bad[:3]}")


def wait_all(ready: Callable[[str], bool], keys: Iterable[str], what: str,
             timeout: float = 120.0) -> None:
    """Poll until ``ready(key)`` for every key."""
    waiting = set(keys)
    deadline = time.monotonic() + timeout
    while waiting and time.monotonic() < deadline:
        with ThreadPoolExecutor(8) as pool:
            done = dict(zip(waiting, pool.map(ready, waiting), strict=True))
        waiting = {k for k, ok in done.items() if not ok}
        if waiting:
            time.sleep(0.3)
    if waiting:
        raise RuntimeError(f"{len(waiting)} {what} never showed, e.g. {sorted(waiting)[:3]}")


# The worker's unit counters (see app.ops.metrics): sample name and the labels it must carry
# -> the name the bench reports their sum over the agents under.
UNIT_SAMPLES: dict[tuple[str, tuple[tuple[str, str], ...]], str] = {
    ("postroom_units_total", ()): "units",
    ("postroom_unit_records_sum", ()): "records handled",
    ("postroom_unit_produced_records_total", (("kind", "send"),)): "messages sent",
    ("postroom_unit_produced_records_total", (("kind", "changelog"),)): "changelog records",
}


def unit_totals(text: str) -> dict[str, float]:
    """Sum each of :data:`UNIT_SAMPLES` over the agents in a Prometheus text exposition."""
    return {label: sum(samples(text, name, **dict(labels)))
            for (name, labels), label in UNIT_SAMPLES.items()}


class PostroomSystem:
    """One Postroom worker with a given merge window."""

    decode = staticmethod(avro_progress)

    def __init__(self, ctx: Context, name: str, max_lines: int, wait_ms: int,
                 unit_max: int | None = None) -> None:
        env = {"POSTROOM_MERGE_MAX_LINES": str(max_lines),
               "POSTROOM_MERGE_MAX_WAIT_MS": str(wait_ms)}
        if unit_max is not None:
            env["POSTROOM_BATCH_MAX"] = str(unit_max)
        self.worker = Worker(
            ctx.bootstrap,
            ctx.rundir(name),
            env_extra=env,
            prefix=ctx.prefix(name),
        )
        self.requests_topic = self.worker.topic("orders.requests")
        self.events_topic = self.worker.topic("orders.events")
        self.pid = 0
        self.funds: dict[str, int] = {}
        self.payments = False

    def start(self, stock: dict[str, int], prices: dict[str, int],
              funds: dict[str, int]) -> None:
        self.worker.start(timeout=180)
        assert self.worker.proc is not None
        self.pid = self.worker.proc.pid
        self.funds = funds
        put_all(self.url, "PUT", "/inventory/{}", {s: {"on_hand": stock[s], "price": prices[s]}
                                                    for s in stock})
        wait_all(lambda s: (v := self._get(f"/inventory/{s}")) is not None
                 and v["on_hand"] == stock[s] and v["price"] == prices[s], stock, "stock")
        # Orders are paid from the customer's account (when the service takes payments).
        self.payments = call("GET", f"{self.url}/ledger").status == 200
        if self.payments:
            put_all(self.url, "POST", "/accounts/{}/deposits",
                    {c: {"amount": amount} for c, amount in funds.items()})
            wait_all(lambda c: (v := self._get(f"/accounts/{c}")) is not None
                     and v["balance"] == funds[c], funds, "deposits")

    @property
    def url(self) -> str:
        return self.worker.url

    def unit_counters(self) -> dict[str, float]:
        """The worker's unit-of-work counters, summed over its agents (``GET /metrics``)."""
        text = call("GET", self.url + "/metrics").body
        return unit_totals(text if isinstance(text, str) else "")

    def _get(self, path: str) -> Any:
        reply = call("GET", self.url + path)
        return reply.body if reply.status == 200 else None

    def verify(self, stock: dict[str, int], prices: dict[str, int],
               billed: int) -> list[tuple[str, bool, str]]:
        with ThreadPoolExecutor(8) as pool:
            got = dict(zip(stock, pool.map(lambda s: self._get(f"/inventory/{s}"), stock),
                           strict=True))
        views = {s: (v["on_hand"], v["reserved"]) if v else (-1, -1) for s, v in got.items()}
        checks = stock_checks(views, stock, prices, billed)
        if self.payments:
            ledger = self._get("/ledger") or {}
            merchant = (self._get("/accounts/merchant") or {}).get("balance", 0)
            deposited = sum(self.funds.values())
            checks += [
                ("money conserved (balances + vouchers == deposits)",
                 ledger.get("balances", 0) + ledger.get("held_in_vouchers", 0) == deposited
                 and ledger.get("deposited") == deposited and not ledger.get("negative_balances"),
                 f"{ledger} vs deposits {deposited}"),
                ("merchant credited what the orders were charged", merchant == billed,
                 f"merchant {merchant} vs orders {billed}"),
            ]
        return checks

    def stop(self) -> None:
        self.worker.stop()


def profiler(ctx: Context, name: str, seconds: int = 20) -> Callable[[System], None] | None:
    """A ``during`` hook that records the worker with py-spy (with ``--profile``)."""
    if not ctx.profile:
        return None
    spy = Path(sys.executable).with_name("py-spy")
    if not spy.exists():
        print("bench: --profile needs py-spy in the venv (pip install py-spy)", file=sys.stderr)
        return None

    def record(system: System) -> None:
        # Collapsed stacks (flamegraph.pl / speedscope read them); the report folds them.
        # Only the thread holding the interpreter lock is sampled: threads waiting for it
        # would otherwise show as busy in whatever call they are about to return from.
        out = ctx.out / f"profile-{name}.txt"
        out.unlink(missing_ok=True)
        subprocess.Popen(
            [str(spy), "record", "--pid", str(system.pid), "--duration", str(seconds),
             "--rate", "200", "--format", "raw", "--output", str(out), "--nonblocking",
             "--gil"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )

    return record


def batching(merging: bool) -> tuple[int, int | None]:
    """Lines per fulfillment batch, and records per unit of work (None: the default).
    Merging on is the service's own defaults."""
    return (Settings.merge_max_lines, None) if merging else (1, 1)


def run_full(ctx: Context, name: str, merging: bool) -> RunResult:
    """Merging on: the defaults. Merging off: nothing is batched. Every fulfillment batch
    holds one line (``POSTROOM_MERGE_MAX_LINES=1``) and every unit of work one message
    (``POSTROOM_BATCH_MAX=1``), so each message's reads, writes and sends are made durable
    on their own instead of once per batch."""
    title = "Postroom, merging on" if merging else "Postroom, merging off"
    result = RunResult(name, title)
    lines, unit_max = batching(merging)
    system = PostroomSystem(ctx, name, lines, ctx.merge_wait_ms, unit_max)
    orders = ctx.workload.orders(ctx.orders if merging else ctx.nomerge_orders)
    result.extra["merge_max_lines"] = lines
    result.extra["merge_max_wait_ms"] = ctx.merge_wait_ms
    if unit_max is not None:
        result.extra["batch_max"] = unit_max
    return profiled(ctx, name, result,
                    lambda during: run_pipeline(ctx, result, system, orders, during=during))


def profiled(ctx: Context, name: str, result: RunResult,
             run: Callable[[Callable[[System], None] | None], RunResult]) -> RunResult:
    """Run a pipeline, recording its worker with py-spy when ``--profile`` is given."""
    profile = ctx.out / f"profile-{name}.txt"
    profile.unlink(missing_ok=True)
    result = run(profiler(ctx, name))
    if ctx.profile and profile.exists():
        from bench.report import fold_profile, profile_areas

        result.extra["profile_file"] = str(profile)
        result.extra["profile_top"] = fold_profile(profile, 15)
        result.extra["profile_areas"] = profile_areas(profile)
    return result


def run_half(ctx: Context, name: str = "half") -> RunResult:
    result = RunResult(name, "Postroom at half load, merging on")
    full = ctx.results.get("merge")
    rate = ctx.half_rate or (full.rate / 2 if full and full.ok and full.rate else 0)
    if not rate:
        result.error = "no throughput to halve: run 'merge' first or pass --half-rate"
        return result
    n = max(1, int(rate * ctx.duration))
    orders = ctx.workload.orders(n)
    settle = ctx.workload.orders(int(rate * ctx.settle_s), tag="settle")
    lines, _ = batching(True)
    system = PostroomSystem(ctx, name, lines, ctx.merge_wait_ms)
    result.extra["merge_max_lines"] = lines
    result.extra["merge_max_wait_ms"] = ctx.merge_wait_ms
    return profiled(ctx, name, result,
                    lambda during: run_pipeline(ctx, result, system, orders, rate=rate,
                                                during=during, settle=settle))
