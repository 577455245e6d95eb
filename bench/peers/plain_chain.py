"""The Python ceiling: Postroom's hops with plain confluent-kafka, no framework.

One process, one consumer on the five topics, ``consume()`` in batches of up to 500, one
producer (idempotent, acks=all, linger 2 ms). State lives in dicts; every order, sku or
account a batch changed is written once per batch to a compacted changelog (``orders-state``,
``stock``, ``accounts``, with each applied ledger command's id beside the balances), as a
table would be. Lines are merged per sku for up to ``--merge-wait-ms`` or
``--merge-max-lines`` lines. Offsets are committed every second, when no line is buffered.

    python -m bench.peers.plain_chain --bootstrap HOST:PORT --prefix P [--max-seconds S]
"""

from __future__ import annotations

import sys
import time
from typing import Any

import orjson

from bench.peers import common


def main(argv: list[str] | None = None) -> int:
    p = common.arguments(merge=True)
    args = p.parse_args(argv)

    from confluent_kafka import Consumer, Producer

    t = common.topic_names(args.prefix)
    catalogue = common.load_catalogue(args.bootstrap, t["catalog"])
    consumer = Consumer(common.consumer_config(args.bootstrap, f"{args.prefix}chain",
                                               **{"fetch.wait.max.ms": 10}))
    producer = Producer(common.producer_config(args.bootstrap))
    consumer.subscribe([t["requests"], t["events"], t["lines"], t["batches"], t["ledger"]])
    stop = common.stop_on_signals()
    orders: dict[str, dict[str, Any]] = {}
    stock: dict[str, dict[str, Any]] = {}
    balances: dict[str, int] = {}
    applied: set[str] = set()
    buffered: list[dict[str, Any]] = []
    buffered_since = 0.0
    wait = args.merge_wait_ms / 1000
    last_commit = time.monotonic()
    deadline = time.monotonic() + args.max_seconds
    dumps, loads = orjson.dumps, orjson.loads

    def produce(topic: str, value: bytes, key: bytes) -> None:
        while True:
            try:
                producer.produce(topic, value, key)
                return
            except BufferError:  # the local queue is full: let deliveries drain it
                producer.poll(0.05)

    print("READY", flush=True)
    while not stop.is_set() and time.monotonic() < deadline:
        msgs = consumer.consume(500, 0.005 if buffered else 0.1)
        at = common.now_ms()
        dirty_orders: set[str] = set()
        dirty_skus: set[str] = set()
        dirty_accounts: set[str] = set()
        new_commands: list[str] = []
        for msg in msgs:
            if msg.error() is not None:
                continue
            topic = msg.topic()
            value = loads(msg.value())
            if topic == t["requests"]:
                # Published, and folded by the saga at once (Postroom's saga accepts too).
                value = common.accept(value, catalogue, at)
                produce(t["events"], dumps(value), msg.key())
                topic = t["events"]
            if topic == t["events"]:
                oid = value["order_id"]
                state, changed, out = common.saga(orders.get(oid), value, at)
                if changed and state is not None:
                    orders[oid] = state
                    dirty_orders.add(oid)
                for where, message in out:
                    key = message[{"lines": "sku", "ledger": "account"}.get(where, "order_id")]
                    produce(t[where], dumps(message), key.encode())
            elif topic == t["ledger"]:
                if value["id"] in applied:
                    continue  # a repeat
                account = value["account"]
                balances[account], report = common.ledger(balances.get(account, 0), value, at)
                applied.add(value["id"])
                new_commands.append(value["id"])
                dirty_accounts.add(account)
                if report is not None:
                    produce(t["events"], dumps(report), report["order_id"].encode())
            elif topic == t["lines"]:
                if not buffered:
                    buffered_since = time.monotonic()
                buffered.append(value)
            else:  # batches
                sku = value["sku"]
                current = stock.get(sku) or common.initial_stock(sku, catalogue)
                stock[sku], results = common.fulfill(current, value, at)
                dirty_skus.add(sku)
                for result in results:
                    produce(t["events"], dumps(result), result["order_id"].encode())
        if buffered and (len(buffered) >= args.merge_max_lines
                         or time.monotonic() - buffered_since >= wait):
            for batch in common.merge(buffered, args.merge_max_lines, at):
                produce(t["batches"], dumps(batch), batch["sku"].encode())
            buffered = []
        for oid in dirty_orders:
            produce(t["orders-state"], dumps(orders[oid]), oid.encode())
        for sku in dirty_skus:
            produce(t["stock"], dumps(stock[sku]), sku.encode())
        for account in dirty_accounts:
            produce(t["accounts"], dumps({"balance": balances[account]}), account.encode())
        for cid in new_commands:
            produce(t["accounts"], b'{"done": true}', f"cmd:{cid}".encode())
        producer.poll(0)
        if not buffered and time.monotonic() - last_commit >= 1.0 and msgs:
            consumer.commit(asynchronous=True)
            last_commit = time.monotonic()
    producer.flush(30)
    consumer.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
