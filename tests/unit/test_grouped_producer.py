"""The grouped producer's produce protocol: batches, sequences, resends and refusals.

A real broker only shows the happy path (``tests/integration/test_producer.py``); the
answers a cluster gives when a leader moves, a request goes unanswered or a producer's
state is lost are played here by a scripted stand-in for aiokafka's client, which records
every request as the broker would decode it.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Any

import aiokafka.errors as errors
import pytest
from aiokafka.protocol.transaction import InitProducerIdRequest
from aiokafka.record.default_records import DefaultRecordBatch

from app.errors import NotAcknowledged
from app.producer import GroupedProducer


@dataclass
class Batch:
    """One partition's record batch in a request, as the broker reads it."""

    topic: str
    partition: int
    producer_id: int
    base_sequence: int
    keys: list[bytes]
    raw: bytes


# What the broker answers for one batch: an error code (0: written), or None to leave the
# partition out of the answer.
Answer = Callable[[Batch], int | None]


@dataclass
class ScriptedBroker:
    """aiokafka's client as the producer uses it, with one broker (node 0)."""

    answers: list[Answer] = field(default_factory=list)  # one per request; then all written
    unanswered: int = 0  # requests that get no answer at all, before any other
    hold: asyncio.Event | None = None  # set: requests are answered
    requests: list[list[Batch]] = field(default_factory=list)
    logs: dict[tuple[str, int], list[bytes]] = field(default_factory=dict)
    producer_ids: int = 0

    async def bootstrap(self) -> None:
        pass

    async def close(self) -> None:
        pass

    @property
    def cluster(self) -> Any:
        return SimpleNamespace(leader_for_partition=lambda tp: 0)

    def get_random_node(self) -> int:
        return 0

    def force_metadata_update(self) -> None:
        pass

    async def _wait_on_metadata(self, topic: str) -> set[int]:
        return {0, 1}

    async def send(self, node: int, request: Any) -> Any:
        if isinstance(request, InitProducerIdRequest):
            self.producer_ids += 1
            return SimpleNamespace(error_code=0, producer_id=1000 + self.producer_ids,
                                   producer_epoch=0)
        batches = []
        for topic, partitions in request._topics:
            for partition, raw in partitions:
                read = DefaultRecordBatch(bytes(raw))
                batches.append(Batch(topic, partition, read.producer_id, read.base_sequence,
                                     [record.key for record in read], bytes(raw)))
        self.requests.append(batches)
        if self.hold is not None:
            await self.hold.wait()
        if self.unanswered:
            self.unanswered -= 1
            raise errors.KafkaConnectionError("connection reset")
        answer = self.answers.pop(0) if self.answers else (lambda batch: 0)
        topics: dict[str, list[tuple[int, int, int, int, int]]] = {}
        for batch in batches:
            code = answer(batch)
            if code is None:
                continue
            log = self.logs.setdefault((batch.topic, batch.partition), [])
            offset = len(log)
            if code == 0:
                log.extend(batch.keys)
            topics.setdefault(batch.topic, []).append((batch.partition, code, offset, -1, 0))
        return SimpleNamespace(topics=list(topics.items()))


class Producer(GroupedProducer):
    BACKOFF_S = 0.001

    def __init__(self, broker: ScriptedBroker) -> None:
        super().__init__("127.0.0.1:9")
        self.broker = broker

    def _new_client(self) -> Any:
        return self.broker


def records(topic: str, partition: int, *keys: str) -> list[Any]:
    return [(topic, partition, key.encode(), b"v", None) for key in keys]


async def test_a_set_goes_out_as_one_batch_per_partition_in_one_request() -> None:
    broker = ScriptedBroker()
    producer = Producer(broker)

    placed = await producer.send_all(records("a", 0, "k1", "k2") + records("b", 1, "k3"))
    again = await producer.send_all(records("a", 0, "k4"))
    await producer.stop()

    first, second = broker.requests
    assert [(b.topic, b.partition, b.keys) for b in first] == [
        ("a", 0, [b"k1", b"k2"]), ("b", 1, [b"k3"])]
    assert placed == {("a", 0): 1, ("b", 1): 0}  # each partition's last offset
    assert again == {("a", 0): 2}
    # One producer id; each partition's sequence advances by the records it took.
    assert {b.producer_id for b in first + second} == {1001}
    assert [b.base_sequence for b in first] == [0, 0]
    assert [b.base_sequence for b in second] == [2]


async def test_sets_that_arrive_while_a_request_is_out_ride_the_next_one_together() -> None:
    hold = asyncio.Event()
    broker = ScriptedBroker(hold=hold)
    producer = Producer(broker)

    first = asyncio.ensure_future(producer.send_all(records("a", 0, "k1")))
    await asyncio.sleep(0.01)
    assert len(broker.requests) == 1
    later = [asyncio.ensure_future(producer.send_all(records("a", 0, f"k{i}")))
             for i in (2, 3)] + [asyncio.ensure_future(producer.send_all(records("b", 0, "k4")))]
    await asyncio.sleep(0.01)
    assert len(broker.requests) == 1  # one request in flight at a time
    hold.set()
    results = await asyncio.gather(first, *later)
    await producer.stop()

    assert len(broker.requests) == 2
    assert [(b.topic, b.keys, b.base_sequence) for b in broker.requests[1]] == [
        ("a", [b"k2", b"k3"], 1), ("b", [b"k4"], 0)]
    assert results == [{("a", 0): 0}, {("a", 0): 1}, {("a", 0): 2}, {("b", 0): 0}]


async def test_an_unanswered_request_is_sent_again_byte_for_byte() -> None:
    broker = ScriptedBroker(unanswered=2)
    producer = Producer(broker)

    placed = await producer.send_all(records("a", 0, "k1") + records("a", 1, "k2"))
    await producer.stop()

    assert len(broker.requests) == 3
    assert [b.raw for b in broker.requests[0]] == [b.raw for b in broker.requests[2]]
    assert placed == {("a", 0): 0, ("a", 1): 0}
    assert broker.logs == {("a", 0): [b"k1"], ("a", 1): [b"k2"]}  # each written once


async def test_a_batch_the_broker_could_not_write_yet_is_retried_alone_as_it_was() -> None:
    not_leader = errors.NotLeaderForPartitionError.errno
    broker = ScriptedBroker(answers=[lambda b: not_leader if b.partition == 1 else 0,
                                     lambda b: None if b.partition == 1 else 0])
    producer = Producer(broker)

    placed = await producer.send_all(records("a", 0, "k1") + records("a", 1, "k2"))
    await producer.stop()

    # Partition 0 written at once; partition 1's batch refused (a leader moving), then left
    # out of an answer, then written: the same bytes each time, so the broker keeps it once.
    assert [[(b.partition, b.keys) for b in r] for r in broker.requests] == [
        [(0, [b"k1"]), (1, [b"k2"])], [(1, [b"k2"])], [(1, [b"k2"])]]
    assert broker.requests[1][0].raw == broker.requests[2][0].raw == broker.requests[0][1].raw
    assert placed == {("a", 0): 0, ("a", 1): 0}


async def test_a_refused_batch_fails_its_sets_and_the_partition_goes_on() -> None:
    too_large = errors.MessageSizeTooLargeError.errno
    broker = ScriptedBroker(answers=[lambda b: too_large])
    producer = Producer(broker)

    with pytest.raises(NotAcknowledged, match="MessageSizeTooLarge"):
        await producer.send_all(records("a", 0, "k1"))
    placed = await producer.send_all(records("a", 0, "k2"))
    await producer.stop()

    # Nothing was written, so the next batch takes the same sequence number.
    assert [b.base_sequence for r in broker.requests for b in r] == [0, 0]
    assert placed == {("a", 0): 0}
    assert broker.logs == {("a", 0): [b"k2"]}


async def test_a_lost_producer_state_gets_a_new_producer_id_and_numbers_from_zero() -> None:
    out_of_order = errors.OutOfOrderSequenceNumber.errno
    broker = ScriptedBroker(answers=[lambda b: 0, lambda b: out_of_order])
    producer = Producer(broker)

    await producer.send_all(records("a", 0, "k1", "k2"))
    placed = await producer.send_all(records("a", 0, "k3"))
    await producer.stop()

    assert [(b.producer_id, b.base_sequence, b.keys) for r in broker.requests for b in r] == [
        (1001, 0, [b"k1", b"k2"]), (1001, 2, [b"k3"]), (1002, 0, [b"k3"])]
    assert placed == {("a", 0): 2}


async def test_a_broker_that_never_answers_is_a_set_not_acknowledged_in_time() -> None:
    broker = ScriptedBroker(hold=asyncio.Event())  # never set
    producer = Producer(broker)

    with pytest.raises(NotAcknowledged, match=r"within 0\.05s"):
        await producer.send_all(records("a", 0, "k1"), timeout=0.05)
    waiting = asyncio.ensure_future(producer.send_all(records("a", 0, "k2")))
    await asyncio.sleep(0.01)
    await producer.stop()  # a set still waiting fails rather than hangs
    with pytest.raises(NotAcknowledged, match="stopped"):
        await waiting
