"""Packs: Kafka's partitioner, and records gathered per partition and read back."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pytest

from app import pack
from app.codecs import avro_encode
from app.errors import InvalidEvent
from app.unit import Unit

# The Java client's own test vectors for Utils.murmur2.
VECTORS = [
    ("21", -973932308),
    ("foobar", -790332482),
    ("a-little-bit-long-string", -985981536),
    ("a-little-bit-longer-string", -1486304829),
    ("lkjh234lh9fiuh90y23oiuhsafujhadof229phr9h19h89h8", -58897971),
    ("abc", 479470107),
]


@pytest.mark.parametrize(("text", "expected"), VECTORS)
def test_murmur2_matches_kafka(text: str, expected: int) -> None:
    assert pack.murmur2(text.encode()) == expected


@dataclass
class Message:
    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    headers: Any


LINE = {"line_id": "l", "order_id": "o", "sku": "", "quantity": 1, "unit_price": 5, "attempt": 0,
        "sent_at_ms": 0}


def line(sku: str) -> dict[str, Any]:
    return {**LINE, "line_id": f"line-{sku}", "sku": sku}


def outputs() -> dict[str, Any]:
    return {"postroom.lines": ("x-lines", ("postroom.OrderLine",), 4),
            "orders.events": ("x-events", ("postroom.OrderEvent",), 0)}


def test_a_unit_sends_one_pack_per_partition_in_send_order() -> None:
    unit = Unit({}, outputs())
    skus = [f"sku-{i}" for i in range(40)]
    for sku in skus:
        unit.begin(0)
        unit.send("postroom.lines", sku, line(sku))
        unit.keep()
    sent = unit.sends()
    assert len(sent) == len({pack.partition_for(s.encode(), 4) for s in skus}) <= 4
    seen = []
    for topic, partition, key, value, headers in sent:
        assert topic == "x-lines" and headers == pack.PACK_HEADERS
        assert key is not None and pack.partition_for(key, 4) == partition
        message = Message(topic, partition or 0, 7, key, value, headers)
        for record in pack.records(message):
            assert pack.partition_for(record.key, 4) == partition
            decoded = pack.decode(("postroom.OrderLine",), record)
            assert record.key == decoded["sku"].encode() and record.offset == 7
            seen.append(decoded["sku"])
    assert sorted(seen) == sorted(skus)
    for partition in range(4):  # per partition, the order they were sent in
        mine = [s for s in skus if pack.partition_for(s.encode(), 4) == partition]
        assert [s for s in seen if s in mine] == mine


def test_a_dropped_record_never_reaches_a_pack() -> None:
    unit = Unit({}, outputs())
    unit.begin(0)
    unit.send("postroom.lines", "kept", line("kept"))
    unit.keep()
    unit.begin(0)
    unit.send("postroom.lines", "dropped", line("dropped"))
    unit.drop()
    lines = [r for _, _, _, value, headers in unit.sends()
             for r in pack.decode_all(("postroom.OrderLine",), headers, value)]
    assert [r["sku"] for r in lines] == ["kept"]


def test_pack_records_get_the_schema_defaults_and_union_names() -> None:
    unit = Unit({}, {"postroom.batches": ("x-batches", ("postroom.FulfillmentBatch",
                                                         "postroom.StockCommand"), 4)})
    unit.begin(0)
    bare = {k: v for k, v in line("pen").items() if k != "attempt"}  # attempt has a default
    batch = {"batch_id": "b1", "sku": "pen", "created_at_ms": 1, "lines": [bare]}
    unit.send("postroom.batches", "pen", batch, kind="postroom.FulfillmentBatch")
    unit.keep()
    [(_, _, _, value, headers)] = unit.sends()
    [(name, record)] = pack.decode_all(("postroom.FulfillmentBatch", "postroom.StockCommand"),
                                       headers, value)
    assert name == "postroom.FulfillmentBatch" and record["batch_id"] == "b1"
    plain = avro_encode(("postroom.OrderLine",), line("pen"))
    assert pack.decode_all(("postroom.OrderLine",), None, plain) == [line("pen")]


def test_big_packs_are_split_and_plain_messages_pass_through() -> None:
    keys = [b"k%d" % i for i in range(300)]
    records = [{"blob": "x" * 4096} for _ in keys]
    packs = list(pack.encode_packs(keys, records))
    assert len(packs) > 1 and all(len(p) <= pack.MAX_PACK_BYTES for _, p in packs)
    carried = [r for _, p in packs
               for r in pack.records(Message("t", 0, 0, None, p, pack.PACK_HEADERS))]
    assert [r.key for r in carried] == keys and packs[0][0] == b"k0"
    plain = Message("t", 1, 3, b"k", b"v", [("content-type", b"x")])
    assert list(pack.records(plain)) == [plain]


def test_a_broken_pack_is_undecodable() -> None:
    with pytest.raises(InvalidEvent) as caught:
        list(pack.records(Message("t", 0, 1, None, b"\xff\xff\xff", pack.PACK_HEADERS)))
    assert caught.value.code == "undecodable"
