"""Topic declarations from ``topology/``, and the commands that create and check them.

Every topic the service touches is one TOML file in ``topology/``. The service never relies
on broker auto-creation: ``python -m app topology apply`` creates what is missing (idempotent)
and ``python -m app topology check`` reports drift between the files and the cluster.
"""

from __future__ import annotations

import tomllib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from app.errors import TopologyError
from app.settings import Settings

TOPOLOGY_DIR = Path(__file__).resolve().parent.parent / "topology"

# Topics an agent consumes (raw bytes: the agent decodes, so a bad message is parked, not fatal).
CONSUMED = ("orders.requests", "postroom.inbox", "postroom.catalog", "postroom.lines",
            "postroom.batches", "postroom.ledger", "postroom.vouchers")
# Tables: name -> the topic whose partitions they follow.
TABLES = {
    "request_by_order": "orders.requests",
    "order_by_id": "postroom.inbox",
    "stock_by_sku": "postroom.batches",
    "account_by_id": "postroom.ledger",
    "voucher_by_id": "postroom.vouchers",
    "outstanding_orders": "postroom.inbox",
    "outstanding_transfers": "postroom.vouchers",
}
GLOBAL_TABLES = {"price_by_sku": "postroom.catalog"}


@dataclass(frozen=True)
class TopicSpec:
    """One topic as declared in ``topology/`` (name before any prefix)."""

    name: str
    partitions: int
    replication: int
    cleanup_policy: str
    retention_ms: int
    schemas: tuple[str, ...] = ()
    value_formats: tuple[str, ...] = ()
    copartition: str = ""
    table: str = ""
    public: bool = False
    packed: bool = False  # records travel in packs, one message per partition (app.pack)

    def config(self) -> dict[str, str]:
        """Broker-side topic configuration."""
        cfg = {"cleanup.policy": self.cleanup_policy}
        if self.cleanup_policy != "compact":
            cfg["retention.ms"] = str(self.retention_ms)
        return cfg


def _spec(raw: Mapping[str, Any], origin: str) -> TopicSpec:
    try:
        spec = TopicSpec(
            name=str(raw["name"]),
            partitions=int(raw["partitions"]),
            replication=int(raw["replication"]),
            cleanup_policy=str(raw["cleanup_policy"]),
            retention_ms=int(raw["retention_ms"]),
            schemas=tuple(raw.get("schemas", ())),
            value_formats=tuple(raw.get("value_formats", ())),
            copartition=str(raw.get("copartition", "")),
            table=str(raw.get("table", "")),
            public=bool(raw.get("public", False)),
            packed=bool(raw.get("packed", False)),
        )
    except (KeyError, TypeError, ValueError) as exc:
        raise TopologyError(f"{origin}: {exc!r}") from exc
    if spec.partitions < 1 or spec.replication < 1:
        raise TopologyError(f"{origin}: partitions and replication must be >= 1")
    if spec.cleanup_policy not in ("delete", "compact", "compact,delete"):
        raise TopologyError(f"{origin}: unknown cleanup_policy {spec.cleanup_policy!r}")
    if spec.packed and (spec.public or spec.table):
        raise TopologyError(f"{origin}: only internal, non-table topics may be packed")
    if spec.table and "compact" not in spec.cleanup_policy:
        raise TopologyError(f"{origin}: a table's changelog must be compacted")
    return spec


def load_topology(directory: Path = TOPOLOGY_DIR) -> dict[str, TopicSpec]:
    """Read every ``*.toml`` in ``directory`` into specs keyed by declared name."""
    specs: dict[str, TopicSpec] = {}
    for path in sorted(directory.glob("*.toml")):
        with path.open("rb") as fh:
            spec = _spec(tomllib.load(fh), path.name)
        if path.stem != spec.name:
            raise TopologyError(f"{path.name}: file name must be the topic name {spec.name!r}")
        specs[spec.name] = spec
    if not specs:
        raise TopologyError(f"no topic declarations found in {directory}")
    return specs


def effective(spec: TopicSpec, settings: Settings) -> TopicSpec:
    """The spec as it exists on the cluster: prefixed name, overridden sizes."""
    partitions = spec.partitions
    if settings.partitions and spec.partitions > 1:
        partitions = settings.partitions
    replication = settings.replication_factor or spec.replication
    return TopicSpec(
        name=settings.topic(spec.name),
        partitions=partitions,
        replication=replication,
        cleanup_policy=spec.cleanup_policy,
        retention_ms=spec.retention_ms,
        schemas=spec.schemas,
        value_formats=spec.value_formats,
        copartition=spec.copartition,
        table=spec.table,
        public=spec.public,
        packed=spec.packed,
    )


def copartition_problems(specs: Iterable[TopicSpec]) -> list[str]:
    """Topics of one co-partition group must have equal partition counts."""
    groups: dict[str, set[int]] = {}
    for spec in specs:
        if spec.copartition:
            groups.setdefault(spec.copartition, set()).add(spec.partitions)
    return [f"group {g!r} has partition counts {sorted(c)}" for g, c in groups.items() if len(c) > 1]


def _admin(settings: Settings) -> Any:
    from confluent_kafka.admin import AdminClient

    return AdminClient({"bootstrap.servers": settings.kafka_bootstrap})


def check(settings: Settings, specs: Mapping[str, TopicSpec] | None = None) -> list[str]:
    """Return the differences between ``topology/`` and the cluster (empty: in sync)."""
    from confluent_kafka.admin import ConfigResource, ResourceType

    wanted = [effective(s, settings) for s in (specs or load_topology()).values()]
    admin = _admin(settings)
    meta = admin.list_topics(timeout=15)
    drift: list[str] = []
    present = []
    for spec in wanted:
        topic = meta.topics.get(spec.name)
        if topic is None or topic.error is not None:
            drift.append(f"{spec.name}: missing")
            continue
        present.append(spec)
        if len(topic.partitions) != spec.partitions:
            drift.append(
                f"{spec.name}: {len(topic.partitions)} partitions, declared {spec.partitions}"
            )
    if present:
        resources = [ConfigResource(ResourceType.TOPIC, s.name) for s in present]
        futures = admin.describe_configs(resources)
        by_name = {s.name: s for s in present}
        for resource, fut in futures.items():
            actual = fut.result(timeout=15)
            for key, value in by_name[resource.name].config().items():
                got = actual[key].value if key in actual else None
                if got != value:
                    drift.append(f"{resource.name}: {key}={got}, declared {value}")
    return drift


def apply(settings: Settings, specs: Mapping[str, TopicSpec] | None = None) -> list[str]:
    """Create every declared topic that is missing; return the names created."""
    from confluent_kafka.admin import NewTopic

    wanted = [effective(s, settings) for s in (specs or load_topology()).values()]
    problems = copartition_problems(wanted)
    if problems:
        raise TopologyError("; ".join(problems))
    admin = _admin(settings)
    metadata = admin.list_topics(timeout=15).topics
    existing = set(metadata)
    # Topics that exist already count with the partitions they have, not those declared.
    actual = [replace(s, partitions=len(metadata[s.name].partitions)) if s.name in existing
              else s for s in wanted]
    problems = copartition_problems(actual)
    if problems:
        raise TopologyError("existing topics are not co-partitioned: " + "; ".join(problems))
    missing = [s for s in wanted if s.name not in existing]
    if not missing:
        return []
    futures = admin.create_topics(
        [NewTopic(s.name, s.partitions, s.replication, config=s.config()) for s in missing],
        operation_timeout=30,
    )
    created = []
    for name, fut in futures.items():
        try:
            fut.result(timeout=60)
            created.append(name)
        except Exception as exc:
            if "TOPIC_ALREADY_EXISTS" not in str(exc):
                raise TopologyError(f"could not create {name}: {exc}") from exc
    return sorted(created)


def delete_prefixed(settings: Settings) -> None:
    """Delete every declared topic under ``settings.topic_prefix`` (test clean-up)."""
    if not settings.topic_prefix:
        raise TopologyError("refusing to delete un-prefixed topics")
    admin = _admin(settings)
    names = [settings.topic(n) for n in load_topology()]
    existing = set(admin.list_topics(timeout=15).topics)
    doomed = [n for n in names if n in existing]
    if doomed:
        for fut in admin.delete_topics(doomed, operation_timeout=30).values():
            fut.result(timeout=60)
