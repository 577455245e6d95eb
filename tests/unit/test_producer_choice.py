"""Which producer sends the units' records (``POSTROOM_PRODUCER``), without a broker."""

from __future__ import annotations

import pytest

from app.errors import ConfigError
from app.main import worker_producer
from app.producer import GroupedProducer
from app.settings import load_settings


def test_the_units_records_go_through_aiokafka_unless_told_otherwise() -> None:
    producer = worker_producer(load_settings({}))
    assert isinstance(producer, GroupedProducer)
    assert producer._producer is None  # nothing connects until the first send


def test_an_unknown_producer_is_refused_at_start() -> None:
    with pytest.raises(ConfigError, match="POSTROOM_PRODUCER"):
        load_settings({"POSTROOM_PRODUCER": "kafka-python"})
