"""Nothing left behind: reconciliation under injected faults and a killed worker."""

from __future__ import annotations

import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable
from typing import Any

import orjson
import pytest
from confluent_kafka import Producer

from app.producer import producer_config
from tests.support import Worker, samples, wait_for

pytestmark = pytest.mark.integration

FAST_RECONCILE = {
    "POSTROOM_RECONCILE_INTERVAL_S": "0.5",
    "POSTROOM_RECONCILE_DEADLINE_S": "2",
    "POSTROOM_RECONCILE_BACKOFF": "1.2",
    "POSTROOM_MERGE_MAX_WAIT_MS": "50",
}


def reserved_vs_fulfilled(worker: Worker, views: list[dict[str, Any]], skus: dict[str, int]
                          ) -> dict[str, tuple[int, int, int]]:
    """Per sku: (reserved by the fulfiller, units the orders say they got, on hand + reserved)."""
    fulfilled = dict.fromkeys(skus, 0)
    for view in views:
        if view["status"] in ("COMPLETED", "PARTIALLY_FULFILLED"):
            for item in view["items"]:
                fulfilled[item["sku"]] += item["fulfilled"]
    out = {}
    for sku in skus:
        s = worker.get(f"/inventory/{sku}").body
        out[sku] = (s["reserved"], fulfilled[sku], s["on_hand"] + s["reserved"])
    return out


def test_dropped_batches_are_redispatched_until_every_order_ends(
    make_worker: Callable[..., Worker], report: Callable[[str], None],
) -> None:
    # One line per batch, so the 20% drop rate applies to well over a hundred batches (with
    # merging, a slow machine can put the run's lines into a dozen batches that all get through).
    worker = make_worker(POSTROOM_FAULT_DROP_BATCH_RATIO="0.2", POSTROOM_MERGE_MAX_LINES="1",
                         POSTROOM_RECONCILE_MAX_ATTEMPTS="20", **FAST_RECONCILE)
    skus = {"drop-a": 150, "drop-b": 90, "drop-c": 30}
    for sku, on_hand in skus.items():
        worker.stock(sku, on_hand=on_hand, price=10)
    worker.fund("dropper", 1_000_000)
    orders = [
        worker.order([(sku, 1 + i % 3) for sku in list(skus)[: 1 + i % 3]], customer="dropper")
        for i in range(60)
    ]
    views = [worker.wait_terminal(o, timeout=120) for o in orders]
    books = worker.get("/reconciliation").body
    dropped = worker.get("/metrics").body
    drops = sum(float(line.split()[-1]) for line in dropped.splitlines()
                if line.startswith("postroom_faults_injected_total"))
    report(f"[drop 20%] orders={len(orders)} batches dropped={drops:.0f} "
          f"re-dispatched={books['redispatched']} statuses="
          f"{sorted({v['status'] for v in views})}")
    assert drops > 0 and books["redispatched"]["order"] > 0
    assert all(v["status"] in ("COMPLETED", "PARTIALLY_FULFILLED") for v in views)
    for sku, (reserved, fulfilled, total) in reserved_vs_fulfilled(worker, views, skus).items():
        assert reserved == fulfilled, f"{sku}: reserved {reserved} but orders got {fulfilled}"
        assert total == skus[sku]
    wait_for(lambda: worker.get("/reconciliation").body["outstanding"] == 0, timeout=30)


def test_orders_fail_and_are_refunded_when_fulfillment_never_answers(
    make_worker: Callable[..., Worker],
) -> None:
    worker = make_worker(POSTROOM_FAULT_FULFILL_DISABLED="true",
                         POSTROOM_RECONCILE_MAX_ATTEMPTS="2", **FAST_RECONCILE)
    worker.stock("never-1", on_hand=5, price=300)
    worker.fund("jack", 1_000)
    order_id = worker.order([("never-1", 2)], customer="jack")
    view = worker.wait_terminal(order_id, timeout=90)
    assert view["status"] == "FAILED"
    types = [e["type"] for e in view["events"]]
    # Two re-dispatches, then the third overdue round gives up (a slow machine may squeeze in
    # one more round before the compensation lands).
    assert types.count("RECONCILE") >= 3 and "FAILING" in types
    failing = next(e for e in view["events"] if e["type"] == "FAILING")
    assert "gave up after 2 attempts" in failing["reason"]
    assert (view["charged"], view["refunded"]) == (0, 600)
    assert worker.balance("jack") == 1_000
    assert worker.get("/inventory/never-1").body["on_hand"] == 5
    books = wait_for(lambda: (b := worker.get("/reconciliation").body)["outstanding"] == 0 and b,
                     timeout=10, what="the outstanding table to empty")
    assert books["failed"] == 1
    assert "postroom_reconcile_failed 1.0" in worker.get("/metrics").body


def test_a_killed_worker_loses_no_order_and_doubles_no_reservation(
    make_worker: Callable[..., Worker], report: Callable[[str], None],
) -> None:
    worker = make_worker(POSTROOM_RECONCILE_DEADLINE_S="5", POSTROOM_MERGE_MAX_WAIT_MS="20")
    skus = {"kill-a": 300, "kill-b": 150}
    for sku, on_hand in skus.items():
        worker.stock(sku, on_hand=on_hand, price=7)
    worker.fund("killer", 10_000_000)
    producer = Producer(producer_config(worker.bootstrap, **{"client.id": "test-stream"}))
    topic = worker.topic("orders.requests")
    order_ids = [str(uuid.uuid4()) for _ in range(400)]

    def stream() -> None:
        for i, order_id in enumerate(order_ids):
            body = {"order_id": order_id, "customer_id": "killer",
                    "items": [{"sku": "kill-a", "quantity": 1 + i % 2},
                              {"sku": "kill-b", "quantity": 1}][: 1 + i % 2]}
            producer.produce(topic, key=order_id.encode(), value=orjson.dumps(body))
            producer.poll(0)
            time.sleep(0.01)
        producer.flush(30)

    sender = threading.Thread(target=stream)
    sender.start()
    time.sleep(2.0)
    worker.kill()  # SIGKILL in the middle of the stream
    sender.join(60)
    worker.start()

    # One deadline for the whole stream: a restarted worker first waits for the killed member's
    # session to expire, then drains the backlog; what is still open after that is lost.
    found: dict[str, dict[str, Any]] = {}
    deadline = time.monotonic() + 150
    while time.monotonic() < deadline and len(found) < len(order_ids):
        for order_id in order_ids:
            if order_id not in found and (view := worker.terminal_view(order_id)):
                found[order_id] = view
        time.sleep(0.5)
    views = list(found.values())
    lost = len(order_ids) - len(views)
    if lost:
        open_ones = [worker.get(f"/orders/{o}").body for o in order_ids if o not in found][:3]
        report(f"[SIGKILL] still open: {open_ones} reconciliation: {worker.get('/reconciliation').body}"
               f"\n{worker.log_tail(40)}")
    per_sku = reserved_vs_fulfilled(worker, views, skus)
    duplicated = sum(max(0, reserved - fulfilled) for reserved, fulfilled, _ in per_sku.values())
    completed = sum(v["status"] in ("COMPLETED", "PARTIALLY_FULFILLED") for v in views)
    book = worker.get("/ledger").body
    statuses = dict(Counter(v["status"] for v in views))
    report(f"[SIGKILL] accepted={len(order_ids)} completed={completed} statuses={statuses} "
          f"lost={lost} duplicated={duplicated} "
          f"per sku (reserved, fulfilled, total)={per_sku} "
          f"money: deposited={book['deposited']} balances+held={book['balances'] + book['held_in_vouchers']} "
          f"re-dispatched={worker.get('/reconciliation').body['redispatched']}")
    charged = sum(v["charged"] for v in views)
    assert lost == 0
    assert duplicated == 0
    for sku, (reserved, fulfilled, total) in per_sku.items():
        assert reserved == fulfilled and total == skus[sku]
    assert book["balances"] + book["held_in_vouchers"] == book["deposited"]
    assert worker.balance("merchant") == charged
    assert worker.balance("killer") == 10_000_000 - charged


def test_orders_queued_behind_a_backlog_are_not_redone(
    make_worker: Callable[..., Worker], report: Callable[[str], None],
) -> None:
    # A burst that takes the worker several deadlines to drain, under the lag that would pause
    # the reconciler: the last orders wait far past their 0.5 s deadline, queued, not lost.
    worker = make_worker(**{**FAST_RECONCILE, "POSTROOM_RECONCILE_DEADLINE_S": "0.5",
                            "POSTROOM_RECONCILE_INTERVAL_S": "0.25"})
    worker.stock("queue-a", on_hand=1_000_000, price=1)
    worker.fund("queuer", 1_000_000)
    producer = Producer(producer_config(worker.bootstrap, **{"client.id": "test-queue"}))
    topic = worker.topic("orders.requests")
    count = 4_000  # under POSTROOM_RECONCILE_PAUSE_LAG (5,000 messages)
    started = time.monotonic()
    for _ in range(count):
        order_id = str(uuid.uuid4())
        body = {"order_id": order_id, "customer_id": "queuer",
                "received_at_ms": int(time.time() * 1000),
                "items": [{"sku": "queue-a", "quantity": 1}]}
        producer.produce(topic, key=order_id.encode(), value=orjson.dumps(body))
        producer.poll(0)
    assert producer.flush(30) == 0
    longest_wait = 0.0

    def drained() -> bool:
        nonlocal longest_wait
        books = worker.get("/reconciliation").body
        longest_wait = max(longest_wait, books.get("order_wait_s", 0))
        return terminal_count(worker) == count

    wait_for(drained, timeout=180, interval=0.5)
    took = time.monotonic() - started
    books = worker.get("/reconciliation").body
    report(f"[backlog, 0.5 s deadline] orders={count} drained in {took:.1f}s longest wait between "
           f"steps={longest_wait:.1f}s re-dispatched={books['redispatched']}")
    assert books["redispatched"]["order"] == 0
    assert longest_wait > 0.5  # the backlog did keep orders waiting past their deadline


def terminal_count(worker: Worker) -> int:
    """Orders the worker has seen end, from its own counters."""
    return int(sum(samples(worker.get("/metrics").body, "postroom_orders_terminal_total")))
