"""Run 6: the peer, the same pipeline written with Quix Streams (``bench.peers.quix_pipeline``)."""

from __future__ import annotations

from bench.runs.common import Context, RunResult, run_pipeline
from bench.runs.peer import PeerSystem


def run(ctx: Context) -> RunResult:
    result = RunResult("quix", "Quix Streams pipeline")
    try:
        import quixstreams  # noqa: F401
    except ImportError:
        result.error = "quixstreams is not installed (pip install -e '.[bench]')"
        return result
    state = ctx.rundir("quix-state")  # each round its own state
    system = PeerSystem(ctx, "quix", "quix_pipeline", "--merge-wait-ms", str(ctx.merge_wait_ms),
                        "--state-dir", str(state))
    result.extra["commit_interval_s"] = 1.0
    return run_pipeline(ctx, result, system, ctx.workload.orders(ctx.orders))
