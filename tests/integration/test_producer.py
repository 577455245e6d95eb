"""The worker's two unit producers against a real broker: same placement, same answers."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import pytest

from app.producer import BatchProducer, GroupedProducer, Record, UnitProducer
from bench.peers.common import new_topics as create_topics
from tests.support import consume_all

pytestmark = pytest.mark.integration


def new_topics(bootstrap: str, partitions: dict[str, int]) -> dict[str, str]:
    names = {short: f"test-producer-{uuid.uuid4().hex[:8]}-{short}" for short in partitions}
    create_topics(bootstrap, {names[s]: (n, False) for s, n in partitions.items()})
    return names


def a_unit(names: dict[str, str]) -> list[Record]:
    """What a unit sends: keyed records (placed by the partitioner), records for a given
    partition (changelogs), headers, and one partition written many times."""
    records: list[Record] = []
    for i in range(40):
        records.append((names["events"], None, f"order-{i % 13}".encode(), f"e{i}".encode(),
                        [("kind", b"event")] if i % 2 else None))
    for i in range(30):
        records.append((names["changelog"], i % 2, f"key-{i}".encode(), f"v{i}".encode(), None))
    return records


async def send_and_stop(producer: UnitProducer, records: list[Record]
                        ) -> dict[tuple[str, int], int]:
    try:
        return await producer.send_all(records)
    finally:
        await producer.stop()


def read_back(bootstrap: str, topic: str, count: int) -> list[Any]:
    return consume_all(bootstrap, topic, timeout=30, until=lambda got: len(got) >= count)


def test_grouped_producer_places_records_as_librdkafka_does(kafka_bootstrap: str) -> None:
    grouped = new_topics(kafka_bootstrap, {"events": 4, "changelog": 2})
    plain = new_topics(kafka_bootstrap, {"events": 4, "changelog": 2})

    placed = asyncio.run(send_and_stop(GroupedProducer(kafka_bootstrap), a_unit(grouped)))
    asyncio.run(send_and_stop(BatchProducer(kafka_bootstrap), a_unit(plain)))

    for short, count in (("events", 40), ("changelog", 30)):
        ours = read_back(kafka_bootstrap, grouped[short], count)
        theirs = read_back(kafka_bootstrap, plain[short], count)
        assert len(ours) == len(theirs) == count
        # Every key on the partition librdkafka's murmur2_random gives it, in the order sent.
        where = {(m.key(), m.value()): m.partition() for m in theirs}
        assert {(m.key(), m.value()): m.partition() for m in ours} == where
        for partition in {m.partition() for m in ours}:
            values = [m.value() for m in ours if m.partition() == partition]
            assert values == [m.value() for m in theirs if m.partition() == partition]
            # The answer is the last offset each partition got.
            assert placed[(grouped[short], partition)] == max(
                m.offset() for m in ours if m.partition() == partition)
    headers = {m.value(): m.headers() for m in read_back(kafka_bootstrap, grouped["events"], 40)}
    assert headers[b"e1"] == [("kind", b"event")]
    assert not headers[b"e0"]


def test_grouped_producer_splits_a_partition_bigger_than_one_batch(kafka_bootstrap: str) -> None:
    names = new_topics(kafka_bootstrap, {"changelog": 1})
    value = b"x" * 100_000
    records: list[Record] = [(names["changelog"], 0, f"k{i}".encode(), value + str(i).encode(),
                              None) for i in range(25)]  # 2.5 MB: three batches

    placed = asyncio.run(send_and_stop(GroupedProducer(kafka_bootstrap), records))

    got = read_back(kafka_bootstrap, names["changelog"], 25)
    assert [m.key() for m in got] == [f"k{i}".encode() for i in range(25)]
    assert [m.offset() for m in got] == list(range(25))
    assert placed == {(names["changelog"], 0): 24}
