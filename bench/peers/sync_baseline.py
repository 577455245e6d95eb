"""The request-response baseline: each order handled on its own, every write waited for.

One process takes one order at a time from ``requests`` and does everything for it before
the next: write ACCEPTED and wait for the broker's ack; debit the customer and write the
account, waiting; for each line, reserve stock and write the sku's stock record, waiting for
each ack; credit the merchant and refund the customer, writing each account; write the
terminal event and wait; commit the order's offset synchronously. The balances start from
the deposits on ``ledger``. That is how a request handler that calls its database per
order works, with Kafka (acks=all, idempotent) as the database so durability is the same.

    python -m bench.peers.sync_baseline --bootstrap HOST:PORT --prefix P [--max-seconds S]
"""

from __future__ import annotations

import sys
import time
from collections import deque
from typing import Any

import orjson

from bench.peers import common


def main(argv: list[str] | None = None) -> int:
    p = common.arguments(merge=False)
    args = p.parse_args(argv)

    from confluent_kafka import Consumer, Producer

    t = common.topic_names(args.prefix)
    catalogue = common.load_catalogue(args.bootstrap, t["catalog"])
    consumer = Consumer(common.consumer_config(args.bootstrap, f"{args.prefix}sync"))
    producer = Producer(common.producer_config(args.bootstrap, **{"linger.ms": 0}))
    consumer.subscribe([t["requests"]])
    stop = common.stop_on_signals()

    def write(topic: str, value: dict[str, Any], key: str) -> None:
        """One durable write: produce and wait for the broker's acknowledgement."""
        producer.produce(topic, orjson.dumps(value), key.encode())
        if producer.flush(30):
            raise RuntimeError(f"write to {topic} not acknowledged")

    stock: dict[str, dict[str, Any]] = {}
    balances = {account: int(deposit["amount"]) for account, deposit
                in common.load_catalogue(args.bootstrap, t["ledger"]).items()}
    deadline = time.monotonic() + args.max_seconds
    print("READY", flush=True)
    while not stop.is_set() and time.monotonic() < deadline:
        msg = consumer.poll(0.1)
        if msg is None or msg.error() is not None:
            continue
        order = orjson.loads(msg.value())
        at = common.now_ms()
        accepted = common.accept(order, catalogue, at)
        write(t["events"], accepted, order["order_id"])
        if accepted["type"] == "ACCEPTED":
            state, _, out = common.saga(None, accepted, at)
            steps = deque(out)
            while steps:  # each step done and written before the next
                where, step = steps.popleft()
                now = common.now_ms()
                if where == "ledger":
                    account = step["account"]
                    balances[account], report = common.ledger(balances.get(account, 0), step,
                                                              now)
                    write(t["accounts"], {"balance": balances[account]}, account)
                    reported = [report] if report is not None else []
                elif where == "lines":
                    sku = step["sku"]
                    current = stock.get(sku) or common.initial_stock(sku, catalogue)
                    stock[sku], reported = common.fulfill(current, {"lines": [step]}, now)
                    write(t["stock"], stock[sku], sku)
                else:
                    if step["type"] in common.TERMINAL:
                        write(t["events"], step, order["order_id"])
                    reported = []
                for event in reported:
                    state, _, out = common.saga(state, event, common.now_ms())
                    steps.extend(out)
        consumer.commit(msg, asynchronous=False)
    producer.flush(30)
    consumer.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
