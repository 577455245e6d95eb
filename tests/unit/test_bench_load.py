"""The bench's load by the second: the worker's and the broker's CPU beside the latency."""

from __future__ import annotations

import ctypes
import os
import threading

import pytest

from bench.measure import load_timeline, thread_kind
from bench.report import load_lines
from bench.runs.common import RunResult

PR_SET_NAME = 15


def test_a_jvm_compiler_thread_is_told_apart() -> None:
    named = threading.Event()
    stop = threading.Event()

    def run() -> None:  # name this thread as a JVM names its C2 compiler
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_NAME, b"C2 CompilerThread0", 0, 0, 0)
        named.set()
        stop.wait(5)

    compiler = threading.Thread(target=run)
    compiler.start()
    try:
        assert named.wait(5) and compiler.native_id is not None
        assert thread_kind(os.getpid(), compiler.native_id) == "jit"
    finally:
        stop.set()
        compiler.join()


def test_each_second_gets_the_cpu_used_in_it() -> None:
    worker = [(100.0, {"main": 0.0, "librdkafka": 0.0}), (100.5, {"main": 0.45,
              "librdkafka": 0.02}), (101.0, {"main": 0.95, "librdkafka": 0.05}),
              (101.5, {"main": 1.2, "librdkafka": 0.06}), (102.0, {"main": 1.45,
              "librdkafka": 0.1})]
    broker = [(100.0, {"main": 0.0, "jit": 0.0}), (101.0, {"main": 0.3, "jit": 0.0}),
              (102.0, {"main": 0.7, "jit": 0.3})]
    rows = load_timeline(worker, broker, 100.0, 102.0)
    assert [row[0] for row in rows] == [0.0, 1.0]
    assert rows[0][1:] == pytest.approx([100.0, 95.0, 30.0, 0.0])
    assert rows[1][1:] == pytest.approx([55.0, 50.0, 70.0, 30.0])


def test_no_samples_give_empty_seconds_not_an_error() -> None:
    assert load_timeline([], [], 0.0, 2.0) == [[0.0, 0.0, 0.0, 0.0, 0.0],
                                               [1.0, 0.0, 0.0, 0.0, 0.0]]


def test_the_load_line_names_busy_seconds_and_the_worst_ones() -> None:
    half = RunResult("half", "Postroom at half load")
    half.extra["load_timeline"] = [[0.0, 80.0, 75.0, 40.0, 0.0], [1.0, 99.0, 96.0, 70.0, 25.0],
                                   [2.0, 97.0, 91.0, 50.0, 2.0], [3.0, 60.0, 55.0, 30.0, 1.0]]
    half.extra["latency_timeline"] = [[0.0, 600, 90.0, 150.0, 160.0],
                                      [1.0, 600, 300.0, 700.0, 720.0],
                                      [2.0, 600, 200.0, 400.0, 410.0],
                                      [3.0, 600, 80.0, 120.0, 130.0]]
    half.extra["settle"] = {"orders": 9000, "seconds": 15.0, "p50": 310.2, "p99": 1204.9}
    merge = RunResult("merge", "Postroom, merging on")
    assert load_lines({"half": half, "merge": merge}) == (
        "  half: settling first 15 s (not measured): p50 310 / p99 1,205 ms · "
        "main thread >= 90% in 2 of 4 s · broker JIT 7% on average, >= 10% in 1 s · "
        "0 s: p99 150 ms, main 75%, JIT 0% · 1 s: p99 700 ms, main 96%, JIT 25% · "
        "2 s: p99 400 ms, main 91%, JIT 2%")
    assert load_lines({"merge": merge}) == ""
