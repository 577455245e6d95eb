"""The worker's two unit producers against a real broker: same placement, same answers."""

from __future__ import annotations

import asyncio
import os
import signal
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from app.errors import NotAcknowledged
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


def test_grouped_producer_loses_nothing_when_the_broker_dies_under_it(
        tmp_path: Path, report: Callable[[str], None]) -> None:
    """Sets keep coming from three senders while the broker is killed (SIGKILL) and started
    again: each sender retries a set that was not acknowledged, as a unit of work does.
    Every record of every set must be in the topic, in each partition in the order sent,
    and each answer must point at its set's own last record."""
    from app import localkafka

    data_dir = tmp_path / "kafka"
    port, controller = localkafka.free_port(), localkafka.free_port()
    bootstrap = localkafka.start(data_dir, port, controller)
    try:
        topic = new_topics(bootstrap, {"t": 3})["t"]
        sent: dict[int, list[bytes]] = {0: [], 1: [], 2: []}
        answers: list[tuple[int, int, bytes]] = []  # partition, offset, the set's last key
        failures = [0]
        slowest = [0.0]  # seconds, the longest a set waited for its answer

        async def sender(partition: int, stop: asyncio.Event) -> None:
            n = 0
            while not stop.is_set():
                keys = [f"{partition}-{n}-{i}".encode() for i in range(20)]
                records: list[Record] = [(topic, partition, k, b"v" * 100, None) for k in keys]
                began = time.monotonic()
                while True:
                    try:
                        placed = await producer.send_all(records, timeout=10)
                        break
                    except NotAcknowledged:
                        failures[0] += 1
                        await asyncio.sleep(0.2)
                slowest[0] = max(slowest[0], time.monotonic() - began)
                sent[partition].extend(keys)
                answers.append((partition, placed[(topic, partition)], keys[-1]))
                n += 1

        async def scenario() -> None:
            stop = asyncio.Event()
            tasks = [asyncio.ensure_future(sender(p, stop)) for p in range(3)]
            await asyncio.sleep(1.0)
            pid = localkafka._running_pid(data_dir)
            assert pid is not None
            os.kill(pid, signal.SIGKILL)
            await asyncio.sleep(1.0)
            await asyncio.to_thread(localkafka.start, data_dir, port, controller)
            await asyncio.sleep(2.0)
            stop.set()
            await asyncio.wait_for(asyncio.gather(*tasks), 60)
            await producer.stop()

        producer = GroupedProducer(bootstrap)
        asyncio.run(scenario())

        total = sum(len(keys) for keys in sent.values())
        got = read_back(bootstrap, topic, total)
        # The kill was felt: sets waited through the outage (resent as they were; a set
        # fails only after its 10 s, and is then sent again by its sender).
        assert slowest[0] > 1.0
        for partition, keys in sent.items():
            here = [m for m in got if m.partition() == partition]
            firsts = list(dict.fromkeys(m.key() for m in here))
            assert firsts == keys  # everything, once or more, in the order sent
            by_offset = {m.offset(): m.key() for m in here}
            for p, offset, last in answers:
                if p == partition:
                    assert by_offset[offset] == last
        report(f"[broker SIGKILL under the grouped producer] sets={len(answers)} "
               f"records={total} lost=0 duplicated={len(got) - total} "
               f"slowest set={slowest[0]:.1f}s sets failed and resent={failures[0]}")
    finally:
        localkafka.stop(data_dir)
