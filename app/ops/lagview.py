"""``python -m app lag``: a live table of the worker group's consumer lag.

::

    python -m app lag [--once] [--interval S] [--group GROUP]

Reads the offsets from Kafka itself (the same reader as the worker's), so it works while
the workers are stopped or stuck; the age of the oldest outstanding request is asked of a
worker's ``GET /lag`` when one answers at the configured web address. ``--once`` prints
one table and exits (1 when Kafka cannot be read); otherwise the table is redrawn every
interval until Ctrl-C.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import urllib.error
import urllib.request
from collections import deque
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import IO

from app.errors import RetryableError
from app.ops.lag import (
    LagReader,
    PartitionLag,
    Sample,
    consume_rate,
    drain_rate,
    lag_by_topic,
    sample,
    total_lag,
)
from app.settings import load_settings

CLEAR = "\x1b[H\x1b[2J"
WORKER_TIMEOUT_S = 1.0


def worker_age(web_url: str) -> tuple[float | None, str]:
    """The oldest outstanding age from a worker's ``GET /lag``, and where it came from."""
    try:
        with urllib.request.urlopen(f"{web_url}/lag", timeout=WORKER_TIMEOUT_S) as resp:
            body = json.loads(resp.read())
    except (OSError, ValueError) as exc:
        return None, f"no worker answered at {web_url} ({exc.__class__.__name__})"
    age = body.get("oldest_outstanding_age_s")
    if age is None:
        return None, f"not reported by the worker at {web_url}"
    return float(age), f"from {web_url}/lag"


def _rate(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.1f}/s"


def render(
    group: str,
    bootstrap: str,
    rows: Sequence[PartitionLag],
    samples: Sequence[Sample],
    age: tuple[float | None, str],
    read_s: float,
) -> str:
    """The table as text."""
    width = max([len("TOPIC"), *(len(r.topic) for r in rows)])
    stamp = datetime.now(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")
    lines = [
        f"group {group} on {bootstrap}  {stamp}  (read in {read_s * 1000:.0f} ms)",
        "",
        f"{'TOPIC':<{width}}  {'PARTITION':>9}  {'COMMITTED':>12}  {'END':>12}  {'LAG':>10}",
    ]
    for r in rows:
        committed = "-" if r.committed is None else str(r.committed)
        lines.append(
            f"{r.topic:<{width}}  {r.partition:>9}  {committed:>12}  {r.end:>12}  {r.lag:>10}"
        )
    if not rows:
        lines.append("(none of the consumed topics exists)")
    lines.append("")
    for topic, lag in lag_by_topic(rows).items():
        lines.append(f"{topic:<{width}}  {'all':>9}  {'':>12}  {'':>12}  {lag:>10}")
    seconds, origin = age
    shown_age = "unknown" if seconds is None else f"{seconds:.1f} s"
    lines += [
        "",
        f"total lag: {total_lag(rows)}",
        f"drain rate: {_rate(drain_rate(samples))}  consume rate: {_rate(consume_rate(samples))}",
        f"oldest outstanding request: {shown_age} ({origin})",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None, out: IO[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m app lag", description="A live table of the worker group's consumer lag."
    )
    parser.add_argument("--once", action="store_true", help="print one table and exit")
    parser.add_argument("--interval", type=float, default=1.0, help="seconds between redraws")
    parser.add_argument("--group", default=None, help="consumer group (default: the worker's)")
    args = parser.parse_args(argv)
    out = out or sys.stdout
    # The composition root's list of what the agents consume (a constant; builds nothing).
    from app.topology import CONSUMED

    settings = load_settings()
    group = args.group or settings.app_id
    reader = LagReader(settings.kafka_bootstrap, group, [settings.topic(n) for n in CONSUMED])
    samples: deque[Sample] = deque(maxlen=10)
    try:
        while True:
            try:
                rows, read_s = reader.read()
            except RetryableError as exc:
                if args.once:
                    print(f"cannot read the consumer lag: {exc}", file=out)
                    return 1
                out.write(f"{CLEAR}cannot read the consumer lag: {exc}\n")
                out.flush()
            else:
                samples.append(sample(rows, time.monotonic()))
                table = render(
                    group, settings.kafka_bootstrap, rows, samples,
                    worker_age(settings.web_url), read_s,
                )
                if args.once:
                    print(table, file=out)
                    return 0
                out.write(f"{CLEAR}{table}\n")
                out.flush()
            time.sleep(args.interval)
    except KeyboardInterrupt:
        return 0
    finally:
        reader.close()
