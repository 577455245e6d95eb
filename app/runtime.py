"""What every domain's agents and views are handed: the app, its topics, tables and tools.

``main.py`` builds one :class:`Runtime`; the domain modules only read from it, so no module
below ``main.py`` constructs an app, opens a connection or reads the environment.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from app.codecs import AVRO_CONTENT_TYPE, avro_encode
from app.errors import InvalidEvent
from app.ops.metrics import Metrics
from app.pack import decode, records
from app.producer import AckedProducer, UnitProducer
from app.sequence import RESEEK_S, Sequencer
from app.settings import Settings
from app.topology import TopicSpec
from app.unit import Output, TableStore, Unit, commit

# A handler runs on one message inside a unit of work (see app.unit).
Handler = Callable[[Unit, Any], None]


@dataclass(frozen=True)
class Window:
    """How long a unit of work gathers records (see :meth:`Runtime.agent`)."""

    records: int
    idle_s: float
    span_s: float
    close: Callable[[Unit], None] | None = None

    async def gather(self, queue: asyncio.Queue[Any], started: float, last: float) -> None:
        """Wait while nothing new is queued, until the unit's window closes.

        The wait is a waiter on the agent's queue, woken by the next message put there (as
        ``Queue.get`` waits, without taking it), or at the window's close: one wake-up,
        where sleeping in steps of a few milliseconds and looking again took three or four
        a unit, and noticed a message only at the next look.
        """
        while queue.empty():
            left = min(started + self.span_s, last + self.idle_s) - time.monotonic()
            if left <= 0:
                return
            await arrival(queue, left)


def _wake(waiter: asyncio.Future[None]) -> None:
    if not waiter.done():
        waiter.set_result(None)


async def arrival(queue: asyncio.Queue[Any], timeout: float) -> None:
    """Return when something is put in ``queue`` (nothing is taken) or after ``timeout``."""
    loop = asyncio.get_running_loop()
    waiter: asyncio.Future[None] = loop.create_future()
    getters = queue._getters  # type: ignore[attr-defined]  # what a put wakes
    getters.append(waiter)
    timer = loop.call_later(timeout, _wake, waiter)
    try:
        await waiter
    finally:
        timer.cancel()
        if waiter in getters:  # not woken by a put
            getters.remove(waiter)


def now_ms() -> int:
    return int(time.time() * 1000)


@dataclass
class Runtime:
    """The composed service, as the domain modules see it."""

    settings: Settings
    app: Any  # faust.App
    specs: dict[str, TopicSpec]  # declared name -> effective spec
    metrics: Metrics
    topics: dict[str, Any] = field(default_factory=dict)  # declared name -> faust topic (send)
    sources: dict[str, Any] = field(default_factory=dict)  # declared name -> raw topic (consume)
    tables: dict[str, Any] = field(default_factory=dict)
    producer: AckedProducer | None = None  # the front desk's; started with the web server
    batches: UnitProducer | None = None  # the agents' units of work (see app.unit)
    extras: dict[str, Any] = field(default_factory=dict)  # seams wired by main.py
    stores: dict[str, TableStore] = field(default_factory=dict)
    _outputs: dict[str, Output] = field(default_factory=dict)
    _seeks: set[Any] = field(default_factory=set)  # rewinds under way (see app.sequence)

    def topic_name(self, declared: str) -> str:
        return self.specs[declared].name

    def schemas(self, declared: str) -> tuple[str, ...]:
        return self.specs[declared].schemas

    def decode(self, declared: str, message: Any) -> Any:
        """The record a consumed message (or a record of a pack) carries."""
        return decode(self.schemas(declared), message)

    async def publish(self, declared: str, key: str, value: Any) -> tuple[int, int]:
        """Append an Avro record to a declared topic and wait for Kafka's acknowledgement.

        Used by the web views (the front desk's producer); raises ``NotAcknowledged``.
        """
        assert self.producer is not None, "the front desk's producer is not started"
        return await self.producer.send(
            self.topic_name(declared), key=key.encode(),
            value=avro_encode(self.schemas(declared), value),
            headers=[("content-type", AVRO_CONTENT_TYPE)],
        )

    def _handles(self) -> None:
        """Make the tables' store handles and the topics' outputs, once."""
        if not self.stores:
            self.stores = {name: TableStore(t) for name, t in self.tables.items()}
            self._outputs = {name: (spec.name, spec.schemas, spec.partitions if spec.packed else 0)
                             for name, spec in self.specs.items()}

    def store(self, table: str) -> TableStore:
        """A table's local store, read directly (timers and views, outside any unit)."""
        self._handles()
        return self.stores[table]

    def unit(self) -> Unit:
        """A new unit of work over every table and topic."""
        self._handles()
        return Unit(self.stores, self._outputs)

    async def commit(self, unit: Unit) -> tuple[int, int]:
        """Make a unit durable (see :func:`app.unit.commit`); what it sent and logged."""
        assert self.batches is not None, "the worker's producer is not started"
        return await commit(unit, self.batches.send_all, self.app.log)

    def admit(self, order: Sequencer, event: Any, name: str) -> bool:
        """Whether a message is next in its partition; if a hole shows, go back for it."""
        consumer = self.app.consumer
        admitted, rewind = order.admit(event, self.app.consumer_generation_id,
                                       consumer._committed_offset)
        if rewind is not None:
            message = event.message
            self.app.log.warning("%s: %s[%s] jumped to offset %s; going back to %s", name,
                                 message.topic, message.partition, message.offset, rewind)
            seek = asyncio.ensure_future(consumer.seek(message.tp, rewind))
            self._seeks.add(seek)
            seek.add_done_callback(self._seeks.discard)
        return admitted

    async def rewind_overdue(self, order: Sequencer, topics: frozenset[str],
                             idle: Callable[[], bool], name: str) -> None:
        """Ask again for holes a first rewind did not bring back (a fetch under way when
        it was asked can overtake it), and go back for messages dropped on the way that no
        later message revealed: while nothing is queued for the agent, a partition whose
        consumer position stays past what the agent was handed (see app.sequence)."""
        while True:
            await asyncio.sleep(RESEEK_S)
            try:
                await self._go_back(order, topics, idle, name)
            except Exception:  # a failed round must not end the checks: try again
                self.app.log.exception("%s: looking for skipped messages failed", name)

    async def _go_back(self, order: Sequencer, topics: frozenset[str],
                       idle: Callable[[], bool], name: str) -> None:
        """One round of :meth:`rewind_overdue`."""
        consumer = self.app.consumer
        for tp, offset in order.overdue():
            await consumer.seek(tp, offset)
        if not idle() or consumer.suspend_flow.is_set() or self.app.rebalancing:
            return
        positions: dict[Any, int | None] = {}
        for tp in consumer.assignment():
            if tp.topic in topics:
                try:  # bounded: a position being reset is waited for, maybe long
                    positions[tp] = await asyncio.wait_for(consumer.position(tp), RESEEK_S)
                except Exception:  # revoked meanwhile, or no position yet: next round
                    positions[tp] = None
        if not idle():  # something arrived while the positions were read
            return
        for tp, offset in order.stalled(positions, self.app.consumer_generation_id,
                                        consumer._committed_offset):
            self.app.log.warning("%s: %s[%s] was read up to %s but handed over only up to "
                                 "%s; going back", name, tp.topic, tp.partition, positions[tp],
                                 offset)
            await consumer.seek(tp, offset)

    def agent(self, declared: str | tuple[str, ...], name: str, handler: Handler, *,
              window: Window | None = None) -> Any:
        """Declare an agent that runs ``handler`` on each record of a declared topic (or of
        several co-partitioned ones, told apart by ``record.topic``), in order, in batches
        that are each one unit of work (see :mod:`app.unit`).

        A unit is what has arrived, up to ``window.records``; when the queue runs dry it
        waits for more until nothing has come for ``window.idle_s``, or ``window.span_s``
        after its first record, whichever is first (default: POSTROOM_BATCH_MAX records, a
        gap of POSTROOM_BATCH_WAIT_MS, at most four of them). ``window.close`` runs on the
        unit just before it is committed.
        One actor per worker (faust-streaming #606: concurrency > 1 can lose offsets).
        """
        linger = self.settings.batch_wait_ms / 1000
        shape = window or Window(self.settings.batch_max, linger, linger * 4)
        names = (declared,) if isinstance(declared, str) else declared
        topics = frozenset(self.topic_name(d) for d in names)

        async def consume(stream: Any) -> None:
            # Acks are ours: a message is acked only once its unit is durable.
            events = stream.noack()
            queue = stream.channel.queue
            waiting = queue.empty
            order = Sequencer()
            stats = self.metrics.unit_stats(name)
            pending: list[Any] = []
            handled = 0  # records (a pack carries many)
            unit = self.unit()
            started = last = time.monotonic()
            rewinder = asyncio.ensure_future(self.rewind_overdue(order, topics, waiting, name))
            try:
                async for event in events.events():
                    if self.admit(order, event, name):
                        last = time.monotonic()
                        if not pending:
                            started = last
                        handled += self.handle(unit, event.message, handler)
                        pending.append(event)
                    if pending and (handled >= shape.records or waiting()):
                        if handled < shape.records:
                            await shape.gather(queue, started, last)
                            if not waiting():
                                continue
                        if shape.close is not None:
                            shape.close(unit)
                        committing = time.monotonic()
                        sent, logged = await self.commit(unit)
                        stats.record(handled, sent, logged, time.monotonic() - committing)
                        for done in pending:
                            await events.ack(done)
                            held = order.release(done)
                            if held is not None:
                                await events.ack(held)
                        pending.clear()
                        handled = 0
                        unit = self.unit()
            finally:
                rewinder.cancel()

        consume.__doc__ = handler.__doc__
        consume.__name__ = consume.__qualname__ = name  # how Faust labels it in logs
        return self.app.agent(self.source(names), name=name)(consume)

    def raw_topic(self, *declared: str) -> Any:
        """Declared topics as one stream of raw messages (the agent decodes them, so a bad
        message is parked, not fatal); several must be co-partitioned."""
        return self.app.topic(*(self.topic_name(d) for d in declared),
                              partitions=self.specs[declared[0]].partitions,
                              key_serializer="raw", value_serializer="raw")

    def source(self, names: tuple[str, ...]) -> Any:
        """The raw topic an agent consumes: one declared topic, or several as one stream."""
        return self.sources[names[0]] if len(names) == 1 else self.raw_topic(*names)

    def handle(self, unit: Unit, message: Any, handler: Handler) -> int:
        """Run ``handler`` on each record of one message (a pack carries many, see
        :mod:`app.pack`); return how many. A record it cannot process is parked, not lost.
        """
        try:
            carried = list(records(message))
        except InvalidEvent as exc:
            unit.begin(message.partition)
            self.park(unit, message, exc)
            return 1
        for record in carried:
            self.handle_one(unit, record, handler)
        return len(carried)

    def handle_one(self, unit: Unit, message: Any, handler: Handler) -> None:
        """Run ``handler`` on one record.

        Faust acks a message whose processing raised, so an escaped exception would drop
        it: any failure here drops what the record wrote and parks it instead.
        """
        unit.begin(message.partition)
        try:
            handler(unit, message)
            unit.keep()
        except InvalidEvent as exc:
            unit.drop()
            self.park(unit, message, exc)
        except Exception as exc:
            self.app.log.exception("processing %s[%s]@%s failed",
                                   message.topic, message.partition, message.offset)
            unit.drop()
            self.park(unit, message, InvalidEvent(repr(exc), code="processing_error"))

    def park(self, unit: Unit, message: Any, exc: InvalidEvent) -> None:
        """Park a message that cannot be processed in the dead-letter topic; count it."""
        unit.park(message, exc)
        self.metrics.deadlettered.labels(message.topic, exc.code).inc()
        self.app.log.warning(
            "parking %s[%s]@%s in the dead-letter topic: %s",
            message.topic, message.partition, message.offset, exc.reason,
        )
