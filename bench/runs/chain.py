"""Run 2: the Python ceiling, a plain confluent-kafka chain with Postroom's hops."""

from __future__ import annotations

from bench.runs.common import Context, RunResult, run_pipeline
from bench.runs.peer import PeerSystem


def run(ctx: Context) -> RunResult:
    result = RunResult("chain", "plain confluent-kafka chain")
    system = PeerSystem(ctx, "chain", "plain_chain", "--merge-wait-ms", str(ctx.merge_wait_ms))
    return run_pipeline(ctx, result, system, ctx.workload.orders(ctx.orders))
