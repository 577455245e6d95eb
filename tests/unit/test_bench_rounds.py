"""The bench's rounds: interleaved, each repeated run reported by its median round."""

from bench.__main__ import median_round, schedule
from bench.runs.common import RunResult


def test_schedule_interleaves_the_repeated_runs_and_ends_with_half_and_frontdesk() -> None:
    chosen = ["broker", "chain", "merge", "half", "sync", "frontdesk"]
    assert schedule(chosen, 2) == [
        (1, "broker"), (1, "chain"), (1, "merge"), (1, "sync"),
        (2, "chain"), (2, "merge"), (2, "sync"), (1, "half"), (1, "frontdesk"),
    ]
    assert schedule(["merge"], 1) == [(1, "merge")]


def test_the_median_round_stands_for_the_run_and_lists_every_round() -> None:
    rounds = [RunResult("merge", "m", rate=r) for r in (900.0, 1200.0, 1000.0)]
    median = median_round(rounds)
    assert median.rate == 1000.0 and median.ok
    assert median.extra["rounds"] == [900.0, 1200.0, 1000.0]
    assert median_round(rounds[:2]).rate == 900.0  # an even count: the lower middle


def test_a_failed_round_fails_the_run_even_if_the_median_passed() -> None:
    bad = RunResult("merge", "m", rate=1200.0)
    bad.check("every order terminal", False, "3 of 5000 missing")
    rounds = [RunResult("merge", "m", rate=900.0), bad, RunResult("merge", "m", rate=1000.0)]
    median = median_round(rounds)
    assert median.rate == 1000.0 and not median.ok
    assert "another round failed" in median.error
