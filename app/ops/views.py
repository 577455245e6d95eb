"""Operations endpoints: ``GET /health`` and ``GET /metrics``."""

from __future__ import annotations

from typing import Any

from faust.web import View
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from app.runtime import Runtime
from app.unit import add_memory


def register(rt: Runtime) -> None:
    app = rt.app

    @app.page("/health")
    class Health(View):  # type: ignore[misc]
        async def get(self, request: Any) -> Any:
            consumer = app.consumer
            assigned = len(consumer.assignment()) if consumer is not None else 0
            ready = assigned > 0 and not app.rebalancing
            body = {
                "status": "ok" if ready else "starting",
                "assigned_partitions": assigned,
                "rebalancing": bool(app.rebalancing),
            }
            return self.json(body, status=200 if ready else 503)

    def table_memory() -> None:
        """RocksDB's own counters, summed over the tables (the cache is shared: once)."""
        totals: dict[str, int] = {}
        for name in rt.tables:
            for kind, value in rt.store(name).memory().items():
                add_memory(totals, kind, value)
        for kind, value in totals.items():
            rt.metrics.table_memory.labels(kind).set(value)

    rt.extras.setdefault("metrics_refreshers", []).append(table_memory)

    @app.page("/metrics")
    class Metrics(View):  # type: ignore[misc]
        async def get(self, request: Any) -> Any:
            for refresh in rt.extras.get("metrics_refreshers", []):
                refresh()
            return self.bytes(
                generate_latest(rt.metrics.registry), content_type=CONTENT_TYPE_LATEST.split(";")[0]
            )
