"""One batch of consumed messages as one unit of work, made durable together.

An agent takes the messages that arrived (up to ``POSTROOM_BATCH_MAX``, waiting at most
``POSTROOM_BATCH_WAIT_MS``) and runs its handler on each one inside a :class:`Unit`. The
handler reads tables through the unit, which sees its own earlier writes, and writes and sends
into the unit. Nothing leaves the process until the whole batch is handled; then the unit

1. produces every message the batch sends and the *last* value of every table key it wrote
   (to the table's compacted changelog, on the partition of the message that wrote it: Faust's
   own layout) through one idempotent ``acks=all`` librdkafka producer,
2. waits until Kafka acknowledged all of them,
3. writes the same values into the tables' local stores (RocksDB), one write batch per table
   partition, and records the changelog offsets as the stores' recovery positions.

Only after that does the agent ask for the next batch, which is when Faust acks (and may
later commit) the offsets of this one. A crash anywhere before leaves the batch uncommitted,
so it is delivered again; every handler is idempotent, so a batch whose messages did reach
Kafka is recognised and only its sends are repeated. The local store never gets ahead of the
changelog, so a restart rebuilds exactly what Kafka holds.

This is the merge idea of DESIGN.md applied to state: the same key written many times in a
batch is written once (the last), and a thousand sends cost one wake-up of the event loop.
A handler that raises has its own writes and sends dropped and its message parked in the
dead-letter topic; the rest of the batch goes on. Sends to a packed topic leave as one pack
per partition (see :mod:`app.pack`).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncGenerator, Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any, TypeVar

import orjson
import rocksdict

from app.codecs import avro_encode
from app.deadletter import deadletter_headers
from app.errors import InvalidEvent, NotAcknowledged
from app.pack import PACK_HEADERS, encode_packs, partition_for, shaped
from app.producer import Headers, Record

Slot = tuple[str, int, bytes]  # table, partition, key (JSON, as Faust's stores encode it)
# How a unit sends to a declared topic: its name on the cluster, its schemas, and its
# partition count if it is packed (0: one message per record).
Output = tuple[str, tuple[str, ...], int]
Packed = tuple[str, int, bytes, Any]  # topic, partition, key, record (see app.pack)
T = TypeVar("T")
SCAN_CHUNK = 500  # entries a table scan reads between turns given to the event loop


# The changelog in Kafka is the tables' log: a store write skips RocksDB's own. A crash
# can lose the newest writes, but it loses the recovery offset written with them (one
# batch), so Faust's recovery replays them from the changelog. Closing a store (Faust drops
# them on a clean stop) flushes what it holds.
NO_WAL = rocksdict.WriteOptions()
# (a property; rocksdict's type stubs declare it a method)
NO_WAL.disable_wal = True  # type: ignore[method-assign,assignment]


MEMORY_PROPERTIES = (
    ("memtables", "rocksdb.cur-size-all-mem-tables"),
    ("readers", "rocksdb.estimate-table-readers-mem"),
    ("files", "rocksdb.total-sst-files-size"),
    ("cache", "rocksdb.block-cache-usage"),
    ("budget", "rocksdb.block-cache-capacity"),  # POSTROOM_TABLE_MEMORY_MB, as RocksDB has it
)
SHARED_MEMORY = frozenset({"cache", "budget"})  # one cache for every table partition


def add_memory(totals: dict[str, int], kind: str, value: int) -> None:
    """Add one RocksDB reading to ``totals``: the shared cache counts once, the rest add up."""
    totals[kind] = max(totals.get(kind, 0), value) if kind in SHARED_MEMORY else (
        totals.get(kind, 0) + value)


class TableStore:
    """A Faust table's local store and changelog, addressed by partition."""

    def __init__(self, table: Any) -> None:
        self.table = table
        self.changelog = table.changelog_topic.get_topic_name()
        self.rocksdb = hasattr(table.data, "_db_for_partition")  # else the memory store

    def read(self, partition: int, key: bytes) -> Any:
        store = self.table.data
        if self.rocksdb:
            raw = store._db_for_partition(partition).get(key)
            return None if raw is None else orjson.loads(raw)
        return store.data.get(orjson.loads(key))  # memory store (unit tests)

    def items(self) -> Iterator[tuple[Any, Any]]:
        """Every key and value in the partitions this worker is active for."""
        loads = orjson.loads
        for key, value in self.raw_items():
            yield loads(key), loads(value)

    def raw_items(self) -> Iterator[tuple[bytes, bytes]]:
        """Every key and value as stored (JSON), in the partitions this worker is active for:
        a scan can pass over keys without decoding their values."""
        store = self.table.data
        if not self.rocksdb:
            dumps = orjson.dumps
            yield from [(dumps(k), dumps(v)) for k, v in store.data.items()]
            return
        skip = store.offset_key
        for db in store._dbs_for_actives():  # Faust's own partitions, without its wrappers
            for key, value in db.items():
                if key != skip:  # the recovery position, not an entry
                    yield key, value

    def lookup(self, key: bytes) -> Any:
        """A key's value in whichever partition holds it (a global table's reader)."""
        store = self.table.data
        if self.rocksdb:
            for db in list(store._dbs.values()):
                raw = db.get(key)
                if raw is not None:
                    return orjson.loads(raw)
            return None
        return store.data.get(orjson.loads(key))

    def memory(self) -> dict[str, int]:
        """What RocksDB holds for this table in this worker, in bytes, from its own counters:
        ``memtables``, ``readers`` (index and filter blocks outside the cache) and ``files``
        (on disk), summed over the open partitions, and ``cache`` and ``budget``, the shared
        block cache's use and capacity (the same for every table: it holds them all). Empty
        for the memory store."""
        if not self.rocksdb:
            return {}
        totals = dict.fromkeys((kind for kind, _ in MEMORY_PROPERTIES), 0)
        for db in list(self.table.data._dbs.values()):
            for kind, name in MEMORY_PROPERTIES:
                add_memory(totals, kind, db.property_int_value(name) or 0)
        return totals

    def write(self, partition: int, items: list[tuple[bytes, bytes | None]], offset: int) -> None:
        """Apply values that Kafka acknowledged at changelog ``offset`` (and before)."""
        store = self.table.data
        if self.rocksdb:
            batch = rocksdict.WriteBatch(raw_mode=True)
            for key, value in items:
                if value is None:
                    batch.delete(key)
                else:
                    batch.put(key, value)
            # The recovery position goes in the same atomic write, where Faust's
            # ``set_persisted_offset`` would put it with a second one.
            batch.put(store.offset_key, str(offset).encode())
            # Faust's key -> partition cache (a locked LRU) is left to fill on its own reads:
            # a key lives in one partition, so it can never point a read at the wrong one.
            store._db_for_partition(partition).write(batch, NO_WAL)
            return
        for key, value in items:
            name = orjson.loads(key)
            if value is None:
                store.data.pop(name, None)
                store._key_partition.pop(name, None)
            else:
                store.data[name] = orjson.loads(value)
                store._key_partition[name] = partition


@dataclass
class Effort:
    """What a paced scan cost the worker: the time between its turns given to the event
    loop, its caller's work on each item included and the others' work in those turns not."""

    seconds: float = 0.0


async def paced(items: Iterable[T], every: int = SCAN_CHUNK,
                effort: Effort | None = None) -> AsyncGenerator[T, None]:
    """``items``, giving the event loop a turn every ``every`` of them: a scan of a large
    table (a view, a timer) must not stall the agents and the web server meanwhile. An
    ``effort`` adds up the time the scan took (see :class:`Effort`)."""
    began = time.perf_counter()
    try:
        for i, item in enumerate(items):
            yield item
            if i % every == every - 1:
                if effort is not None:
                    effort.seconds += time.perf_counter() - began
                await asyncio.sleep(0)
                began = time.perf_counter()
    finally:  # also when the caller stops early
        if effort is not None:
            effort.seconds += time.perf_counter() - began


class TableView:
    """One table as a handler sees it inside a unit: get, set and delete by key."""

    def __init__(self, unit: Unit, name: str) -> None:
        self._unit = unit
        self._name = name

    def get(self, key: str, default: Any = None) -> Any:
        value = self._unit.read(self._name, key)
        return default if value is None else value

    def __setitem__(self, key: str, value: Any) -> None:
        self._unit.write(self._name, key, orjson.dumps(value))

    def __delitem__(self, key: str) -> None:
        self._unit.write(self._name, key, None)


class Unit:
    """What one batch reads, writes and sends; see the module's description."""

    def __init__(self, stores: dict[str, TableStore], topics: dict[str, Output]) -> None:
        self._stores = stores
        self._topics = topics  # declared name -> Output
        self.partition = 0
        self._writes: dict[Slot, bytes | None] = {}
        self._sends: list[Record] = []
        self._staged_writes: dict[Slot, bytes | None] = {}
        self._staged_sends: list[Record] = []
        self._packed: list[Packed] = []
        self._staged_packed: list[Packed] = []
        self.gathered: list[Any] = []  # what an agent's handlers set aside for its window

    # -- for handlers -----------------------------------------------------------------

    def table(self, name: str) -> TableView:
        return TableView(self, name)

    def read(self, table: str, key: str) -> Any:
        slot = (table, self.partition, orjson.dumps(key))
        if slot in self._staged_writes:
            raw = self._staged_writes[slot]
        elif slot in self._writes:
            raw = self._writes[slot]
        else:
            return self._stores[table].read(self.partition, slot[2])
        return None if raw is None else orjson.loads(raw)

    def lookup(self, table: str, key: str) -> Any:
        """Read a global table that other agents write (no partition of this unit's)."""
        return self._stores[table].lookup(orjson.dumps(key))

    def write(self, table: str, key: str, value: bytes | None) -> None:
        self._staged_writes[(table, self.partition, orjson.dumps(key))] = value

    def send(self, declared: str, key: str, value: Any, kind: str | None = None) -> None:
        """Send an Avro record (``kind`` names the member of a union topic) keyed by ``key``."""
        topic, schemas, packed = self._topics[declared]
        raw = key.encode()
        if packed:
            self._staged_packed.append((topic, partition_for(raw, packed), raw,
                                        shaped(schemas, value, kind or "")))
        else:
            self._staged_sends.append((topic, None, raw, avro_encode(schemas, value, kind or ""),
                                       None))

    def send_raw(self, declared: str, key: bytes | None, value: bytes | None,
                 headers: Headers | None = None) -> None:
        self._staged_sends.append((self._topics[declared][0], None, key, value, headers))

    # -- for the agent loop -----------------------------------------------------------

    def begin(self, partition: int) -> None:
        """Start handling one message from ``partition``."""
        self.partition = partition
        self._unstage()

    def keep(self) -> None:
        """The message was handled: its writes and sends join the batch."""
        self._writes.update(self._staged_writes)
        self._sends.extend(self._staged_sends)
        self._packed.extend(self._staged_packed)
        self._unstage()

    def drop(self) -> None:
        """The message failed: forget what it wrote and sent."""
        self._unstage()

    def _unstage(self) -> None:
        self._staged_writes.clear()
        self._staged_sends.clear()
        self._staged_packed.clear()

    def park(self, message: Any, exc: InvalidEvent) -> None:
        """Send a message that cannot be processed, as it arrived, to the dead-letter topic."""
        headers = deadletter_headers(exc, message.topic, message.partition, message.offset,
                                     message.headers)
        if getattr(message, "index", None) is not None:  # a record out of a pack
            headers.append(("postroom-origin-index", str(message.index).encode()))
        self.send_raw("postroom.deadletter", message.key, message.value or b"", headers)
        self.keep()

    @property
    def empty(self) -> bool:
        return not self._writes and not self._sends and not self._packed

    def sends(self) -> list[Record]:
        """What the batch sends: records of packed topics gathered into one pack message
        per partition (in the order they were sent), the rest as they are."""
        packs: dict[tuple[str, int], tuple[list[bytes], list[Any]]] = {}
        for topic, partition, key, record in self._packed:
            keys, records = packs.setdefault((topic, partition), ([], []))
            keys.append(key)
            records.append(record)
        out = list(self._sends)
        for (topic, partition), (keys, records) in packs.items():
            out.extend((topic, partition, key, pack, PACK_HEADERS)
                       for key, pack in encode_packs(keys, records))
        return out

    def changelog(self) -> list[Record]:
        """The last value of every key the batch wrote, for the tables' changelogs."""
        return [(self._stores[table].changelog, partition, key, value, None)
                for (table, partition, key), value in self._writes.items()]

    def apply(self, placed: dict[tuple[str, int], int]) -> None:
        """Write the acknowledged values into the local stores (``placed``: the highest
        changelog offset per changelog partition, as :meth:`changelog` was sent)."""
        grouped: dict[tuple[str, int], list[tuple[bytes, bytes | None]]] = {}
        for (table, partition, key), value in self._writes.items():
            grouped.setdefault((table, partition), []).append((key, value))
        for (table, partition), items in grouped.items():
            store = self._stores[table]
            store.write(partition, items, placed[(store.changelog, partition)])


async def commit(unit: Unit, send_all: Callable[..., Any], log: Any) -> tuple[int, int]:
    """Make a unit durable: its sends, then its table changes, then the local stores.

    The sends are acknowledged before any state that records them is written: a crash in
    between leaves the state as it was, so the redelivered batch is handled afresh and its
    sends repeated (every receiver is idempotent). Were the state first, a crash could
    leave a message recorded as handled whose consequences never left.
    A failed set is retried until Kafka takes it; the agent waits meanwhile, which is the
    backpressure a broker outage should cause.
    Returns how many messages were sent and how many changelog records written.
    """
    if unit.empty:
        return 0, 0
    sends = unit.sends()
    await _deliver(sends, send_all, log)
    changes = unit.changelog()
    unit.apply(await _deliver(changes, send_all, log))
    return len(sends), len(changes)


async def _deliver(records: list[Record], send_all: Callable[..., Any], log: Any
                   ) -> dict[tuple[str, int], int]:
    delay = 0.1
    while True:
        try:
            placed: dict[tuple[str, int], int] = await send_all(records)
            return placed
        except NotAcknowledged as exc:
            log.error("a batch was not acknowledged (%s); retrying in %.1fs", exc, delay)
            await asyncio.sleep(delay)
            delay = min(delay * 2, 5.0)
