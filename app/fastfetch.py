"""The agents' messages fetched by librdkafka, under Faust's consumer group.

Faust's consumer is aiokafka, written in Python: every fetch builds a request over all the
worker's partitions, parses the answer for each of them and wakes the event loop several
times, and at a steady flow it fetches a few hundred times a second. At half load that was
about a quarter of the worker's CPU, on the same interpreter lock as the agents.

Here aiokafka keeps everything that is the group's: membership, heartbeats, the assignment
(Faust's assignor, co-partitioning and all), table recovery from the changelogs, the global
table and the offset commits. The partitions of the topics the agents consume (the *stream
partitions*) are fetched instead by a confluent-kafka consumer that joins no group: after
each rebalance, once Faust has sought the stream partitions to their committed offsets
(``perform_seek``), they are assigned to it at those offsets and paused in aiokafka. librdkafka
fetches them in its own threads, and a task on the event loop takes what has arrived
(``consume(n, 0)``, about 1 us a message) and hands each message to Faust's streams exactly
as the aiokafka path does: the same ``ConsumerMessage``, the same acks and commits through
Faust, the same per-partition read offsets.

What else goes through Faust's consumer is kept true for those partitions: a seek (the
agents' rewinds, see :mod:`app.sequence`) moves librdkafka's position and drops what was
taken before it; a position is librdkafka's; a revocation empties the assignment before
Faust's own handling; Faust's fetch-path health check, which watches aiokafka's fetch times,
skips them. ``POSTROOM_FETCHER=aiokafka`` restores Faust's own path.
"""

from __future__ import annotations

import asyncio
import logging
import weakref
from collections.abc import Iterable
from typing import Any

log = logging.getLogger(__name__)

TAKE = 500  # messages taken from librdkafka per turn of the event loop
# How long the task sleeps when nothing has arrived: 1 ms while messages keep coming, 5 ms
# once none has come for a second (an idle worker's polls cost 4% of a core at 1 ms; only the
# first message after a quiet spell waits the longer sleep)
BUSY_S, QUIET_S, QUIET_AFTER_S = 0.001, 0.005, 1.0
YIELD_EVERY = 100  # messages handed over between turns given to the event loop

_INSTALLED = False
_SIDES: weakref.WeakKeyDictionary[Any, SideFetcher] = weakref.WeakKeyDictionary()


def attach(app: Any, side: SideFetcher) -> None:
    """Have ``app``'s consumer fetch its stream partitions with ``side``."""
    install()
    _SIDES[app] = side


def side_of(app: Any) -> SideFetcher | None:
    return _SIDES.get(app)


class SideFetcher:
    """The librdkafka consumer of the stream partitions, assigned by hand."""

    def __init__(self, bootstrap: str, group: str, topics: Iterable[str],
                 fetch_max_wait_ms: int) -> None:
        self.topics = frozenset(topics)
        self.config = {
            "bootstrap.servers": bootstrap,
            "group.id": group,  # required by librdkafka; this consumer never joins it
            "enable.auto.commit": False,
            "enable.auto.offset.store": False,
            "enable.partition.eof": False,
            "auto.offset.reset": "earliest",  # as Faust's: an offset gone by retention
            "fetch.wait.max.ms": fetch_max_wait_ms,
            "fetch.min.bytes": 1,
            "queued.max.messages.kbytes": 16 * 1024,  # what it may hold fetched ahead
            "client.id": "postroom-fetcher",
        }
        self.consumer: Any = None
        self.tps: dict[tuple[str, int], Any] = {}  # (topic, partition) -> Faust's TP
        self.version: dict[Any, int] = {}  # TP -> bumped on every seek, assign, unassign

    def owns(self, tp: Any) -> bool:
        return tp in self.tps  # a TP is a (topic, partition) tuple

    def _client(self) -> Any:
        if self.consumer is None:
            from confluent_kafka import Consumer

            self.consumer = Consumer(self.config)
        return self.consumer

    def take(self, offsets: dict[Any, int | None]) -> None:
        """Fetch these stream partitions from these offsets (None: the beginning), and
        nothing else."""
        from confluent_kafka import OFFSET_BEGINNING, TopicPartition

        self.release()
        if not offsets:
            return
        self._client().assign([
            TopicPartition(tp.topic, tp.partition,
                           OFFSET_BEGINNING if offset is None else offset)
            for tp, offset in offsets.items()
        ])
        for tp in offsets:
            self.tps[(tp.topic, tp.partition)] = tp
            self.version[tp] = self.version.get(tp, 0) + 1

    def release(self) -> None:
        """Stop fetching every partition; what was taken and not handed over is dropped."""
        for tp in self.tps.values():
            self.version[tp] = self.version.get(tp, 0) + 1
        self.tps.clear()
        if self.consumer is not None:
            self.consumer.unassign()

    def seek(self, tp: Any, offset: int) -> None:
        """Go to ``offset`` of a stream partition; what was taken from it is dropped."""
        from confluent_kafka import KafkaException, TopicPartition

        self.version[tp] = self.version.get(tp, 0) + 1
        where = TopicPartition(tp.topic, tp.partition, offset)
        try:
            self.consumer.seek(where)
        except KafkaException:  # not fetching yet (just assigned): assign it there again
            self.consumer.incremental_unassign([TopicPartition(tp.topic, tp.partition)])
            self.consumer.incremental_assign([where])

    def position(self, tp: Any) -> int | None:
        """The next offset librdkafka will hand over (None: nothing taken yet)."""
        from confluent_kafka import TopicPartition

        [at] = self.consumer.position([TopicPartition(tp.topic, tp.partition)])
        return at.offset if at.offset >= 0 else None

    def poll(self) -> list[Any]:
        if not self.tps:
            return []
        return self.consumer.consume(TAKE, 0)  # type: ignore[no-any-return]

    def close(self) -> None:
        if self.consumer is not None:
            self.tps.clear()
            self.consumer.close()
            self.consumer = None


async def drain(consumer: Any, fetcher: Any, side: SideFetcher) -> None:
    """Hand what librdkafka fetched to Faust's streams, as :func:`app.handoff.drain` does
    with aiokafka's records."""
    from faust.types.tuples import ConsumerMessage

    from app.handoff import hand_over

    read = consumer._read_offset
    stopped = consumer._stopped.is_set
    fetcher_stopped = fetcher._stopped.is_set
    app = consumer.app
    since_yield = 0
    clock = asyncio.get_running_loop().time
    last_seen = clock()
    while not (stopped() or fetcher_stopped()):
        batch = side.poll() if consumer.flow_active else []
        if not batch:
            await asyncio.sleep(BUSY_S if clock() - last_seen < QUIET_AFTER_S else QUIET_S)
            continue
        last_seen = clock()
        versions = dict(side.version)
        generation = app.consumer_generation_id
        for raw in batch:
            since_yield += 1
            if since_yield > YIELD_EVERY:  # before the checks: a seek may come meanwhile
                await asyncio.sleep(0)
                since_yield = 0
            if raw.error() is not None:
                log.warning("fetching %s[%s] failed: %s", raw.topic(), raw.partition(),
                            raw.error())
                continue
            tp = side.tps.get((raw.topic(), raw.partition()))
            if tp is None or side.version.get(tp) != versions.get(tp):
                continue  # sought, or no longer ours, since it was taken
            if not consumer.flow_active or app.consumer_generation_id != generation:
                break  # a rebalance began: these come again from the committed offsets
            offset = raw.offset()
            last = read.get(tp)
            if last is not None and offset < last:
                continue  # already handed over
            key, value = raw.key(), raw.value()
            kind, stamp = raw.timestamp()
            message = ConsumerMessage(
                raw.topic(), raw.partition(), offset, stamp / 1000.0, kind,
                raw.headers() or [], key, value, None,
                len(key) if key is not None else 0, len(value) if value is not None else 0,
                tp, generation_id=generation,
            )
            await hand_over(consumer, message)
            if side.version.get(tp) == versions.get(tp):  # not sought meanwhile
                read[tp] = offset


def install() -> None:
    """Route the stream partitions of every app given a side fetcher (see :func:`attach`)
    through it (once per process); an app without one keeps Faust's path."""
    global _INSTALLED
    if _INSTALLED:
        return
    from faust.transport.drivers.aiokafka import AIOKafkaConsumerThread, Consumer

    for owner, name in ((Consumer, "_getmany"), (Consumer, "perform_seek"),
                        (Consumer, "on_partitions_revoked"), (Consumer, "_seek"),
                        (Consumer, "position"), (AIOKafkaConsumerThread, "verify_event_path")):
        if not hasattr(owner, name):  # pragma: no cover - guarded by the version pins
            raise RuntimeError(f"this faust-streaming has no {owner.__name__}.{name}")
    faust_consumer: Any = Consumer
    thread: Any = AIOKafkaConsumerThread
    getmany, perform_seek = faust_consumer._getmany, faust_consumer.perform_seek
    revoked, seek, position = (faust_consumer.on_partitions_revoked, faust_consumer._seek,
                               faust_consumer.position)
    verify = thread.verify_event_path

    async def _getmany(self: Any, active_partitions: Any, timeout: float) -> Any:
        side = side_of(self.app)
        if side is not None and active_partitions and side.tps:
            active_partitions = {tp for tp in active_partitions if not side.owns(tp)}
            if not active_partitions:  # only the side's: wait as aiokafka would have
                await asyncio.sleep(min(timeout, 0.1))
                return {}
        return await getmany(self, active_partitions, timeout)

    async def _perform_seek(self: Any) -> None:
        await perform_seek(self)
        side = side_of(self.app)
        if side is None:
            return
        from aiokafka.structs import TopicPartition  # type: ignore[import-untyped]

        streams = {tp: self._read_offset.get(tp) for tp in self.assignment()
                   if tp.topic in side.topics}
        aio = self._thread._ensure_consumer()
        # aiokafka keeps the group; librdkafka fetches these
        aio.pause(*(TopicPartition(tp.topic, tp.partition) for tp in streams))
        side.take(streams)

    async def _revoked(self: Any, tps: Any) -> None:
        side = side_of(self.app)
        if side is not None:
            side.release()
        await revoked(self, tps)

    async def _seek(self: Any, tp: Any, offset: int) -> None:
        side = side_of(self.app)
        if side is not None and side.owns(tp):
            side.seek(tp, offset)
        else:
            await seek(self, tp, offset)

    async def _position(self: Any, tp: Any) -> int | None:
        side = side_of(self.app)
        if side is not None and side.owns(tp):
            return side.position(tp)
        return await position(self, tp)  # type: ignore[no-any-return]

    def _verify(self: Any, now: float, tp: Any) -> None:
        side = side_of(self.consumer.app)
        if side is None or not side.owns(tp):  # aiokafka does not fetch the side's
            verify(self, now, tp)

    faust_consumer._getmany = _getmany
    faust_consumer.perform_seek = _perform_seek
    faust_consumer.on_partitions_revoked = _revoked
    faust_consumer._seek = _seek
    faust_consumer.position = _position
    thread.verify_event_path = _verify
    _INSTALLED = True
