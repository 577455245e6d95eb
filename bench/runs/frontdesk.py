"""Run 7: the front desk, ``POST /orders`` on loopback under a bounded, closed-loop load.

The load generator is ``wrk`` (Debian package ``wrk``) when it is on PATH, else a small
asyncio client: 16 requests in flight at most, until ``--frontdesk-orders`` answers or
``--frontdesk-seconds`` seconds (20), whichever comes first.
Bodies are the workload's orders. The answers' rate and latency are the numbers; then every
order that reached ``orders.requests`` must reach a terminal event, and stock and money must
be conserved, as in the other runs.
"""

from __future__ import annotations

import asyncio
import re
import shutil
import subprocess
import time
from pathlib import Path
from typing import Any

import orjson

from bench.measure import EventCollector, Sampler, percentiles
from bench.runs.common import Context, Progress, RunResult, stop_all
from bench.runs.postroom import PostroomSystem

CONNECTIONS = 16
BODIES = 2_000

LUA = """\
local bodies = {}
local n = 0
for line in io.lines("%s") do n = n + 1; bodies[n] = line end
local i = 0
local seen = 0
local limit = %d
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
request = function()
  i = i %% n + 1
  return wrk.format(nil, "/orders", nil, bodies[i])
end
response = function(status, headers, body)
  seen = seen + 1
  if seen >= limit then wrk.thread:stop() end
end
"""


def _ms(text: str) -> float:
    m = re.fullmatch(r"([\d.]+)(us|ms|s|m)", text.strip())
    if not m:
        return 0.0
    value, unit = float(m.group(1)), m.group(2)
    return value * {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60_000.0}[unit]


def with_wrk(wrk: str, url: str, bodies: Path, seconds: float, limit: int, work: Path
             ) -> dict[str, Any]:
    script = work / "post.lua"
    script.write_text(LUA % (bodies, limit))
    out = subprocess.run(
        [wrk, "-t1", f"-c{CONNECTIONS}", f"-d{int(seconds)}s", "--timeout", "10s", "--latency",
         "-s", str(script), url],
        capture_output=True, text=True, timeout=seconds + 60, check=False,
    ).stdout
    (work / "wrk.txt").write_text(out)
    lat: dict[str, float] = {}
    for q, key in (("50%", "p50"), ("90%", "p90"), ("99%", "p99")):
        m = re.search(rf"^\s+{re.escape(q)}\s+(\S+)", out, re.M)
        if m:
            lat[key] = _ms(m.group(1))
    m = re.search(r"Latency\s+(\S+)\s+(\S+)\s+(\S+)", out)
    if m:
        lat["mean"], lat["max"] = _ms(m.group(1)), _ms(m.group(3))
    total = re.search(r"(\d+) requests in", out)
    bad = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    errors = re.search(r"Socket errors: (.*)", out)
    rps = re.search(r"Requests/sec:\s+([\d.]+)", out)
    n = int(total.group(1)) if total else 0
    return {"tool": "wrk", "requests": n, "non_2xx": int(bad.group(1)) if bad else 0,
            "socket_errors": errors.group(1) if errors else "", "rps": float(rps.group(1))
            if rps else 0.0, "latency_ms": lat}


def with_asyncio(url: str, bodies: list[bytes], seconds: float, limit: int) -> dict[str, Any]:
    import aiohttp

    latencies: list[float] = []
    statuses: dict[int, int] = {}

    async def client(session: aiohttp.ClientSession, start: int, stop_at: float) -> None:
        i = start
        while time.monotonic() < stop_at and sum(statuses.values()) < limit:
            body = bodies[i % len(bodies)]
            i += CONNECTIONS
            t = time.perf_counter()
            async with session.post(f"{url}/orders", data=body,
                                    headers={"Content-Type": "application/json"}) as resp:
                await resp.read()
                statuses[resp.status] = statuses.get(resp.status, 0) + 1
            latencies.append((time.perf_counter() - t) * 1000)

    async def main() -> float:
        stop_at = time.monotonic() + seconds
        t0 = time.monotonic()
        timeout = aiohttp.ClientTimeout(total=10)
        async with aiohttp.ClientSession(timeout=timeout) as session:
            await asyncio.gather(*(client(session, i, stop_at) for i in range(CONNECTIONS)))
        return time.monotonic() - t0

    elapsed = asyncio.run(main())
    n = sum(statuses.values())
    return {"tool": "asyncio+aiohttp", "requests": n,
            "non_2xx": sum(c for s, c in statuses.items() if not 200 <= s < 300),
            "rps": n / elapsed if elapsed else 0.0, "latency_ms": percentiles(latencies)}


def request_ids(bootstrap: str, topic: str, timeout: float = 60.0
                ) -> tuple[list[str], float]:
    """Every order id on a topic (read to its end), and the seconds from the first message
    to the last by their log timestamps (the front desk answers after each one's ack)."""
    from confluent_kafka import Consumer, TopicPartition

    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": f"ids-{time.time_ns()}",
                         "enable.auto.commit": False})
    try:
        parts = consumer.list_topics(topic, timeout=timeout).topics[topic].partitions
        ends = {p: consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=timeout)[1]
                for p in parts}
        consumer.assign([TopicPartition(topic, p, 0) for p in ends])
        ids: list[str] = []
        stamps: list[int] = []
        left = {p for p, end in ends.items() if end > 0}
        deadline = time.monotonic() + timeout
        while left and time.monotonic() < deadline:
            for msg in consumer.consume(1000, 0.2):
                if msg.error() is None:
                    ids.append(msg.key().decode())
                    stamps.append(msg.timestamp()[1])
                    if msg.offset() >= ends[msg.partition()] - 1:
                        left.discard(msg.partition())
        span = (max(stamps) - min(stamps)) / 1000 if len(stamps) > 1 else 0.0
        return ids, span
    finally:
        consumer.close()


def run(ctx: Context) -> RunResult:
    result = RunResult("frontdesk", f"front desk POST /orders ({CONNECTIONS} connections)",
                       unit="202s/s")
    progress = Progress("frontdesk")
    system = PostroomSystem(ctx, "frontdesk", 200, ctx.merge_wait_ms)
    work = ctx.workdir / "frontdesk"
    work.mkdir(parents=True, exist_ok=True)
    orders = ctx.workload.orders(BODIES)
    prices = ctx.workload.catalogue()
    stock = {sku: 1_000_000 for sku in prices}
    funds = {o["customer_id"]: 10**12 for o in orders}
    bodies = [orjson.dumps({"customer_id": o["customer_id"], "items": o["items"]})
              for o in orders]
    body_file = work / "bodies.jsonl"
    body_file.write_bytes(b"\n".join(bodies) + b"\n")
    collector: EventCollector | None = None
    sampler: Sampler | None = None
    started = time.monotonic()
    try:
        progress.say("starting", force=True)
        ctx.cleanups.append(system.stop)
        system.start(stock, prices, funds)
        collector = EventCollector(ctx.bootstrap, system.events_topic, system.decode)
        collector.start()
        sampler = Sampler({"process": system.pid, "broker": ctx.broker_pid or 0})
        sampler.start()
        time.sleep(1.0)
        wrk = shutil.which("wrk")
        progress.say(f"{'wrk' if wrk else 'asyncio client'}: {ctx.frontdesk_orders} orders, "
                     f"{CONNECTIONS} connections, {ctx.frontdesk_seconds:.0f}s at most", force=True)
        t0 = time.time()
        limit = ctx.frontdesk_orders
        load = (with_wrk(wrk, system.url, body_file, ctx.frontdesk_seconds, limit, work) if wrk
                else with_asyncio(system.url, bodies, ctx.frontdesk_seconds, limit))
        t1 = time.time()
        ids, span = request_ids(ctx.bootstrap, system.requests_topic)
        missing = collector.wait_for(ids, timeout=ctx.timeout,
                                     progress=progress.counter("backlog"))
        sampler.stop()
        answered = load["requests"] - load["non_2xx"]
        result.orders = answered
        # wrk reports over its whole -d (--frontdesk-seconds) even when stopped early; the log's
        # timestamps say when the first and the last order were taken.
        result.rate = (len(ids) - 1) / span if span > 0 else 0.0
        result.latency_ms = load["latency_ms"]
        t1 = min(t1, t0 + span + 1.0)  # the load itself, not wrk's idle tail
        result.process = sampler.summary("process", t0, t1, load["requests"])
        result.broker = sampler.summary("broker", t0, t1, load["requests"])
        result.extra = {k: v for k, v in load.items() if k not in ("latency_ms", "rps")}
        result.extra["load_seconds"] = round(span, 2)
        result.extra["orders_logged"] = len(ids)
        result.extra["connections"] = CONNECTIONS
        result.check("every answered order logged", len(ids) >= answered,
                     f"{len(ids)} logged vs {answered} answered 202")
        result.check("every logged order terminal", not missing,
                     f"{len(missing)} of {len(ids)} missing")
        if not missing:
            billed = sum(collector.terminal[o][2] for o in ids)
            for what, ok, detail in system.verify(stock, prices, billed):
                result.check(what, ok, detail)
        progress.say(f"{result.rate:,.0f} orders/s answered 202 ({load['non_2xx']} refused), "
                     f"p99 {result.latency_ms.get('p99', 0):.1f} ms; {len(ids)} orders, "
                     f"all terminal: {not missing}", force=True)
    except Exception as exc:
        result.error = f"{type(exc).__name__}: {exc}"
    finally:
        result.seconds = time.monotonic() - started
        stop_all([sampler.stop if sampler else None, collector.stop if collector else None,
                  system.stop, progress.done])
    return result
