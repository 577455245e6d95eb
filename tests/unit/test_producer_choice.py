"""Which producer sends the units' records (``POSTROOM_PRODUCER``), without a broker."""

from __future__ import annotations

import pytest

from app.errors import ConfigError, NotAcknowledged
from app.main import worker_producer
from app.producer import GroupedProducer
from app.settings import load_settings


def test_the_units_records_go_through_aiokafka_unless_told_otherwise() -> None:
    producer = worker_producer(load_settings({}))
    assert isinstance(producer, GroupedProducer)
    assert producer._client is None  # nothing connects until the first send


def test_an_unknown_producer_is_refused_at_start() -> None:
    with pytest.raises(ConfigError, match="POSTROOM_PRODUCER"):
        load_settings({"POSTROOM_PRODUCER": "kafka-python"})


async def test_a_broker_that_cannot_be_reached_is_a_set_not_acknowledged() -> None:
    # A closed port on loopback: the unit's commit retries NotAcknowledged until Kafka
    # takes the set; anything else would end the agent.
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    producer = GroupedProducer(f"127.0.0.1:{port}")
    with pytest.raises(NotAcknowledged):
        await producer.send_all([("t", 0, b"k", b"v", None)], timeout=5)
    assert producer._client is None  # the next set starts afresh
    await producer.stop()
