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


def test_merging_off_batches_nothing_and_merging_on_keeps_the_defaults(tmp_path) -> None:
    from bench.runs.common import Context
    from bench.runs.postroom import PostroomSystem, batching
    from bench.workload import Workload

    ctx = Context(bootstrap="127.0.0.1:9", workload=Workload(seed=1, skus=10, zipf=1.1),
                  orders=10, duration=1.0, sync_orders=10, timeout=1.0, warmup=1,
                  workdir=tmp_path, out=tmp_path, broker_pid=None)
    assert batching(False) == (1, 1) and batching(True) == (200, None)
    lines, unit_max = batching(False)
    off = PostroomSystem(ctx, "nomerge", lines, 20, unit_max).worker.env
    assert off["POSTROOM_MERGE_MAX_LINES"] == "1" and off["POSTROOM_BATCH_MAX"] == "1"
    on = PostroomSystem(ctx, "merge", 200, 20).worker.env_extra
    assert on == {"POSTROOM_MERGE_MAX_LINES": "200", "POSTROOM_MERGE_MAX_WAIT_MS": "20"}


def test_each_ratio_goal_shows_its_round_by_round_ratios() -> None:
    from bench.report import goal_text, goals

    merge = median_round([RunResult("merge", "m", rate=r) for r in (1100.0, 900.0, 1000.0)])
    sync = median_round([RunResult("sync", "s", rate=r) for r in (100.0, 100.0, 110.0)])
    goal = next(g for g in goals({"merge": merge, "sync": sync}) if g["goal"].endswith("sync"))
    assert goal["value"] == 1000.0 / 100.0 and goal["pass"]
    assert [round(r, 2) for r in goal["rounds"]] == [11.0, 9.0, 9.09]
    assert goal["rounds_passed"] == 1
    assert "round by round 11.00 / 9.00 / 9.09, 1 of 3 passing" in goal_text(goal)
    single = goals({"merge": RunResult("merge", "m", rate=900.0),
                    "sync": RunResult("sync", "s", rate=100.0)})[0]
    assert single["rounds"] == [] and "round by round" not in goal_text(single)
