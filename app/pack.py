"""Packs: many records bound for one partition of an internal topic, carried by one message.

An internal topic declared ``packed`` in ``topology/`` receives, from each unit of work, one
Kafka message per partition instead of one per record. The message is marked by the header
``postroom-pack`` and its value is a ``postroom.Pack`` (the records' keys and their encoded
values, in the order they were sent). Each record goes to the partition its own key hashes to
(Kafka's murmur2, as every Postroom producer and Faust's partition keys), so a pack holds only
records that would have landed on that partition anyway: tables keyed like the topic stay
co-partitioned, and per-key order is kept.

A consumer hands each record to its handler as if it had arrived alone (:class:`Record`,
with the pack's topic, partition and offset and its index in the pack). A message without the
header is one plain record, so producers outside the worker (the web views, the reconciler, a
replay by hand) may still send records one by one.

The point is the cost of a message in the consumer: Faust's per-event path costs about as
much as the handler's own work, and an order crossed about 14 internal messages.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from app.codecs import avro_decode, avro_encode, header
from app.errors import InvalidEvent

PACK_HEADER = "postroom-pack"
PACK_SCHEMA = ("postroom.Pack",)
PACK_HEADERS = [(PACK_HEADER, b"1")]
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


def partition_for(key: bytes, partitions: int) -> int:
    """The partition Kafka's default partitioner gives ``key`` (librdkafka's murmur2_random)."""
    return (murmur2(key) & 0x7FFFFFFF) % partitions


def encode_packs(keys: list[bytes], values: list[bytes]) -> Iterator[tuple[bytes, bytes]]:
    """The keys and values of the pack messages that carry these records (split to stay
    small). A pack's key is its first record's: it hashes to the same partition as every
    record in it, so a pack copied by key (a replay) lands where its records belong."""
    start, size = 0, 0
    for i, value in enumerate(values):
        size += len(value) + len(keys[i]) + 8
        if size > MAX_PACK_BYTES and i > start:
            yield keys[start], avro_encode(PACK_SCHEMA, {"keys": keys[start:i],
                                                         "values": values[start:i]})
            start, size = i, len(value) + len(keys[i]) + 8
    if start < len(values):
        yield keys[start], avro_encode(PACK_SCHEMA, {"keys": keys[start:],
                                                     "values": values[start:]})


@dataclass(frozen=True, slots=True)
class Record:
    """One record of a pack, shaped like the message a handler would otherwise get."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    headers: Any
    index: int


def records(message: Any) -> Iterator[Any]:
    """The records a consumed message carries: its pack's, or the message itself."""
    if not header(message.headers, PACK_HEADER):
        yield message
        return
    if not message.value:
        raise InvalidEvent("empty pack", code="undecodable")
    pack = avro_decode(PACK_SCHEMA, message.value)
    keys, values = pack["keys"], pack["values"]
    if len(keys) != len(values):
        raise InvalidEvent("a pack with unequal keys and values", code="undecodable")
    for i, value in enumerate(values):
        yield Record(message.topic, message.partition, message.offset, keys[i], value, (), i)


def unpack_values(headers: Any, value: bytes | None) -> list[bytes]:
    """The record values in one message as read by a plain Kafka client (tests, tools)."""
    if not header(headers, PACK_HEADER):
        return [value or b""]
    return list(avro_decode(PACK_SCHEMA, value or b"")["values"])
