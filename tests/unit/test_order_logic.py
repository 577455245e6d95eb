"""Order logic: validation, acceptance and the order projection, no broker."""

from __future__ import annotations

import itertools
import random

import pytest

from app.errors import InvalidEvent, InvalidRequest
from app.orders import logic

PRICES = {"a": 100, "b": 250}


def request(items: list[tuple[str, int]], order_id: str = "o1") -> logic.OrderRequest:
    return {
        "order_id": order_id,
        "customer_id": "c1",
        "account_id": None,
        "items": [{"sku": s, "quantity": q} for s, q in items],
        "received_at_ms": 1_000,
    }


def test_a_valid_body_passes_and_a_bad_one_names_the_field() -> None:
    ok = logic.validate_order(
        {"customer_id": "c", "items": [{"sku": "a", "quantity": 2}]}, max_items=10
    )
    assert ok["items"] == [{"sku": "a", "quantity": 2}]
    with pytest.raises(InvalidRequest) as err:
        logic.validate_order({"customer_id": "c", "items": [{"sku": "a", "quantity": True}]},
                             max_items=10)
    assert "items[0].quantity" in err.value.fields
    with pytest.raises(InvalidRequest) as err:
        logic.validate_order({"customer_id": "c", "items": [{"sku": "a"}] * 11}, max_items=10)
    assert err.value.fields == {"items": "at most 10 items"}


def test_a_request_message_without_an_order_id_is_an_invalid_event() -> None:
    with pytest.raises(InvalidEvent):
        logic.validate_request_message(
            {"customer_id": "c", "items": [{"sku": "a", "quantity": 1}]}, max_items=10
        )


def test_an_idempotency_key_always_gives_the_same_order_id() -> None:
    assert logic.new_order_id("c", "k") == logic.new_order_id("c", "k")
    assert logic.new_order_id("c", "k") != logic.new_order_id("d", "k")
    assert logic.new_order_id("c", None) != logic.new_order_id("c", None)


def test_accept_merges_repeated_skus_into_one_priced_line_each() -> None:
    event = logic.accept(request([("a", 1), ("b", 2), ("a", 3)]), PRICES.get, now_ms=5)
    assert event["type"] == logic.ACCEPTED
    assert [(line["sku"], line["quantity"]) for line in event["lines"] or []] == [("a", 4), ("b", 2)]
    assert event["amount"] == 4 * 100 + 2 * 250
    assert event["cause_id"] == "o1"


def test_an_unknown_sku_rejects_the_order() -> None:
    event = logic.accept(request([("a", 1), ("zz", 1)]), PRICES.get, now_ms=5)
    assert event["type"] == logic.REJECTED
    assert "zz" in (event["reason"] or "")


def _events_of_a_partial_order() -> list[logic.OrderEvent]:
    accepted = logic.accept(request([("a", 2), ("b", 1)]), PRICES.get, now_ms=10)
    state = logic.new_state("o1")
    logic.apply_event(state, accepted)
    dispatched = logic.decide(state, 11)[1][1]
    results: list[logic.OrderEvent] = [
        {"event_id": "o1:LINE_RESULT:a", "type": logic.LINE_RESULT, "order_id": "o1", "at_ms": 20,
         "cause_id": "b-1", "sku": "a", "line_id": "o1/a", "quantity": 2, "fulfilled": 2},
        {"event_id": "o1:LINE_RESULT:b", "type": logic.LINE_RESULT, "order_id": "o1", "at_ms": 21,
         "cause_id": "b-2", "sku": "b", "line_id": "o1/b", "quantity": 1, "fulfilled": 0},
    ]
    return [accepted, dispatched, *results]


def test_the_saga_dispatches_then_completes_once_every_line_reported() -> None:
    accepted, dispatched, ra, rb = _events_of_a_partial_order()
    state = logic.new_state("o1")
    logic.apply_event(state, accepted)
    kinds = [k for k, _ in logic.decide(state, 11)]
    assert kinds == ["dispatch", "emit"]
    for event in (dispatched, ra):
        logic.apply_event(state, event)
    assert logic.decide(state, 30) == []
    logic.apply_event(state, rb)
    [(_, terminal)] = logic.decide(state, 31)
    assert terminal["type"] == logic.PARTIALLY_FULFILLED
    assert terminal["amount"] == 200


def test_the_projection_is_the_same_whatever_the_order_and_duplicates_of_events() -> None:
    events = _events_of_a_partial_order()
    reference = logic.new_state("o1")
    for e in events:
        logic.apply_event(reference, e)
    rng = random.Random(7)
    for perm in itertools.islice(itertools.permutations(events), 24):
        state = logic.new_state("o1")
        noisy = list(perm) + [rng.choice(events) for _ in range(3)]
        for e in noisy:
            logic.apply_event(state, e)
        assert logic.public_view(state) == logic.public_view(reference)
    assert logic.public_view(reference)["status"] == logic.DISPATCHED


def test_nothing_fulfilled_ends_rejected_out_of_stock() -> None:
    state = logic.new_state("o1")
    logic.apply_event(state, logic.accept(request([("a", 1)]), PRICES.get, now_ms=1))
    logic.apply_event(state, {"event_id": "o1:LINE_RESULT:a", "type": logic.LINE_RESULT,
                              "order_id": "o1", "at_ms": 2, "cause_id": "b", "sku": "a",
                              "line_id": "o1/a", "quantity": 1, "fulfilled": 0})
    terminal = [p for k, p in logic.decide(state, 3) if k == "emit"][-1]
    assert terminal["type"] == logic.REJECTED and terminal["reason"] == "out of stock"
