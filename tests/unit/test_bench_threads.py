"""The bench's CPU by kind of thread: which thread is which, and each kind's share."""

import os
import threading

import pytest

from bench.measure import thread_kind, thread_shares


def test_the_main_thread_is_told_from_the_others() -> None:
    assert thread_kind(os.getpid(), os.getpid()) == "main"
    started = threading.Event()
    stop = threading.Event()

    def run() -> None:
        started.set()
        stop.wait(5)

    worker = threading.Thread(target=run)
    worker.start()
    try:
        started.wait(5)
        assert worker.native_id is not None
        assert thread_kind(os.getpid(), worker.native_id) in ("python", "other")
    finally:
        stop.set()
        worker.join()
    assert thread_kind(os.getpid(), 2**31 - 1) == "other"  # no such thread


def test_each_kind_gets_its_share_of_a_core_over_the_window() -> None:
    series = [
        (0.0, {"main": 10.0, "python": 5.0}),
        (1.0, {"main": 10.7, "python": 5.2, "librdkafka": 0.1}),  # a thread started
        (2.0, {"main": 11.4, "python": 5.1, "librdkafka": 0.2}),  # a thread ended
    ]
    shares = thread_shares(series, 0.0, 2.0)
    assert shares["main"] == pytest.approx(70.0)
    assert shares["python"] == pytest.approx(5.0)
    assert shares["librdkafka"] == pytest.approx(10.0)
    assert list(shares) == ["main", "python", "librdkafka"]  # in THREAD_KINDS order


def test_a_kind_whose_threads_ended_counts_nothing_not_less() -> None:
    series = [(0.0, {"main": 1.0, "python": 3.0}), (1.0, {"main": 1.5, "python": 0.5})]
    assert thread_shares(series, 0.0, 1.0) == {"main": 50.0, "python": 0.0}


def test_no_samples_give_no_shares() -> None:
    assert thread_shares([], 0.0, 1.0) == {}
    assert thread_shares([(1.0, {"main": 1.0})], 0.0, 2.0) == {}  # one sample: no interval


def test_the_whole_machines_load_is_in_percent_of_one_core() -> None:
    from bench.measure import machine_load

    samples = [(0.0, 100.0, 1.0), (1.0, 101.5, 1.1), (2.0, 103.6, 1.2)]  # two busy cores
    assert machine_load(samples, 0.0, 2.0) == {"machine_cpu_pct": 180.0,
                                               "machine_steal_pct": 10.0}
    assert machine_load([], 0.0, 1.0) == {}
