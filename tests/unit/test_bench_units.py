"""The bench's per-order unit counts read the worker's own metrics as Prometheus writes them."""

from __future__ import annotations

from prometheus_client import generate_latest

from app.ops.metrics import Metrics
from bench.report import per_order_lines
from bench.runs.common import RunResult
from bench.runs.postroom import unit_totals


def test_unit_totals_sum_every_agents_counters() -> None:
    metrics = Metrics()
    metrics.unit_stats("run_order_saga").record(records=10, sent=7, logged=4, seconds=0.01)
    metrics.unit_stats("run_order_saga").record(records=5, sent=2, logged=3, seconds=0.02)
    metrics.unit_stats("fulfill_batches").record(records=3, sent=1, logged=6, seconds=0.01)
    totals = unit_totals(generate_latest(metrics.registry).decode())
    assert totals == {"units": 3.0, "records handled": 18.0, "messages sent": 10.0,
                      "changelog records": 13.0}


def test_unit_totals_of_a_worker_without_units_are_zero() -> None:
    assert set(unit_totals(generate_latest(Metrics().registry).decode()).values()) == {0.0}


def test_per_order_lines_name_the_runs_that_counted() -> None:
    half, quix = RunResult("half", "Postroom at half load"), RunResult("quix", "Quix")
    half.extra["per_order"] = {"units": 6.5, "messages sent": 12.25}
    assert per_order_lines({"half": half, "quix": quix}) == (
        "  half: 6.50 units · 12.25 messages sent")
