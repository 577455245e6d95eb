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


def ev(kind: str, at: int, **fields: object) -> logic.OrderEvent:
    event = {"event_id": f"o1:{kind}", "type": kind, "order_id": "o1", "at_ms": at,
             "cause_id": "x", **fields}
    return event  # type: ignore[return-value]


def result(sku: str, qty: int, fulfilled: int, at: int) -> logic.OrderEvent:
    return ev(logic.LINE_RESULT, at, event_id=f"o1:LINE_RESULT:{sku}", sku=sku,
              line_id=f"o1/{sku}", quantity=qty, fulfilled=fulfilled)


def run(events: list[logic.OrderEvent]) -> tuple[dict, list[list[tuple[str, object]]]]:
    state = logic.new_state("o1")
    decisions = []
    for e in events:
        logic.apply_event(state, e)
        decisions.append(logic.decide(state, e, 100))
    return state, decisions


def test_the_saga_pays_dispatches_settles_and_ends() -> None:
    accepted = logic.accept(request([("a", 2), ("b", 1)]), PRICES.get, now_ms=10)
    state, steps = run([
        accepted, ev(logic.PAID, 11), ev(logic.DISPATCHED, 12),
        result("a", 2, 2, 13), result("b", 1, 0, 14),
    ])
    assert [k for k, _ in steps[0]] == ["pay"]
    assert steps[0][0][1]["amount"] == 450 and steps[0][0][1]["account"] == "c1"
    assert [k for k, _ in steps[1]] == ["dispatch", "emit"]
    assert steps[2] == [] and steps[3] == []
    settle = dict(steps[4])["settle"]
    assert (settle["credit"], settle["refund"]) == (200, 250)
    logic.apply_event(state, ev(logic.SETTLING, 15, amount=200, refunded=250))
    settled = ev(logic.SETTLED, 16, amount=200, refunded=250)
    logic.apply_event(state, settled)
    [(_, final)] = logic.decide(state, settled, 17)
    assert final["type"] == logic.PARTIALLY_FULFILLED
    assert (final["amount"], final["refunded"]) == (200, 250)


def test_the_saga_settles_once_the_ledger_reports_every_part_landed() -> None:
    accepted = logic.accept(request([("a", 2), ("b", 1)]), PRICES.get, now_ms=10)
    state, _ = run([accepted, ev(logic.PAID, 11), ev(logic.DISPATCHED, 12),
                    result("a", 2, 2, 13), result("b", 1, 0, 14)])
    settling = ev(logic.SETTLING, 15, amount=200, refunded=250)
    logic.apply_event(state, settling)
    assert [k for k, _ in logic.decide(state, settling, 15)] == []
    public = logic.public_view(state)
    redeemed = ev(logic.REDEEMED, 16, amount=200)
    assert logic.note_landed(state, redeemed) and not logic.note_landed(state, redeemed)
    assert logic.decide(state, redeemed, 16) == []  # the refund has not landed yet
    returned = ev(logic.RETURNED, 17, amount=250)
    assert logic.note_landed(state, returned)
    [(kind, settled)] = logic.decide(state, returned, 17)
    assert kind == "emit" and settled["type"] == logic.SETTLED
    assert (settled["event_id"], settled["amount"], settled["refunded"]) == ("o1:SETTLED", 200, 250)
    assert logic.public_view(state) == public  # what landed is the saga's memory only
    # An overdue settlement asks the ledger again only for what has not landed.
    fresh = logic.new_state("o1")
    for e in (accepted, ev(logic.PAID, 11), result("a", 2, 2, 13), result("b", 1, 0, 14),
              settling):
        logic.apply_event(fresh, e)
    logic.note_landed(fresh, redeemed)
    again = logic.reconcile_event("o1", 1, 30_000)
    logic.apply_event(fresh, again)
    settle = dict(logic.decide(fresh, again, 30_000))["settle"]
    assert (settle["credit"], settle["refund"], settle["account"]) == (0, 250, "c1")


def test_a_payment_rejection_rejects_the_order_and_dispatches_nothing() -> None:
    accepted = logic.accept(request([("a", 1)]), PRICES.get, now_ms=10)
    _, steps = run([accepted, ev(logic.PAYMENT_REJECTED, 11, reason="insufficient funds")])
    [(kind, final)] = steps[1]
    assert kind == "emit" and final["type"] == logic.REJECTED
    assert final["reason"] == "insufficient funds"


def test_cancelling_a_dispatched_order_releases_its_lines_then_refunds_all() -> None:
    accepted = logic.accept(request([("a", 2), ("b", 1)]), PRICES.get, now_ms=10)
    state, steps = run([
        accepted, ev(logic.PAID, 11), ev(logic.DISPATCHED, 12), result("a", 2, 2, 13),
        ev(logic.CANCEL_REQUESTED, 14), ev(logic.CANCELLING, 15),
        ev(logic.LINE_RELEASED, 16, event_id="o1:LINE_RELEASED:a", sku="a", line_id="o1/a",
           quantity=2),
        ev(logic.LINE_RELEASED, 17, event_id="o1:LINE_RELEASED:b", sku="b", line_id="o1/b",
           quantity=0),
    ])
    assert [p["type"] for k, p in steps[4] if k == "emit"] == [logic.CANCELLING]
    assert dict(steps[5])["release"] == [("o1/a", "a"), ("o1/b", "b")]
    assert steps[6] == []
    settle = dict(steps[7])["settle"]
    assert (settle["credit"], settle["refund"]) == (0, 450)
    assert [i["status"] for i in logic.public_view(state)["items"]] == ["RELEASED", "RELEASED"]


def test_a_cancel_after_every_line_reported_is_refused() -> None:
    accepted = logic.accept(request([("a", 1)]), PRICES.get, now_ms=10)
    state, steps = run([accepted, ev(logic.PAID, 11), ev(logic.DISPATCHED, 12),
                        result("a", 1, 1, 13), ev(logic.CANCEL_REQUESTED, 14)])
    assert not logic.cancellable(state)
    assert [p["type"] for k, p in steps[4] if k == "emit"] == [logic.CANCEL_REFUSED]


def test_the_projection_is_the_same_whatever_the_order_and_duplicates_of_events() -> None:
    accepted = logic.accept(request([("a", 2), ("b", 1)]), PRICES.get, now_ms=10)
    events = [accepted, ev(logic.PAID, 11), ev(logic.DISPATCHED, 12), result("a", 2, 2, 13),
              result("b", 1, 0, 14), ev(logic.SETTLED, 15, amount=200, refunded=250),
              ev("TERMINAL", 16, type=logic.PARTIALLY_FULFILLED)]
    reference = logic.new_state("o1")
    for e in events:
        logic.apply_event(reference, e)
    rng = random.Random(7)
    for perm in itertools.islice(itertools.permutations(events), 0, 5040, 97):
        state = logic.new_state("o1")
        for e in list(perm) + [rng.choice(events) for _ in range(3)]:
            logic.apply_event(state, e)
        assert logic.public_view(state) == logic.public_view(reference)
    view = logic.public_view(reference)
    assert view["status"] == logic.PARTIALLY_FULFILLED
    assert (view["charged"], view["refunded"]) == (200, 250)


def test_nothing_fulfilled_ends_rejected_out_of_stock() -> None:
    accepted = logic.accept(request([("a", 1)]), PRICES.get, now_ms=10)
    state, _ = run([accepted, ev(logic.PAID, 11), ev(logic.DISPATCHED, 12), result("a", 1, 0, 13),
                    ev(logic.SETTLED, 14, amount=0, refunded=100)])
    [(_, final)] = logic.decide(state, state["events"][-1], 15)  # type: ignore[arg-type]
    assert final["type"] == logic.REJECTED and final["reason"] == "out of stock"


def test_only_the_steps_a_saga_waits_for_tell_how_long_orders_wait() -> None:
    accepted = logic.accept(request([("a", 2)]), PRICES.get, now_ms=10)
    state = logic.new_state("o1")
    assert logic.waited_ms(state, accepted, 1_500) == 500  # requested at 1,000
    logic.apply_event(state, accepted)
    assert logic.waited_ms(state, accepted, 60) is None  # the same decision again
    assert logic.waited_ms(state, ev(logic.PAID, 900), 1_010) == 1_000
    assert logic.waited_ms(state, ev(logic.CANCEL_REQUESTED, 900), 1_010) is None
    logic.apply_event(state, logic.reconcile_event("o1", 1, 500))
    assert logic.waited_ms(state, ev(logic.PAID, 900), 1_010) is None  # redone: the fault's wait
