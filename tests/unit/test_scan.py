"""A table scan gives the event loop a turn every so many entries (app/unit.py ``paced``)."""

from __future__ import annotations

import asyncio

from app.unit import paced


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
