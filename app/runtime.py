"""What every domain's agents and views are handed: the app, its topics, tables and tools.

``main.py`` builds one :class:`Runtime`; the domain modules only read from it, so no module
below ``main.py`` constructs an app, opens a connection or reads the environment.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from app.codecs import AVRO_CONTENT_TYPE, avro_decode, avro_encode
from app.deadletter import deadletter_headers
from app.errors import InvalidEvent
from app.ops.metrics import Metrics
from app.producer import AckedProducer
from app.settings import Settings
from app.topology import TopicSpec


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
    extras: dict[str, Any] = field(default_factory=dict)  # seams wired by main.py

    def topic_name(self, declared: str) -> str:
        return self.specs[declared].name

    def schemas(self, declared: str) -> tuple[str, ...]:
        return self.specs[declared].schemas

    def decode(self, declared: str, payload: bytes | None) -> Any:
        if payload is None:
            raise InvalidEvent("empty message (no value)", code="undecodable")
        return avro_decode(self.schemas(declared), payload)

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

    def agent(self, declared: str, name: str, handler: Callable[[Any], Awaitable[None]]) -> Any:
        """Declare an agent that runs ``handler`` on each message of a declared topic, in order.

        One actor per worker (faust-streaming #606: concurrency > 1 can lose offsets).
        """

        async def consume(stream: Any) -> None:
            async for event in stream.events():
                await self.handle(event.message, handler)

        consume.__doc__ = handler.__doc__
        consume.__name__ = consume.__qualname__ = name  # how Faust labels it in logs
        return self.app.agent(self.sources[declared], name=name)(consume)

    async def handle(self, message: Any, handler: Callable[[Any], Awaitable[None]]) -> None:
        """Run ``handler`` on one message; a message it cannot process is parked, not lost.

        Faust acks a message whose processing raised, so an escaped exception would drop
        it: any failure here parks the message in the dead-letter topic instead.
        """
        try:
            await handler(message)
        except InvalidEvent as exc:
            await self.park(message, exc)
        except Exception as exc:
            self.app.log.exception("processing %s[%s]@%s failed",
                                   message.topic, message.partition, message.offset)
            await self.park(message, InvalidEvent(repr(exc), code="processing_error"))

    async def park(self, message: Any, exc: InvalidEvent) -> None:
        """Send a message that cannot be processed to the dead-letter topic; count it."""
        headers = deadletter_headers(
            exc, message.topic, message.partition, message.offset, message.headers
        )
        fut = await self.topics["postroom.deadletter"].send(
            key=message.key, value=message.value or b"", headers=headers
        )
        await fut  # parked for sure before the offset moves on
        self.metrics.deadlettered.labels(message.topic, exc.code).inc()
        self.app.log.warning(
            "parked %s[%s]@%s in the dead-letter topic: %s",
            message.topic, message.partition, message.offset, exc.reason,
        )
