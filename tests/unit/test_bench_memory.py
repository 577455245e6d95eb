"""The bench's flat-memory check: growth after the warm-up, not the warm-up itself."""

import pytest

from bench.measure import memory_growth


def test_a_bounded_warm_up_then_a_plateau_reads_flat() -> None:
    # RSS (MiB) every second of a 90 s run: the tables' fixed budget fills in 30 s, then stays.
    series = [(float(t), 100.0 + 2.0 * min(t, 30)) for t in range(90)]
    assert memory_growth(series) == pytest.approx(0.0)


def test_steady_growth_after_the_warm_up_shows() -> None:
    series = [(float(t), 160.0 + 0.5 * t) for t in range(90)]  # 0.5 MiB a second, unbounded
    growth = memory_growth(series)
    assert growth is not None and growth > 0.05


def test_too_few_samples_give_no_reading() -> None:
    assert memory_growth([(0.0, 100.0)] * 8) is None
