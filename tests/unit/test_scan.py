"""A table scan gives the event loop a turn every so many entries (app/unit.py ``paced``)."""

from __future__ import annotations

import asyncio
import time

from app.unit import Effort, paced


async def test_a_scan_yields_everything_and_lets_other_tasks_run_between_steps() -> None:
    turns: list[int] = []
    seen: list[int] = []

    async def other_task() -> None:
        while True:
            turns.append(len(seen))  # how far the scan had got when this task ran
            await asyncio.sleep(0)

    other = asyncio.ensure_future(other_task())
    await asyncio.sleep(0)
    async for item in paced(range(2_000), every=500):
        seen.append(item)
    other.cancel()
    assert seen == list(range(2_000))
    assert {500, 1_000, 1_500} <= set(turns)  # it ran at every step, never inside one
    assert all(t % 500 == 0 for t in turns)


def work(seconds: float) -> None:
    """Keep the thread busy, as a task's own work does."""
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        pass


async def test_a_scans_effort_counts_its_own_work_and_not_the_turns_it_gives_away() -> None:
    async def busy_task() -> None:
        while True:
            work(0.02)  # another task's work, done in the scan's turns
            await asyncio.sleep(0)

    other = asyncio.ensure_future(busy_task())
    await asyncio.sleep(0)
    effort = Effort()
    began = time.perf_counter()
    async for _ in paced(range(4_000), every=500, effort=effort):
        work(0.00001)  # the scan's own work on each item: about 40 ms in all
    wall = time.perf_counter() - began
    other.cancel()
    assert wall >= 0.14  # seven turns of 20 ms went to the other task
    assert 0.04 <= effort.seconds < wall - 0.1
