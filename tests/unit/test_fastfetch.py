"""The side fetcher's hand-over to Faust's streams (app/fastfetch.py), without a broker.

The librdkafka consumer is replaced by a list of batches; end to end (rebalances, restarts,
a killed worker) it is exercised by the integration tests, where it is the default.
"""

from __future__ import annotations

import asyncio
from collections import namedtuple
from types import SimpleNamespace
from typing import Any

from app import fastfetch
from app.settings import load_settings

TP = namedtuple("TP", "topic partition")
A0, A1 = TP("a", 0), TP("a", 1)


class Raw:
    """A message as confluent-kafka hands it over."""

    def __init__(self, tp: TP, offset: int) -> None:
        self.tp, self._offset = tp, offset

    def error(self) -> None:
        return None

    def topic(self) -> str:
        return self.tp.topic

    def partition(self) -> int:
        return self.tp.partition

    def offset(self) -> int:
        return self._offset

    def key(self) -> bytes:
        return b"k%d" % self._offset

    def value(self) -> bytes:
        return b"v%d" % self._offset

    def timestamp(self) -> tuple[int, int]:
        return 1, 1_000

    def headers(self) -> list[tuple[str, bytes]]:
        return [("h", b"1")]


class Librdkafka:
    """Hands out the given batches, then nothing."""

    def __init__(self, batches: list[list[Raw]]) -> None:
        self.batches = batches
        self.sought: list[Any] = []
        self.dry = asyncio.Event()  # asked again after the last batch

    def consume(self, n: int, timeout: float) -> list[Raw]:
        if not self.batches:
            self.dry.set()
            return []
        return self.batches.pop(0)

    def seek(self, where: Any) -> None:
        self.sought.append((where.topic, where.partition, where.offset))

    def unassign(self) -> None:
        pass


def side_with(batches: list[list[Raw]]) -> fastfetch.SideFetcher:
    side = fastfetch.SideFetcher("127.0.0.1:1", "g", ["a"], 100)
    side.consumer = Librdkafka(batches)
    for tp in (A0, A1):
        side.tps[(tp.topic, tp.partition)] = tp
        side.version[tp] = 1
    return side


def faust_consumer(on_message: Any) -> Any:
    consumer = SimpleNamespace(
        callback=on_message, _read_offset={}, suspend_flow=asyncio.Event(),
        _stopped=asyncio.Event(), flow_active=True, _commit_every=None, _n_acked=0,
        app=SimpleNamespace(consumer_generation_id=7),
    )
    return consumer


async def run(side: fastfetch.SideFetcher, consumer: Any) -> None:
    fetcher = SimpleNamespace(_stopped=asyncio.Event())

    async def stop_when_dry() -> None:
        await side.consumer.dry.wait()
        fetcher._stopped.set()

    await asyncio.gather(fastfetch.drain(consumer, fetcher, side), stop_when_dry())


async def test_messages_reach_the_streams_as_faust_messages_in_order() -> None:
    got: list[Any] = []

    async def on_message(message: Any) -> None:
        got.append(message)

    side = side_with([[Raw(A0, 5), Raw(A1, 9), Raw(A0, 6)]])
    consumer = faust_consumer(on_message)
    consumer._read_offset[A0] = 5  # where the committed offset put it
    await run(side, consumer)
    assert [(m.tp, m.offset, m.key, m.value) for m in got] == [
        (A0, 5, b"k5", b"v5"), (A1, 9, b"k9", b"v9"), (A0, 6, b"k6", b"v6")]
    assert got[0].headers == [("h", b"1")] and got[0].generation_id == 7
    assert consumer._read_offset == {A0: 6, A1: 9}


async def test_what_was_handed_over_already_is_not_handed_again() -> None:
    got: list[int] = []

    async def on_message(message: Any) -> None:
        got.append(message.offset)

    side = side_with([[Raw(A0, 3), Raw(A0, 4), Raw(A0, 5)]])
    consumer = faust_consumer(on_message)
    consumer._read_offset[A0] = 5
    await run(side, consumer)
    assert got == [5]


async def test_a_seek_drops_what_was_taken_from_that_partition_only() -> None:
    got: list[tuple[int, int]] = []
    side = side_with([[Raw(A0, 1), Raw(A1, 1), Raw(A0, 2), Raw(A1, 2)], [Raw(A0, 0)]])

    async def on_message(message: Any) -> None:
        got.append((message.partition, message.offset))
        if (message.partition, message.offset) == (0, 1):
            side.seek(A0, 0)  # an agent goes back for a hole
            consumer._read_offset[A0] = 0

    consumer = faust_consumer(on_message)
    await run(side, consumer)
    assert got == [(0, 1), (1, 1), (1, 2), (0, 0)]
    assert side.consumer.sought == [("a", 0, 0)]


async def test_a_rebalance_stops_the_hand_over() -> None:
    got: list[int] = []
    side = side_with([[Raw(A0, 1), Raw(A0, 2)]])

    async def on_message(message: Any) -> None:
        got.append(message.offset)
        consumer.flow_active = False  # Faust stops the flow when a rebalance begins
        side.consumer.dry.set()  # nothing more is taken while it is stopped: end the test

    consumer = faust_consumer(on_message)
    await run(side, consumer)
    assert got == [1]


def test_the_worker_fetches_its_agents_topics_with_librdkafka_unless_told_otherwise() -> None:
    from app.main import side_fetcher
    from app.topology import CONSUMED, effective, load_topology

    settings = load_settings({"POSTROOM_TOPIC_PREFIX": "t-"})
    specs = {name: effective(spec, settings) for name, spec in load_topology().items()}
    side = side_fetcher(settings, specs)
    assert side is not None and side.consumer is None  # nothing connects until assigned
    assert side.topics == {f"t-{name}" for name in CONSUMED}
    plain = load_settings({"POSTROOM_FETCHER": "aiokafka"})
    assert side_fetcher(plain, specs) is None
