"""Packs: many records bound for one partition of an internal topic, carried by one message.

An internal topic declared ``packed`` in ``topology/`` receives, from each unit of work, one
Kafka message per partition instead of one per record. The message is marked by the header
``postroom-pack: json`` and its value is one JSON object ``{"keys": [...], "records": [...]}``:
the records' keys and the records themselves, in the order they were sent, each shaped by the
topic's Avro schema in ``schemas/`` (missing fields take the schema's defaults; a topic of
several schemas carries ``[full_name, record]`` pairs). Each record goes to the partition its
own key hashes to (Kafka's murmur2, as every Postroom producer and Faust's partition keys), and
the pack is keyed by its first record's key, so a pack holds only records that would have
landed on that partition anyway: tables keyed like the topic stay co-partitioned, per-key
order is kept, and a pack copied by key (a replay) lands where its records belong.

A consumer hands each record to its handler as if it had arrived alone (:class:`Record`, with
the pack's topic, partition and offset and its index in the pack). A message without the
header is one plain Avro record, so producers outside the worker (the web views, the
reconciler, a replay by hand) may still send records one by one.

Why: a consumed message costs Faust's per-event path, and an Avro record costs fastavro about
8 us to write and 9 us to read, against well under 1 us for orjson; an order crossed about 14
internal messages and 25 internal records. ``orders.events`` and ``orders.requests``, the
public topics, are never packed.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from functools import cache, lru_cache
from types import SimpleNamespace
from typing import Any

import orjson

from app.codecs import avro_decode, header, parsed
from app.errors import InvalidEvent

PACK_HEADER = "postroom-pack"
PACK_HEADERS = [(PACK_HEADER, b"json")]
MAX_PACK_BYTES = 512 * 1024  # well under the broker's 1 MiB message limit


def murmur2(data: bytes) -> int:
    """Kafka's murmur2 hash (the Java client's ``Utils.murmur2``), as a signed 32-bit int."""
    m = 0x5BD1E995
    length = len(data)
    h = (0x9747B28C ^ length) & 0xFFFFFFFF
    body = length - length % 4
    for i in range(0, body, 4):
        k = int.from_bytes(data[i:i + 4], "little")
        k = (k * m) & 0xFFFFFFFF
        k ^= k >> 24
        k = (k * m) & 0xFFFFFFFF
        h = (h * m) & 0xFFFFFFFF
        h ^= k
    rest = length % 4
    if rest == 3:
        h ^= data[body + 2] << 16
    if rest >= 2:
        h ^= data[body + 1] << 8
    if rest >= 1:
        h ^= data[body]
        h = (h * m) & 0xFFFFFFFF
    h ^= h >> 13
    h = (h * m) & 0xFFFFFFFF
    h ^= h >> 15
    return h - (1 << 32) if h & 0x80000000 else h


@lru_cache(maxsize=8192)  # keys recur: skus, the merchant, an order's id on each of its steps
def partition_for(key: bytes, partitions: int) -> int:
    """The partition Kafka's default partitioner gives ``key`` (librdkafka's murmur2_random)."""
    return (murmur2(key) & 0x7FFFFFFF) % partitions


@cache
def defaults(schemas: tuple[str, ...], name: str = "") -> dict[str, Any]:
    """The fields of a record type that have defaults, with them (what Avro would fill in)."""
    schema = parsed(schemas)
    if isinstance(schema, list):
        schema = next(member for member in schema if member["name"] == name)
    return {f["name"]: f["default"] for f in schema["fields"] if "default" in f}


def shaped(schemas: tuple[str, ...], record: Any, name: str = "") -> Any:
    """A record as a pack carries it: its schema's defaults filled in; in a union, named."""
    full = {**defaults(schemas, name), **record}
    return [name, full] if len(schemas) > 1 else full


def encode_packs(keys: list[bytes], records: list[Any]) -> Iterator[tuple[bytes, bytes]]:
    """The keys and values of the pack messages that carry these records."""
    value = orjson.dumps({"keys": [k.decode() for k in keys], "records": records})
    if len(value) <= MAX_PACK_BYTES or len(records) == 1:
        yield keys[0], value
        return
    half = len(records) // 2  # rare: a very big unit; halve until each pack fits
    yield from encode_packs(keys[:half], records[:half])
    yield from encode_packs(keys[half:], records[half:])


@dataclass(slots=True)
class Record:
    """One record of a pack, shaped like the message a handler would otherwise get; its
    ``record`` is already decoded (see :func:`decode`). Not frozen: a frozen dataclass takes
    0.9 us to build against 0.2, and an order crosses about 25 of these."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    record: Any
    index: int
    headers: Any = ()

    @property
    def value(self) -> bytes:
        """The record as JSON (what the dead-letter topic gets if it cannot be processed)."""
        return orjson.dumps(self.record)


def records(message: Any) -> Iterator[Any]:
    """The records a consumed message carries: its pack's, or the message itself."""
    if not header(message.headers, PACK_HEADER):
        yield message
        return
    try:
        pack = orjson.loads(message.value or b"")
        keys, carried = pack["keys"], pack["records"]
        if not isinstance(keys, list) or not isinstance(carried, list) or len(keys) != len(
                carried):
            raise ValueError("keys and records must be lists of one length")
    except (orjson.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
        raise InvalidEvent(f"undecodable pack: {exc}", code="undecodable") from exc
    for i, record in enumerate(carried):
        yield Record(message.topic, message.partition, message.offset, str(keys[i]).encode(),
                     record, i)


def decode(schemas: tuple[str, ...], message: Any) -> Any:
    """The record one message (or pack record) carries; a union yields ``(name, record)``."""
    if isinstance(message, Record):
        record = message.record
        if len(schemas) > 1:
            if not isinstance(record, list) or len(record) != 2 or record[0] not in schemas:
                raise InvalidEvent(f"a pack record of an unknown type in {message.topic}",
                                   code="undecodable")
            return record[0], record[1]
        if not isinstance(record, dict):
            raise InvalidEvent(f"a pack record that is not an object in {message.topic}",
                               code="undecodable")
        return record
    if message.value is None:
        raise InvalidEvent("empty message (no value)", code="undecodable")
    return avro_decode(schemas, message.value)


def decode_all(schemas: tuple[str, ...], headers: Any, value: bytes | None) -> list[Any]:
    """Every record in one message as read by a plain Kafka client (tests, tools)."""
    plain = SimpleNamespace(topic="", partition=0, offset=-1, key=None, value=value,
                            headers=headers)
    return [decode(schemas, r) for r in records(plain)]
