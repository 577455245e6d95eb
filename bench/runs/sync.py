"""Run 5: the request-response baseline, one order at a time, every write waited for."""

from __future__ import annotations

from bench.runs.common import Context, RunResult, run_pipeline
from bench.runs.peer import PeerSystem


def run(ctx: Context) -> RunResult:
    result = RunResult("sync", "request-response baseline (one order at a time)")
    system = PeerSystem(ctx, "sync", "sync_baseline")
    return run_pipeline(ctx, result, system, ctx.workload.orders(ctx.sync_orders))
