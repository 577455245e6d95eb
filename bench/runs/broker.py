"""Run 1: the broker ceiling, Kafka's own producer and consumer performance tools.

The tools come from the same jars as the broker (``python -m app.localkafka classpath``).
The topic is shaped like ``orders.requests`` (4 partitions, RF 1) and the payloads are the
workload's own order requests (``--payload-file``), produced with acks=all, idempotence and
linger 5 ms like the bench's order producer.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import time
from pathlib import Path

import orjson

from bench.measure import Sampler
from bench.peers.common import new_topics
from bench.runs.common import Context, Progress, RunResult

SUMMARY = re.compile(
    r"(\d+) records sent, ([\d.]+) records/sec \(([\d.]+) MB/sec\), ([\d.]+) ms avg latency, "
    r"([\d.]+) ms max latency, (\d+) ms 50th, (\d+) ms 95th, (\d+) ms 99th, (\d+) ms 99.9th"
)


def _java_cp() -> tuple[str, str]:
    from app import localkafka

    java = shutil.which("java")
    if java is None:
        raise RuntimeError("java not found")
    return java, localkafka.classpath()


def _run_tool(ctx: Context, name: str, cmd: list[str], log: Path, timeout: float
              ) -> tuple[str, dict[str, object], dict[str, object], float]:
    """Run one tool, sampling its CPU and the broker's; return stdout, samples, seconds."""
    with log.open("wb") as err:
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=err)
        sampler = Sampler({"process": proc.pid, "broker": ctx.broker_pid or 0})
        sampler.start()
        t0 = time.time()
        try:
            out, _ = proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.communicate()
            raise RuntimeError(f"{name} did not finish within {timeout:.0f}s") from None
        except BaseException:  # Ctrl-C: never leave the tool running
            proc.kill()
            proc.wait(10)
            raise
        finally:
            sampler.stop()
        t1 = time.time()
    if proc.returncode != 0:
        raise RuntimeError(f"{name} exited {proc.returncode}: {log.read_text()[-500:]}")
    return (out.decode(), sampler.summary("process", t0, t1, 0),
            sampler.summary("broker", t0, t1, 0), t1 - t0)


def run(ctx: Context) -> list[RunResult]:
    produce = RunResult("broker-produce", "Kafka ProducerPerformance", unit="records/s")
    consume = RunResult("broker-consume", "Kafka ConsumerPerformance", unit="records/s")
    progress = Progress("broker")
    records = max(200_000, ctx.orders * 10)  # the JVM needs a few seconds to warm up
    prefix = ctx.prefix("broker")
    topic = f"{prefix}perf"
    work = ctx.workdir / "broker"
    work.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    current = produce
    try:
        new_topics(ctx.bootstrap, {topic: (4, False)})
        payloads = work / "payloads.txt"
        now = int(time.time() * 1000)
        with payloads.open("wb") as fh:
            for order in ctx.workload.orders(min(ctx.orders, 5_000)):
                fh.write(orjson.dumps({**order, "received_at_ms": now}) + b"\n")
        size = payloads.stat().st_size / min(ctx.orders, 5_000)
        java, cp = _java_cp()
        progress.say(f"producer: {records} records of ~{size:.0f} B", force=True)
        out, proc, broker, secs = _run_tool(ctx, "ProducerPerformance", [
            java, "-Xmx512m", "-cp", cp, "org.apache.kafka.tools.ProducerPerformance",
            "--topic", topic, "--num-records", str(records), "--throughput", "-1",
            "--payload-file", str(payloads),
            "--producer-props", f"bootstrap.servers={ctx.bootstrap}", "acks=all",
            "enable.idempotence=true", "linger.ms=5",
        ], work / "producer.log", ctx.timeout)
        found = SUMMARY.findall(out)
        if not found:
            raise RuntimeError(f"no summary in ProducerPerformance output: {out[-300:]}")
        sent, rate, mbs, avg, mx, p50, p95, p99, p999 = found[-1]
        produce.orders = int(sent)
        produce.rate = float(rate)
        produce.process, produce.broker, produce.seconds = proc, broker, secs
        produce.extra = {"record_bytes": round(size), "mb_per_s": float(mbs),
                         "ack_latency_ms": {"avg": float(avg), "p50": float(p50),
                                            "p95": float(p95), "p99": float(p99),
                                            "p999": float(p999), "max": float(mx)}}
        produce.check("all records acknowledged", int(sent) == records,
                      f"{sent} of {records}")

        current = consume
        progress.say(f"consumer: {records} records", force=True)
        out, proc, broker, secs = _run_tool(ctx, "ConsumerPerformance", [
            java, "-Xmx512m", "-cp", cp, "org.apache.kafka.tools.ConsumerPerformance",
            "--bootstrap-server", ctx.bootstrap, "--topic", topic,
            "--messages", str(records), "--group", f"{prefix}perf-consumer",
            "--timeout", "60000",
        ], work / "consumer.log", ctx.timeout)
        rows = [line.split(",") for line in out.splitlines() if line.count(",") >= 9]
        data = [r for r in rows if not r[0].strip().startswith("start.time")]
        if not data:
            raise RuntimeError(f"no result in ConsumerPerformance output: {out[-300:]}")
        cols = [c.strip() for c in data[-1]]
        consumed, msg_s, fetch_msg_s = int(cols[4]), float(cols[5]), float(cols[9])
        consume.orders = consumed
        consume.rate = msg_s
        consume.process, consume.broker, consume.seconds = proc, broker, secs
        consume.extra = {"mb_per_s": float(cols[3]), "fetch_records_per_s": fetch_msg_s,
                         "rebalance_ms": float(cols[6])}
        consume.check("all records consumed", consumed >= records, f"{consumed} of {records}")
        progress.say(f"produce {produce.rate:,.0f}/s, consume {consume.rate:,.0f}/s",
                     force=True)
    except Exception as exc:
        current.error = f"{type(exc).__name__}: {exc}"
        if current is produce:
            consume.error = "not run: the producer tool failed"
    finally:
        progress.done()
        produce.seconds = produce.seconds or time.monotonic() - started
    return [produce, consume]
