"""How a unit of work waits for more records: woken by the next message, or its window."""

from __future__ import annotations

import asyncio
import time

from mode.utils.queues import FlowControlEvent, ThrowableQueue

from app.runtime import Window, arrival


def new_queue() -> ThrowableQueue:
    flow = FlowControlEvent()
    flow.resume()
    return ThrowableQueue(flow_control=flow, maxsize=100)


async def test_a_message_put_in_the_queue_ends_the_wait_at_once_and_stays_there() -> None:
    queue = new_queue()  # what a Faust agent's channel holds
    waiting = asyncio.ensure_future(arrival(queue, 5.0))
    await asyncio.sleep(0.01)
    assert not waiting.done()

    started = time.monotonic()
    queue.put_nowait_enhanced("m", on_pressure_high=lambda: None, on_pressure_drop=lambda: None)
    await waiting

    assert time.monotonic() - started < 0.5
    assert queue.get_nowait() == "m"  # seen, not taken
    assert not queue._getters


async def test_with_nothing_put_the_wait_ends_at_its_timeout_and_leaves_no_waiter() -> None:
    queue = new_queue()
    started = time.monotonic()
    await arrival(queue, 0.05)

    assert 0.04 <= time.monotonic() - started < 1.0
    assert not queue._getters


async def test_a_window_waits_at_most_its_idle_gap_after_the_last_record() -> None:
    queue = new_queue()
    window = Window(records=100, idle_s=0.05, span_s=0.2)
    now = time.monotonic()

    await window.gather(queue, started=now, last=now)
    waited = time.monotonic() - now

    assert 0.04 <= waited < 0.5
    await window.gather(queue, started=now - 1, last=time.monotonic())  # span already over
    assert time.monotonic() - now - waited < 0.03


async def test_a_cancelled_wait_leaves_no_waiter_to_swallow_the_next_wake_up() -> None:
    queue = new_queue()
    waiting = asyncio.ensure_future(arrival(queue, 5.0))
    await asyncio.sleep(0.01)
    waiting.cancel()
    await asyncio.gather(waiting, return_exceptions=True)
    assert not queue._getters

    taker = asyncio.ensure_future(queue.get())  # the stream's own get, next
    await asyncio.sleep(0.01)
    queue.put_nowait("m")
    assert await asyncio.wait_for(taker, 1.0) == "m"
