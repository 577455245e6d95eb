"""The outputs of one bench run: a table on the terminal, a JSON file and a PNG chart."""

from __future__ import annotations

import collections
import contextlib
import json
import platform
import subprocess
from collections.abc import Iterator, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

from bench.runs.common import RunResult

ROOT = Path(__file__).resolve().parent.parent

# (name, numerator run, denominator run, target ratio, what)
RATIO_GOALS = [
    ("merge >= 10x sync", "merge", "sync", 10.0),
    ("merge >= 3x nomerge", "merge", "nomerge", 3.0),
    ("merge >= quix", "merge", "quix", 1.0),
    ("merge >= 25% chain", "merge", "chain", 0.25),
]
HALF_P99_MS = 250.0
MAX_RSS_GROWTH = 0.05


def machine() -> dict[str, Any]:
    """What the numbers came from."""
    import psutil

    model = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    info: dict[str, Any] = {
        "cpu": model or platform.processor(),
        "cores": psutil.cpu_count(logical=True),
        "memory_gib": round(psutil.virtual_memory().total / 2**30, 1),
        "os": f"{platform.system()} {platform.release()}",
        "python": platform.python_version(),
    }
    versions: dict[str, str] = {}
    try:
        import confluent_kafka

        versions["librdkafka"] = confluent_kafka.libversion()[0]
    except ImportError:
        pass
    from importlib import metadata

    for dist in ("confluent-kafka", "faust-streaming", "aiokafka", "quixstreams", "fastavro",
                 "orjson"):
        with contextlib.suppress(metadata.PackageNotFoundError):
            versions[dist] = metadata.version(dist)
    try:
        from app.localkafka import kafka_version

        versions["kafka"] = kafka_version()
    except Exception:
        pass
    info["versions"] = versions
    try:
        rev = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT,
                             capture_output=True, text=True, check=False).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--", "app"], cwd=ROOT,
                               capture_output=True, text=True, check=False).stdout.strip()
        info["git"] = rev + ("+dirty(app)" if dirty else "")
    except OSError:
        pass
    return info


def round_ratios(a: RunResult | None, b: RunResult | None) -> list[float]:
    """The ratio of two repeated runs round by round. Rounds are interleaved, so round i of
    each ran within a minute or two of the other: these show how far the drift moves a goal."""
    ra = a.extra.get("rounds", []) if a else []
    rb = b.extra.get("rounds", []) if b else []
    if len(ra) < 2 or len(ra) != len(rb):
        return []
    return [x / y for x, y in zip(ra, rb, strict=True) if y]


def goal_text(g: dict[str, Any]) -> str:
    """One goal as the terminal and the Markdown report print it (after its verdict)."""
    value = g["value"]
    shown = "-" if value is None else (f"{value:.2f}" if isinstance(value, float) else value)
    rounds = g.get("rounds") or []
    by_round = (f"; round by round {' / '.join(f'{r:.2f}' for r in rounds)}, "
                f"{g['rounds_passed']} of {len(rounds)} passing" if rounds else "")
    return f"{g['goal']}: {shown} (target {g['target']}{by_round})"


def goals(results: dict[str, RunResult]) -> list[dict[str, Any]]:
    """Each goal with its measured value and PASS/FAIL (None when a run is missing)."""
    out: list[dict[str, Any]] = []
    for name, num, den, target in RATIO_GOALS:
        a, b = results.get(num), results.get(den)
        value = a.rate / b.rate if a and b and a.ok and b.ok and b.rate else None
        rounds = round_ratios(a, b) if value is not None else []
        out.append({"goal": name, "value": value, "target": f">= {target:g}",
                    "pass": None if value is None else value >= target,
                    "rounds": rounds, "rounds_passed": sum(r >= target for r in rounds)})
    half = results.get("half")
    p99 = half.latency_ms.get("p99") if half and half.ok else None
    out.append({"goal": f"half-load p99 <= {HALF_P99_MS:g} ms", "value": p99,
                "target": f"<= {HALF_P99_MS:g}",
                "pass": None if p99 is None else p99 <= HALF_P99_MS})
    growth = half.extra.get("rss_growth") if half and half.ok else None
    out.append({"goal": f"worker RSS flat at half load (growth <= {MAX_RSS_GROWTH:.0%})",
                "value": growth, "target": f"<= {MAX_RSS_GROWTH:g}",
                "pass": None if growth is None else growth <= MAX_RSS_GROWTH})
    return out


def _fmt(x: Any, digits: int = 0) -> str:
    if x is None or x == "":
        return "-"
    if isinstance(x, float):
        return f"{x:,.{digits}f}"
    return str(x)


def table(results: dict[str, RunResult]) -> str:
    head = ["run", "n", "rate/s", "p50 ms", "p99 ms", "max ms", "CPU %", "CPU ms/ord",
            "RSS MiB", "broker CPU %", "check"]
    rows = [head]
    for r in results.values():
        lat = r.latency_ms
        proc = r.process
        rss = (f"{proc['rss_start_mib']:.0f}->{proc['rss_max_mib']:.0f}"
               if "rss_start_mib" in proc else "-")
        verdict = "ok" if r.ok else ("ERROR" if r.error else "FAIL")
        rows.append([
            f"{r.name}" + (f" ({r.unit})" if r.unit != "orders/s" else ""),
            _fmt(r.orders), _fmt(r.rate), _fmt(lat.get("p50"), 1), _fmt(lat.get("p99"), 1),
            _fmt(lat.get("max"), 1), _fmt(proc.get("cpu_pct")),
            _fmt(proc.get("cpu_ms_per_order"), 3) if proc.get("cpu_ms_per_order") else "-",
            rss, _fmt(r.broker.get("cpu_pct")), verdict,
        ])
    widths = [max(len(str(row[i])) for row in rows) for i in range(len(head))]
    lines = []
    for i, row in enumerate(rows):
        lines.append("  ".join(str(c).rjust(w) if j else str(c).ljust(w)
                               for j, (c, w) in enumerate(zip(row, widths, strict=True))))
        if i == 0:
            lines.append("  ".join("-" * w for w in widths))
    for r in results.values():
        for what, ok, detail in r.checks:
            if not ok:
                lines.append(f"  FAIL {r.name}: {what}: {detail}")
        if r.error:
            lines.append(f"  ERROR {r.name}: {r.error}")
    return "\n".join(lines)


def goal_lines(gs: Sequence[dict[str, Any]]) -> str:
    out = []
    for g in gs:
        verdict = {True: "PASS", False: "FAIL", None: "n/a "}[g["pass"]]
        out.append(f"  {verdict}  {goal_text(g)}")
    return "\n".join(out)


def round_lines(results: dict[str, RunResult]) -> str:
    """Every round's rate of the repeated runs (the table shows the median round)."""
    rows = [f"  {name}: " + " / ".join(f"{rate:,.0f}" for rate in r.extra["rounds"])
            for name, r in results.items() if r.extra.get("rounds")]
    return "\n".join(rows)


STAGE_RUNS = ("half",)  # the latency run; at full speed the stages measure the backlog


STAGES_NOTE = ("ms from producing an order to the append of its first such event to the events "
               "topic, p50 / p99")


def stage_lines(results: dict[str, RunResult]) -> str:
    """p50 / p99 (ms) from an order's produce to each milestone, for the latency runs."""
    rows = []
    for name in STAGE_RUNS:
        stages = results[name].extra.get("stages_ms") if name in results else None
        if stages:
            cells = [f"{kind} {v['p50']:,.0f} / {v['p99']:,.0f}" for kind, v in stages.items()]
            lag = results[name].extra.get("read_lag_ms")
            if lag:  # the collector's own delay, left out of every latency above
                cells.append(f"(read by the bench {lag['p50']:,.1f} / {lag['p99']:,.1f} later)")
            rows.append(f"  {name}: " + " · ".join(cells))
    return "\n".join(rows)


BUSY_PCT, JIT_PCT = 90.0, 10.0  # a second the worker's main thread had no time to spare;
# one the broker spent compiling
LOAD_NOTE = (f"the paced orders that ran first, then by the second over the measured ones, "
             f"from the per-thread CPU samples: seconds with the worker's main thread at >= "
             f"{BUSY_PCT:.0f}% of a core, the broker's JIT compilers (its C1 and C2 threads), and "
             f"the seconds whose orders had the highest p99, with the load then")


def load_lines(results: dict[str, RunResult]) -> str:
    """For the latency runs: how often the worker was saturated and the broker compiling,
    and the load in the seconds whose orders fared worst (JSON: ``load_timeline``)."""
    rows = []
    for name in STAGE_RUNS:
        r = results.get(name)
        if r is None or not r.extra.get("load_timeline"):
            continue
        load = r.extra["load_timeline"]
        by_second = {row[0]: row for row in load}
        busy = sum(1 for row in load if row[2] >= BUSY_PCT)
        jit = [row[4] for row in load]
        cells = [f"main thread >= {BUSY_PCT:.0f}% in {busy} of {len(load)} s",
                 f"broker JIT {sum(jit) / len(jit):,.0f}% on average, >= {JIT_PCT:.0f}% in "
                 f"{sum(1 for x in jit if x >= JIT_PCT)} s"]
        settle = r.extra.get("settle")
        if settle:  # the paced orders before the measured ones
            cells.insert(0, f"settling first {settle['seconds']:,.0f} s (not measured): p50 "
                            f"{settle['p50']:,.0f} / p99 {settle['p99']:,.0f} ms")
        worst = sorted(r.extra.get("latency_timeline") or [], key=lambda row: -row[3])[:3]
        for second, _, _, p99, _ in sorted(worst):
            at = by_second.get(second)
            if at is not None:
                cells.append(f"{second:,.0f} s: p99 {p99:,.0f} ms, main {at[2]:,.0f}%, "
                             f"JIT {at[4]:,.0f}%")
        rows.append(f"  {name}: " + " · ".join(cells))
    return "\n".join(rows)


def per_order_lines(results: dict[str, RunResult]) -> str:
    """A Postroom run's units of work and records per order, from the worker's counters."""
    rows = []
    for name, r in results.items():
        counts = r.extra.get("per_order")
        if counts:
            rows.append(f"  {name}: " + " · ".join(f"{v:,.2f} {k}" for k, v in counts.items()))
    return "\n".join(rows)


PER_ORDER_NOTE = ("the worker's own counters over the measured orders, every agent together; "
                  "a pack is one message sent and each of its records one record handled")


THREAD_LABELS = {"main": "main thread", "python": "other Python threads",
                 "librdkafka": "librdkafka", "rocksdb": "RocksDB", "jit": "JIT compilers",
                 "other": "other"}


THREADS_NOTE = ("a Postroom worker's main thread is its event loop, which also runs Faust's "
                "group consumer and hands the agents their messages; librdkafka's threads fetch "
                "those messages (POSTROOM_FETCHER=aiokafka fetches them on the event loop, and "
                "POSTROOM_CONSUMER_THREAD=true moves Faust's consumer to one of the other Python "
                "threads); all its Python threads share one interpreter lock. The whole "
                "machine's load, every process and core together, follows each run")


def machine_note(process: dict[str, Any]) -> str:
    """The whole machine's load during a run (all its processes; % of one core)."""
    if "machine_cpu_pct" not in process:
        return ""
    return (f" (whole machine {process['machine_cpu_pct']:,.0f}%, of which stolen "
            f"{process['machine_steal_pct']:,.0f}%)")


def thread_lines(results: dict[str, RunResult]) -> str:
    """Each run's CPU (% of a core) by kind of thread of the process under test."""
    rows = []
    for name, r in results.items():
        shares = r.process.get("cpu_threads_pct") or {}
        cells = [f"{THREAD_LABELS[kind]} {pct:,.0f}" for kind, pct in shares.items()
                 if pct >= 0.5]
        if cells and not name.startswith("broker"):  # a JVM's threads say little here
            rows.append(f"  {name}: " + " · ".join(cells) + machine_note(r.process))
    return "\n".join(rows)


def markdown(meta: dict[str, Any], results: dict[str, RunResult],
             gs: Sequence[dict[str, Any]]) -> str:
    """The run as Markdown, to paste into bench/README.md."""
    m = meta["machine"]
    v = m.get("versions", {})
    lines = [
        f"Run {meta['when']} ({meta['seconds']:.0f} s), git {m.get('git', '?')}: {m['cpu']}, "
        f"{m['cores']} cores, {m['memory_gib']} GiB, {m['os']}, Python {m['python']}, "
        f"Kafka {v.get('kafka', '?')}, faust-streaming {v.get('faust-streaming', '?')}, "
        f"confluent-kafka {v.get('confluent-kafka', '?')}, quixstreams "
        f"{v.get('quixstreams', '-')}. Arguments: {meta['args'].get('only') or 'all runs'}, "
        f"--orders {meta['args'].get('orders')}, --duration {meta['args'].get('duration')}; "
        f"broker {meta.get('broker', '?')}.",
        "",
        "| run | n | per s | p50 ms | p99 ms | max ms | CPU % | CPU ms/order | RSS MiB | "
        "broker CPU % | check |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- |",
    ]
    for r in results.values():
        lat, proc = r.latency_ms, r.process
        rss = (f"{proc['rss_start_mib']:.0f} -> {proc['rss_max_mib']:.0f}"
               if "rss_start_mib" in proc else "-")
        lines.append(
            f"| {r.name} ({r.unit}) | {r.orders:,} | {r.rate:,.0f} | {_fmt(lat.get('p50'), 1)} | "
            f"{_fmt(lat.get('p99'), 1)} | {_fmt(lat.get('max'), 1)} | "
            f"{_fmt(proc.get('cpu_pct'))} | {_fmt(proc.get('cpu_ms_per_order'), 3)} | {rss} | "
            f"{_fmt(r.broker.get('cpu_pct'))} | {'ok' if r.ok else 'FAIL'} |")
    rounds = round_lines(results)
    if rounds:
        lines += ["", "Rounds (orders/s, in the order they ran; the table shows the median):",
                  "", "```", rounds, "```"]
    stages = stage_lines(results)
    if stages:
        lines += ["", f"Where an order's time goes ({STAGES_NOTE}):", "", "```", stages, "```"]
    load = load_lines(results)
    if load:
        lines += ["", f"Load ({LOAD_NOTE}):", "", "```", load, "```"]
    per_order = per_order_lines(results)
    if per_order:
        lines += ["", f"Units of work per order ({PER_ORDER_NOTE}):", "", "```", per_order,
                  "```"]
    threads = thread_lines(results)
    if threads:
        lines += ["", f"CPU by thread (% of a core; {THREADS_NOTE}):", "", "```", threads,
                  "```"]
    lines += ["", "Goals:", ""]
    for g in gs:
        verdict = {True: "PASS", False: "FAIL", None: "n/a"}[g["pass"]]
        lines.append(f"- {verdict} {goal_text(g)}")
    return "\n".join(lines) + "\n"


def write_json(path: Path, meta: dict[str, Any], results: dict[str, RunResult],
               gs: list[dict[str, Any]]) -> None:
    body = {
        "meta": meta,
        "goals": gs,
        "runs": {name: asdict(r) | {"ok": r.ok} for name, r in results.items()},
    }
    path.write_text(json.dumps(body, indent=2, default=str) + "\n")


def chart(path: Path, results: dict[str, RunResult], title: str) -> None:
    """Throughput bars, latency percentiles, and the worker's RSS at half load."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    runs = [r for r in results.values() if r.rate]
    fig, axes = plt.subplots(1, 3, figsize=(17, 5.2))
    ax = axes[0]
    names = [r.name + ("*" if r.unit != "orders/s" else "") for r in runs]
    colors = ["tab:green" if r.ok else "tab:red" for r in runs]
    bars = ax.bar(names, [r.rate for r in runs], color=colors)
    ax.set_yscale("log")
    ax.set_ylabel("per second (log)")
    ax.set_title("Throughput (orders/s; * = records/s or 202 answers/s)")
    for bar, r in zip(bars, runs, strict=True):
        ax.annotate(f"{r.rate:,.0f}", (bar.get_x() + bar.get_width() / 2, bar.get_height()),
                    ha="center", va="bottom", fontsize=8)
    ax.tick_params(axis="x", rotation=35)

    ax = axes[1]
    lat = [r for r in runs if r.latency_ms.get("p50")]
    width = 0.27
    for i, (key, color) in enumerate((("p50", "tab:blue"), ("p99", "tab:orange"),
                                      ("max", "tab:gray"))):
        xs = [j + (i - 1) * width for j in range(len(lat))]
        ax.bar(xs, [max(r.latency_ms[key], 0.01) for r in lat], width, label=key, color=color)
    ax.set_xticks(range(len(lat)), [r.name for r in lat], rotation=35)
    ax.set_yscale("log")
    ax.set_ylabel("ms (log)")
    ax.axhline(HALF_P99_MS, color="tab:red", linestyle=":", linewidth=1)
    ax.set_title("Latency: produce -> terminal event (full speed: the backlog);\n"
                 "frontdesk: HTTP answer")
    ax.legend()

    ax = axes[2]
    for r in results.values():
        series = r.process.get("rss_series") or []
        if series and r.name in ("half", "merge", "nomerge", "quix", "chain"):
            ax.plot([s[0] for s in series], [s[1] for s in series], label=r.name)
    ax.set_xlabel("s into the run")
    ax.set_ylabel("RSS MiB")
    ax.set_title("RSS of the process under test")
    ax.legend()
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def collapsed_stacks(path: Path) -> Iterator[tuple[str, int]]:
    """The (stack, sample count) lines of a py-spy raw (collapsed) profile."""
    for line in path.read_text(errors="replace").splitlines():
        stack, _, count = line.rpartition(" ")
        if stack and count.isdigit():
            yield stack, int(count)


def fold_profile(path: Path, top: int = 15) -> list[tuple[str, float, float]]:
    """Top functions of a py-spy raw (collapsed) profile: (frame, self %, total %)."""
    own: collections.Counter[str] = collections.Counter()
    total: collections.Counter[str] = collections.Counter()
    samples = 0
    for stack, n in collapsed_stacks(path):
        samples += n
        frames = [f for f in stack.split(";") if f]
        frames = [f for f in frames if not f.startswith(("process ", "thread "))]
        if not frames:
            continue
        own[frames[-1]] += n
        for f in set(frames):
            total[f] += n
    if not samples:
        return []
    return [(f, 100 * n / samples, 100 * total[f] / samples) for f, n in own.most_common(top)]



# Where a Faust worker's time goes, by frames found anywhere in a sampled stack.
PROFILE_AREAS = [
    ("aiokafka producer: Sender._send_produce_req", ("Sender._send_produce_req",)),
    ("  of which the socket write itself", ("_SelectorSocketTransport.write",)),
    ("faust send path: Topic.publish_message", ("Topic.publish_message",)),
    ("faust stream dispatch: Conductor/Stream", ("Conductor._compile_message_handler",
                                                 "Stream._c_aiter")),
    ("aiokafka consumer: fetcher", ("aiokafka/consumer/fetcher.py",)),
    ("table writes: ManagedUserDict.__setitem__", ("ManagedUserDict.__setitem__",)),
    ("RocksDB store (faust/stores/rocksdb.py)", ("faust/stores/rocksdb.py",)),
    ("Avro encode/decode (app/codecs.py)", ("avro_encode", "avro_decode")),
    ("prometheus_client metrics", ("prometheus_client/",)),
    ("order logic (app/orders/logic.py)", ("app/orders/logic.py",)),
    ("payments logic (app/payments/logic.py)", ("app/payments/logic.py",)),
    ("fulfillment logic (app/fulfillment/logic.py)", ("app/fulfillment/logic.py",)),
    ("offset commit", ("Consumer.commit", "_commit_offsets")),
]


def profile_areas(path: Path) -> list[tuple[str, float]]:
    """Share of samples (%) whose stack passes through each area of PROFILE_AREAS."""
    hits: collections.Counter[str] = collections.Counter()
    samples = 0
    for stack, n in collapsed_stacks(path):
        samples += n
        for name, needles in PROFILE_AREAS:
            if any(needle in stack for needle in needles):
                hits[name] += n
    return [(name, 100 * hits[name] / samples) for name, _ in PROFILE_AREAS] if samples else []
