"""Consumer lag from offsets, its totals per stage, and the drain rate over readings."""

from __future__ import annotations

from app.ops.lag import (
    Offsets,
    Sample,
    consume_rate,
    drain_estimate,
    drain_rate,
    lag_by_topic,
    lag_rows,
    sample,
    total_lag,
)


def offsets() -> Offsets:
    return Offsets(
        beginning={("req", 0): 0, ("req", 1): 0, ("ev", 0): 40, ("ev", 1): 0},
        end={("req", 0): 100, ("req", 1): 50, ("ev", 0): 70, ("ev", 1): 30},
        committed={("req", 0): 90, ("ev", 0): 10, ("ev", 1): 30},
    )


def test_lag_is_end_minus_committed() -> None:
    by_tp = {(r.topic, r.partition): r for r in lag_rows("g", offsets())}
    assert by_tp[("req", 0)].lag == 10
    assert by_tp[("req", 0)].committed == 90
    assert by_tp[("ev", 1)].lag == 0


def test_a_partition_without_a_commit_lags_from_its_beginning() -> None:
    row = next(r for r in lag_rows("g", offsets()) if (r.topic, r.partition) == ("req", 1))
    assert row.committed is None
    assert row.lag == 50


def test_a_commit_below_the_retained_beginning_lags_from_the_beginning() -> None:
    row = next(r for r in lag_rows("g", offsets()) if (r.topic, r.partition) == ("ev", 0))
    assert row.committed == 10
    assert row.lag == 30  # 70 - 40: the deleted messages are not waiting for anyone


def test_rows_are_sorted_and_carry_the_group() -> None:
    rows = lag_rows("postroom", offsets())
    assert [(r.topic, r.partition) for r in rows] == [("ev", 0), ("ev", 1), ("req", 0), ("req", 1)]
    assert {r.group for r in rows} == {"postroom"}
    assert rows[0].as_dict() == {
        "group": "postroom", "topic": "ev", "partition": 0, "committed": 10, "end": 70, "lag": 30,
    }


def test_totals_per_stage() -> None:
    rows = lag_rows("g", offsets())
    assert total_lag(rows) == 90
    assert lag_by_topic(rows) == {"ev": 30, "req": 60}


def test_no_topics_no_lag() -> None:
    rows = lag_rows("g", Offsets({}, {}, {}))
    assert rows == [] and total_lag(rows) == 0 and lag_by_topic(rows) == {}


def test_a_sample_counts_the_consumed_position() -> None:
    s = sample(lag_rows("g", offsets()), at=5.0)
    assert s == Sample(at=5.0, total_lag=90, consumed=(90 + 0) + (40 + 30))


def test_drain_rate_is_how_fast_the_total_lag_falls() -> None:
    samples = [Sample(0.0, 1000, 0), Sample(1.0, 900, 300), Sample(4.0, 200, 1500)]
    assert drain_rate(samples) == 200.0  # (1000 - 200) / 4 s
    assert consume_rate(samples) == 375.0  # 1500 / 4 s


def test_a_growing_backlog_has_a_negative_drain_rate() -> None:
    samples = [Sample(0.0, 100, 0), Sample(2.0, 500, 100)]
    assert drain_rate(samples) == -200.0
    assert consume_rate(samples) == 50.0


def test_rates_need_two_readings_apart_in_time() -> None:
    assert drain_rate([]) is None
    assert drain_rate([Sample(1.0, 10, 0)]) is None
    assert drain_rate([Sample(1.0, 10, 0), Sample(1.0, 5, 5)]) is None
    assert consume_rate([Sample(1.0, 10, 0)]) is None


def test_the_drain_estimate_is_the_fall_of_the_lag_when_it_falls() -> None:
    assert drain_estimate([Sample(0.0, 1000, 0), Sample(2.0, 600, 900)]) == 200.0


def test_while_a_burst_still_arrives_the_drain_estimate_is_the_consume_rate() -> None:
    assert drain_estimate([Sample(0.0, 100, 0), Sample(2.0, 500, 600)]) == 300.0


def test_a_backlog_nobody_committed_past_yet_has_no_drain_estimate() -> None:
    # Idle then a burst, or commits held back under load: unknown, not "stuck".
    assert drain_estimate([Sample(0.0, 0, 50), Sample(1.0, 3000, 50)]) is None
    assert drain_estimate([Sample(0.0, 100, 50), Sample(3.0, 400, 50)]) is None
    assert drain_estimate([Sample(0.0, 3000, 50)]) is None
