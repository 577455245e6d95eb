"""Fulfillment agents: keep the catalogue, merge lines into batches, reserve stock.

::

    postroom.catalog --apply_catalog--> postroom.batches (StockCommand SET), price_by_sku
    postroom.lines   --dispatch_lines--> postroom.batches (FulfillmentBatch, key = sku)
    postroom.batches --fulfill_batches--> stock_by_sku (stock and per-line allocations)
                                       --> orders.events (LINE_RESULT per line)
"""

from __future__ import annotations

import random
from typing import Any

from app.errors import InvalidEvent
from app.fulfillment import logic
from app.models import CatalogEntry, OrderLine, StockCommand
from app.runtime import Runtime, now_ms

BATCH = logic.BATCH
STOCK = logic.STOCK_COMMAND


def register(rt: Runtime) -> None:
    app = rt.app
    settings = rt.settings
    price_by_sku = rt.tables["price_by_sku"]
    stock_by_sku = rt.tables["stock_by_sku"]
    batches_out = rt.topics["postroom.batches"]
    events_out = rt.topics["orders.events"]
    metrics = rt.metrics
    chance = random.Random()
    held = settings.held_skus

    async def apply_entry(msg: Any) -> None:
        """Record a sku's price and hand its on-hand count to the fulfiller that owns it."""
        entry: CatalogEntry = rt.decode("postroom.catalog", msg.value)
        command: StockCommand = {
            "command_id": entry["command_id"],
            "kind": "SET",
            "sku": entry["sku"],
            "on_hand": entry["on_hand"],
            "price": entry["price"],
            "line_id": None,
            "order_id": None,
            "at_ms": entry["at_ms"],
        }
        # The stock must be on the batches topic before any order can see the sku, so
        # that the fulfiller always reads the SET before the first batch of that sku.
        fut = await batches_out.send(key=entry["sku"].encode(), value=(STOCK, command))
        await fut
        price_by_sku[entry["sku"]] = {"price": entry["price"]}

    rt.agent("postroom.catalog", "apply_catalog", apply_entry)

    @app.agent(rt.sources["postroom.lines"], name="dispatch_lines")
    async def dispatch_lines(stream: Any) -> None:
        """Merge same-sku lines arriving within the window into one batch per sku."""
        wait = settings.merge_max_wait_ms / 1000
        async for events in stream.take_events(settings.merge_max_lines, within=wait):
            lines: list[OrderLine] = []
            for event in events:
                try:
                    lines.append(rt.decode("postroom.lines", event.message.value))
                except InvalidEvent as exc:
                    await rt.park(event.message, exc)
            for batch in logic.merge(lines, settings.merge_max_lines, now_ms()):
                await batches_out.send(key=batch["sku"].encode(), value=(BATCH, batch))
                metrics.batches.inc()
                metrics.batch_lines.observe(len(batch["lines"]))

    async def release_line(cmd: StockCommand, stock: dict[str, Any]) -> None:
        line_id, sku = str(cmd["line_id"]), cmd["sku"]
        key = logic.allocation_key(line_id)
        new_stock, record, units, new = logic.release(stock, stock_by_sku.get(key), line_id)
        if new:
            stock_by_sku[sku] = new_stock  # the stock and a note of the release, then the line
        if new or not (stock_by_sku.get(key) or {}).get("released"):
            stock_by_sku[key] = record
        event = logic.release_event(line_id, sku, units, cmd["command_id"], now_ms())
        await events_out.send(key=event["order_id"].encode(), value=event)

    async def fulfill_one(msg: Any) -> None:
        """Reserve stock for a whole batch in one write and report every line's outcome."""
        kind, record = rt.decode("postroom.batches", msg.value)
        sku = record["sku"]
        stock = stock_by_sku.get(sku) or logic.empty_stock(sku)
        if kind == STOCK:
            if record["kind"] == "SET":
                stock_by_sku[sku] = logic.apply_stock_command(stock, record)
            elif record["kind"] == "RELEASE":
                await release_line(record, stock)
            return
        if settings.fault_fulfill_disabled or sku in held or (
            settings.fault_drop_batch_ratio
            and chance.random() < settings.fault_drop_batch_ratio
        ):
            metrics.faults_injected.labels("drop_batch").inc()
            return
        lines = record["lines"]
        recorded = logic.recorded_allocations(stock, lines, stock_by_sku.get)
        new_stock, allocations = logic.allocate(stock, lines, recorded)
        if any(a.new for a in allocations):
            # One write for the whole batch first, carrying its allocations; then one
            # record per line. A crash loses a suffix of these, so a redelivered batch
            # finds its allocations either in the line records or in the stock record.
            stock_by_sku[sku] = logic.with_last_batch(new_stock, allocations)
        else:
            metrics.duplicates.labels("fulfill").inc()
        at = now_ms()
        for alloc in allocations:
            key = logic.allocation_key(alloc.line["line_id"])
            if alloc.new or stock_by_sku.get(key) is None:
                stock_by_sku[key] = logic.allocation_record(alloc, record["batch_id"])
            result = logic.line_result(alloc, record["batch_id"], at)
            await events_out.send(key=alloc.line["order_id"].encode(), value=result)

    rt.agent("postroom.batches", "fulfill_batches", fulfill_one)
