"""Postroom's own Prometheus metrics, in one registry served at ``GET /metrics``."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram


@dataclass
class Metrics:
    """Counters and gauges of one worker process."""

    registry: CollectorRegistry = field(default_factory=CollectorRegistry)

    def __post_init__(self) -> None:
        r = self.registry
        self.deadlettered = Counter(
            "postroom_deadlettered", "Messages parked in the dead-letter topic",
            ["topic", "code"], registry=r,
        )
        self.requests_accepted = Counter(
            "postroom_http_orders_accepted", "Orders answered 202 by the front desk", registry=r
        )
        self.requests_refused = Counter(
            "postroom_http_requests_refused", "Requests refused by the front desk",
            ["status"], registry=r,
        )
        self.duplicates = Counter(
            "postroom_duplicates_ignored", "Redelivered or repeated messages recognised",
            ["stage"], registry=r,
        )
        self.orders_terminal = Counter(
            "postroom_orders_terminal", "Orders that reached a terminal status", ["status"],
            registry=r,
        )
        self.batches = Counter("postroom_batches", "Fulfillment batches dispatched", registry=r)
        self.batch_lines = Histogram(
            "postroom_batch_lines", "Lines merged into one fulfillment batch",
            buckets=(1, 2, 5, 10, 20, 50, 100, 200, 500), registry=r,
        )
        self.order_latency = Histogram(
            "postroom_order_latency_seconds", "From receipt to terminal status",
            buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30), registry=r,
        )
        self.faults_injected = Counter(
            "postroom_faults_injected", "Work dropped on purpose by fault injection", ["kind"],
            registry=r,
        )
        self.table_memory = Gauge(
            "postroom_table_memory_bytes",
            "RocksDB's memory and files for the tables: memtables, readers (index and filter "
            "blocks outside the cache), cache (the shared cache in use, memtables included), "
            "budget (POSTROOM_TABLE_MEMORY_MB), files (on disk)",
            ["kind"], registry=r,
        )
        self.consumer_lag = Gauge(
            "postroom_consumer_lag", "Committed offset behind end offset",
            ["group", "topic", "partition"], registry=r,
        )
        self.units = Counter(
            "postroom_units", "Units of work made durable, by agent", ["agent"], registry=r,
        )
        self.unit_records = Histogram(
            "postroom_unit_records", "Records one unit of work handled (a pack counts each)",
            ["agent"], buckets=(1, 2, 5, 10, 20, 50, 100, 200, 500, 1000), registry=r,
        )
        self.unit_produced = Counter(
            "postroom_unit_produced_records",
            "What units of work produced: sends (messages; a pack is one) and changelog "
            "records (the last value of each table key a unit wrote)",
            ["agent", "kind"], registry=r,
        )
        self.unit_commit_seconds = Histogram(
            "postroom_unit_commit_seconds",
            "From a unit's sends to its state in the local stores (two acknowledgements)",
            ["agent"], buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5),
            registry=r,
        )

    def unit_stats(self, agent: str) -> UnitStats:
        """One agent's unit-of-work metrics, their labels looked up once."""
        return UnitStats(self.units.labels(agent), self.unit_records.labels(agent),
                         self.unit_produced.labels(agent, "send"),
                         self.unit_produced.labels(agent, "changelog"),
                         self.unit_commit_seconds.labels(agent))


@dataclass(frozen=True)
class UnitStats:
    """What one agent's units of work count (see :meth:`Metrics.unit_stats`)."""

    units: Any
    records: Any
    sent: Any
    logged: Any
    seconds: Any

    def record(self, records: int, sent: int, logged: int, seconds: float) -> None:
        self.units.inc()
        self.records.observe(records)
        self.sent.inc(sent)
        self.logged.inc(logged)
        self.seconds.observe(seconds)
