"""The bench's latency clock against a real broker: an events topic stamped on append."""

from __future__ import annotations

import time
import uuid

import pytest

from bench.measure import stamp_on_append
from tests.support import consume_all

pytestmark = pytest.mark.integration


def test_an_events_topic_is_stamped_by_the_broker_and_keeps_its_other_settings(
        kafka_bootstrap: str) -> None:
    from confluent_kafka import TIMESTAMP_LOG_APPEND_TIME, Producer
    from confluent_kafka.admin import AdminClient, ConfigResource, NewTopic

    topic = f"test-clock-{uuid.uuid4().hex[:8]}"
    admin = AdminClient({"bootstrap.servers": kafka_bootstrap})
    for fut in admin.create_topics([NewTopic(topic, 1, 1, config={"retention.ms": "-1"})],
                                   operation_timeout=30).values():
        fut.result()

    stamp_on_append(kafka_bootstrap, topic)

    [fut] = admin.describe_configs([ConfigResource(ConfigResource.Type.TOPIC, topic)]).values()
    config = fut.result(30)
    assert config["message.timestamp.type"].value == "LogAppendTime"
    assert config["retention.ms"].value == "-1"  # changed one setting, not the others

    producer = Producer({"bootstrap.servers": kafka_bootstrap})
    an_hour_ago = int(time.time() * 1000) - 3_600_000
    producer.produce(topic, b"event", b"order-1", timestamp=an_hour_ago)
    assert producer.flush(30) == 0
    before = int(time.time() * 1000)
    [message] = consume_all(kafka_bootstrap, topic, until=lambda got: len(got) >= 1)
    kind, at = message.timestamp()
    assert kind == TIMESTAMP_LOG_APPEND_TIME
    assert before - 30_000 <= at <= int(time.time() * 1000)  # the broker's clock, not ours
