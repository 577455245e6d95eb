"""Faust's Kafka consumer on the worker's own event loop, not in a thread of its own.

Faust runs aiokafka's consumer in a second thread with a second event loop, and every call
into it crosses between the two: each ``getmany`` that hands fetched records to the streams,
each commit, seek and position goes through a queue, wakes the other loop, and comes back the
same way. The two threads also share one interpreter lock. At half load the consumer thread
took 14-24% of a core (7% at full speed), much of it in that hand-over, and every hop of an
order waited for the two threads to pass the lock back and forth.

Here the consumer's service runs as a task of the worker's loop, and a call into it is a plain
await. What the consumer does is unchanged (aiokafka's fetcher, heartbeats and rebalances run
as they did, as tasks; Faust's rebalance callbacks still go through its main-loop method
queue), and so is everything Faust stops on shutdown, except the sweep that cancels every task
left on the consumer's loop: that loop is now the worker's own, and its tasks are not the
consumer's to cancel. ``POSTROOM_CONSUMER_THREAD=true`` restores Faust's thread.

The cost is that a long stretch of synchronous work on the loop also delays the consumer's
heartbeats; the worker's units of work and timers yield far within the group's session
timeout (``POSTROOM_SESSION_TIMEOUT_S``).
"""

from __future__ import annotations

import asyncio
from typing import Any

_INSTALLED = False


def install() -> None:
    """Run Faust's aiokafka consumer on the worker's event loop (once per process)."""
    global _INSTALLED
    if _INSTALLED:
        return
    from faust.transport.drivers.aiokafka import AIOKafkaConsumerThread
    from mode.utils.futures import maybe_async

    for name in ("_serve", "_gather_remaining_tasks", "call_thread"):
        if not hasattr(AIOKafkaConsumerThread, name):  # pragma: no cover - the version pins
            raise RuntimeError(f"this faust-streaming/mode has no ServiceThread.{name}")

    thread: Any = AIOKafkaConsumerThread
    create = thread.__init__

    def __init__(self: Any, *args: Any, **kwargs: Any) -> None:
        # The consumer's loop is the worker's (Faust passes it as ``loop``); mode then
        # leaves it open on stop, since it did not create it.
        kwargs["thread_loop"] = kwargs.get("loop") or asyncio.get_event_loop()
        create(self, *args, **kwargs)

    async def start(self: Any) -> None:
        """Start the consumer's service as a task of this loop and wait until it runs."""
        self._thread_started.set()
        self._thread_running = self.parent_loop.create_future()
        self._serving = asyncio.ensure_future(self._serve())  # held: a task needs a reference
        try:
            await self._thread_running  # set by _serve, or failed by crash()
        finally:
            self._thread_running = None

    async def call_thread(self: Any, fun: Any, *args: Any, **kwargs: Any) -> Any:
        return await maybe_async(fun(*args, **kwargs))

    async def keep_the_loops_tasks(self: Any) -> None:
        """Faust cancels every task left on the consumer's loop when it stops; that loop is
        the worker's, so there is nothing of the consumer's own left to sweep."""

    thread.__init__ = __init__
    thread.start = start
    thread.call_thread = call_thread
    thread._gather_remaining_tasks = keep_the_loops_tasks
    _INSTALLED = True
