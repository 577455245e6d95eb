"""The peer: Postroom's pipeline written with Quix Streams (StreamingDataFrames, RocksDB state).

Five dataframes in one Application, one per stage (see ``bench.peers.common``)::

    requests --apply(accept)--> events
    events   --apply(saga, stateful: the order)--> events (DISPATCHED, terminal) | lines
                                                 | ledger (debit, credit, refund)
    ledger   --apply(ledger, stateful: the account)--> events (PAID, ...) | accounts
    lines    --tumbling_window(merge window).collect().final()--> batches (key sku)
    batches  --apply(fulfill, stateful: the sku's stock)--> events (LINE_RESULT) | stock

Unlike Postroom and the plain chain, whose sagas accept requests themselves, accept stays a
dataframe of its own, one more hop: folding it into the saga takes ``concat`` of the two
topics, and a concatenation of different topics switches on Quix's timestamp alignment for
the whole application, which in a trial took this pipeline from about 1,000 to 197 orders/s.

The merge window is a processing-time tumbling window (each line is stamped with the time it
is read), closed per partition. Quix closes a window only when a later message arrives on the
partition, so a small thread sends one tick per lines partition every window length; ticks
are windows of their own keys and are dropped after the window. Commits every second, as
Postroom's Faust worker does; state is changelogged (Quix's default).

    python -m bench.peers.quix_pipeline --bootstrap HOST:PORT --prefix P [--max-seconds S]
"""

from __future__ import annotations

import logging
import sys
import tempfile
import threading
from typing import Any

from bench.peers import common

TICK = "__tick"


def main(argv: list[str] | None = None) -> int:
    p = common.arguments(merge=True)
    p.add_argument("--commit-interval", type=float, default=1.0)
    p.add_argument("--state-dir", default="")
    args = p.parse_args(argv)

    from confluent_kafka import Producer
    from quixstreams import Application

    names = common.topic_names(args.prefix)
    catalogue = common.load_catalogue(args.bootstrap, names["catalog"])
    state_dir = args.state_dir or tempfile.mkdtemp(prefix="quix-state-")
    app = Application(
        broker_address=args.bootstrap,
        consumer_group=f"{args.prefix}quix",
        auto_offset_reset="earliest",
        commit_interval=args.commit_interval,
        state_dir=state_dir,
        loglevel="WARNING",
        producer_extra_config={"enable.idempotence": True, "acks": "all", "linger.ms": 2},
    )

    def topic(name: str) -> Any:
        return app.topic(names[name], key_serializer="str", key_deserializer="str",
                         value_serializer="json", value_deserializer="json")

    requests, events, lines, batches, stock, ledger, accounts = (
        topic(n) for n in ("requests", "events", "lines", "batches", "stock", "ledger",
                           "accounts"))
    route = {"events": events, "lines": lines, "stock": stock, "ledger": ledger,
             "accounts": accounts}
    keys = {"lines": "sku", "ledger": "account"}

    def to(where: str, key: str, message: dict[str, Any]) -> dict[str, Any]:
        return {**message, "_to": where, "_key": key}

    def pick_topic(value: Any, key: Any, timestamp: int, headers: Any) -> Any:
        return route[value["_to"]]

    # accept
    sdf = app.dataframe(requests)
    sdf = sdf.apply(lambda order: common.accept(order, catalogue, common.now_ms()))
    sdf.to_topic(events)

    # the order saga
    def saga(event: dict[str, Any], state: Any) -> list[dict[str, Any]]:
        order, changed, out = common.saga(state.get("order"), event, common.now_ms())
        if changed:
            state.set("order", order)
        return [to(where, m[keys.get(where, "order_id")], m) for where, m in out]

    sdf = app.dataframe(events).apply(saga, stateful=True, expand=True)
    sdf.to_topic(pick_topic, key=lambda v: v["_key"])

    # the ledger: each command once per account
    def apply_command(cmd: dict[str, Any], state: Any) -> list[dict[str, Any]]:
        done = f"cmd:{cmd['id']}"
        if state.get(done):
            return []  # a repeat
        balance, report = common.ledger(state.get("balance", 0), cmd, common.now_ms())
        state.set("balance", balance)
        state.set(done, True)
        out = [to("accounts", cmd["account"], {"balance": balance})]
        if report is not None:
            out.append(to("events", report["order_id"], report))
        return out

    sdf = app.dataframe(ledger).apply(apply_command, stateful=True, expand=True)
    sdf.to_topic(pick_topic, key=lambda v: v["_key"])

    # dispatch: merge same-sku lines within the window
    def merged(window: dict[str, Any]) -> list[dict[str, Any]]:
        return [to("batches", b["sku"], b) for b in
                common.merge(window["value"], args.merge_max_lines, common.now_ms())]

    sdf = app.dataframe(lines).set_timestamp(lambda v, k, ts, h: common.now_ms())
    sdf = (sdf.tumbling_window(duration_ms=args.merge_wait_ms, grace_ms=0).collect()
           .final(closing_strategy="partition"))
    sdf = sdf.filter(lambda w: not w["value"][0].get("tick"))
    sdf = sdf.apply(merged, expand=True)
    sdf.to_topic(batches, key=lambda v: v["_key"])

    # fulfill
    def fulfill(batch: dict[str, Any], state: Any) -> list[dict[str, Any]]:
        sku = batch["sku"]
        current = state.get("stock") or common.initial_stock(sku, catalogue)
        new, results = common.fulfill(current, batch, common.now_ms())
        state.set("stock", new)
        return [to("stock", sku, new), *(to("events", r["order_id"], r) for r in results)]

    sdf = app.dataframe(batches).apply(fulfill, stateful=True, expand=True)
    sdf.to_topic(pick_topic, key=lambda v: v["_key"])

    # ticks that let the partitions' windows close when lines stop coming
    stop = threading.Event()

    def tick() -> None:
        producer = Producer({"bootstrap.servers": args.bootstrap, "linger.ms": 0})
        while not stop.wait(args.merge_wait_ms / 1000):
            for part in range(common.PARTITIONS):
                producer.produce(names["lines"], b'{"tick": true}', f"{TICK}{part}".encode(),
                                 partition=part)
            producer.poll(0)
        producer.flush(5)

    ticker = threading.Thread(target=tick, name="ticks", daemon=True)
    ticker.start()
    timer = threading.Timer(args.max_seconds, app.stop)
    timer.daemon = True
    timer.start()
    logging.getLogger("quixstreams").setLevel(logging.WARNING)
    print("READY", flush=True)
    try:
        app.run()
    finally:
        stop.set()
        timer.cancel()
        ticker.join(5)
    return 0


if __name__ == "__main__":
    sys.exit(main())
