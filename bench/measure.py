"""What every run measures: produce times, terminal times, latency, throughput, CPU and RSS.

::

    OrderProducer  --orders.requests-->  system under test  --events-->  EventCollector
         t_produce[order_id]                                      t_terminal[order_id]
    Sampler: psutil CPU% and RSS of the process under test (and the broker), every 0.5 s,
             and the process's CPU by kind of thread (see thread_kind)
"""

from __future__ import annotations

import math
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import orjson

TERMINAL = frozenset({"COMPLETED", "PARTIALLY_FULFILLED", "REJECTED", "CANCELLED", "FAILED"})

# decode(value) -> (order_id, type, amount) for a terminal or milestone event, None otherwise
Decoder = Callable[[bytes], "tuple[str, str, int] | None"]


def percentiles(values: Sequence[float]) -> dict[str, float]:
    """p50/p90/p99/p99.9/max/mean by nearest rank (empty: all zero)."""
    if not values:
        return {"p50": 0.0, "p90": 0.0, "p99": 0.0, "p999": 0.0, "max": 0.0, "mean": 0.0}
    xs = sorted(values)

    def rank(q: float) -> float:
        return xs[min(len(xs) - 1, max(0, math.ceil(q * len(xs)) - 1))]

    return {
        "p50": rank(0.50),
        "p90": rank(0.90),
        "p99": rank(0.99),
        "p999": rank(0.999),
        "max": xs[-1],
        "mean": sum(xs) / len(xs),
    }


# --- producing orders ---------------------------------------------------------------------


def producer_config(bootstrap: str, **extra: Any) -> dict[str, Any]:
    """The producer the issue prescribes for orders.requests."""
    return {
        "bootstrap.servers": bootstrap,
        "partitioner": "murmur2_random",
        "enable.idempotence": True,
        "acks": "all",
        "linger.ms": 5,
        **extra,
    }


class OrderProducer:
    """Produce orders (JSON, key = order id) and remember when each one was produced."""

    def __init__(self, bootstrap: str, topic: str) -> None:
        from confluent_kafka import Producer

        self.topic = topic
        self.producer = Producer(producer_config(bootstrap))
        self.sent: dict[str, float] = {}
        self.failed = 0

    def _report(self, err: Any, msg: Any) -> None:
        if err is not None:
            self.failed += 1

    def _produce(self, order: dict[str, Any]) -> None:
        now = time.time()
        value = orjson.dumps({**order, "received_at_ms": int(now * 1000)})
        key = order["order_id"].encode()
        for _ in range(1000):
            try:
                self.producer.produce(self.topic, value, key, on_delivery=self._report)
                break
            except BufferError:
                self.producer.poll(0.05)
        else:
            raise RuntimeError("producer queue stayed full")
        self.sent[order["order_id"]] = now

    def produce_all(self, orders: Iterable[dict[str, Any]]) -> None:
        """As fast as the client takes them."""
        for i, order in enumerate(orders):
            self._produce(order)
            if i % 1000 == 0:
                self.producer.poll(0)
        self.flush()

    def produce_paced(self, orders: Sequence[dict[str, Any]], rate: float,
                      stop: threading.Event | None = None) -> None:
        """``rate`` orders per second, evenly, until the orders run out."""
        start = time.monotonic()
        i = 0
        while i < len(orders) and not (stop and stop.is_set()):
            due = min(len(orders), int((time.monotonic() - start) * rate) + 1)
            while i < due:
                self._produce(orders[i])
                i += 1
            self.producer.poll(0)
            time.sleep(0.002)
        self.flush()

    def flush(self, timeout: float = 60.0) -> None:
        left = self.producer.flush(timeout)
        if left:
            raise RuntimeError(f"{left} orders not acknowledged after {timeout}s")


# --- collecting terminal events -----------------------------------------------------------


# The steps whose first event on the events topic marks an order's progress (see
# stage_latencies): accepted, paid, its first line's result, settling (Postroom's only).
MILESTONES = ("ACCEPTED", "PAID", "LINE_RESULT", "SETTLING")


def json_progress(value: bytes) -> tuple[str, str, int] | None:
    """Decoder for the peers' JSON events: terminal events and milestones."""
    event = orjson.loads(value)
    kind = event.get("type")
    if kind in TERMINAL:
        return event["order_id"], kind, int(event.get("amount") or 0)
    if kind in MILESTONES:
        return event["order_id"], kind, 0
    return None


def _avro_string(buf: bytes, pos: int) -> tuple[str, int]:
    """One Avro string (zigzag varint length, then UTF-8) at ``pos``."""
    shift = 0
    raw = 0
    while True:
        b = buf[pos]
        pos += 1
        raw |= (b & 0x7F) << shift
        if not b & 0x80:
            break
        shift += 7
    n = (raw >> 1) ^ -(raw & 1)
    return buf[pos : pos + n].decode(), pos + n


def avro_progress(value: bytes) -> tuple[str, str, int] | None:
    """Decoder for Postroom's Avro ``OrderEvent``: only terminal events are fully decoded;
    a milestone's order id is the record's third field."""
    _, pos = _avro_string(value, 0)  # event_id
    kind, pos = _avro_string(value, pos)  # type
    if kind in MILESTONES:
        return _avro_string(value, pos)[0], kind, 0
    if kind not in TERMINAL:
        return None
    from app.codecs import avro_decode

    event = avro_decode(("postroom.OrderEvent",), value)
    return event["order_id"], event["type"], int(event.get("amount") or 0)


def take(consumer: Any, most: int = 1000, wait: float = 0.05) -> list[Any]:
    """What has arrived, at once: up to ``most`` messages, waiting at most ``wait`` seconds
    for the first. (confluent-kafka's ``consume(n, timeout)`` waits until it has ``n``
    messages or the timeout passed; at a steady flow every message then waited too, and a
    latency read from it was up to ``timeout`` late.)"""
    first = consumer.poll(wait)
    if first is None:
        return []
    return [first, *consumer.consume(most - 1, 0)] if most > 1 else [first]


def stamp_on_append(bootstrap: str, topic: str, timeout: float = 30.0) -> None:
    """Have the broker stamp every record appended to ``topic`` from now on with its own
    clock (``message.timestamp.type=LogAppendTime``), and wait until it does.

    The bench stops an order's clock when its terminal event is on the events topic. Its
    collector is a thread of the bench's process, beside the paced producer, and read a
    half-load terminal event 1.8-2.6 ms after it was appended at the median and 10-14 ms at
    the p99 (more in a burst): a delay of the instrument, not of the system under test,
    which the broker's append time leaves out. Every pipeline run's events topic, Postroom's
    and each peer's, is stamped the same way.
    """
    from confluent_kafka.admin import (
        AdminClient,
        AlterConfigOpType,
        ConfigEntry,
        ConfigResource,
    )

    admin = AdminClient({"bootstrap.servers": bootstrap})
    entry = ConfigEntry("message.timestamp.type", "LogAppendTime",
                        incremental_operation=AlterConfigOpType.SET)
    resource = ConfigResource(ConfigResource.Type.TOPIC, topic, incremental_configs=[entry])
    for fut in admin.incremental_alter_configs([resource]).values():
        fut.result(timeout)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        [fut] = admin.describe_configs([ConfigResource(ConfigResource.Type.TOPIC, topic)]).values()
        if fut.result(timeout)["message.timestamp.type"].value == "LogAppendTime":
            return
        time.sleep(0.1)
    raise RuntimeError(f"{topic}: the broker did not take LogAppendTime within {timeout}s")


class EventCollector(threading.Thread):
    """Read an events topic from its start; note when each order's terminal event, and the
    first event of each of its milestones, was appended to it (the broker's clock, see
    :func:`stamp_on_append`; when the record carries no append time, when it was read).
    How long after its append each terminal event was read is kept in ``read_lag_ms``."""

    def __init__(self, bootstrap: str, topic: str, decode: Decoder) -> None:
        super().__init__(name=f"collect-{topic}", daemon=True)
        self.bootstrap = bootstrap
        self.topic = topic
        self.decode = decode
        self.terminal: dict[str, tuple[float, str, int]] = {}  # order -> (seen, type, amount)
        self.milestones: dict[str, dict[str, float]] = {}  # order -> {type: first seen}
        self.read_lag_ms: dict[str, float] = {}  # order -> its terminal event's read - append
        self.events = 0
        self.duplicates = 0
        self.undecodable = 0
        self.assigned = threading.Event()
        self._halt = threading.Event()
        self.error: BaseException | None = None

    def run(self) -> None:
        from confluent_kafka import TIMESTAMP_LOG_APPEND_TIME, Consumer

        consumer = Consumer({
            "bootstrap.servers": self.bootstrap,
            "group.id": f"bench-collector-{uuid.uuid4().hex[:8]}",
            "auto.offset.reset": "earliest",
            "enable.auto.commit": False,
            "fetch.wait.max.ms": 5,
        })
        consumer.subscribe([self.topic], on_assign=lambda c, p: self.assigned.set())
        try:
            while not self._halt.is_set():
                msgs = take(consumer)
                now = time.time()
                for msg in msgs:
                    if msg.error() is not None:
                        continue
                    self.events += 1
                    try:
                        got = self.decode(msg.value())
                    except Exception:
                        self.undecodable += 1
                        continue
                    if got is None:
                        continue
                    order_id, kind, amount = got
                    stamp, at = msg.timestamp()
                    seen = at / 1000 if stamp == TIMESTAMP_LOG_APPEND_TIME else now
                    if kind in MILESTONES:
                        self.milestones.setdefault(order_id, {}).setdefault(kind, seen)
                        continue
                    if order_id in self.terminal:
                        self.duplicates += 1
                    else:
                        self.terminal[order_id] = (seen, kind, amount)
                        self.read_lag_ms[order_id] = (now - seen) * 1000
        except BaseException as exc:  # reported by the run, never lost in a thread
            self.error = exc
        finally:
            consumer.close()

    def stop(self) -> None:
        self._halt.set()
        self.join(10)

    def wait_for(self, order_ids: Iterable[str], timeout: float, stall: float = 60.0,
                 progress: Callable[[int, int], None] | None = None) -> list[str]:
        """Wait until every order is terminal; return the ones still missing.

        Gives up after ``timeout`` seconds, or after ``stall`` seconds without a new event.
        """
        wanted = list(order_ids)
        deadline = time.monotonic() + timeout
        last_count, last_change = -1, time.monotonic()
        missing = wanted
        while time.monotonic() < deadline:
            missing = [o for o in missing if o not in self.terminal]
            done = len(wanted) - len(missing)
            if progress:
                progress(done, len(wanted))
            if not missing or self.error is not None:
                break
            if done + self.events != last_count:  # any event counts as progress
                last_count, last_change = done + self.events, time.monotonic()
            elif time.monotonic() - last_change > stall:
                break
            time.sleep(0.25)
        return missing


def stage_latencies(sent: dict[str, float], collector: EventCollector,
                    order_ids: Sequence[str]) -> dict[str, dict[str, float]]:
    """Percentiles (ms) of the time from producing an order to the first event of each
    milestone, and to its terminal event: where an order's time goes."""
    out: dict[str, dict[str, float]] = {}
    for kind in (*MILESTONES, "terminal"):
        lat = []
        for oid in order_ids:
            if oid not in sent:
                continue
            seen = (collector.terminal.get(oid, (None,))[0] if kind == "terminal"
                    else collector.milestones.get(oid, {}).get(kind))
            if seen is not None:
                lat.append((seen - sent[oid]) * 1000)
        if lat:
            out[kind] = percentiles(lat)
    return out


def latency_timeline(sent: dict[str, float], collector: EventCollector,
                     order_ids: Sequence[str], step: float = 1.0) -> list[list[float]]:
    """End-to-end latency by when orders were produced: one row per ``step`` seconds,
    ``[seconds into the run, orders, p50 ms, p99 ms, max ms]``. A tail that comes in bursts
    (a pause somewhere) and one spread evenly (a queue near its limit) look alike in one
    p99; here they do not."""
    start = min((sent[o] for o in order_ids if o in sent), default=0.0)
    buckets: dict[int, list[float]] = {}
    for oid in order_ids:
        seen = collector.terminal.get(oid)
        if seen is None or oid not in sent:
            continue
        buckets.setdefault(int((sent[oid] - start) / step), []).append(
            (seen[0] - sent[oid]) * 1000)
    rows = []
    for i in sorted(buckets):
        pct = percentiles(buckets[i])
        rows.append([round(i * step, 1), len(buckets[i]), round(pct["p50"], 1),
                     round(pct["p99"], 1), round(pct["max"], 1)])
    return rows


def latency_and_rate(sent: dict[str, float], collector: EventCollector,
                     order_ids: Sequence[str]) -> tuple[dict[str, float], dict[str, float]]:
    """Latency percentiles (ms) and throughput (orders/s) of the given orders."""
    lat: list[float] = []
    ends: list[float] = []
    for oid in order_ids:
        seen = collector.terminal.get(oid)
        if seen is None or oid not in sent:
            continue
        lat.append((seen[0] - sent[oid]) * 1000)
        ends.append(seen[0])
    starts = [sent[o] for o in order_ids if o in sent]
    rate: dict[str, float] = {"orders_per_s": 0.0, "steady_orders_per_s": 0.0, "seconds": 0.0}
    if ends and starts:
        span = max(ends) - min(starts)
        rate["seconds"] = span
        rate["orders_per_s"] = len(ends) / span if span > 0 else 0.0
        ends.sort()
        lo, hi = int(len(ends) * 0.1), int(len(ends) * 0.9) - 1
        if hi > lo and ends[hi] > ends[lo]:
            rate["steady_orders_per_s"] = (hi - lo) / (ends[hi] - ends[lo])
    return percentiles(lat), rate


# --- CPU and memory of the processes under test --------------------------------------------


# The kinds of thread a process's CPU is split into, in the order they are reported. In a
# Postroom worker ``main`` is the event loop (agents, units of work, web server) and ``python``
# mostly Faust's Kafka consumer thread (aiokafka's fetcher); the two share one interpreter lock.
THREAD_KINDS = ("main", "python", "librdkafka", "rocksdb", "jit", "other")
# A JVM's just-in-time compilers (the broker's): Linux keeps 15 characters of a thread's name
JIT_THREADS = ("C1 CompilerThre", "C2 CompilerThre")


def thread_kind(pid: int, tid: int) -> str:
    """Which of THREAD_KINDS a thread of process ``pid`` is, by its id and its name."""
    if tid == pid:
        return "main"
    try:
        name = Path(f"/proc/{pid}/task/{tid}/comm").read_text().strip()
    except OSError:  # gone, or not Linux
        return "other"
    if name.startswith("rdk:"):
        return "librdkafka"
    if name.startswith("rocksdb"):
        return "rocksdb"
    if name.startswith(JIT_THREADS):
        return "jit"
    return "python" if name.startswith("python") else "other"


@dataclass
class Series:
    pid: int
    samples: list[tuple[float, float, float]] = field(default_factory=list)  # t, cpu%, rss MiB
    cpu_s: list[tuple[float, float]] = field(default_factory=list)  # t, cumulative cpu seconds
    # t, cumulative cpu seconds of the process's own threads by kind (threads that ended are
    # no longer counted, so a kind's figure can step down; deltas are taken at >= 0)
    threads: list[tuple[float, dict[str, float]]] = field(default_factory=list)


Sample = TypeVar("Sample", bound=tuple[Any, ...])  # (t, ...) in time order


def window_ends(series: Sequence[Sample], t0: float, t1: float) -> tuple[Sample, Sample] | None:
    """The two samples a window's figures are taken between: the last at or before ``t0``
    (else the first) and the last within ``t0``..``t1`` (else the very last)."""
    if not series:
        return None
    before = [x for x in series if x[0] <= t0] or [series[0]]
    inside = [x for x in series if t0 <= x[0] <= t1] or [series[-1]]
    return before[-1], inside[-1]


def machine_load(machine: Sequence[tuple[float, float, float]], t0: float, t1: float
                 ) -> dict[str, float]:
    """How busy the whole machine was between ``t0`` and ``t1``, in % of one core (up to
    100 x cores), and how much of that the hypervisor took for others (steal)."""
    ends = window_ends(machine, t0, t1)
    if ends is None or ends[1][0] <= ends[0][0]:
        return {}
    (ta, busy_a, steal_a), (tb, busy_b, steal_b) = ends
    return {"machine_cpu_pct": round(100 * (busy_b - busy_a) / (tb - ta), 1),
            "machine_steal_pct": round(100 * (steal_b - steal_a) / (tb - ta), 1)}


def thread_shares(threads: Sequence[tuple[float, dict[str, float]]], t0: float, t1: float
                  ) -> dict[str, float]:
    """% of a core each kind of thread used between ``t0`` and ``t1`` (epoch seconds)."""
    ends = window_ends(threads, t0, t1)
    if ends is None or ends[1][0] <= ends[0][0]:
        return {}
    (ta, a), (tb, b) = ends
    return {kind: round(100 * max(b.get(kind, 0.0) - a.get(kind, 0.0), 0.0) / (tb - ta), 1)
            for kind in THREAD_KINDS if kind in b}


def load_timeline(worker: Sequence[tuple[float, dict[str, float]]],
                  broker: Sequence[tuple[float, dict[str, float]]], start: float, end: float,
                  step: float = 1.0) -> list[list[float]]:
    """The load by the second, beside :func:`latency_timeline` (the same ``start``): one row
    per ``step`` seconds, ``[seconds into the run, worker CPU %, its main thread %, broker
    CPU %, the broker's JIT compilers %]`` (% of one core, from the per-thread series). On a
    small machine a tail that comes in episodes shows here whether the worker had no time to
    spare then, and whether the broker was compiling."""
    rows = []
    i = 0
    while start + i * step < end:
        a, b = start + i * step, min(start + (i + 1) * step, end)
        w = thread_shares(worker, a, b)
        k = thread_shares(broker, a, b)
        rows.append([round(i * step, 1), round(sum(w.values()), 1), w.get("main", 0.0),
                     round(sum(k.values()), 1), k.get("jit", 0.0)])
        i += 1
    return rows


class Sampler(threading.Thread):
    """Sample CPU and RSS of named processes (and their children) every ``interval`` s."""

    def __init__(self, pids: dict[str, int], interval: float = 0.5) -> None:
        super().__init__(name="sampler", daemon=True)
        self.interval = interval
        self.series = {name: Series(pid) for name, pid in pids.items() if pid}
        # t, cumulative busy and stolen cpu seconds of the whole machine, all cores: what
        # the broker, the bench itself and anything else running took as well
        self.machine: list[tuple[float, float, float]] = []
        self._halt = threading.Event()

    def run(self) -> None:
        import psutil

        procs: dict[str, psutil.Process] = {}
        for name, s in self.series.items():
            try:
                procs[name] = psutil.Process(s.pid)
            except psutil.Error:
                continue
        last: dict[str, tuple[float, float]] = {}
        kinds: dict[tuple[int, int], str] = {}  # (pid, thread id) -> kind, named once
        while not self._halt.is_set():
            now = time.time()
            m = psutil.cpu_times()
            stolen = getattr(m, "steal", 0.0)
            self.machine.append((now, m.user + m.nice + m.system + getattr(m, "irq", 0.0)
                                 + getattr(m, "softirq", 0.0) + stolen, stolen))
            for name, proc in procs.items():
                try:
                    family = [proc, *proc.children(recursive=True)]
                    cpu = 0.0
                    rss = 0
                    for p in family:
                        t = p.cpu_times()
                        cpu += t.user + t.system
                        rss += p.memory_info().rss
                    by_kind: dict[str, float] = {}
                    for th in proc.threads():
                        kind = kinds.get((proc.pid, th.id))
                        if kind is None:
                            kind = kinds[(proc.pid, th.id)] = thread_kind(proc.pid, th.id)
                        by_kind[kind] = by_kind.get(kind, 0.0) + th.user_time + th.system_time
                except psutil.Error:
                    continue
                self.series[name].threads.append((now, by_kind))
                prev = last.get(name)
                pct = 100.0 * (cpu - prev[1]) / (now - prev[0]) if prev else 0.0
                last[name] = (now, cpu)
                s = self.series[name]
                s.cpu_s.append((now, cpu))
                if prev:
                    s.samples.append((now, pct, rss / 2**20))
            self._halt.wait(self.interval)

    def stop(self) -> None:
        self._halt.set()
        self.join(5)

    def load_timeline(self, start: float, end: float) -> list[list[float]]:
        """The process's and the broker's load by the second (see :func:`load_timeline`)."""
        worker, broker = self.series.get("process"), self.series.get("broker")
        return load_timeline(worker.threads if worker else [], broker.threads if broker else [],
                             start, end)

    def summary(self, name: str, t0: float, t1: float, orders: int) -> dict[str, Any]:
        """CPU and RSS of ``name`` between ``t0`` and ``t1`` (epoch seconds)."""
        s = self.series.get(name)
        ends = window_ends(s.cpu_s, t0, t1) if s is not None else None
        if s is None or ends is None:
            return {}
        a, b = ends
        cpu_s = b[1] - a[1]
        wall = max(b[0] - a[0], 1e-9)
        rss = [x for x in s.samples if t0 <= x[0] <= t1] or s.samples[-1:]
        out: dict[str, Any] = {
            "cpu_s": round(cpu_s, 2),
            "cpu_pct": round(100 * cpu_s / wall, 1),
            "cpu_ms_per_order": round(1000 * cpu_s / orders, 3) if orders else None,
            "cpu_threads_pct": thread_shares(s.threads, t0, t1),
            **machine_load(self.machine, t0, t1),
        }
        if rss:
            out.update({
                "rss_start_mib": round(rss[0][2], 1),
                "rss_end_mib": round(rss[-1][2], 1),
                "rss_max_mib": round(max(x[2] for x in rss), 1),
                "rss_series": [(round(x[0] - t0, 2), round(x[2], 1)) for x in rss],
            })
        return out


def memory_growth(series: Sequence[tuple[float, float]]) -> float | None:
    """Relative RSS growth from the middle third of a run to its last third.

    The first third is left out: a worker's tables fill RocksDB's fixed memory budget
    (``POSTROOM_TABLE_MEMORY_MB``, memtables and cache) in about the first 30 s at half load,
    which is a bounded warm-up, not growth with the orders processed."""
    if len(series) < 9:
        return None
    t = len(series) // 3
    middle = sum(x[1] for x in series[t : 2 * t]) / t
    late = sum(x[1] for x in series[-t:]) / t
    return (late - middle) / middle if middle else None
