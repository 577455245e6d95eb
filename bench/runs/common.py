"""The harness every pipeline run shares: start a system, warm it, load it, check it.

A run goes: start the system under test on fresh topics, stock every sku, produce a few
warm-up orders and wait for them (that is also the readiness check), then produce the
measured orders (at full speed or at a fixed rate), wait until every order is terminal,
check stock and money, stop the system. CPU and RSS are sampled the whole time.
"""

from __future__ import annotations

import sys
import threading
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from app.settings import Settings
from bench.measure import (
    Decoder,
    EventCollector,
    OrderProducer,
    Sampler,
    latency_and_rate,
    latency_timeline,
    memory_growth,
    percentiles,
    stage_latencies,
    stamp_on_append,
)
from bench.workload import Order, Workload, lines_of, spend


@dataclass
class Context:
    """What the runs of one ``python -m bench`` share."""

    bootstrap: str
    workload: Workload
    orders: int
    duration: float
    sync_orders: int
    timeout: float
    warmup: int
    workdir: Path
    out: Path
    broker_pid: int | None
    # The command line's defaults (bench/__main__.py reads them from here)
    merge_wait_ms: int = Settings.merge_max_wait_ms  # the service's default window
    nomerge_orders: int = 500
    frontdesk_orders: int = 2_000
    frontdesk_seconds: float = 20.0
    half_rate: float | None = None
    settle_s: float = 15.0  # paced orders before the half-load run's measured ones
    profile: bool = False
    results: dict[str, RunResult] = field(default_factory=dict)
    prefixes: list[str] = field(default_factory=list)
    cleanups: list[Callable[[], None]] = field(default_factory=list)
    _rundirs: dict[str, int] = field(default_factory=dict)

    def rundir(self, name: str) -> Path:
        """A fresh working directory for one run of ``name`` (rounds do not share state)."""
        self._rundirs[name] = self._rundirs.get(name, 0) + 1
        n = self._rundirs[name]
        return self.workdir / (name if n == 1 else f"{name}-{n}")

    def prefix(self, name: str) -> str:
        """A fresh topic prefix for one run (remembered, to clean an external cluster)."""
        prefix = f"bench-{name}-{uuid.uuid4().hex[:6]}-"
        self.prefixes.append(prefix)
        return prefix


@dataclass
class RunResult:
    name: str
    title: str
    unit: str = "orders/s"
    orders: int = 0
    rate: float = 0.0  # orders (or records) per second sustained
    steady_rate: float = 0.0
    offered_rate: float | None = None
    latency_ms: dict[str, float] = field(default_factory=dict)
    process: dict[str, Any] = field(default_factory=dict)  # the process under test
    broker: dict[str, Any] = field(default_factory=dict)
    checks: list[tuple[str, bool, str]] = field(default_factory=list)
    extra: dict[str, Any] = field(default_factory=dict)
    error: str = ""
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return not self.error and all(ok for _, ok, _ in self.checks)

    def check(self, what: str, ok: bool, detail: str = "") -> None:
        self.checks.append((what, ok, detail))


class System(Protocol):
    """A pipeline under test: Postroom, the plain chain, the Quix peer or the sync baseline."""

    requests_topic: str
    events_topic: str
    decode: Decoder
    pid: int

    def start(self, stock: dict[str, int], prices: dict[str, int],
              funds: dict[str, int]) -> None: ...

    def verify(self, stock: dict[str, int], prices: dict[str, int],
               billed: int) -> list[tuple[str, bool, str]]:
        """Checks at the quiet point after the run; ``billed`` sums the terminal amounts."""
        ...

    def stop(self) -> None: ...


def stock_checks(views: dict[str, tuple[int, int] | None], stock: dict[str, int],
                 prices: dict[str, int], billed: int) -> list[tuple[str, bool, str]]:
    """Stock conserved per sku, and the value of reserved stock equal to what was billed.

    ``views`` maps a sku to its final (on_hand, reserved); None for a sku never seen.
    """
    problems: list[str] = []
    value = 0
    for sku, stocked in stock.items():
        on_hand, reserved = views.get(sku) or (stocked, 0)
        if on_hand + reserved != stocked or on_hand < 0 or reserved < 0:
            problems.append(f"{sku}: {on_hand} + {reserved} != {stocked}")
        value += reserved * prices[sku]
    return [
        ("stock conserved (on_hand + reserved == stocked)", not problems,
         "; ".join(problems[:5])),
        ("terminal amounts == value of reserved stock", billed == value,
         f"orders {billed} vs stock {value}"),
    ]


class Progress:
    """One status line per run: rewritten in place on a terminal, every 5 s otherwise."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.tty = sys.stderr.isatty()
        self.last = 0.0
        self.started = time.monotonic()

    def say(self, text: str, force: bool = False) -> None:
        now = time.monotonic()
        line = f"  [{self.name} {now - self.started:6.1f}s] {text}"
        if self.tty:
            sys.stderr.write("\r\033[K" + line)
            sys.stderr.flush()
        elif force or now - self.last >= 5:
            print(line, file=sys.stderr, flush=True)
            self.last = now

    def done(self) -> None:
        if self.tty:
            sys.stderr.write("\n")
            sys.stderr.flush()

    def counter(self, what: str) -> Callable[[int, int], None]:
        t0 = time.monotonic()

        def report(done: int, total: int) -> None:
            rate = done / max(time.monotonic() - t0, 1e-9)
            self.say(f"{what} {done}/{total} terminal ({rate:,.0f}/s)")

        return report


def run_pipeline(ctx: Context, result: RunResult, system: System, orders: Sequence[Order],
                 rate: float | None = None,
                 during: Callable[[System], None] | None = None,
                 settle: Sequence[Order] = ()) -> RunResult:
    """Warm up, load and check ``system``; fill in ``result``. Always stops the system.

    With a ``rate``, the ``settle`` orders go first at that rate, in the same paced stream,
    and are checked but not measured: the run's figures start at its first measured order,
    once the system has settled at the rate (a broker's JIT compilers take most of a core in
    the first seconds of a new load; see bench/README.md)."""
    progress = Progress(result.name)
    warm = ctx.workload.orders(ctx.warmup, tag="warm")
    every = [*warm, *settle, *orders]
    stock = ctx.workload.stock_for(every)
    prices = ctx.workload.catalogue()
    funds = {c: amount + 10_000 for c, amount in spend(every, prices).items()}
    collector: EventCollector | None = None
    sampler: Sampler | None = None
    halt = threading.Event()  # stops a paced producer on the way out
    started = time.monotonic()
    try:
        progress.say("starting", force=True)
        ctx.cleanups.append(system.stop)  # stopped at the end of the bench whatever happens
        system.start(stock, prices, funds)
        try:
            stamp_on_append(ctx.bootstrap, system.events_topic)
        except Exception as exc:  # e.g. a cluster that refuses config changes to this user
            result.extra["clock"] = "read"
            progress.say(f"the events topic keeps its producers' timestamps ({exc}); latency "
                         "ends when the bench reads the terminal event", force=True)
        collector = EventCollector(ctx.bootstrap, system.events_topic, system.decode)
        collector.start()
        producer = OrderProducer(ctx.bootstrap, system.requests_topic)
        progress.say(f"warm-up: {len(warm)} orders", force=True)
        producer.produce_all(warm)
        missing = collector.wait_for([o["order_id"] for o in warm], timeout=180, stall=120)
        if missing:
            result.error = f"not ready: {len(missing)} warm-up orders never finished"
            return result
        sampler = Sampler({"process": system.pid, "broker": ctx.broker_pid or 0})
        sampler.start()
        time.sleep(1.0)  # a baseline sample before the load
        settled = [o["order_id"] for o in settle]
        paced = progress.counter("paced")  # its rate counts from the first paced order
        # One paced stream, the settling orders first (a gap between them would unsettle it)
        feeder = threading.Thread(target=producer.produce_paced,
                                  args=([*settle, *orders], rate, halt), daemon=True)
        if rate and settle:
            progress.say(f"settling: {len(settle)} orders at {rate:,.0f}/s first, not measured",
                         force=True)
            feeder.start()
            time.sleep(len(settle) / rate)  # the measured orders begin about now
        counters = getattr(system, "unit_counters", None)  # Postroom's units of work
        before = counters() if counters is not None else None
        t0 = time.time()
        ids = [o["order_id"] for o in orders]
        if rate:
            progress.say(f"producing {len(orders)} orders at {rate:,.0f}/s", force=True)
            if feeder.ident is None:  # not started for settling
                feeder.start()
            if during is not None:
                during(system)
            timeout = len(orders) / rate + ctx.timeout
            missing = collector.wait_for([*settled, *ids], timeout=timeout, progress=paced)
            feeder.join(5)
        else:
            progress.say(f"producing {len(orders)} orders at full speed", force=True)
            producer.produce_all(orders)
            if during is not None:
                during(system)
            missing = collector.wait_for(ids, timeout=ctx.timeout, progress=progress.counter("full"))
        t1 = time.time()
        if collector.error is not None:
            raise collector.error
        ends = [collector.terminal[o][0] for o in ids if o in collector.terminal]
        t_end = max(ends) if ends else t1
        sampler.stop()
        latency, rates = latency_and_rate(producer.sent, collector, ids)
        result.orders = len(orders)
        result.rate = rates["orders_per_s"]
        result.steady_rate = rates["steady_orders_per_s"]
        result.offered_rate = rate
        result.latency_ms = latency
        if settled:  # what the settling orders saw, for the record (not in the figures)
            early, _ = latency_and_rate(producer.sent, collector, settled)
            result.extra["settle"] = {"orders": len(settled),
                                      "seconds": round(len(settled) / (rate or 1), 1),
                                      **{k: round(v, 1) for k, v in early.items()}}
        lags = [collector.read_lag_ms[o] for o in ids if o in collector.read_lag_ms]
        if lags:  # how late the bench read what it measured (see stamp_on_append)
            result.extra["read_lag_ms"] = {k: round(v, 1) for k, v in percentiles(lags).items()}
        result.process = sampler.summary("process", t0, t_end, len(orders))
        result.broker = sampler.summary("broker", t0, t_end, len(orders))
        if counters is not None and before is not None and not missing:
            after = counters()
            result.extra["per_order"] = {k: round((after[k] - before[k]) / len(orders), 2)
                                         for k in before}
        series = result.process.get("rss_series") or []
        growth = memory_growth(series)
        result.extra.update({
            "lines": lines_of(orders),
            "lines_per_order": round(lines_of(orders) / max(len(orders), 1), 2),
            "duplicate_terminal_events": collector.duplicates,
            "events_seen": collector.events,
            "rss_growth": None if growth is None else round(growth, 4),
            "stages_ms": {kind: {q: round(v, 1) for q, v in pct.items() if q in ("p50", "p99")}
                          for kind, pct in stage_latencies(producer.sent, collector,
                                                           ids).items()},
            "produce_failures": producer.failed,
            "latency_timeline": latency_timeline(producer.sent, collector, ids),
            "load_timeline": sampler.load_timeline(
                min((producer.sent[o] for o in ids if o in producer.sent), default=t0), t_end),
        })
        # --- correctness: every order terminal, stock conserved, money matches stock
        result.check("every order terminal", not missing,
                     f"{len(missing)} of {len(ids) + len(settled)} missing"
                     + (f", e.g. {missing[:3]}" if missing else ""))
        result.check("no undecodable event", collector.undecodable == 0,
                     f"{collector.undecodable} undecodable")
        result.check("orders produced", producer.failed == 0, f"{producer.failed} failed")
        if not missing:
            billed = sum(collector.terminal[o["order_id"]][2] for o in every
                         if o["order_id"] in collector.terminal)
            for what, ok, detail in system.verify(stock, prices, billed):
                result.check(what, ok, detail)
        progress.say(f"{result.rate:,.0f} orders/s, p99 {latency['p99']:.0f} ms", force=True)
        return result
    except Exception as exc:
        result.error = f"{type(exc).__name__}: {exc}"
        return result
    finally:
        result.seconds = time.monotonic() - started
        stop_all([halt.set, sampler.stop if sampler else None,
                  collector.stop if collector else None, system.stop, progress.done])


def stop_all(steps: Sequence[Callable[[], None] | None]) -> None:
    """Run every clean-up step even if one fails (the first failure is reported)."""
    failure: BaseException | None = None
    for step in steps:
        if step is None:
            continue
        try:
            step()
        except BaseException as exc:
            failure = failure or exc
    if failure is not None:
        print(f"bench: clean-up: {type(failure).__name__}: {failure}", file=sys.stderr)
