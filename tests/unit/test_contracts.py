"""The topology and schema contracts, no broker."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from app import codecs, topology
from app.settings import APP_NAME, Secret, load_settings
from app.topology import CONSUMED, GLOBAL_TABLES, TABLES

SCHEMAS = Path(codecs.SCHEMA_DIR)


def test_every_schema_parses_and_is_named_by_its_full_name() -> None:
    for path in SCHEMAS.glob("*.avsc"):
        schema = json.loads(path.read_text())
        assert path.stem == f"{schema['namespace']}.{schema['name']}"
        codecs.parsed((path.stem,))


def test_every_topic_names_schemas_that_exist() -> None:
    for spec in topology.load_topology().values():
        for name in spec.schemas:
            assert name in codecs.raw_schemas(), (spec.name, name)
        if spec.schemas:
            codecs.parsed(spec.schemas)


def test_copartitioned_topics_have_equal_partition_counts() -> None:
    assert topology.copartition_problems(topology.load_topology().values()) == []


def test_every_table_has_a_compacted_changelog_declared_next_to_its_source() -> None:
    specs = topology.load_topology()
    for table, source in {**TABLES, **GLOBAL_TABLES}.items():
        changelog = specs[f"{APP_NAME}-{table}-changelog"]
        assert changelog.table == table
        assert "compact" in changelog.cleanup_policy
        assert changelog.partitions == specs[source].partitions
    for name in CONSUMED:
        assert name in specs


def test_avro_union_round_trip_names_the_member() -> None:
    names = ("postroom.FulfillmentBatch", "postroom.StockCommand")
    cmd = {"command_id": "c", "kind": "SET", "sku": "a", "on_hand": 3, "price": 9,
           "line_id": None, "order_id": None, "at_ms": 1}
    kind, back = codecs.avro_decode(names, codecs.avro_encode(names, cmd, "postroom.StockCommand"))
    assert kind == "postroom.StockCommand" and back == cmd


def test_garbage_is_an_invalid_event_not_a_crash() -> None:
    from app.errors import InvalidEvent

    with pytest.raises(InvalidEvent):
        codecs.avro_decode(("postroom.OrderEvent",), b"\xff\x00\x01")


def test_settings_come_from_the_environment_and_hide_secrets() -> None:
    s = load_settings({"POSTROOM_WEB_PORT": "7000", "POSTROOM_ADMIN_TOKEN": "hunter2",
                       "POSTROOM_KAFKA_BOOTSTRAP": "k:1", "POSTROOM_TOPIC_PREFIX": "x-"})
    assert s.web_port == 7000 and s.kafka_external and s.topic("orders.events") == "x-orders.events"
    assert "hunter2" not in repr(s) and isinstance(s.admin_token, Secret)
    assert not load_settings({}).kafka_external


def test_the_event_loop_is_uvloop_unless_told_otherwise() -> None:
    from app.errors import ConfigError

    assert load_settings({}).event_loop == "uvloop"
    assert load_settings({"POSTROOM_EVENT_LOOP": "aio"}).event_loop == "aio"
    with pytest.raises(ConfigError, match="POSTROOM_EVENT_LOOP"):
        load_settings({"POSTROOM_EVENT_LOOP": "trio"})
