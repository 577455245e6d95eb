"""``python -m bench``: every benchmark side by side on one broker, one workload, one run.

::

    python -m bench [--orders N] [--duration S] [--skus K] [--seed S] [--only a,b]
                    [--out bench/results] [--sync-orders N] [--nomerge-orders N] [--half-rate R]
                    [--rounds N] [--profile] [--keep-topics]

Runs (``--only`` picks some) broker and floor, then the throughput runs (chain, merge,
nomerge, sync, quix), then half and frontdesk. The throughput runs are repeated
``--rounds`` times, interleaved (chain, merge, nomerge, sync, quix, chain, merge, ...), and each
is reported by its median round: the machine's speed drifts by tens of percent within
minutes, and a ratio of two single runs minutes apart measures the drift as much as the
systems. ``half`` and ``frontdesk`` run once, after the rounds (half at half the median
``merge``). Exits 1 only when a run's correctness check fails in any round (or a run errors);
goals are printed as PASS/FAIL and never change the exit code.
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

from bench import report
from bench.runs.common import Context, RunResult, stop_all
from bench.workload import Workload

ROOT = Path(__file__).resolve().parent.parent


def _runs() -> dict[str, tuple[str, Callable[[Context], RunResult | list[RunResult]]]]:
    from bench.runs import broker, chain, floor, frontdesk, postroom, quix, sync

    return {
        "broker": ("Kafka perf tools (broker ceiling)", broker.run),
        "floor": ("one trivial Faust agent (Faust's per-event floor)", floor.run),
        "chain": ("plain confluent-kafka chain (Python ceiling)", chain.run),
        "merge": ("Postroom, merging on", lambda c: postroom.run_full(c, "merge", True)),
        "nomerge": ("Postroom, merging off", lambda c: postroom.run_full(c, "nomerge", False)),
        "half": ("Postroom at half load", postroom.run_half),
        "sync": ("request-response baseline", sync.run),
        "quix": ("Quix Streams peer", quix.run),
        "frontdesk": ("front desk POST /orders", frontdesk.run),
    }


SHM = Path("/dev/shm")
SHM_NEEDED = 4 << 30  # a default run holds about 2 GiB of logs there


def default_storage() -> str:
    """'memory' where a tmpfs with room is at hand (Linux; a container's /dev/shm is often
    64 MiB), else 'disk'."""
    if not (SHM.is_dir() and os.access(SHM, os.W_OK)):
        return "disk"
    return "memory" if shutil.disk_usage(SHM).free >= SHM_NEEDED else "disk"


def broker_dir(storage: str, workdir: Path) -> Path:
    """The bench's broker's data dir. Every run appends to fresh topics, and on this
    project's dev machine (ext4 on a virtual disk) the first appends to fresh partitions
    stalled the broker for 45-185 ms each (its request log: local time, in the append),
    which the first second of every run absorbed; a tmpfs has no blocks to allocate."""
    if storage == "memory":
        return Path(tempfile.mkdtemp(prefix="postroom-bench-kafka-", dir=SHM))
    return workdir / "kafka"


def parse(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m bench", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--orders", type=int, default=5_000, help="orders per throughput run")
    p.add_argument("--duration", type=float, default=90.0,
                   help="seconds of the half-load run")
    p.add_argument("--skus", type=int, default=500, help="catalogue size")
    p.add_argument("--zipf", type=float, default=1.1, help="popularity skew exponent")
    p.add_argument("--seed", type=int, default=42)
    p.add_argument("--only", default="", help="comma-separated run names")
    p.add_argument("--out", type=Path, default=ROOT / "bench" / "results")
    p.add_argument("--sync-orders", type=int, default=1_000,
                   help="orders for the (slow) request-response baseline")
    p.add_argument("--nomerge-orders", type=int, default=Context.nomerge_orders,
                   help="orders for the (slow) merging-off run")
    p.add_argument("--frontdesk-orders", type=int, default=Context.frontdesk_orders,
                   help="POST /orders requests of the front-desk run (then all must finish)")
    p.add_argument("--frontdesk-seconds", type=float, default=Context.frontdesk_seconds,
                   help="time limit of the front-desk load (wrk holds it to the end)")
    p.add_argument("--half-rate", type=float, default=None,
                   help="orders/s for the half-load run (default: half of 'merge')")
    p.add_argument("--settle", type=float, default=Context.settle_s,
                   help="seconds of paced orders before the half-load run's measured ones "
                        "(checked, not measured; 0: none)")
    p.add_argument("--merge-wait-ms", type=int, default=Context.merge_wait_ms,
                   help="merge window for Postroom")
    p.add_argument("--timeout", type=float, default=300.0,
                   help="seconds a run may take to finish its orders")
    p.add_argument("--warmup", type=int, default=50, help="warm-up orders per run")
    p.add_argument("--profile", action="store_true",
                   help="record the 'merge' worker with py-spy for 20 s")
    p.add_argument("--rounds", type=int, default=3,
                   help="rounds of the throughput runs, interleaved; each reported by its median")
    p.add_argument("--broker-storage", choices=("memory", "disk"), default=default_storage(),
                   help="where the bench's own broker keeps its logs: 'memory' (tmpfs, "
                        "/dev/shm; the default where it has 4 GiB free) or 'disk' (the temporary dir)")
    p.add_argument("--keep-topics", action="store_true",
                   help="with POSTROOM_KAFKA_BOOTSTRAP: leave the runs' topics for inspection")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse(sys.argv[1:] if argv is None else argv)
    runs = _runs()
    chosen = [n.strip() for n in args.only.split(",") if n.strip()] or list(runs)
    unknown = [n for n in chosen if n not in runs]
    if unknown:
        print(f"unknown run(s) {unknown}; choose from {', '.join(runs)}", file=sys.stderr)
        return 2
    chosen = [n for n in runs if n in chosen]  # canonical order: 'half' needs 'merge'
    args.out.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    workdir = Path(tempfile.mkdtemp(prefix="postroom-bench-"))
    external = os.environ.get("POSTROOM_KAFKA_BOOTSTRAP")
    # The worker reads POSTROOM_* from its environment; the bench sets its own per run.
    for key in ("POSTROOM_TOPIC_PREFIX", "POSTROOM_WEB_PORT", "POSTROOM_DATA_DIR",
                "POSTROOM_MERGE_MAX_LINES", "POSTROOM_MERGE_MAX_WAIT_MS"):
        os.environ.pop(key, None)
    from app import localkafka

    # (none for an external cluster: a tmpfs folder made for it would be left behind)
    kafka_dir = workdir / "kafka" if external else broker_dir(args.broker_storage, workdir)
    broker_pid: int | None = None
    ctx: Context | None = None
    started = time.monotonic()

    def interrupted(signum: int, frame: object) -> None:
        raise KeyboardInterrupt  # SIGTERM cleans up like Ctrl-C

    signal.signal(signal.SIGTERM, interrupted)
    try:
        if external:
            bootstrap = external
            print(f"bench: using Kafka at {bootstrap}", file=sys.stderr)
        else:
            bootstrap = localkafka.start(kafka_dir, localkafka.free_port(),
                                         localkafka.free_port())
            pid_file = kafka_dir / "broker.pid"
            broker_pid = int(pid_file.read_text()) if pid_file.exists() else None
        ctx = Context(
            bootstrap=bootstrap,
            workload=Workload(seed=args.seed, skus=args.skus, zipf=args.zipf),
            orders=args.orders, duration=args.duration, sync_orders=args.sync_orders,
            timeout=args.timeout, warmup=args.warmup, workdir=workdir, out=args.out,
            broker_pid=broker_pid, merge_wait_ms=args.merge_wait_ms,
            half_rate=args.half_rate, settle_s=args.settle, profile=args.profile,
            frontdesk_orders=args.frontdesk_orders, nomerge_orders=args.nomerge_orders,
            frontdesk_seconds=args.frontdesk_seconds,
        )
        rounds: dict[str, list[RunResult]] = {}
        for round_no, name in schedule(chosen, max(1, args.rounds)):
            title, fn = runs[name]
            label = f" (round {round_no})" if name in REPEATED and args.rounds > 1 else ""
            print(f"bench: {name}{label}: {title}", file=sys.stderr, flush=True)
            try:
                got = fn(ctx)
            except Exception as exc:  # one broken run does not hide the others
                got = RunResult(name, title, error=f"{type(exc).__name__}: {exc}")
            for r in got if isinstance(got, list) else [got]:
                rounds.setdefault(r.name, []).append(r)
                ctx.results[r.name] = median_round(rounds[r.name])
                print(f"bench: {r.name}: {'ok' if r.ok else 'FAILED'} in {r.seconds:.0f}s"
                      + (f" - {r.error}" if r.error else ""), file=sys.stderr, flush=True)
    except KeyboardInterrupt:
        print("\nbench: interrupted; stopping everything", file=sys.stderr)
    finally:
        if ctx is not None:
            stop_all(ctx.cleanups)  # whatever a run left running (each stop is idempotent)
        if not external:
            try:
                localkafka.stop(kafka_dir)
            finally:
                shutil.rmtree(kafka_dir, ignore_errors=True)  # a tmpfs holds it in memory
        elif ctx is not None and not args.keep_topics:
            _delete_topics(external, ctx.prefixes)
        logs = sorted(workdir.rglob("*.log"))
        if logs:  # the worker and peer logs outlive the temporary directory
            keep = args.out / f"logs-{stamp}"
            keep.mkdir(exist_ok=True)
            for log in logs:
                rel = log.relative_to(workdir)
                if rel.parts[0] != "kafka":
                    shutil.copyfile(log, keep / "-".join(rel.parts))
        shutil.rmtree(workdir, ignore_errors=True)
    if ctx is None or not ctx.results:
        return 1
    results = ctx.results
    gs = report.goals(results)
    meta = {
        "when": time.strftime("%Y-%m-%d %H:%M:%S %z"),
        "seconds": round(time.monotonic() - started, 1),
        "machine": report.machine(),
        "args": {k: str(v) for k, v in vars(args).items()},
        "broker": ("external " + external if external else "local (app.localkafka), logs "
                   + ("in memory (tmpfs)" if args.broker_storage == "memory" else "on disk")),
    }
    print()
    print(f"Postroom bench {meta['when']} on {meta['machine']['cpu']}, "
          f"{meta['machine']['cores']} cores, {meta['machine']['memory_gib']} GiB, "
          f"broker {meta['broker']} ({meta['seconds']:.0f}s)")
    print(report.table(results))
    print()
    rounds = report.round_lines(results)
    if rounds:
        print("Rounds (orders/s, in the order they ran; the table shows the median):")
        print(rounds)
        print()
    print("Goals:")
    print(report.goal_lines(gs))
    stages = report.stage_lines(results)
    if stages:
        print(f"\nWhere an order's time goes ({report.STAGES_NOTE}):")
        print(stages)
    load = report.load_lines(results)
    if load:
        print(f"\nLoad ({report.LOAD_NOTE}):")
        print(load)
    per_order = report.per_order_lines(results)
    if per_order:
        print(f"\nUnits of work per order ({report.PER_ORDER_NOTE}):")
        print(per_order)
    threads = report.thread_lines(results)
    if threads:
        print(f"\nCPU by thread (% of a core; {report.THREADS_NOTE}):")
        print(threads)
    for name, r in results.items():
        if r.extra.get("profile_areas"):
            print(f"\npy-spy profile of the '{name}' worker ({r.extra['profile_file']}):")
            print("  share of samples by area:")
            for area, pct in r.extra["profile_areas"]:
                print(f"  {pct:5.1f}%  {area}")
            print("  top frames (self %, total %):")
            for frame, own, total in r.extra["profile_top"]:
                print(f"  {own:5.1f} {total:5.1f}  {frame}")
    json_path = args.out / f"bench-{stamp}.json"
    png_path = args.out / f"bench-{stamp}.png"
    report.write_json(json_path, meta, results, gs)
    (args.out / f"bench-{stamp}.md").write_text(report.markdown(meta, results, gs))
    try:
        report.chart(png_path, results, f"Postroom bench {meta['when']} - "
                     f"{meta['machine']['cpu']}, {meta['machine']['cores']} cores")
    except Exception as exc:
        print(f"bench: no chart: {exc}", file=sys.stderr)
    for latest, src in (("latest.json", json_path), ("latest.png", png_path),
                        ("latest.md", args.out / f"bench-{stamp}.md")):
        if src.exists():
            shutil.copyfile(src, args.out / latest)
    print(f"\nresults: {json_path} and {png_path.name} (copies: latest.json, latest.png)")
    return 0 if all(r.ok for r in results.values()) else 1


# The runs whose rate the goals compare; repeated, interleaved, with --rounds.
REPEATED = ("chain", "merge", "nomerge", "sync", "quix")


def schedule(chosen: list[str], rounds: int) -> list[tuple[int, str]]:
    """(round, run) in the order they run: the once-only runs that come first, then the
    repeated runs round after round, then 'half' and 'frontdesk' (after the median 'merge')."""
    first = [n for n in chosen if n not in REPEATED and n not in ("half", "frontdesk")]
    repeated = [n for n in chosen if n in REPEATED]
    last = [n for n in chosen if n in ("half", "frontdesk")]
    return ([(1, n) for n in first]
            + [(k, n) for k in range(1, rounds + 1) for n in repeated]
            + [(1, n) for n in last])


def median_round(results: list[RunResult]) -> RunResult:
    """The round that stands for a run: the median rate of its rounds (the lower middle of
    an even count). It fails if any round failed, and lists every round's rate."""
    if len(results) == 1:
        return results[0]
    median = sorted(results, key=lambda r: r.rate)[(len(results) - 1) // 2]
    chosen = replace(median, extra={**median.extra,
                                    "rounds": [round(r.rate, 1) for r in results]})
    failed = [r for r in results if not r.ok]
    if failed and chosen.ok:
        chosen.error = "another round failed: " + (failed[0].error
                                                    or "a correctness check failed")
    return chosen


def _delete_topics(bootstrap: str, prefixes: list[str]) -> None:
    """On an external cluster, delete the topics this run created (they carry its prefixes)."""
    try:
        from confluent_kafka.admin import AdminClient

        admin = AdminClient({"bootstrap.servers": bootstrap})
        topics = admin.list_topics(timeout=10).topics
        names = [t for t in topics if any(p in t for p in prefixes)]
        if names:
            for fut in admin.delete_topics(names, operation_timeout=30).values():
                fut.result()
    except Exception as exc:
        print(f"bench: could not delete bench topics: {exc}", file=sys.stderr)


if __name__ == "__main__":
    sys.exit(main())
