"""Merge and allocation, no broker."""

from __future__ import annotations

from app.fulfillment import logic
from app.models import OrderLine


def line(order: str, sku: str, qty: int) -> OrderLine:
    return {"line_id": f"{order}/{sku}", "order_id": order, "sku": sku, "quantity": qty,
            "unit_price": 10, "attempt": 0, "sent_at_ms": 0}


def test_same_sku_lines_merge_into_one_batch() -> None:
    lines = [line("o1", "a", 1), line("o2", "b", 1), line("o3", "a", 2)]
    batches = logic.merge(lines, max_lines=10, now_ms=5)
    assert [(b["sku"], [x["order_id"] for x in b["lines"]]) for b in batches] == [
        ("a", ["o1", "o3"]), ("b", ["o2"]),
    ]


def test_a_batch_never_exceeds_the_maximum_lines() -> None:
    batches = logic.merge([line(f"o{i}", "a", 1) for i in range(7)], max_lines=3, now_ms=0)
    assert [len(b["lines"]) for b in batches] == [3, 3, 1]
    assert len({b["batch_id"] for b in batches}) == 3


def test_batch_ids_are_stable_for_the_same_lines() -> None:
    lines = [line("o1", "a", 1)]
    assert logic.merge(lines, 5, 0)[0]["batch_id"] == logic.merge(lines, 5, 99)[0]["batch_id"]


def test_allocation_is_first_come_first_served_and_conserves_stock() -> None:
    stock = {"sku": "a", "on_hand": 5, "reserved": 1, "price": 10, "known": True}
    lines = [line("o1", "a", 3), line("o2", "a", 3), line("o3", "a", 1)]
    new, allocs = logic.allocate(stock, lines, {})
    assert [a.reserved for a in allocs] == [3, 2, 0]
    assert new["on_hand"] == 0 and new["reserved"] == 6
    assert new["on_hand"] + new["reserved"] == stock["on_hand"] + stock["reserved"]


def test_a_redelivered_batch_reserves_nothing_more() -> None:
    stock = {"sku": "a", "on_hand": 5, "reserved": 0, "price": 10, "known": True}
    lines = [line("o1", "a", 2), line("o2", "a", 1)]
    after, allocs = logic.allocate(stock, lines, {})
    noted = logic.with_last_batch(after, allocs)
    # Crash after the stock write but before the line records: the note is enough.
    recorded = logic.recorded_allocations(noted, lines, lambda key: None)
    again, allocs2 = logic.allocate(noted, lines, recorded)
    assert (again["on_hand"], again["reserved"]) == (2, 3)
    assert [(a.reserved, a.new) for a in allocs2] == [(2, False), (1, False)]


def test_a_line_twice_in_one_batch_counts_once() -> None:
    stock = {"sku": "a", "on_hand": 5, "reserved": 0, "price": 10, "known": True}
    new, allocs = logic.allocate(stock, [line("o1", "a", 2), line("o1", "a", 2)], {})
    assert len(allocs) == 1 and new["reserved"] == 2
