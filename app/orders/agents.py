"""The order agent: accept requests, and run each order's saga over what it is told.

::

    orders.requests --run_order_saga: accept--> ACCEPTED | REJECTED, folded at once
    postroom.inbox  --run_order_saga--> order_by_id (projection)
                                     --> orders.events (every event it folds, its own too)
                                     --> postroom.ledger (pay: debit into a voucher;
                                         settle: credit the merchant, refund the rest)
                                     --> postroom.lines (dispatch, key = sku)
                                     --> postroom.vouchers (settle: the voucher's record)
                                     --> postroom.batches (release stock on cancellation)
"""

from __future__ import annotations

from typing import Any

from app.codecs import AVRO_CONTENT_TYPE, avro_decode, header, json_decode
from app.errors import InvalidEvent
from app.fulfillment.logic import STOCK_COMMAND, stock_release
from app.models import OrderEvent, OrderRequest
from app.ops import outstanding as book
from app.orders import logic
from app.pack import partition_for, shaped
from app.payments import logic as payments
from app.runtime import Runtime, now_ms
from app.unit import Unit


def decode_request(rt: Runtime, value: bytes | None, headers: Any) -> OrderRequest:
    """Decode and validate one ``orders.requests`` message (JSON or Avro)."""
    if not value:
        raise InvalidEvent("empty message (no value)", code="undecodable")
    if header(headers, "content-type").startswith(AVRO_CONTENT_TYPE):
        body = avro_decode(rt.schemas("orders.requests"), value)
    else:
        body = json_decode(value)
    request = logic.validate_request_message(body, max_items=rt.settings.max_items_per_order)
    if not request.get("body_hash"):
        request["body_hash"] = logic.body_hash(request)
    return request


def register(rt: Runtime) -> None:
    settings = rt.settings
    metrics = rt.metrics

    requests_topic = rt.topic_name("orders.requests")
    # The reconciler reads it: an order that has waited no longer than others are waiting
    # for their next step is queued, not lost.
    waits = rt.extras["order_waits"] = book.RecentWait(int(settings.reconcile_deadline_s * 1000))
    inbox_partitions = rt.specs["postroom.inbox"].partitions
    inbox_schemas = rt.schemas("postroom.inbox")

    def order_step(unit: Unit, msg: Any) -> None:
        """One message of the saga's two topics: a request is accepted (or rejected) and
        folded into its order at once; anything else is a report from another agent."""
        if msg.topic != requests_topic:
            saga_step(unit, msg)
            return
        decision = accept_one(unit, msg)
        order_id = decision["order_id"]
        if partition_for(order_id.encode(), inbox_partitions) != msg.partition:
            # Not where the order's saga lives (a producer that did not key the request
            # by order id with murmur2): the decision goes round by the inbox instead.
            unit.send("postroom.inbox", order_id, decision)
            return
        # The record the inbox would have carried (its schema's defaults filled in).
        fold(unit, shaped(inbox_schemas, decision))

    def accept_one(unit: Unit, msg: Any) -> OrderEvent:
        """Dedupe, validate and price one request; decide ACCEPTED or REJECTED."""
        request_by_order = unit.table("request_by_order")

        def price_of(sku: str) -> int | None:
            entry = unit.lookup("price_by_sku", sku)
            return None if entry is None else int(entry["price"])

        request = decode_request(rt, msg.value, msg.headers)
        order_id = request["order_id"]
        prior = request_by_order.get(order_id)
        if prior is not None:
            if prior["hash"] != request["body_hash"]:
                raise InvalidEvent(
                    f"order {order_id} already exists with another body",
                    code="idempotency_conflict",
                )
            # The same request again: repeat the recorded decision (receivers dedupe).
            metrics.duplicates.labels("accept").inc()
            decision = prior["event"]
        else:
            decision = logic.accept(request, price_of, now_ms())
            request_by_order[order_id] = {"hash": request["body_hash"], "event": decision}
        return decision  # type: ignore[no-any-return]

    def keep_outstanding(unit: Unit, state: dict[str, Any], event: OrderEvent) -> None:
        """Track the order in the outstanding table from acceptance until it is terminal."""
        order_id = state["order_id"]
        started = event["type"] == logic.ACCEPTED
        terminal = state["status"] in logic.TERMINAL
        attempt = int(event.get("attempt") or 1) if event["type"] == logic.RECONCILE else None
        if not book.moves(started=started, terminal=terminal, attempt=attempt):
            return  # most steps: the entry stays as it is, unread
        outstanding = unit.table("outstanding_orders")
        decision = book.follow(
            outstanding.get(order_id), kind="order", started=started, terminal=terminal,
            attempt=attempt, now_ms=now_ms(), deadline_s=settings.reconcile_deadline_s,
            backoff=settings.reconcile_backoff, accepted_at_ms=state.get("requested_at_ms"),
        )
        book.apply(outstanding, order_id, decision)

    def saga_step(unit: Unit, msg: Any) -> None:
        fold(unit, rt.decode("postroom.inbox", msg))

    def fold(unit: Unit, reported: OrderEvent) -> None:
        """Fold one reported event into its order, publish it on ``orders.events``, and take
        the order's next steps; the saga's own events are folded at once, the same way."""
        order_by_id = unit.table("order_by_id")
        order_id = reported["order_id"]
        state = order_by_id.get(order_id) or logic.new_state(order_id)
        now = now_ms()
        waited = logic.waited_ms(state, reported, now)
        if waited is not None:
            waits.note(waited, now)
        if reported["type"] in logic.MONEY_LANDED:
            fresh = logic.note_landed(state, reported)  # the saga's memory; SETTLED is public
        else:
            fresh = logic.apply_event(state, reported)
            if fresh:
                unit.send("orders.events", order_id, reported)
                count_terminal(reported)
        if not fresh:
            metrics.duplicates.labels("saga").inc()
        # A redelivered last event is decided again: after a crash the table may hold it
        # while its follow-up never reached Kafka (every receiver is idempotent).
        if fresh or state.get("last_reported_id") == reported["event_id"]:
            fresh = follow_up(unit, state, reported) or fresh
        if fresh:
            state["last_reported_id"] = reported["event_id"]
            order_by_id[order_id] = state
            keep_outstanding(unit, state, reported)

    def follow_up(unit: Unit, state: dict[str, Any], reported: OrderEvent) -> bool:
        """Take the steps ``reported`` makes due, folding the saga's own events into the
        order as they are published; return whether the order changed."""
        changed = False
        due = [reported]
        while due:
            event = due.pop(0)
            for action in logic.decide(state, event, now_ms(), settings.reconcile_max_attempts):
                kind, payload = action
                if kind == "emit":
                    own: OrderEvent = payload
                    unit.send("orders.events", own["order_id"], own)
                    if logic.apply_event(state, own):
                        count_terminal(own)
                        due.append(own)
                        changed = True
                else:
                    perform(unit, action)
                if kind not in state["sent"]:
                    state["sent"].append(kind)
                    changed = True
        return changed

    def count_terminal(event: OrderEvent) -> None:
        if event["type"] in logic.TERMINAL:
            metrics.orders_terminal.labels(event["type"]).inc()
            latency = (event["at_ms"] - (event.get("requested_at_ms") or 0)) / 1000
            metrics.order_latency.observe(max(latency, 0.0))

    # One agent for both: a request's decision is folded in the unit that makes it, so an
    # order's first step takes no hop of its own (the topics are co-partitioned).
    rt.agent(("orders.requests", "postroom.inbox"), "run_order_saga", order_step)

    def perform(unit: Unit, action: tuple[str, Any]) -> None:
        kind, payload = action
        at = now_ms()
        if kind == "dispatch":
            for line in payload:
                unit.send("postroom.lines", line["sku"], line)
        elif kind == "pay":
            debit = payments.order_debit(payload, rt.settings.merchant_account, at)
            unit.send("postroom.ledger", debit["account_id"], debit)
        elif kind == "settle":
            # The voucher records the request; the ledger moves the money and reports back.
            settle = payments.settle_request(payload, at)
            unit.send("postroom.vouchers", settle["voucher_id"], settle)
            voucher = payments.order_voucher(settle["voucher_id"], payload["account"],
                                             rt.settings.merchant_account)
            for command in payments.settle_commands(voucher, payload["credit"],
                                                    payload["refund"], settle["event_id"], at):
                unit.send("postroom.ledger", command["account_id"], command)
        elif kind == "voucher_retry":
            retry = payments.retry_event(payload["voucher_id"], payload["attempt"],
                                         payload["cause_id"], at)
            unit.send("postroom.vouchers", retry["voucher_id"], retry)
        elif kind == "release":
            for line_id, sku in payload:
                release = stock_release(line_id, sku, at)
                unit.send("postroom.batches", sku, release, kind=STOCK_COMMAND)
        else:  # pragma: no cover - logic.decide only returns the kinds above
            raise ValueError(f"unknown action {kind!r}")
