"""Faust's floor: events per second of one trivial Faust agent (consume, send, table write).

These are the per-message prices Postroom pays (``bench/peers/faust_floor.py``); the report
divides them into Postroom's own CPU per order to show where an order's time goes.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
import uuid
from pathlib import Path

from bench.measure import Sampler
from bench.peers.common import new_topics
from bench.peers.faust_floor import MODES
from bench.runs.common import Context, Progress, RunResult

ROOT = Path(__file__).resolve().parent.parent.parent
PAYLOAD_BYTES = 220  # about an Avro OrderEvent


def _prefill(bootstrap: str, topic: str, count: int) -> None:
    from confluent_kafka import Producer

    from bench.peers.common import producer_config

    producer = Producer(producer_config(bootstrap, **{"linger.ms": 20}))
    value = b"x" * PAYLOAD_BYTES
    for _ in range(count):
        while True:
            try:
                producer.produce(topic, key=uuid.uuid4().hex.encode(), value=value)
                break
            except BufferError:
                producer.poll(0.05)
        producer.poll(0)
    if producer.flush(60):
        raise RuntimeError(f"could not prefill {topic}")


def one(ctx: Context, mode: str, count: int, progress: Progress) -> RunResult:
    from bench.peers.faust_floor import topic_names

    name = f"faust-{mode}"
    result = RunResult(name, f"one Faust agent: {mode}", unit="events/s")
    prefix = ctx.prefix(name)
    names = topic_names(prefix)
    work = ctx.workdir / name
    work.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    new_topics(ctx.bootstrap, {name: (1 if role == "leader" else 4, role == "changelog")
                               for role, name in names.items()})
    progress.say(f"{mode}: prefilling {count} events", force=True)
    _prefill(ctx.bootstrap, names["in"], count)
    log = work / "faust_floor.log"
    answer = work / "result.json"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "bench.peers.faust_floor", "--bootstrap", ctx.bootstrap,
             "--prefix", prefix, "--mode", mode, "--count", str(count),
             "--datadir", str(work / "data"), "--result", str(answer)],
            cwd=ROOT, stdout=out, stderr=subprocess.STDOUT,
        )
    sampler = Sampler({"process": proc.pid, "broker": ctx.broker_pid or 0})
    sampler.start()
    try:
        deadline = time.monotonic() + ctx.timeout
        while not answer.exists():
            if proc.poll() is not None:
                raise RuntimeError(f"faust_floor exited: {log.read_text()[-500:]}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"faust_floor {mode} did not finish within {ctx.timeout:.0f}s")
            time.sleep(0.2)
        got = json.loads(answer.read_text())
        t1 = time.time()
        result.orders = int(got["events"])
        result.rate = float(got["rate"])
        result.seconds = time.monotonic() - started
        result.process = sampler.summary("process", t1 - float(got["seconds"]), t1,
                                         result.orders)
        result.broker = sampler.summary("broker", t1 - float(got["seconds"]), t1, 0)
        result.check("every event processed", result.orders == count,
                     f"{result.orders} of {count}")
        progress.say(f"{name}: {result.rate:,.0f} events/s", force=True)
    finally:
        sampler.stop()
        proc.terminate()
        try:
            proc.wait(60)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)
    return result


def run(ctx: Context) -> list[RunResult]:
    progress = Progress("floor")
    count = max(20_000, ctx.orders * 4)
    results = []
    for mode in MODES:
        try:
            results.append(one(ctx, mode, count, progress))
        except Exception as exc:  # one mode failing does not hide the others
            results.append(RunResult(f"faust-{mode}", f"one Faust agent: {mode}",
                                     unit="events/s", error=f"{type(exc).__name__}: {exc}"))
    return results
