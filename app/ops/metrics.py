"""Postroom's own Prometheus metrics, in one registry served at ``GET /metrics``."""

from __future__ import annotations

from dataclasses import dataclass, field

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
