"""Fulfillment agents: keep the catalogue, merge lines into batches, reserve stock.

::

    postroom.catalog --apply_catalog--> postroom.batches (StockCommand SET), price_by_sku
    postroom.lines   --dispatch_lines--> postroom.batches (FulfillmentBatch, key = sku)
    postroom.batches --fulfill_batches--> stock_by_sku (stock and per-line allocations)
                                       --> postroom.inbox (LINE_RESULT per line)
"""

from __future__ import annotations

import random
from typing import Any

from app.fulfillment import logic
from app.models import CatalogEntry, StockCommand
from app.runtime import Runtime, Window, now_ms
from app.unit import Unit

BATCH = logic.BATCH
STOCK = logic.STOCK_COMMAND


def register(rt: Runtime) -> None:
    settings = rt.settings
    metrics = rt.metrics
    chance = random.Random()
    held = settings.held_skus

    def apply_entry(unit: Unit, msg: Any) -> None:
        """Record a sku's price and hand its on-hand count to the fulfiller that owns it."""
        entry: CatalogEntry = rt.decode("postroom.catalog", msg)
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
        # The stock and the price leave together and the price is readable here only once
        # Kafka acknowledged both, so the fulfiller reads the SET before any line of the sku.
        unit.send("postroom.batches", entry["sku"], command, kind=STOCK)
        unit.table("price_by_sku")[entry["sku"]] = {"price": entry["price"]}

    rt.agent("postroom.catalog", "apply_catalog", apply_entry)

    def take_line(unit: Unit, msg: Any) -> None:
        """Set a line aside for its unit, which is the merge window (see close_window)."""
        unit.gathered.append(rt.decode("postroom.lines", msg))

    def close_window(unit: Unit) -> None:
        """Merge the window's lines: one batch per sku (at most the window's line count)."""
        if not unit.gathered:
            return
        unit.begin(0)
        for batch in logic.merge(unit.gathered, settings.merge_max_lines, now_ms()):
            unit.send("postroom.batches", batch["sku"], batch, kind=BATCH)
            metrics.batches.inc()
            metrics.batch_lines.observe(len(batch["lines"]))
        unit.keep()

    # A unit of the dispatcher closes at POSTROOM_MERGE_MAX_LINES lines or
    # POSTROOM_MERGE_MAX_WAIT_MS after its first line, whichever comes first.
    wait = settings.merge_max_wait_ms / 1000
    rt.agent("postroom.lines", "dispatch_lines", take_line,
             window=Window(settings.merge_max_lines, wait, wait, close_window))

    def release_line(unit: Unit, cmd: StockCommand, stock: dict[str, Any]) -> None:
        stock_by_sku = unit.table("stock_by_sku")
        line_id, sku = str(cmd["line_id"]), cmd["sku"]
        key = logic.allocation_key(line_id)
        new_stock, record, units, new = logic.release(stock, stock_by_sku.get(key), line_id)
        if new:
            stock_by_sku[sku] = new_stock  # the stock and a note of the release, then the line
        if new or not (stock_by_sku.get(key) or {}).get("released"):
            stock_by_sku[key] = record
        event = logic.release_event(line_id, sku, units, cmd["command_id"], now_ms())
        unit.send("postroom.inbox", event["order_id"], event)

    def fulfill_one(unit: Unit, msg: Any) -> None:
        """Reserve stock for a whole batch in one write and report every line's outcome."""
        stock_by_sku = unit.table("stock_by_sku")
        kind, record = rt.decode("postroom.batches", msg)
        sku = record["sku"]
        stock = stock_by_sku.get(sku) or logic.empty_stock(sku)
        if kind == STOCK:
            if record["kind"] == "SET":
                stock_by_sku[sku] = logic.apply_stock_command(stock, record)
            elif record["kind"] == "RELEASE":
                release_line(unit, record, stock)
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
            unit.send("postroom.inbox", alloc.line["order_id"], result)

    rt.agent("postroom.batches", "fulfill_batches", fulfill_one)
