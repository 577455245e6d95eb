"""Idempotent, ``acks=all`` producers whose sends can be awaited.

:class:`AckedProducer` is the front desk's (confluent-kafka): it answers ``202`` only after
Kafka acknowledged the request, so every send returns when the broker has the message (or
raises ``NotAcknowledged``); its delivery reports are served by a background thread.
The agents' units of work send a whole set of records and await it at once, through
:class:`GroupedProducer` (aiokafka, the default: one produce request per broker for all the
partitions a set touches) or :class:`BatchProducer` (confluent-kafka: one request per
partition, ``POSTROOM_PRODUCER=librdkafka``).
"""

from __future__ import annotations

import asyncio
import random
import threading
from collections.abc import Callable, Sequence
from typing import Any

from app.errors import NotAcknowledged
from app.pack import partition_for

Headers = Sequence[tuple[str, bytes]]
# topic, partition (None: the partitioner decides by key), key, value, headers
Record = tuple[str, int | None, bytes | None, bytes | None, Headers | None]


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


def _succeed(fut: asyncio.Future[tuple[int, int]], value: tuple[int, int]) -> None:
    if not fut.done():
        fut.set_result(value)


def _fail(fut: asyncio.Future[tuple[int, int]], exc: Exception) -> None:
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


class GroupedProducer:
    """The worker's producer, built on aiokafka: a set of records goes out as one batch per
    partition, and every batch waiting for the broker goes out in one produce request.

    librdkafka sends one produce request per partition. A unit of work touches many
    partitions (an order's events, the ledger's accounts, the lines' skus, the tables'
    changelogs), so at a steady flow the worker sent about four produce requests an order,
    and the broker's request handling cost about as much CPU as the worker itself. Here a
    unit's records are grouped by partition into record batches (built by aiokafka's C
    record builder) and the sender drains every queued batch into a single request per
    broker, one request in flight at a time: what arrives meanwhile rides the next one.
    The records are the same: idempotent, ``acks=all``, keys placed by Kafka's murmur2.
    Same interface as :class:`BatchProducer`; runs on the event loop, started by its
    first send.
    """

    MAX_BATCH_BYTES = 1_000_000 - 64 * 1024  # under the broker's default message.max.bytes

    def __init__(self, bootstrap: str, client_id: str = "postroom-worker") -> None:
        self._bootstrap = bootstrap
        self._client_id = client_id
        self._producer: Any = None
        self._starting: asyncio.Lock | None = None
        self._counts: dict[str, int] = {}  # topic -> partitions

    async def _started(self) -> Any:
        if self._producer is not None:
            return self._producer
        if self._starting is None:
            self._starting = asyncio.Lock()
        async with self._starting:
            if self._producer is None:
                from aiokafka import AIOKafkaProducer

                producer = AIOKafkaProducer(
                    bootstrap_servers=self._bootstrap, client_id=self._client_id,
                    acks="all", enable_idempotence=True, linger_ms=0,
                    max_batch_size=self.MAX_BATCH_BYTES, request_timeout_ms=30_000,
                )
                try:
                    await producer.start()
                except BaseException:
                    await producer.stop()  # the next send tries again from the start
                    raise
                self._producer = producer
        return self._producer

    async def _partitions(self, producer: Any, topic: str) -> int:
        """A topic's partition count, asked of the cluster once."""
        count = self._counts[topic] = len(await producer.partitions_for(topic))
        return count

    async def send_all(self, records: Sequence[Record], timeout: float = 30.0
                       ) -> dict[tuple[str, int], int]:
        """Produce every record; once all are acked, return the highest offset each
        ``(topic, partition)`` got (see :meth:`BatchProducer.send_all`)."""
        if not records:
            return {}
        waits: list[tuple[tuple[str, int], int, Any]] = []
        try:
            producer = await self._started()
            groups: dict[tuple[str, int], list[Record]] = {}
            for record in records:
                topic, partition, key = record[0], record[1], record[2]
                if partition is None:
                    count = (self._counts.get(topic)
                             or await self._partitions(producer, topic))
                    partition = (partition_for(key, count) if key is not None
                                 else random.randrange(count))
                groups.setdefault((topic, partition), []).append(record)
            # Every batch is queued before the sender runs again (no await below suspends
            # while the topics' metadata is known), so they leave in one request.
            for at, group in groups.items():
                batch, n = producer.create_batch(), 0
                for _, _, key, value, headers in group:
                    row = list(headers) if headers else []
                    if batch.append(key=key, value=value, timestamp=None, headers=row) is None:
                        waits.append((at, n, await producer.send_batch(batch, at[0],
                                                                       partition=at[1])))
                        batch, n = producer.create_batch(), 0
                        if batch.append(key=key, value=value, timestamp=None,
                                        headers=row) is None:
                            raise NotAcknowledged(f"a record for {at[0]} is too large")
                    n += 1
                waits.append((at, n, await producer.send_batch(batch, at[0], partition=at[1])))
            done = await asyncio.wait_for(asyncio.gather(*(w for _, _, w in waits)), timeout)
        except TimeoutError as exc:
            raise NotAcknowledged(f"no acknowledgement from Kafka within {timeout}s") from exc
        except NotAcknowledged:
            raise
        except Exception as exc:  # aiokafka's KafkaError and friends
            raise NotAcknowledged(f"{type(exc).__name__}: {exc}") from exc
        placed: dict[tuple[str, int], int] = {}
        for (at, n, _), meta in zip(waits, done, strict=True):
            last = meta.offset + n - 1
            if last > placed.get(at, -1):
                placed[at] = last
        return placed

    async def stop(self) -> None:
        """Close the connections (every unit's sends were awaited: nothing is pending)."""
        producer, self._producer = self._producer, None
        if producer is not None:
            await producer.stop()


# The worker's producer, as a unit of work sees it (``POSTROOM_PRODUCER`` chooses).
UnitProducer = BatchProducer | GroupedProducer
