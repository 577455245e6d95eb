"""What the peers share: their topics, the catalogue, and the order logic as plain functions.

The peers (the plain confluent-kafka chain, the Quix Streams pipeline and the synchronous
baseline) do the same steps as Postroom, with the same hops, with JSON messages on their own
prefixed topics::

    requests (key order)   -> saga: accept -> events: ACCEPTED; ledger: DEBIT the customer
                              (the saga accepts a request and takes its first step at once;
                               the Quix pipeline accepts in a dataframe of its own, one hop more)
    ledger   (key account) -> ledger -> events: PAID | PAYMENT_REJECTED; accounts: balance
    events   (key order)   -> saga   -> events: DISPATCHED; lines (key sku), one per sku
    lines    (key sku)     -> dispatch: same-sku lines within the window -> batches (key sku)
    batches  (key sku)     -> fulfill: reserve stock for the batch -> events: LINE_RESULT per line
                                                                  -> stock (key sku): the stock
    events   (key order)   -> saga: all lines reported -> ledger: CREDIT the merchant what was
                                                         fulfilled, REFUND the customer the rest
    ledger   (key account) -> ledger -> events: REDEEMED, RETURNED; accounts: balance
    events   (key order)   -> saga: every part landed -> events: COMPLETED | PARTIALLY_FULFILLED
                                                                 | REJECTED

The catalogue (price and initial on-hand per sku) is read from the ``catalog`` topic at start,
as Postroom restores its global price table; the customers' funds arrive as DEPOSIT commands
on ``ledger`` before the orders, as Postroom's deposits do. ``stock`` and ``accounts`` are the
fulfiller's and the ledger's changelogs; the bench reads their last value per key to check
that stock and money were conserved.
"""

from __future__ import annotations

import argparse
import signal
import threading
import time
import uuid
from collections.abc import Iterable
from typing import Any

import orjson

from app.producer import producer_config as app_producer_config

PARTITIONS = 4
TOPICS = ("requests", "events", "lines", "batches", "ledger", "catalog", "stock", "accounts",
          "orders-state")
COMPACTED = ("catalog", "stock", "accounts", "orders-state")
MERCHANT = "merchant"
TERMINAL = frozenset({"COMPLETED", "PARTIALLY_FULFILLED", "REJECTED"})


def now_ms() -> int:
    return int(time.time() * 1000)


def topic_names(prefix: str) -> dict[str, str]:
    return {t: f"{prefix}{t}" for t in TOPICS}


def new_topics(bootstrap: str, specs: dict[str, tuple[int, bool]]) -> None:
    """Create topics: name -> (partitions, compacted); replication 1, the bench's broker."""
    from confluent_kafka.admin import AdminClient, NewTopic

    admin = AdminClient({"bootstrap.servers": bootstrap})
    new = [NewTopic(name, partitions, 1,
                    config={"cleanup.policy": "compact" if compacted else "delete"})
           for name, (partitions, compacted) in specs.items()]
    for fut in admin.create_topics(new, operation_timeout=30).values():
        fut.result()


def create_topics(bootstrap: str, prefix: str, partitions: int = PARTITIONS) -> dict[str, str]:
    names = topic_names(prefix)
    new_topics(bootstrap, {name: (partitions, t in COMPACTED) for t, name in names.items()})
    return names


def load_catalogue(bootstrap: str, topic: str, timeout: float = 60.0) -> dict[str, dict[str, int]]:
    """Read the whole catalogue topic: sku -> {"price", "on_hand"}."""
    from confluent_kafka import Consumer, TopicPartition

    consumer = Consumer(consumer_config(bootstrap, f"catalog-{uuid.uuid4()}"))
    try:
        meta = consumer.list_topics(topic, timeout=timeout).topics[topic]
        ends = {}
        for p in meta.partitions:
            _, high = consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=timeout)
            ends[p] = high
        consumer.assign([TopicPartition(topic, p, 0) for p in ends])
        out: dict[str, dict[str, int]] = {}
        done = {p for p, high in ends.items() if high <= 0}
        deadline = time.monotonic() + timeout
        while len(done) < len(ends) and time.monotonic() < deadline:
            for msg in consumer.consume(1000, 0.2):
                if msg.error() is not None:
                    continue
                out[msg.key().decode()] = orjson.loads(msg.value())
                if msg.offset() >= ends[msg.partition()] - 1:
                    done.add(msg.partition())
        if len(done) < len(ends):
            raise RuntimeError(f"catalogue {topic} not read within {timeout}s")
        return out
    finally:
        consumer.close()


def read_stock(bootstrap: str, topic: str, timeout: float = 30.0) -> dict[str, tuple[int, int]]:
    """The last stock record per sku: sku -> (on_hand, reserved)."""
    return {sku: (v["on_hand"], v["reserved"])
            for sku, v in load_catalogue(bootstrap, topic, timeout).items()}


def producer_config(bootstrap: str, **extra: Any) -> dict[str, Any]:
    """Postroom's own producer settings (idempotent, acks=all, murmur2 partitioning)."""
    return app_producer_config(bootstrap, **{"client.id": "bench-peer", **extra})


def consumer_config(bootstrap: str, group: str, **extra: Any) -> dict[str, Any]:
    """A peer's consumer: from the start of its topics, offsets committed by the peer itself."""
    return {"bootstrap.servers": bootstrap, "group.id": group, "auto.offset.reset": "earliest",
            "enable.auto.commit": False, **extra}


def arguments(merge: bool = False) -> argparse.ArgumentParser:
    """The options every peer takes (and the merge window's, for those that merge)."""
    p = argparse.ArgumentParser()
    p.add_argument("--bootstrap", required=True)
    p.add_argument("--prefix", required=True)
    p.add_argument("--max-seconds", type=float, default=3600.0)
    if merge:
        p.add_argument("--merge-max-lines", type=int, default=200)
        p.add_argument("--merge-wait-ms", type=int, default=20)
    return p


def stop_on_signals() -> threading.Event:
    """An event set by SIGTERM or SIGINT: the peer's loop runs until it is set."""
    stop = threading.Event()

    def halt(*_: Any) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, halt)
    signal.signal(signal.SIGINT, halt)
    return stop


# --- the order logic (same decisions as Postroom's, on JSON dicts) -------------------------


def accept(order: dict[str, Any], catalogue: dict[str, dict[str, int]], at: int
           ) -> dict[str, Any]:
    """ACCEPTED with priced lines (one per sku), or REJECTED for an unknown sku."""
    oid = order["order_id"]
    requested = order.get("received_at_ms") or at
    quantities: dict[str, int] = {}
    for item in order["items"]:
        quantities[item["sku"]] = quantities.get(item["sku"], 0) + int(item["quantity"])
    unknown = [s for s in quantities if s not in catalogue]
    if unknown or not quantities:
        return {"type": "REJECTED", "order_id": oid, "at_ms": at, "requested_at_ms": requested,
                "amount": 0, "reason": "unknown sku"}
    lines = [{"order_id": oid, "sku": s, "quantity": q, "unit_price": catalogue[s]["price"]}
             for s, q in quantities.items()]
    return {"type": "ACCEPTED", "order_id": oid, "at_ms": at, "requested_at_ms": requested,
            "customer_id": order["customer_id"], "lines": lines,
            "amount": sum(x["quantity"] * x["unit_price"] for x in lines)}


def saga(state: dict[str, Any] | None, event: dict[str, Any], at: int
         ) -> tuple[dict[str, Any] | None, bool, list[tuple[str, dict[str, Any]]]]:
    """Fold one event into an order: the state, whether it changed, and what to send.

    ACCEPTED pays (a debit); PAID dispatches the lines; the last LINE_RESULT settles (credit
    the merchant, refund the customer); the last part of the settlement to land ends it.
    """
    kind = event["type"]
    oid = event["order_id"]
    out: list[tuple[str, dict[str, Any]]] = []
    if kind == "ACCEPTED":
        if state is not None:
            return state, False, out  # a duplicate
        state = {"requested_at_ms": event["requested_at_ms"], "amount": event["amount"],
                 "account": event["customer_id"], "lines_in": event["lines"],
                 "lines": {x["sku"]: [x["quantity"], x["unit_price"], None]
                           for x in event["lines"]}, "status": "PAYING", "landed": []}
        out.append(("ledger", command("DEBIT", oid, state["account"], state["amount"])))
        return state, True, out
    if state is None:
        return state, False, out
    status = state["status"]
    if kind == "PAYMENT_REJECTED" and status == "PAYING":
        state["status"] = "REJECTED"
        out.append(("events", _final(state, oid, "REJECTED", 0, at)))
    elif kind == "PAID" and status == "PAYING":
        state["status"] = "DISPATCHED"
        out.append(("events", {"type": "DISPATCHED", "order_id": oid, "at_ms": at}))
        out.extend(("lines", line) for line in state.pop("lines_in"))
    elif kind == "LINE_RESULT" and status == "DISPATCHED":
        line = state["lines"].get(event["sku"])
        if line is None or line[2] is not None:
            return state, False, out  # unknown or already reported
        line[2] = event["fulfilled"]
        if all(x[2] is not None for x in state["lines"].values()):
            state["charged"] = sum(x[2] * x[1] for x in state["lines"].values())
            state["status"] = "SETTLING"
            refund = state["amount"] - state["charged"]
            if state["charged"]:
                out.append(("ledger", command("CREDIT", oid, MERCHANT, state["charged"])))
            if refund:
                out.append(("ledger", command("REFUND", oid, state["account"], refund)))
            out.extend(_settled(state, oid, at))
    elif kind in ("REDEEMED", "RETURNED") and status == "SETTLING" \
            and kind not in state["landed"]:
        state["landed"].append(kind)
        out.extend(_settled(state, oid, at))
    else:
        return state, False, out
    return state, True, out


def _settled(state: dict[str, Any], oid: str, at: int) -> list[tuple[str, dict[str, Any]]]:
    """The terminal event once every part of the settlement has landed."""
    charged = state["charged"]
    if (charged and "REDEEMED" not in state["landed"]) or (
            state["amount"] - charged and "RETURNED" not in state["landed"]):
        return []
    lines = state["lines"].values()
    if all(x[2] >= x[0] for x in lines):
        final = "COMPLETED"
    elif any(x[2] > 0 for x in lines):
        final = "PARTIALLY_FULFILLED"
    else:
        final = "REJECTED"
    state["status"] = final
    return [("events", _final(state, oid, final, charged, at))]


def _final(state: dict[str, Any], oid: str, final: str, charged: int, at: int
           ) -> dict[str, Any]:
    return {"type": final, "order_id": oid, "at_ms": at,
            "requested_at_ms": state["requested_at_ms"], "amount": charged}


def command(kind: str, order_id: str, account: str, amount: int) -> dict[str, Any]:
    """A ledger command; its id makes a repeat recognisable."""
    return {"id": f"{order_id}:{kind.lower()}", "kind": kind, "order_id": order_id,
            "account": account, "amount": amount}


_REPORTS = {"CREDIT": "REDEEMED", "REFUND": "RETURNED"}


def ledger(balance: int, cmd: dict[str, Any], at: int) -> tuple[int, dict[str, Any] | None]:
    """Apply one command to an account's balance (never below zero); return the new balance
    and the report to the order (none for a deposit)."""
    kind, amount = cmd["kind"], int(cmd["amount"])
    if kind == "DEPOSIT":
        return balance + amount, None
    if kind == "DEBIT":
        if balance < amount:
            return balance, {"type": "PAYMENT_REJECTED", "order_id": cmd["order_id"],
                             "at_ms": at}
        return balance - amount, {"type": "PAID", "order_id": cmd["order_id"], "at_ms": at}
    return balance + amount, {"type": _REPORTS[kind], "order_id": cmd["order_id"],
                              "at_ms": at, "amount": amount}


def deposits(funds: dict[str, int]) -> list[dict[str, Any]]:
    """The DEPOSIT commands that fund the customers before a run."""
    return [{"id": f"deposit:{account}", "kind": "DEPOSIT", "order_id": "", "account": account,
             "amount": amount} for account, amount in funds.items()]


def read_balances(bootstrap: str, topic: str, timeout: float = 30.0) -> dict[str, int]:
    """The last balance per account from a peer's ``accounts`` changelog."""
    return {k: int(v["balance"]) for k, v in load_catalogue(bootstrap, topic, timeout).items()
            if not k.startswith("cmd:")}


def merge(lines: Iterable[dict[str, Any]], max_lines: int, at: int) -> list[dict[str, Any]]:
    """Same-sku lines, in arrival order, into batches of at most ``max_lines``."""
    by_sku: dict[str, list[dict[str, Any]]] = {}
    for line in lines:
        by_sku.setdefault(line["sku"], []).append(line)
    return [{"sku": sku, "created_at_ms": at, "lines": group[i : i + max_lines]}
            for sku, group in by_sku.items() for i in range(0, len(group), max_lines)]


def fulfill(stock: dict[str, Any], batch: dict[str, Any], at: int
            ) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Reserve stock for a whole batch, first come first served; one LINE_RESULT per line."""
    on_hand, reserved = stock["on_hand"], stock["reserved"]
    results = []
    for line in batch["lines"]:
        take = min(line["quantity"], on_hand)
        on_hand -= take
        reserved += take
        results.append({"type": "LINE_RESULT", "order_id": line["order_id"], "sku": line["sku"],
                        "quantity": line["quantity"], "fulfilled": take, "at_ms": at})
    return {"sku": stock["sku"], "on_hand": on_hand, "reserved": reserved}, results


def initial_stock(sku: str, catalogue: dict[str, dict[str, int]]) -> dict[str, Any]:
    return {"sku": sku, "on_hand": catalogue.get(sku, {}).get("on_hand", 0), "reserved": 0}


def publish_catalogue(bootstrap: str, topics: dict[str, str], stock: dict[str, int],
                      prices: dict[str, int], funds: dict[str, int]) -> None:
    """What the bench does before starting a peer: Postroom's PUT /inventory and deposits."""
    from confluent_kafka import Producer

    producer = Producer(producer_config(bootstrap))
    for sku, on_hand in stock.items():
        producer.produce(topics["catalog"],
                         orjson.dumps({"price": prices[sku], "on_hand": on_hand}), sku.encode())
    for deposit in deposits(funds):
        producer.produce(topics["ledger"], orjson.dumps(deposit), deposit["account"].encode())
    if producer.flush(60):
        raise RuntimeError("catalogue and deposits not acknowledged")
