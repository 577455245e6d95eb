"""Three corrections to the consumer under Faust, installed before the app is built.

1. Rewind never-committed partitions when Faust seeks to the committed offsets.

When a worker (re)joins, Faust's recovery lets the consumer fetch before the stream
partitions are sought to their committed offsets; what it fetched meanwhile is discarded,
and the seek is what brings it back. aiokafka's ``seek_to_committed`` only seeks
partitions whose committed offset is above zero, so a partition with no commit yet (a
worker killed before its first commit) keeps the advanced position: the discarded
messages are skipped, and Faust's gap tracking then commits past them. Such a partition is
sought to its beginning instead, which is the group's reset policy (``earliest``);
messages handled twice are deduplicated by the handlers.

2. Never commit past a hole in a partition's offsets. Faust counts a jump in the offsets it
reads as done (right for compacted or transactional topics, which Postroom does not
consume); a jump caused by a skipped fetch would then be committed and the messages lost.
:mod:`app.sequence` has the agents go back for the missing messages instead.

3. A short fetch wait. Faust builds its consumer with ``fetch_max_wait_ms=1500``, and
aiokafka keeps one fetch in flight per broker, made of the partitions that had nothing
buffered when it was sent. While it waits on quiet partitions, new messages on the
partitions left out of it wait too, up to the full 1.5 s, for every hop of an order. Under
load the agents then sit idle with a backlog in Kafka (the bench saw the worker at 54% CPU
and half its throughput in such runs). ``POSTROOM_FETCH_MAX_WAIT_MS`` bounds that wait.
"""

from __future__ import annotations

from typing import Any

_INSTALLED = False


def install(fetch_max_wait_ms: int) -> None:
    global _INSTALLED
    if _INSTALLED:
        return
    from aiokafka import AIOKafkaConsumer  # type: ignore[import-untyped]

    original = AIOKafkaConsumer.seek_to_committed

    async def seek_to_committed(self: Any, *partitions: Any) -> Any:
        committed = await original(self, *partitions)
        never = [tp for tp, offset in committed.items() if not offset or offset <= 0]
        if never:
            await self.seek_to_beginning(*never)
        return committed

    AIOKafkaConsumer.seek_to_committed = seek_to_committed  # type: ignore[method-assign]

    from faust.transport.consumer import Consumer

    if not hasattr(Consumer, "_add_gap"):  # pragma: no cover - guarded by the version pin
        raise RuntimeError("this faust-streaming has no Consumer._add_gap; see app/seekfix.py")

    async def no_gap(self: Any, tp: Any, offset_from: int, offset_to: int) -> None:
        """Never count offsets that were not handled as done (see app.sequence)."""

    Consumer._add_gap = no_gap  # type: ignore[method-assign]

    from faust.transport.drivers.aiokafka import AIOKafkaConsumerThread

    create = AIOKafkaConsumerThread._create_worker_consumer

    def create_worker_consumer(self: Any, transport: Any) -> Any:
        consumer = create(self, transport)
        consumer._fetch_max_wait_ms = fetch_max_wait_ms  # read when the fetcher starts
        return consumer

    thread: Any = AIOKafkaConsumerThread
    thread._create_worker_consumer = create_worker_consumer
    _INSTALLED = True
