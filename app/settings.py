"""One frozen settings object, read once from ``POSTROOM_*`` environment variables.

Every tunable of the service lives here and nowhere else. Secrets are wrapped in
:class:`Secret` so that they never show in a log line or a ``repr``.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path

from app.errors import ConfigError

PREFIX = "POSTROOM_"
APP_NAME = "postroom"  # also the first word of every changelog topic in topology/


@dataclass(frozen=True)
class Secret:
    """A value that prints as ``'***'``."""

    value: str = field(repr=False)

    def __repr__(self) -> str:
        return "Secret('***')" if self.value else "Secret('')"

    __str__ = __repr__

    def __bool__(self) -> bool:
        return bool(self.value)


@dataclass(frozen=True)
class Settings:
    """Everything the service can be told, with its default."""

    # Kafka
    kafka_bootstrap: str = "127.0.0.1:9092"
    kafka_external: bool = False  # True when POSTROOM_KAFKA_BOOTSTRAP names a cluster
    topic_prefix: str = ""  # prepended to every topic name and to the app id
    replication_factor: int = 0  # 0: take each topic's own value from topology/
    partitions: int = 0  # 0: take each topic's own value from topology/
    # Worker
    data_dir: Path = Path(".data/worker")
    store: str = "rocksdb://"
    table_write_buffer_mb: int = 4  # RocksDB memtable per table partition (two of them)
    table_memory_mb: int = 64  # RocksDB's cache and memtables, all table partitions together
    # the worker's producers: how long a Kafka batch may fill (a unit places all its records
    # at once, in well under this; every hop waits it twice)
    producer_linger_ms: float = 0.5
    commit_interval_s: float = 1.0  # how often consumed offsets are committed
    # A worker that dies is noticed by the group after this long; only then do the others (or
    # its own restart) take over its partitions. Heartbeats go out every third of it.
    session_timeout_s: float = 10.0
    prometheus_sensor: bool = False  # Faust's own per-event metrics on /metrics (costs ~15% CPU)
    event_loop: str = "uvloop"  # the worker's asyncio loop: "uvloop" or "aio" (the standard one)
    # Faust's Kafka consumer in a thread of its own (Faust's way) instead of on the worker's
    # event loop (see app/consumerloop.py)
    consumer_thread: bool = False
    # Who fetches the agents' topics: "librdkafka" (in its own threads, see app/fastfetch.py)
    # or "aiokafka" (Faust's own consumer, in Python on the event loop)
    fetcher: str = "librdkafka"
    # Who produces the units' records: "aiokafka" (Postroom's producer over aiokafka's client:
    # one produce request per broker for every partition a unit touches, see app/producer.py)
    # or "librdkafka" (a request per partition, from its own threads; the linger above
    # applies to it alone)
    producer: str = "aiokafka"
    # Web
    web_host: str = "127.0.0.1"
    web_port: int = 6066
    max_body_bytes: int = 64 * 1024
    max_items_per_order: int = 100
    admin_token: Secret = Secret("")
    # Every agent handles what arrived in one batch (one unit of work, see app/unit.py): up to
    # this many records, waiting at most this long for more once one is there.
    batch_max: int = 500
    batch_wait_ms: int = 2
    # How long the broker may hold a fetch with nothing new (see app/seekfix.py)
    fetch_max_wait_ms: int = 100
    # Merge window of the dispatcher
    merge_max_lines: int = 200
    merge_max_wait_ms: int = 10
    # Payments
    merchant_account: str = "merchant"
    # Reconciliation
    reconcile_interval_s: float = 2.0
    reconcile_deadline_s: float = 30.0  # a stage not heard back from within this is overdue
    reconcile_max_attempts: int = 5  # then the order is FAILED and compensated
    reconcile_backoff: float = 2.0  # the n-th redo waits deadline * backoff ** n
    reconcile_pause_lag: int = 5_000  # no re-dispatch while the consumers are this far behind
    # Throttling
    throttle_max_lag: int = 20_000
    throttle_max_oldest_age_s: float = 60.0
    lag_refresh_s: float = 1.0
    # Fault injection (tests only; never settable over HTTP)
    fault_drop_batch_ratio: float = 0.0
    fault_fulfill_disabled: bool = False
    fault_hold_skus: str = ""  # comma-separated: fulfill ignores these skus' batches

    @property
    def app_id(self) -> str:
        return f"{self.topic_prefix}{APP_NAME}"

    def topic(self, name: str) -> str:
        """Return the real name of a topic declared in ``topology/`` as ``name``."""
        return f"{self.topic_prefix}{name}"

    @property
    def held_skus(self) -> frozenset[str]:
        return frozenset(s.strip() for s in self.fault_hold_skus.split(",") if s.strip())

    @property
    def web_url(self) -> str:
        return f"http://{self.web_host}:{self.web_port}"


def _convert(name: str, raw: str, kind: object) -> object:
    try:
        if kind in (int, "int"):
            return int(raw)
        if kind in (float, "float"):
            return float(raw)
        if kind in (bool, "bool"):
            lowered = raw.strip().lower()
            if lowered in ("1", "true", "yes", "on"):
                return True
            if lowered in ("0", "false", "no", "off", ""):
                return False
            raise ValueError(f"not a boolean: {raw!r}")
        if kind in (Path, "Path"):
            return Path(raw)
        if kind in (Secret, "Secret"):
            return Secret(raw)
    except ValueError as exc:
        raise ConfigError(f"{PREFIX}{name.upper()}: {exc}") from exc
    return raw


def load_settings(env: Mapping[str, str] | None = None) -> Settings:
    """Build the settings from the environment (or from ``env``)."""
    env = os.environ if env is None else env
    values: dict[str, object] = {}
    for f in fields(Settings):
        if f.name == "kafka_external":
            continue
        key = PREFIX + f.name.upper()
        if key in env:
            values[f.name] = _convert(f.name, env[key], f.type)
    if f"{PREFIX}KAFKA_BOOTSTRAP" in env:
        values["kafka_external"] = True
    settings = Settings(**values)  # type: ignore[arg-type]
    _validate(settings)
    return settings


def _validate(s: Settings) -> None:
    if s.batch_max < 1:
        raise ConfigError("POSTROOM_BATCH_MAX must be >= 1")
    if s.batch_wait_ms < 0:
        raise ConfigError("POSTROOM_BATCH_WAIT_MS must be >= 0")
    if s.fetch_max_wait_ms < 1:
        raise ConfigError("POSTROOM_FETCH_MAX_WAIT_MS must be >= 1")
    if s.event_loop not in ("uvloop", "aio"):
        raise ConfigError("POSTROOM_EVENT_LOOP must be uvloop or aio")
    if s.fetcher not in ("librdkafka", "aiokafka"):
        raise ConfigError("POSTROOM_FETCHER must be librdkafka or aiokafka")
    if s.producer not in ("librdkafka", "aiokafka"):
        raise ConfigError("POSTROOM_PRODUCER must be librdkafka or aiokafka")
    if s.merge_max_lines < 1:
        raise ConfigError("POSTROOM_MERGE_MAX_LINES must be >= 1")
    if s.merge_max_wait_ms < 0:
        raise ConfigError("POSTROOM_MERGE_MAX_WAIT_MS must be >= 0")
    if not 0.0 <= s.fault_drop_batch_ratio <= 1.0:
        raise ConfigError("POSTROOM_FAULT_DROP_BATCH_RATIO must be within [0, 1]")
    if not 0 < s.web_port < 65536:
        raise ConfigError("POSTROOM_WEB_PORT must be a TCP port")
