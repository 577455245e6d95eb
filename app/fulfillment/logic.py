"""Pure fulfillment logic: merge same-sku lines into batches, allocate a batch's stock.

No Faust import, no I/O; the clock is passed in.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from app.models import FulfillmentBatch, OrderEvent, OrderLine, StockCommand
from app.orders.logic import LINE_RELEASED, LINE_RESULT, event_id


def merge(lines: Iterable[OrderLine], max_lines: int, now_ms: int) -> list[FulfillmentBatch]:
    """Group lines by sku in arrival order; no batch carries more than ``max_lines``."""
    by_sku: dict[str, list[OrderLine]] = {}
    for line in lines:
        by_sku.setdefault(line["sku"], []).append(line)
    batches: list[FulfillmentBatch] = []
    for sku, sku_lines in by_sku.items():
        for start in range(0, len(sku_lines), max_lines):
            chunk = sku_lines[start : start + max_lines]
            batches.append(
                {
                    "batch_id": batch_id(sku, chunk),
                    "sku": sku,
                    "created_at_ms": now_ms,
                    "lines": chunk,
                }
            )
    return batches


def batch_id(sku: str, lines: Sequence[OrderLine]) -> str:
    """Stable for the same lines, so a redelivered batch keeps its id."""
    digest = hashlib.blake2b(digest_size=8)
    digest.update(sku.encode())
    for line in lines:
        digest.update(b"\0" + line["line_id"].encode() + b"\0" + str(line["attempt"]).encode())
    return f"b-{digest.hexdigest()}"


STOCK_COMMAND = "postroom.StockCommand"
BATCH = "postroom.FulfillmentBatch"


def stock_release(line_id: str, sku: str, now_ms: int) -> StockCommand:
    """Give back what a line reserved (or make sure it never reserves): a cancellation."""
    order_id = line_id.rsplit("/", 1)[0]
    return {
        "command_id": f"{line_id}:release",
        "kind": "RELEASE",
        "sku": sku,
        "on_hand": None,
        "price": None,
        "line_id": line_id,
        "order_id": order_id,
        "at_ms": now_ms,
    }


def release(
    stock: Mapping[str, Any], record: Mapping[str, Any] | None, line_id: str
) -> tuple[dict[str, Any], dict[str, Any], int, bool]:
    """Release one line's reservation; return (stock, line record, units released, new).

    A line never allocated is recorded as released with nothing reserved, so a batch that
    carries it later reserves nothing. Releasing twice changes nothing.
    """
    if record is not None and record.get("released"):
        return dict(stock), dict(record), int(record.get("released_units", 0)), False
    last = stock.get("last_release") or {}
    if last.get("line_id") == line_id:  # released, but the line's own record was lost
        units = int(last["units"])
        done = {**(record or {}), "reserved": 0, "released": True, "released_units": units}
        return dict(stock), done, units, False
    units = int(record["reserved"]) if record is not None else 0
    new_stock = {
        **stock,
        "on_hand": int(stock["on_hand"]) + units,
        "reserved": int(stock["reserved"]) - units,
        "last_release": {"line_id": line_id, "units": units},
    }
    new_record = {**(record or {}), "reserved": 0, "released": True, "released_units": units}
    return new_stock, new_record, units, True


def release_event(line_id: str, sku: str, units: int, cause_id: str, now_ms: int) -> OrderEvent:
    order_id = line_id.rsplit("/", 1)[0]
    return {
        "event_id": event_id(order_id, LINE_RELEASED, sku),
        "type": LINE_RELEASED,
        "order_id": order_id,
        "at_ms": now_ms,
        "cause_id": cause_id,
        "sku": sku,
        "line_id": line_id,
        "quantity": units,
    }


def empty_stock(sku: str) -> dict[str, Any]:
    return {"sku": sku, "on_hand": 0, "reserved": 0, "price": 0, "known": False}


@dataclass(frozen=True)
class Allocation:
    """What one line got: ``reserved`` units out of ``quantity``; ``new`` if decided now."""

    line: OrderLine
    reserved: int
    new: bool


def allocate(
    stock: Mapping[str, Any],
    lines: Sequence[OrderLine],
    recorded: Mapping[str, Mapping[str, Any] | None],
) -> tuple[dict[str, Any], list[Allocation]]:
    """Reserve stock for a whole batch, first come first served.

    A line already in ``recorded`` (a redelivery or re-dispatch) keeps its recorded
    reservation and takes nothing more; a line that appears twice in the batch counts once.
    Returns the new stock and one allocation per distinct line, in batch order.
    """
    on_hand = int(stock["on_hand"])
    reserved_total = int(stock["reserved"])
    seen: set[str] = set()
    out: list[Allocation] = []
    for line in lines:
        lid = line["line_id"]
        if lid in seen:
            continue
        seen.add(lid)
        prior = recorded.get(lid)
        if prior is not None:
            out.append(Allocation(line, int(prior["reserved"]), new=False))
            continue
        take = min(line["quantity"], on_hand)
        on_hand -= take
        reserved_total += take
        out.append(Allocation(line, take, new=True))
    new_stock = {**stock, "on_hand": on_hand, "reserved": reserved_total}
    return new_stock, out


def allocation_key(line_id: str) -> str:
    """Key of a line's allocation in the stock table (beside the sku keys)."""
    return f"line:{line_id}"


def allocation_record(alloc: Allocation, batch_id: str) -> dict[str, Any]:
    line = alloc.line
    return {
        "order_id": line["order_id"],
        "sku": line["sku"],
        "quantity": line["quantity"],
        "reserved": alloc.reserved,
        "batch_id": batch_id,
    }


def with_last_batch(stock: Mapping[str, Any], allocations: Sequence[Allocation]) -> dict[str, Any]:
    """The stock record carrying the allocations of the batch that changed it."""
    return {
        **stock,
        "last_batch": {a.line["line_id"]: a.reserved for a in allocations},
    }


def recorded_allocations(
    stock: Mapping[str, Any],
    lines: Sequence[OrderLine],
    lookup: Callable[[str], Mapping[str, Any] | None],
) -> dict[str, Mapping[str, Any] | None]:
    """What was already reserved for these lines: a line record, or the last batch's note."""
    last = stock.get("last_batch") or {}
    out: dict[str, Mapping[str, Any] | None] = {}
    for line in lines:
        lid = line["line_id"]
        rec = lookup(allocation_key(lid))
        if rec is None and lid in last:
            rec = {"reserved": last[lid]}
        out[lid] = rec
    return out


def line_result(alloc: Allocation, batch_id: str, now_ms: int) -> OrderEvent:
    """The event that reports one line's outcome on orders.events."""
    line = alloc.line
    return {
        "event_id": event_id(line["order_id"], LINE_RESULT, line["sku"]),
        "type": LINE_RESULT,
        "order_id": line["order_id"],
        "at_ms": now_ms,
        "cause_id": batch_id,
        "sku": line["sku"],
        "line_id": line["line_id"],
        "quantity": line["quantity"],
        "fulfilled": alloc.reserved,
    }


def apply_stock_command(stock: Mapping[str, Any], cmd: StockCommand) -> dict[str, Any]:
    """Set on-hand and price (``SET``); the reserved count is left as it is."""
    if cmd["kind"] != "SET":
        raise ValueError(f"not a SET command: {cmd['kind']}")
    return {
        **stock,
        "on_hand": int(cmd["on_hand"] or 0),
        "price": int(cmd["price"] or 0),
        "known": True,
    }


def public_stock(stock: Mapping[str, Any]) -> dict[str, Any]:
    """The ``GET /inventory/{sku}`` answer."""
    return {
        "sku": stock["sku"],
        "on_hand": stock["on_hand"],
        "reserved": stock["reserved"],
        "price": stock["price"],
    }
