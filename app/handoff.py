"""How a fetched message reaches its agent's stream: one await, not four tasks.

Faust's consumer hands every fetched message to the streams through a background loop that,
for each message, races the hand-over against a flow suspension (``Service.wait_first``):
it wraps the hand-over, the suspension and the service's stop and crash events in four tasks,
waits for the first, and cancels the other three. That is about ten turns of the event loop
per message, the same for a pack of a hundred records as for one; at half load, where packs
are small, Faust's and asyncio's share of the worker's time per order was about three times
what it is at full speed.

Postroom's loop keeps what Faust's does (pull a batch from the consumer, drop what is older
than the partition's last read offset, commit every ``broker_commit_every`` acks, yield to the
event loop every hundred messages) and awaits the hand-over directly while the flow runs. The
race is still run while the flow is suspended (a rebalance), the one time a hand-over blocked
on a full stream buffer must be given up. A hand-over blocked otherwise is a full buffer that
its agent is draining; stopping the fetcher cancels it, and the message, not acked, comes
again from the committed offset. Gaps are not counted here: Postroom's consumed topics have
none (see :mod:`app.seekfix`).
"""

from __future__ import annotations

import asyncio
from typing import Any

YIELD_EVERY = 100  # messages between turns given to the event loop

_INSTALLED = False


async def hand_over(consumer: Any, message: Any) -> None:
    """Give one message to its streams: first commit if enough were acked since the last
    commit; while the flow is suspended, race the hand-over against the suspension."""
    every = consumer._commit_every
    if every is not None and consumer._n_acked >= every:
        consumer._n_acked = 0
        await consumer.commit()
    if consumer.suspend_flow.is_set():
        await consumer.wait_first(consumer.callback(message), consumer.suspend_flow.wait())
    else:
        await consumer.callback(message)


async def drain(consumer: Any, fetcher: Any) -> None:
    """The consumer's message loop (``Consumer._drain_messages``), as described above."""
    read = consumer._read_offset
    stopped = consumer._stopped.is_set
    fetcher_stopped = fetcher._stopped.is_set
    since_yield = 0
    while not (stopped() or fetcher_stopped()):
        batch = consumer.getmany(timeout=1.0)
        await asyncio.sleep(0)  # getmany can return at once, again and again
        if consumer.should_stop:
            continue
        async for tp, message in batch:
            since_yield += 1
            if since_yield > YIELD_EVERY:
                await asyncio.sleep(0)
                since_yield = 0
            offset = message.offset
            last = read[tp]
            if last is not None and offset < last:
                continue  # already handed over (a fetch that overlapped a seek)
            await hand_over(consumer, message)
            read[tp] = offset


def install() -> None:
    """Replace Faust's message loop with :func:`drain` (once per process). An app with a
    side fetcher (:mod:`app.fastfetch`) has its messages handed over beside aiokafka's."""
    global _INSTALLED
    if _INSTALLED:
        return
    from faust.transport.consumer import Consumer

    if not hasattr(Consumer, "_drain_messages"):  # pragma: no cover - guarded by the pin
        raise RuntimeError("this faust-streaming has no Consumer._drain_messages")

    async def both(self: Any, fetcher: Any) -> None:
        from app import fastfetch

        side = fastfetch.side_of(self.app)
        if side is None:
            await drain(self, fetcher)
            return
        tasks = [asyncio.ensure_future(drain(self, fetcher)),
                 asyncio.ensure_future(fastfetch.drain(self, fetcher, side))]
        try:
            done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_EXCEPTION)
            for task in done:
                task.result()  # the first failure, if any
        finally:
            for task in tasks:
                task.cancel()

    async def _drain_messages(self: Any, fetcher: Any) -> None:
        try:
            await both(self, fetcher)
        except self.consumer_stopped_errors:
            if not self.transport.app.should_stop:
                raise
            self.log.info("Broker stopped consumer, shutting down...")
        except asyncio.CancelledError:
            if not self.transport.app.should_stop:
                raise
        except Exception as exc:
            self.log.exception("Drain messages raised: %r", exc)
            raise

    Consumer._drain_messages = _drain_messages  # type: ignore[method-assign]
    _INSTALLED = True
