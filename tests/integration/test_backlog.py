"""The backlog monitor and the front desk's throttle, against a real broker and worker."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from typing import Any

import pytest

from app.ops.lag import LagReader, lag_by_topic
from app.producer import producer_config
from app.topology import CONSUMED
from tests.support import ROOT, Worker, call, metric, wait_for

pytestmark = pytest.mark.integration


def produce_orders(worker: Worker, sku: str, count: int) -> list[str]:
    """Append orders straight to ``orders.requests``, as any Kafka producer may."""
    from confluent_kafka import Producer

    producer = Producer(producer_config(worker.bootstrap, **{"client.id": "test-burst"}))
    topic = worker.topic("orders.requests")
    ids = []
    for _ in range(count):
        order_id = f"burst-{uuid.uuid4().hex}"
        body = {"order_id": order_id, "customer_id": "c-burst",
                "items": [{"sku": sku, "quantity": 1}]}
        while True:
            try:
                producer.produce(topic, key=order_id.encode(), value=json.dumps(body).encode())
                break
            except BufferError:
                producer.poll(0.05)
        producer.poll(0)
        ids.append(order_id)
    assert producer.flush(30) == 0, "the burst was not acknowledged"
    return ids


def lag_of(worker: Worker) -> dict[str, Any]:
    reply = worker.get("/lag")
    assert reply.status == 200, (
        f"GET /lag answered {reply.status}: is app.ops.backlog.register(rt) wired in main.py?"
    )
    return dict(reply.body)


def read_lag_directly(worker: Worker) -> dict[str, int]:
    """Lag per topic read from Kafka itself (the worker may be stopped)."""
    settings = worker.settings
    reader = LagReader(worker.bootstrap, settings.app_id,
                       [settings.topic(n) for n in CONSUMED])
    try:
        rows, _ = reader.read()
    finally:
        reader.close()
    return lag_by_topic(rows)


def lag_cli_once(worker: Worker) -> str:
    done = subprocess.run(
        [sys.executable, "-m", "app", "lag", "--once"],
        cwd=ROOT, env=worker.env, capture_output=True, text=True, timeout=30,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout


def test_lag_grows_while_the_worker_is_paused_and_drains_after(
    make_worker: Callable[..., Worker],
) -> None:
    worker = make_worker()
    worker.stock("lag-sku", 100_000, 100)
    worker.wait_terminal(worker.order([("lag-sku", 1)]))
    requests_topic = worker.topic("orders.requests")
    wait_for(lambda: (b := lag_of(worker))["total_lag"] == 0 and not b["stale"],
             timeout=30, what="an idle, measured backlog")
    assert worker.proc is not None
    os.kill(worker.proc.pid, signal.SIGSTOP)
    try:
        before = read_lag_directly(worker)[requests_topic]
        produce_orders(worker, "lag-sku", 100)
        first = read_lag_directly(worker)
        ids = produce_orders(worker, "lag-sku", 200)
        started = time.monotonic()
        second = read_lag_directly(worker)
        read_s = time.monotonic() - started
        table = lag_cli_once(worker)
    finally:
        os.kill(worker.proc.pid, signal.SIGCONT)
    # Nothing consumes while the worker is stopped: the lag grows by exactly what was produced.
    assert first[requests_topic] == before + 100
    assert second[requests_topic] == before + 300
    assert read_s < 5, f"reading the lag took {read_s:.2f}s"
    shown = re.search(rf"^{re.escape(requests_topic)}\s+all\s+(\d+)$", table, re.M)
    assert shown is not None and int(shown[1]) == before + 300, table
    total = re.search(r"^total lag: (\d+)$", table, re.M)
    assert total is not None and int(total[1]) >= before + 300, table

    # Resumed, the worker drains it, and its own GET /lag sees the burst arrive and go.
    def drained() -> dict[str, Any] | None:
        body = lag_of(worker)
        ends = sum(p["end"] for p in body["partitions"] if p["topic"] == requests_topic)
        return body if ends >= 301 and body["total_lag"] == 0 and not body["stale"] else None

    body = wait_for(drained, timeout=45, interval=0.5, what="the backlog drained")
    assert body["group"] == worker.settings.app_id
    assert body["by_topic"][requests_topic] == 0
    assert body["throttling"] is None
    assert body["measured_at"].endswith("Z")
    assert {"group", "topic", "partition", "committed", "end", "lag"} <= set(body["partitions"][0])
    worker.wait_terminal(ids[-1])  # every order produced straight to Kafka is processed

    metrics = call("GET", worker.url + "/metrics").body
    group = worker.settings.app_id
    assert metric(metrics, "postroom_consumer_lag", group=group, topic=requests_topic,
                  partition="0") == 0.0
    assert metric(metrics, "postroom_consumer_lag_total", group=group) == 0.0


def test_a_burst_beyond_what_the_workers_drain_is_throttled_then_accepted_again(
    make_worker: Callable[..., Worker],
) -> None:
    # A burst the worker drains in well under a second is only seen by a quick lag poll.
    worker = make_worker(POSTROOM_THROTTLE_MAX_LAG="50", POSTROOM_LAG_REFRESH_S="0.25")
    worker.stock("burst-sku", 1_000_000, 100)
    order = {"customer_id": "c-desk", "items": [{"sku": "burst-sku", "quantity": 1}]}
    assert worker.post("/orders", order).status == 202

    produce_orders(worker, "burst-sku", 2000)
    burst_done = time.monotonic()
    refused = wait_for(
        lambda: (r := worker.post("/orders", order)).status == 429 and r,
        timeout=20, interval=0.1, what="the front desk to throttle",
    )
    engaged_s = time.monotonic() - burst_done
    assert refused.body["error"] == "throttled"
    retry_after = int(refused.headers["Retry-After"])
    assert 1 <= retry_after <= 60
    throttling = lag_of(worker)["throttling"]
    assert throttling is not None and throttling["status"] == 429

    waits = [retry_after]

    def accepted_again() -> Any:
        reply = worker.post("/orders", order)
        if reply.status == 429:
            waits.append(int(reply.headers["Retry-After"]))
        return reply.status == 202 and reply

    accepted = wait_for(accepted_again, timeout=60, interval=0.5,
                        what="the front desk to accept again")
    assert all(1 <= w <= 60 for w in waits), waits
    released_s = time.monotonic() - burst_done
    assert accepted.body["status"] == "ACCEPTED"
    body = lag_of(worker)
    assert body["total_lag"] < 50 and body["throttling"] is None
    metrics = call("GET", worker.url + "/metrics").body
    refused_count = metric(metrics, "postroom_http_requests_refused_total", status="429")
    assert refused_count is not None and refused_count >= 1
    assert metric(metrics, "postroom_throttling") == 0.0
    print(f"\nthrottled {engaged_s:.1f}s after the burst, accepting again after "
          f"{released_s:.1f}s; Retry-After seen: {waits}")
