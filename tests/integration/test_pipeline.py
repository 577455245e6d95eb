"""The order pipeline end to end, against a real broker, through the public contracts only."""

from __future__ import annotations

import shutil
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import orjson
import pytest
from confluent_kafka import Producer

from app.codecs import avro_encode
from app.pack import decode_all
from app.producer import producer_config
from tests.support import Worker, consume_all, decode_events, metric, wait_for

pytestmark = pytest.mark.integration


def produce(worker: Worker, records: list[tuple[bytes, bytes, list[tuple[str, bytes]]]]) -> None:
    """Append raw messages to orders.requests as any other producer would."""
    producer = Producer(producer_config(worker.bootstrap, **{"client.id": "test-producer"}))
    topic = worker.topic("orders.requests")
    for key, value, headers in records:
        producer.produce(topic, key=key, value=value, headers=headers)
    assert producer.flush(30) == 0


def json_request(sku: str, qty: int = 1, order_id: str | None = None) -> tuple[bytes, bytes, list]:
    oid = order_id or str(uuid.uuid4())
    body = {"order_id": oid, "customer_id": "kafka-client", "items": [{"sku": sku, "quantity": qty}]}
    return oid.encode(), orjson.dumps(body), [("content-type", b"application/json")]


def stock_of(worker: Worker, sku: str) -> dict[str, Any]:
    reply = worker.get(f"/inventory/{sku}")
    assert reply.status == 200, reply
    return dict(reply.body)


def test_same_sku_orders_in_the_merge_window_share_one_batch(
    make_worker: Callable[..., Worker],
) -> None:
    # The batch closes when its third line arrives (max lines = 3); the long wait only makes
    # sure no timer tick splits the three lines, which arrive within a moment of each other.
    worker = make_worker(POSTROOM_MERGE_MAX_LINES="3", POSTROOM_MERGE_MAX_WAIT_MS="120000")
    worker.stock("book-1", on_hand=10, price=1250)
    for i in range(3):
        worker.fund(f"c{i}", 10_000)
    with ThreadPoolExecutor(3) as pool:
        orders = list(pool.map(lambda i: worker.order([("book-1", 1)], customer=f"c{i}"), range(3)))

    for order_id in orders:
        view = worker.wait_terminal(order_id)
        assert view["status"] == "COMPLETED"
        assert view["items"] == [
            {"sku": "book-1", "quantity": 1, "fulfilled": 1, "status": "FULFILLED"}
        ]
        assert view["amount"] == 1250

    batches = [
        record
        for kind, record in (
            decoded
            for m in consume_all(worker.bootstrap, worker.topic("postroom.batches"), timeout=5)
            for decoded in decode_all(("postroom.FulfillmentBatch", "postroom.StockCommand"),
                                      m.headers(), m.value())
        )
        if kind == "postroom.FulfillmentBatch"
    ]
    assert len(batches) == 1
    assert sorted(line["order_id"] for line in batches[0]["lines"]) == sorted(orders)
    stock = stock_of(worker, "book-1")
    assert (stock["on_hand"], stock["reserved"]) == (7, 3)


def test_three_sku_order_with_stock_for_two_is_partially_fulfilled(worker: Worker) -> None:
    worker.stock("pen-1", on_hand=2, price=100)
    worker.stock("ink-1", on_hand=1, price=300)
    worker.stock("pad-1", on_hand=0, price=500)
    worker.fund("c1", 10_000)

    order_id = worker.order([("pen-1", 2), ("ink-1", 1), ("pad-1", 4)])
    view = worker.wait_terminal(order_id)

    assert view["status"] == "PARTIALLY_FULFILLED"
    items = {i["sku"]: i for i in view["items"]}
    assert items["pen-1"] == {"sku": "pen-1", "quantity": 2, "fulfilled": 2, "status": "FULFILLED"}
    assert items["ink-1"] == {"sku": "ink-1", "quantity": 1, "fulfilled": 1, "status": "FULFILLED"}
    assert items["pad-1"] == {"sku": "pad-1", "quantity": 4, "fulfilled": 0, "status": "UNFULFILLED"}
    assert view["amount"] == 2 * 100 + 300 + 4 * 500
    assert view["fulfilled_amount"] == 2 * 100 + 300
    for sku, stocked in (("pen-1", 2), ("ink-1", 1), ("pad-1", 0)):
        stock = stock_of(worker, sku)
        assert stock["on_hand"] == 0
        assert stock["on_hand"] + stock["reserved"] == stocked
    # The events tell the same story, each carrying its cause.
    types = [e["type"] for e in view["events"]]
    assert types.count("LINE_RESULT") == 3
    assert {"ACCEPTED", "PAID", "DISPATCHED", "SETTLED", "PARTIALLY_FULFILLED"} <= set(types)
    # Charged only what was fulfilled; the rest went back to the customer.
    assert (view["charged"], view["refunded"]) == (500, 2000)
    assert worker.balance("c1") == 10_000 - 500
    assert all(e["cause_id"] for e in view["events"])


def test_unknown_sku_is_rejected(worker: Worker) -> None:
    worker.stock("known-1", on_hand=5, price=10)
    view = worker.wait_terminal(worker.order([("known-1", 1), ("ghost-1", 1)]))
    assert view["status"] == "REJECTED"
    assert "ghost-1" in view["events"][0]["reason"]
    assert stock_of(worker, "known-1")["on_hand"] == 5


def test_order_produced_straight_to_kafka_is_processed_like_http(worker: Worker) -> None:
    worker.stock("cup-1", on_hand=3, price=700)
    worker.fund("kafka-client", 10_000)
    json_id = str(uuid.uuid4())
    avro_id = str(uuid.uuid4())
    avro_body = {
        "order_id": avro_id, "customer_id": "kafka-client", "account_id": None,
        "items": [{"sku": "cup-1", "quantity": 1}],
    }
    produce(worker, [
        json_request("cup-1", 2, json_id),
        (avro_id.encode(), avro_encode(("postroom.OrderRequest",), avro_body),
         [("content-type", b"application/avro")]),
    ])
    for order_id, qty in ((json_id, 2), (avro_id, 1)):
        view = worker.wait_terminal(order_id)
        assert view["status"] == "COMPLETED"
        assert view["customer_id"] == "kafka-client"
        assert view["items"][0]["fulfilled"] == qty
    assert stock_of(worker, "cup-1") == {"sku": "cup-1", "on_hand": 0, "reserved": 3, "price": 700}


def test_same_idempotency_key_twice_yields_one_order(worker: Worker) -> None:
    worker.stock("lamp-1", on_hand=10, price=4000)
    worker.fund("c9", 100_000)
    body = {"customer_id": "c9", "items": [{"sku": "lamp-1", "quantity": 1}]}
    first = worker.post("/orders", body, headers={"Idempotency-Key": "abc-1"})
    second = worker.post("/orders", body, headers={"Idempotency-Key": "abc-1"})
    assert first.status == second.status == 202
    assert first.body["order_id"] == second.body["order_id"]
    assert first.headers["Location"] == f"/orders/{first.body['order_id']}"
    worker.wait_terminal(first.body["order_id"])
    third = worker.post("/orders", body, headers={"Idempotency-Key": "abc-1"})
    assert third.status == 202 and third.body["order_id"] == first.body["order_id"]

    other = worker.post(
        "/orders", {**body, "items": [{"sku": "lamp-1", "quantity": 2}]},
        headers={"Idempotency-Key": "abc-1"},
    )
    assert other.status == 422 and other.body["error"] == "idempotency_conflict"
    stock = stock_of(worker, "lamp-1")
    assert (stock["on_hand"], stock["reserved"]) == (9, 1)


def test_bad_requests_get_clear_errors_and_never_reach_kafka(worker: Worker) -> None:
    cases: list[tuple[Any, int, str]] = [
        ({"items": [{"sku": "a", "quantity": 1}]}, 400, "customer_id"),
        ({"customer_id": "c", "items": []}, 400, "items"),
        ({"customer_id": "c", "items": [{"sku": "a", "quantity": 0}]}, 400, "items[0].quantity"),
        ({"customer_id": "c", "items": [{"sku": "a", "quantity": "2"}]}, 400, "items[0].quantity"),
        ({"customer_id": "c", "items": [{"sku": "a b", "quantity": 1}]}, 400, "items[0].sku"),
        ({"customer_id": "c", "colour": "red", "items": [{"sku": "a", "quantity": 1}]}, 400,
         "colour"),
    ]
    for body, status, field in cases:
        reply = worker.post("/orders", body)
        assert reply.status == status, (body, reply)
        assert reply.body["error"] == "invalid_request"
        assert field in reply.body["fields"], reply.body
    malformed = worker.post("/orders", raw=b'{"customer_id": ')
    assert malformed.status == 400 and malformed.body["fields"] == {"body": "malformed JSON"}
    too_big = worker.post("/orders", raw=b"{" + b" " * (70 * 1024) + b"}")
    assert too_big.status == 413 and too_big.body["error"] == "body_too_large"
    assert worker.get(f"/orders/{uuid.uuid4()}").status == 404
    assert worker.get("/inventory/nothing-here").status == 404
    bad_stock = worker.put("/inventory/x-1", {"on_hand": -1, "price": 5})
    assert bad_stock.status == 400 and "on_hand" in bad_stock.body["fields"]
    assert consume_all(worker.bootstrap, worker.topic("orders.requests"), timeout=3) == []


def test_poison_messages_are_parked_and_orders_around_them_complete(worker: Worker) -> None:
    worker.stock("soap-1", on_hand=10, price=150)
    worker.fund("kafka-client", 10_000)
    before, after = json_request("soap-1"), json_request("soap-1")
    poison = [
        (b"p1", b"\xff\xfe not json at all", [("content-type", b"application/json")]),
        (b"p2", orjson.dumps({"order_id": "p2", "customer_id": "c"}), []),  # no items
        (b"p3", orjson.dumps({"order_id": "p3", "customer_id": 7, "items": "many"}), []),
        (b"p4", b"\x02\x04garbage", [("content-type", b"application/avro")]),
    ]
    produce(worker, [before, *poison, after])

    for key, _, _ in (before, after):
        assert worker.wait_terminal(key.decode())["status"] == "COMPLETED"
    parked = consume_all(
        worker.bootstrap, worker.topic("postroom.deadletter"), timeout=20,
        until=lambda got: len(got) >= len(poison),
    )
    assert sorted(m.key() for m in parked) == [b"p1", b"p2", b"p3", b"p4"]
    for message in parked:
        headers = dict(message.headers())
        assert headers["postroom-origin-topic"] == worker.topic("orders.requests").encode()
        assert int(headers["postroom-origin-offset"]) >= 0
        assert headers["postroom-error"] in (b"undecodable", b"invalid_request")
        assert headers["postroom-error-message"]
    original = {m.key(): m.value() for m in parked}
    assert original[b"p1"] == poison[0][1]  # parked as it arrived
    metrics = worker.get("/metrics").body
    assert "postroom_deadlettered_total" in metrics
    # RocksDB's own memory counters for the tables, inside the configured budget
    table_memory = {line.split('"')[1]: float(line.rsplit(" ", 1)[1])
                    for line in metrics.splitlines()
                    if line.startswith("postroom_table_memory_bytes{")}
    assert table_memory["budget"] == 64 * 1024 * 1024
    assert table_memory["memtables"] > 0 and table_memory["files"] >= 0
    assert 0 < table_memory["cache"] <= table_memory["budget"]
    assert stock_of(worker, "soap-1")["reserved"] == 2


def test_restart_recovers_every_order_and_stock_from_changelogs(
    make_worker: Callable[..., Worker],
) -> None:
    worker = make_worker()
    worker.stock("bolt-1", on_hand=50, price=20)
    worker.stock("nut-1", on_hand=5, price=5)
    for i in range(8):
        worker.fund(f"r{i}", 1_000)
    orders = [worker.order([("bolt-1", 2), ("nut-1", 1)], customer=f"r{i}") for i in range(8)]
    views = {oid: worker.wait_terminal(oid) for oid in orders}
    stock_before = {sku: stock_of(worker, sku) for sku in ("bolt-1", "nut-1")}

    worker.stop()
    # Drop the local RocksDB state: everything must come back from the changelog topics.
    shutil.rmtree(worker.workdir / "worker-data")
    worker.start()

    for oid, view in views.items():
        again = worker.get(f"/orders/{oid}")
        assert again.status == 200
        assert again.body["status"] == view["status"]
        assert again.body["items"] == view["items"]
    for sku, stock in stock_before.items():
        assert stock_of(worker, sku) == stock
    assert stock_before["bolt-1"]["on_hand"] + stock_before["bolt-1"]["reserved"] == 50
    assert stock_before["nut-1"] == {"sku": "nut-1", "on_hand": 0, "reserved": 5, "price": 5}
    statuses = sorted(v["status"] for v in views.values())
    assert statuses == ["COMPLETED"] * 5 + ["PARTIALLY_FULFILLED"] * 3

    # And it keeps working after the restart.
    worker.fund("late", 20)
    late = worker.order([("bolt-1", 1)], customer="late")
    assert worker.wait_terminal(late)["status"] == "COMPLETED"


def test_events_topic_carries_every_state_change_with_ids_and_causes(worker: Worker) -> None:
    worker.stock("fig-1", on_hand=1, price=99)
    worker.fund("c1", 99)
    order_id = worker.order([("fig-1", 1)])
    worker.wait_terminal(order_id)
    events = [
        e for e in decode_events(
            consume_all(worker.bootstrap, worker.topic("orders.events"), timeout=5)
        ) if e["order_id"] == order_id
    ]
    assert [e["type"] for e in events] == [
        "ACCEPTED", "PAID", "DISPATCHED", "LINE_RESULT", "SETTLING", "SETTLED", "COMPLETED"
    ]
    assert len({e["event_id"] for e in events}) == len(events)
    assert all(e["cause_id"] and e["at_ms"] > 0 for e in events)
    wait_for(lambda: "postroom_orders_terminal_total" in worker.get("/metrics").body)


def test_metrics_count_each_agents_units_of_work(worker: Worker) -> None:
    """Every agent the order crossed counts its units, their records, what they produced
    and how long they took to become durable."""
    worker.stock("gauge-1", on_hand=5, price=10)
    worker.fund("c-units", 100)
    before = worker.get("/metrics").body
    order_id = worker.order([("gauge-1", 2)], customer="c-units")
    assert worker.wait_terminal(order_id)["status"] == "COMPLETED"

    def grew(name: str, agent: str, at_least: float, **labels: str) -> bool:
        now = metric(worker.get("/metrics").body, name, agent=agent, **labels) or 0.0
        return now - (metric(before, name, agent=agent, **labels) or 0.0) >= at_least

    # The saga handled the request, PAID, the line's result and the credit's REDEEMED, and
    # published seven events (each its own message on the public topic).
    wait_for(lambda: grew("postroom_unit_records_sum", "run_order_saga", 4))
    assert grew("postroom_unit_produced_records_total", "run_order_saga", 7, kind="send")
    assert grew("postroom_unit_produced_records_total", "run_order_saga", 1, kind="changelog")
    for agent in ("run_order_saga", "apply_ledger_commands", "dispatch_lines",
                  "fulfill_batches"):
        assert grew("postroom_units_total", agent, 1), agent
        assert grew("postroom_unit_commit_seconds_count", agent, 1), agent
