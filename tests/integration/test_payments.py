"""Money that is never lost or doubled, against a real broker, through the public contracts."""

from __future__ import annotations

import random
import time
import uuid
from collections.abc import Callable
from typing import Any

import orjson
import pytest
from confluent_kafka import Producer

from app.orders import logic
from app.producer import producer_config
from tests.support import Worker, consume_all, decode_events, wait_for

pytestmark = pytest.mark.integration

TRANSFER_DONE = {"COMPLETED", "REJECTED", "COMPENSATED"}


def transfer(worker: Worker, payer: str, payee: str, amount: int) -> str:
    reply = worker.post("/transfers", {"from_account": payer, "to_account": payee, "amount": amount})
    assert reply.status == 202, reply
    return str(reply.body["transfer_id"])


def wait_transfer(worker: Worker, transfer_id: str, timeout: float = 60) -> dict[str, Any]:
    def check() -> Any:
        r = worker.get(f"/transfers/{transfer_id}")
        return r.body if r.status == 200 and r.body["status"] in TRANSFER_DONE else None

    return dict(wait_for(check, timeout=timeout, what=f"transfer {transfer_id}"))


def ledger(worker: Worker) -> dict[str, Any]:
    reply = worker.get("/ledger")
    assert reply.status == 200, reply
    return dict(reply.body)


def test_a_transfer_completes_and_both_balances_are_exact(worker: Worker) -> None:
    worker.fund("alice", 1_000)
    worker.fund("bob", 50)
    view = wait_transfer(worker, transfer(worker, "alice", "bob", 300))
    assert view["status"] == "COMPLETED" and view["held"] == 0
    assert [e["type"] for e in view["events"]] == ["REQUESTED", "ISSUED", "REDEEMED"]
    assert (worker.balance("alice"), worker.balance("bob")) == (700, 350)


def test_a_transfer_without_enough_money_is_rejected_and_nothing_moves(worker: Worker) -> None:
    worker.fund("carol", 100)
    worker.fund("dave", 10)
    view = wait_transfer(worker, transfer(worker, "carol", "dave", 101))
    assert view["status"] == "REJECTED"
    assert (worker.balance("carol"), worker.balance("dave")) == (100, 10)
    bad = worker.post("/transfers", {"from_account": "carol", "to_account": "carol", "amount": 1})
    assert bad.status == 400 and "to_account" in bad.body["fields"]
    bad = worker.post("/transfers", {"from_account": "carol", "to_account": "dave", "amount": 0})
    assert bad.status == 400 and "amount" in bad.body["fields"]


def test_a_transfer_to_a_closed_account_is_compensated(worker: Worker) -> None:
    worker.fund("erin", 500)
    worker.fund("frank", 1)
    assert worker.post("/accounts/frank/status", {"status": "CLOSED"}).status == 202
    wait_for(lambda: worker.get("/accounts/frank").body["status"] == "CLOSED")
    view = wait_transfer(worker, transfer(worker, "erin", "frank", 200))
    assert view["status"] == "COMPENSATED" and view["held"] == 0
    assert [e["type"] for e in view["events"]] == [
        "REQUESTED", "ISSUED", "CREDIT_FAILED", "RETURNED"
    ]
    assert (worker.balance("erin"), worker.balance("frank")) == (500, 1)


def test_an_order_with_partial_stock_charges_only_what_was_fulfilled(worker: Worker) -> None:
    worker.stock("tea-1", on_hand=3, price=200)
    worker.fund("gina", 2_000)
    view = worker.wait_terminal(worker.order([("tea-1", 5)], customer="gina"))
    assert view["status"] == "PARTIALLY_FULFILLED"
    assert (view["amount"], view["charged"], view["refunded"]) == (1_000, 600, 400)
    assert worker.balance("gina") == 2_000 - 600
    assert worker.balance("merchant") == 600
    voucher = worker.get(f"/vouchers/order:{view['order_id']}").body
    assert (voucher["status"], voucher["held"], voucher["redeemed"], voucher["returned"]) == (
        "COMPLETED", 0, 600, 400
    )


def test_an_order_without_enough_money_is_rejected_and_reserves_nothing(worker: Worker) -> None:
    worker.stock("gold-1", on_hand=5, price=10_000)
    worker.fund("hal", 9_999)
    view = worker.wait_terminal(worker.order([("gold-1", 1)], customer="hal"))
    assert view["status"] == "REJECTED"
    assert "insufficient funds" in [e.get("reason") for e in view["events"]][-1]
    assert "DISPATCHED" not in [e["type"] for e in view["events"]]
    assert worker.get("/inventory/gold-1").body["reserved"] == 0
    assert worker.balance("hal") == 9_999


def test_cancelling_before_and_after_reservation_restores_stock_and_money(
    make_worker: Callable[..., Worker],
) -> None:
    # Batches of "slow-1" are held back (as if lost), so its line never reserves.
    worker = make_worker(POSTROOM_FAULT_HOLD_SKUS="slow-1")
    worker.stock("slow-1", on_hand=10, price=100)
    worker.stock("fast-1", on_hand=10, price=50)
    worker.fund("ivy", 1_000)

    def dispatched(order_id: str) -> bool:
        return worker.get(f"/orders/{order_id}").body["status"] == "DISPATCHED"

    # Before any reservation.
    early = worker.order([("slow-1", 2)], customer="ivy")
    wait_for(lambda: dispatched(early))
    assert worker.delete(f"/orders/{early}").status == 202
    view = worker.wait_terminal(early)
    assert view["status"] == "CANCELLED" and view["refunded"] == 200
    assert worker.balance("ivy") == 1_000

    # After one of its lines reserved stock.
    late = worker.order([("fast-1", 4), ("slow-1", 1)], customer="ivy")
    wait_for(lambda: worker.get("/inventory/fast-1").body["reserved"] == 4, what="reservation")
    assert dispatched(late)
    assert worker.delete(f"/orders/{late}").status == 202
    view = worker.wait_terminal(late)
    assert view["status"] == "CANCELLED"
    assert (view["charged"], view["refunded"]) == (0, 300)
    assert {i["status"] for i in view["items"]} == {"RELEASED"}
    assert worker.get("/inventory/fast-1").body == {"sku": "fast-1", "on_hand": 10, "reserved": 0,
                                                    "price": 50}
    assert worker.get("/inventory/slow-1").body["on_hand"] == 10
    assert worker.balance("ivy") == 1_000
    assert worker.balance("merchant") == 0

    # Once terminal, too late.
    assert worker.delete(f"/orders/{late}").status == 409
    done = worker.order([("fast-1", 1)], customer="ivy")
    assert worker.wait_terminal(done)["status"] == "COMPLETED"
    conflict = worker.delete(f"/orders/{done}")
    assert conflict.status == 409 and conflict.body["error"] == "conflict"
    assert worker.delete(f"/orders/{uuid.uuid4()}").status == 404


def test_randomized_money_and_stock_are_conserved_under_duplicates(
    make_worker: Callable[..., Worker], report: Callable[[str], None],
) -> None:
    rng = random.Random(20261122)
    worker = make_worker(POSTROOM_MERGE_MAX_WAIT_MS="50")
    accounts = [f"acct-{i}" for i in range(30)]
    skus = {f"sku-{i}": (rng.randint(0, 40), rng.randint(1, 500)) for i in range(12)}
    for sku, (on_hand, price) in skus.items():
        worker.stock(sku, on_hand=on_hand, price=price)
    deposits = 0
    for account in accounts:
        amount = rng.randint(0, 5_000)
        if amount:
            assert worker.post(f"/accounts/{account}/deposits", {"amount": amount}).status == 202
            deposits += amount
    wait_for(lambda: ledger(worker)["deposited"] == deposits, what="deposits")

    producer = Producer(producer_config(worker.bootstrap, **{"client.id": "test-dup"}))
    requests_topic = worker.topic("orders.requests")
    orders: list[str] = []
    transfers: list[str] = []
    for _ in range(300):
        if rng.random() < 0.5:
            payer, payee = rng.sample(accounts, 2)
            transfers.append(transfer(worker, payer, payee, rng.randint(1, 2_000)))
        else:
            order_id = str(uuid.uuid4())
            body = {
                "order_id": order_id,
                "customer_id": rng.choice(accounts),
                "items": [{"sku": s, "quantity": rng.randint(1, 4)}
                          for s in rng.sample(sorted(skus), rng.randint(1, 3))],
            }
            value = orjson.dumps(body)
            # The same request delivered twice (a producer retry, a replayed log).
            copies = 2 if rng.random() < 0.2 else 1
            for _ in range(copies):
                producer.produce(requests_topic, key=order_id.encode(), value=value)
            orders.append(order_id)
    assert producer.flush(30) == 0

    # Deliver some vouchers' messages (packs of steps) a second time, exactly as they were.
    time.sleep(2)
    vouchers = consume_all(worker.bootstrap, worker.topic("postroom.vouchers"), timeout=5)
    replayed = rng.sample(vouchers, min(60, len(vouchers)))
    for message in replayed:
        producer.produce(message.topic(), key=message.key(), value=message.value(),
                         headers=message.headers())
    assert producer.flush(30) == 0

    statuses: dict[str, int] = {}
    for order_id in orders:
        status = worker.wait_terminal(order_id, timeout=120)["status"]
        statuses[status] = statuses.get(status, 0) + 1
    transfer_statuses: dict[str, int] = {}
    for transfer_id in transfers:
        status = wait_transfer(worker, transfer_id, timeout=120)["status"]
        transfer_statuses[status] = transfer_statuses.get(status, 0) + 1

    def quiet() -> dict[str, Any] | None:
        book = ledger(worker)
        return book if book["open_vouchers"] == 0 else None

    book = wait_for(quiet, timeout=60, what="every voucher closed")
    stock_ok = 0
    for sku, (on_hand, _) in skus.items():
        s = worker.get(f"/inventory/{sku}").body
        assert s["on_hand"] + s["reserved"] == on_hand, (sku, s)
        assert s["on_hand"] >= 0
        stock_ok += 1
    report(
        f"[randomized] orders={len(orders)} {statuses} transfers={len(transfers)} "
        f"{transfer_statuses} duplicates replayed={len(replayed)} "
        f"deposited={book['deposited']} balances={book['balances']} "
        f"held_in_vouchers={book['held_in_vouchers']} negative={book['negative_balances']} "
        f"skus conserved={stock_ok}/{len(skus)}"
    )
    # Invariant 5: replaying orders.events from the start rebuilds the same order projection.
    rebuilt: dict[str, dict[str, Any]] = {}
    for event in decode_events(consume_all(worker.bootstrap, worker.topic("orders.events"),
                                           timeout=10)):
        state = rebuilt.setdefault(event["order_id"], logic.new_state(event["order_id"]))
        logic.apply_event(state, {k: v for k, v in event.items() if v is not None})  # type: ignore[arg-type]
    for order_id in orders:
        served = worker.get(f"/orders/{order_id}").body
        assert logic.public_view(rebuilt[order_id]) == served, order_id
    assert book["deposited"] == deposits
    assert book["balances"] + book["held_in_vouchers"] == deposits
    assert book["negative_balances"] == 0
    assert sum(statuses.values()) == len(orders)
    assert sum(transfer_statuses.values()) == len(transfers)
