"""Idempotent, ``acks=all`` producers whose sends can be awaited.

:class:`AckedProducer` is the front desk's (confluent-kafka): it answers ``202`` only after
Kafka acknowledged the request, so every send returns when the broker has the message (or
raises ``NotAcknowledged``); its delivery reports are served by a background thread.
The agents' units of work send a whole set of records and await it at once, through
:class:`GroupedProducer` (the default: Kafka's produce protocol over aiokafka's client, one
produce request per broker for all the partitions a set touches) or :class:`BatchProducer`
(confluent-kafka: one request per partition, ``POSTROOM_PRODUCER=librdkafka``).
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import random
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

import aiokafka.errors as errors  # type: ignore[import-untyped]
from aiokafka.client import AIOKafkaClient  # type: ignore[import-untyped]
from aiokafka.protocol.produce import ProduceRequest  # type: ignore[import-untyped]
from aiokafka.protocol.transaction import InitProducerIdRequest  # type: ignore[import-untyped]
from aiokafka.record.default_records import (  # type: ignore[import-untyped]
    DefaultRecordBatchBuilder,
)
from aiokafka.structs import TopicPartition  # type: ignore[import-untyped]

from app.errors import NotAcknowledged
from app.pack import partition_for

log = logging.getLogger(__name__)

Headers = Sequence[tuple[str, bytes]]
# topic, partition (None: the partitioner decides by key), key, value, headers
Record = tuple[str, int | None, bytes | None, bytes | None, Headers | None]
T = TypeVar("T")


def producer_config(bootstrap: str, **extra: Any) -> dict[str, Any]:
    """Settings every Postroom confluent-kafka producer uses."""
    return {
        "bootstrap.servers": bootstrap,
        "enable.idempotence": True,
        "acks": "all",
        # Same partition for a key as Faust's (Java-compatible murmur2) partitioner.
        "partitioner": "murmur2_random",
        "linger.ms": 2,
        "delivery.timeout.ms": 30_000,
        "client.id": "postroom",
        **extra,
    }


def place(producer: Any, record: Record, on_delivery: Callable[[Any, Any], None]) -> None:
    """Hand one record to librdkafka (about 1.5 us); raises ``BufferError`` while its local
    queue is full."""
    topic, partition, key, value, headers = record
    if headers is not None and not isinstance(headers, list):
        headers = list(headers)
    if partition is None:
        producer.produce(topic, value, key, on_delivery=on_delivery, headers=headers)
    else:
        producer.produce(topic, value, key, partition, on_delivery=on_delivery,
                         headers=headers)


async def produce(producer: Any, record: Record, on_delivery: Callable[[Any, Any], None],
                  when_full: Callable[[], None] = lambda: None) -> None:
    """Hand one record to librdkafka, waiting while its local queue is full (``when_full``
    is called first, for a producer whose reports must be served to drain it)."""
    while True:
        try:
            place(producer, record, on_delivery)
            return
        except BufferError:
            when_full()
            await asyncio.sleep(0.005)


class AckedProducer:
    """Produce and await the broker's acknowledgement."""

    def __init__(self, bootstrap: str, **extra: Any) -> None:
        from confluent_kafka import Producer

        self._producer = Producer(producer_config(bootstrap, **extra))
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, name="frontdesk-acks", daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while not self._stop.is_set():
            self._producer.poll(0.05)

    async def send(
        self,
        topic: str,
        key: bytes,
        value: bytes,
        headers: Headers | None = None,
        timeout: float = 30.0,
    ) -> tuple[int, int]:
        """Produce one message; return ``(partition, offset)`` once it is acknowledged."""
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[tuple[int, int]] = loop.create_future()

        def on_delivery(err: Any, msg: Any) -> None:
            if err is not None:
                loop.call_soon_threadsafe(_fail, fut, NotAcknowledged(str(err)))
            else:
                loop.call_soon_threadsafe(_succeed, fut, (msg.partition(), msg.offset()))

        await produce(self._producer, (topic, None, key, value, headers), on_delivery)
        try:
            return await asyncio.wait_for(fut, timeout)
        except TimeoutError as exc:
            raise NotAcknowledged(f"no acknowledgement from Kafka within {timeout}s") from exc

    def close(self, timeout: float = 10.0) -> None:
        self._producer.flush(timeout)
        self._stop.set()
        self._thread.join(timeout=2)


def _succeed(fut: asyncio.Future[T], value: T) -> None:
    if not fut.done():
        fut.set_result(value)


def _fail(fut: asyncio.Future[Any], exc: Exception) -> None:
    if not fut.done():
        fut.set_exception(exc)


class BatchProducer:
    """The worker's producer: sets of records sent together, each set awaited as a whole.

    Its delivery reports are served on the event loop itself, by one task that polls while
    any set is out, rather than by a thread: a report then costs a plain function call, not
    a hand-over of the interpreter lock between two threads for every message, and however
    many agents wait, one poll serves them all.
    """

    POLL_S = 0.001

    def __init__(self, bootstrap: str, **extra: Any) -> None:
        from confluent_kafka import Producer

        self._producer = Producer(producer_config(bootstrap, **{"client.id": "postroom-worker",
                                                                 **extra}))
        self._out = 0  # messages produced and not yet reported
        self._poller: asyncio.Task[None] | None = None

    async def send_all(self, records: Sequence[Record], timeout: float = 30.0
                       ) -> dict[tuple[str, int], int]:
        """Produce every record; once all are acked, return the highest offset each
        ``(topic, partition)`` got.

        Raises ``NotAcknowledged`` naming the first failure (the caller retries the set:
        every receiver is idempotent).
        """
        if not records:
            return {}
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        placed: dict[tuple[str, int], int] = {}
        errors: list[str] = []
        left = [len(records)]

        def on_delivery(err: Any, msg: Any) -> None:
            # One callback for the whole set: a report names its own topic and partition.
            if err is not None:
                errors.append(str(err))
            else:
                at = (msg.topic(), msg.partition())
                offset = msg.offset()
                if offset > placed.get(at, -1):
                    placed[at] = offset
            self._out -= 1
            left[0] -= 1
            if left[0] == 0 and not done.done():
                done.set_result(None)

        # A coroutine per record would cost as much again as placing it, so records are
        # placed in a plain loop and one is awaited only while librdkafka's queue is full.
        producer = self._producer
        for record in records:
            try:
                place(producer, record, on_delivery)
            except BufferError:
                await produce(producer, record, on_delivery, when_full=self._ensure_poller)
            self._out += 1
        self._ensure_poller()
        try:
            await asyncio.wait_for(done, timeout)
        except TimeoutError as exc:
            raise NotAcknowledged(f"no acknowledgement from Kafka within {timeout}s") from exc
        if errors:
            raise NotAcknowledged(f"{len(errors)} of {len(records)} not acknowledged: {errors[0]}")
        return placed

    def _ensure_poller(self) -> None:
        if self._poller is None or self._poller.done():
            self._poller = asyncio.ensure_future(self._poll())

    async def _poll(self) -> None:
        poll = self._producer.poll
        while self._out > 0:
            if poll(0) == 0:
                await asyncio.sleep(self.POLL_S)

    def close(self, timeout: float = 10.0) -> None:
        self._producer.flush(timeout)

    async def stop(self) -> None:
        self.close()


class _Set:
    """One :meth:`GroupedProducer.send_all` call: what it waits for, and what it got."""

    __slots__ = ("future", "left", "placed", "timer")

    def __init__(self, future: asyncio.Future[dict[tuple[str, int], int]], left: int) -> None:
        self.future = future
        self.left = left  # records not yet acknowledged
        self.placed: dict[tuple[str, int], int] = {}  # (topic, partition) -> last offset
        self.timer: asyncio.TimerHandle | None = None

    def succeed(self) -> None:
        _succeed(self.future, self.placed)
        if self.timer is not None:
            self.timer.cancel()

    def fail(self, exc: Exception) -> None:
        _fail(self.future, exc)
        if self.timer is not None:
            self.timer.cancel()


# The broker no longer has this producer's state for the partition (or the sequences went
# astray): only a new producer id gets the partition moving again.
_SEQUENCE_LOST = (errors.OutOfOrderSequenceNumber, errors.UnknownProducerId,
                  errors.InvalidProducerEpoch, errors.DuplicateSequenceNumber)
# A record waiting in its partition's queue: its set, key, value and headers.
_Entry = tuple[_Set, bytes | None, bytes | None, Headers | None]
# A record batch as sent (resent as it is until the broker answers for it), and its records.
_Built = tuple[bytearray, list[_Entry]]


class GroupedProducer:
    """The worker's producer: a set of records goes out as one record batch per partition,
    and every batch waiting for a broker goes out in one produce request.

    librdkafka sends one produce request per partition. A unit of work touches many
    partitions (an order's events, the ledger's accounts, the lines' skus, the tables'
    changelogs), so at a steady flow the worker sent about four produce requests an order,
    and the broker's request handling cost about as much CPU as the worker itself. Here the
    records of every set handed over are queued by partition, and one sender task drains the
    queues into a single produce request per broker, one request in flight at a time: what
    arrives meanwhile rides the next one.

    It speaks Kafka's produce protocol itself, over aiokafka's client (connections,
    metadata, the protocol's structs and its C record-batch builder), and not through
    aiokafka's producer, whose accumulator and sender give every record batch its own
    future, callbacks and task hand-overs: at a steady flow of 300 orders/s that was about
    9,500 event-loop callbacks a second, and a set of 32 partitions cost 1.1-1.2 ms of CPU
    against 0.5 ms here. A set waits on one future.

    The records are the same: idempotent (a producer id from the broker and a sequence
    number per partition: a batch the broker may or may not have written is sent again
    unchanged, and the broker keeps it once), ``acks=all``, keys placed by Kafka's murmur2.
    Same interface as :class:`BatchProducer`; runs on the event loop, started by its first
    send.
    """

    MAX_BATCH_BYTES = 1_000_000 - 64 * 1024  # under the broker's default message.max.bytes
    REQUEST_TIMEOUT_MS = 30_000
    BACKOFF_S = 0.1

    def __init__(self, bootstrap: str, client_id: str = "postroom-worker") -> None:
        self._bootstrap = bootstrap
        self._client_id = client_id
        self._client: Any = None  # aiokafka's AIOKafkaClient, once started
        self._starting: asyncio.Lock | None = None
        self._counts: dict[str, int] = {}  # topic -> partitions
        self._queues: dict[tuple[str, int], collections.deque[_Entry]] = {}
        self._retry: dict[tuple[str, int], _Built] = {}  # sent, no answer for it yet
        self._sequence: dict[tuple[str, int], int] = {}  # the next batch's base sequence
        self._producer_id = self._epoch = -1
        self._wake = asyncio.Event()
        self._sender: asyncio.Task[None] | None = None

    async def _started(self) -> Any:
        if self._client is not None:
            return self._client
        if self._starting is None:
            self._starting = asyncio.Lock()
        async with self._starting:
            if self._client is None:
                client = self._new_client()
                try:
                    await client.bootstrap()
                    await self._new_producer_id(client)
                except BaseException:
                    await client.close()  # the next send tries again from the start
                    raise
                self._sender = asyncio.ensure_future(self._send_forever(client))
                self._client = client
        return self._client

    def _new_client(self) -> Any:
        return AIOKafkaClient(bootstrap_servers=self._bootstrap, client_id=self._client_id,
                              request_timeout_ms=self.REQUEST_TIMEOUT_MS)

    async def _new_producer_id(self, client: Any) -> None:
        """Ask the cluster for a producer id; every partition's sequence starts again."""
        while True:
            answer = await client.send(client.get_random_node(),
                                       InitProducerIdRequest(None, 60_000))
            error = errors.for_code(answer.error_code)
            if error is errors.NoError:
                self._producer_id, self._epoch = answer.producer_id, answer.producer_epoch
                self._sequence.clear()
                return
            if not error.retriable:
                raise error()
            await asyncio.sleep(self.BACKOFF_S)

    async def _partitions(self, client: Any, topic: str) -> int:
        """A topic's partition count, asked of the cluster once."""
        count = self._counts[topic] = len(await client._wait_on_metadata(topic))
        return count

    async def send_all(self, records: Sequence[Record], timeout: float = 30.0
                       ) -> dict[tuple[str, int], int]:
        """Produce every record; once all are acked, return the highest offset each
        ``(topic, partition)`` got (see :meth:`BatchProducer.send_all`)."""
        if not records:
            return {}
        try:
            client = await self._started()
            where: list[tuple[str, int]] = []
            for record in records:
                topic, partition, key = record[0], record[1], record[2]
                # Asked once per topic, even for a given partition: the client keeps
                # metadata (the partitions' leaders) only for the topics it was asked about.
                count = self._counts.get(topic) or await self._partitions(client, topic)
                if partition is None:
                    partition = (partition_for(key, count) if key is not None
                                 else random.randrange(count))
                where.append((topic, partition))
        except Exception as exc:  # aiokafka's KafkaError and friends
            raise NotAcknowledged(f"{type(exc).__name__}: {exc}") from exc
        loop = asyncio.get_running_loop()
        waiting = _Set(loop.create_future(), len(records))
        # Queued with no await in between: a set's records of one partition stay together.
        queues = self._queues
        for at, (_, _, key, value, headers) in zip(where, records, strict=True):
            queue = queues.get(at)
            if queue is None:
                queue = queues[at] = collections.deque()
            queue.append((waiting, key, value, headers))
        waiting.timer = loop.call_later(timeout, waiting.fail, NotAcknowledged(
            f"no acknowledgement from Kafka within {timeout}s"))
        self._wake.set()
        try:
            return await waiting.future
        except asyncio.CancelledError:
            waiting.fail(NotAcknowledged("cancelled"))  # its queued records are skipped
            raise

    def _pending(self) -> bool:
        return bool(self._retry) or any(self._queues.values())

    async def _send_forever(self, client: Any) -> None:
        """The sender: a round of requests while anything waits, then sleep until a send."""
        while True:
            await self._wake.wait()
            self._wake.clear()
            while self._pending():
                try:
                    await self._round(client)
                except Exception as exc:  # a bug, not Kafka's answer: fail, do not hang
                    log.exception("the unit producer's sender failed")
                    self._fail_all(NotAcknowledged(f"{type(exc).__name__}: {exc}"))

    def _fail_all(self, exc: Exception) -> None:
        for queue in self._queues.values():
            for entry in queue:
                entry[0].fail(exc)
            queue.clear()
        for _, entries in self._retry.values():
            for entry in entries:
                entry[0].fail(exc)
        self._retry.clear()

    async def _round(self, client: Any) -> None:
        """One produce request to each broker leading a partition with records waiting."""
        nodes: dict[int, list[tuple[str, int]]] = {}
        unknown = False
        cluster = client.cluster
        due = dict.fromkeys(at for at, queue in self._queues.items() if queue)
        due.update(dict.fromkeys(self._retry))
        for at in due:
            leader = cluster.leader_for_partition(TopicPartition(*at))
            if leader is None or leader == -1:
                unknown = True
            else:
                nodes.setdefault(leader, []).append(at)
        if unknown:
            client.force_metadata_update()
            if not nodes:
                await asyncio.sleep(self.BACKOFF_S)
                return
        if len(nodes) == 1:
            [(node, partitions)] = nodes.items()
            lost = await self._request(client, node, partitions)
        else:
            lost = any(await asyncio.gather(*(self._request(client, node, partitions)
                                              for node, partitions in nodes.items())))
        if lost:
            # The broker no longer knows this producer's sequences: a new producer id, and
            # what was unanswered goes out again in new batches numbered from zero.
            for at, (_, entries) in self._retry.items():
                self._queues[at].extendleft(reversed(entries))
            self._retry.clear()
            await self._new_producer_id(client)

    def _build(self, at: tuple[str, int]) -> _Built | None:
        """The next record batch of a partition: as many queued records as fit in one."""
        queue = self._queues[at]
        builder = DefaultRecordBatchBuilder(2, 0, 0, self._producer_id, self._epoch,
                                            self._sequence.get(at, 0), self.MAX_BATCH_BYTES)
        entries: list[_Entry] = []
        now = int(time.time() * 1000)
        while queue:
            entry = queue[0]
            waiting, key, value, headers = entry
            if waiting.future.done():  # failed or timed out: its sender gave up on it
                queue.popleft()
                continue
            row = list(headers) if headers else []
            if builder.append(len(entries), now, key, value, row) is None:
                if entries:
                    break  # the rest goes in the next request
                queue.popleft()
                waiting.fail(NotAcknowledged(f"a record for {at[0]} is too large"))
                continue
            entries.append(queue.popleft())
        return (builder.build(), entries) if entries else None

    async def _request(self, client: Any, node: int, partitions: list[tuple[str, int]]
                       ) -> bool:
        """Send one produce request to ``node`` and settle what it answers; return whether
        the broker lost this producer's sequences (see :meth:`_round`)."""
        batches: dict[tuple[str, int], _Built] = {}
        topics: dict[str, list[tuple[int, bytearray]]] = {}
        for at in partitions:
            built = self._retry.get(at) or self._build(at)
            if built is not None:
                batches[at] = built
                topics.setdefault(at[0], []).append((at[1], built[0]))
        if not batches:
            return False
        request = ProduceRequest(required_acks=-1, timeout=self.REQUEST_TIMEOUT_MS,
                                 topics=list(topics.items()), transactional_id=None)
        try:
            answer = await client.send(node, request)
        except errors.KafkaError as exc:  # no answer: every batch may or may not be written
            log.warning("a produce request to broker %s failed (%r); sending it again",
                        node, exc)
            if getattr(exc, "invalid_metadata", False):
                client.force_metadata_update()
            self._retry.update(batches)
            await asyncio.sleep(self.BACKOFF_S)
            return False
        lost = again = False
        for topic, answers in answer.topics:
            for partition, code, offset, *_ in answers:
                at = (topic, partition)
                built = batches.pop(at, None)
                if built is None:
                    continue
                entries = built[1]
                error = errors.for_code(code)
                if error is errors.NoError:
                    self._retry.pop(at, None)
                    self._sequence[at] = (self._sequence.get(at, 0) + len(entries)) & 0x7FFFFFFF
                    for i, (waiting, *_) in enumerate(entries):
                        waiting.placed[at] = offset + i
                        waiting.left -= 1
                        if waiting.left == 0:
                            waiting.succeed()
                elif error in _SEQUENCE_LOST:
                    self._retry[at] = built
                    lost = True
                elif error.retriable:
                    log.warning("%s[%s]: %s; sending the batch again", topic, partition,
                                error.__name__)
                    self._retry[at] = built
                    again = True
                    if getattr(error, "invalid_metadata", False):
                        client.force_metadata_update()
                else:  # refused, not written: the partition's next batch takes its sequence
                    self._retry.pop(at, None)
                    for waiting, *_ in entries:
                        waiting.fail(NotAcknowledged(f"{error.__name__} for {topic}[{partition}]"))
        if batches:  # not in the answer: as good as unanswered
            self._retry.update(batches)
            again = True
        if again and not lost:
            await asyncio.sleep(self.BACKOFF_S)
        return lost

    async def stop(self) -> None:
        """Stop the sender and close the connections; a set still waiting fails."""
        sender, self._sender = self._sender, None
        if sender is not None:
            sender.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await sender
        self._fail_all(NotAcknowledged("the producer stopped"))
        client, self._client = self._client, None
        if client is not None:
            await client.close()


# The worker's producer, as a unit of work sees it (``POSTROOM_PRODUCER`` chooses).
UnitProducer = BatchProducer | GroupedProducer
