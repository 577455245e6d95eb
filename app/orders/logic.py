"""Pure order logic: validate a request, accept it, and fold events into an order.

No Faust import, no I/O; the clock is passed in as ``now_ms``.

The order is a projection of its events. ``apply_event`` adds one event to the set (a
duplicate changes nothing) and recomputes every derived field from the whole set, so events
may arrive in any order and any number of times. ``decide`` says what the saga must do next;
decisions are made from the events alone, and every receiver is idempotent.
"""

from __future__ import annotations

import bisect
import hashlib
import re
import uuid
from collections.abc import Callable, Mapping
from typing import Any

import orjson

from app.errors import InvalidEvent, InvalidRequest
from app.models import OrderEvent, OrderItem, OrderLine, OrderRequest

# Order statuses (DESIGN.md section 3).
ACCEPTED = "ACCEPTED"
PAID = "PAID"
DISPATCHED = "DISPATCHED"
COMPLETED = "COMPLETED"
PARTIALLY_FULFILLED = "PARTIALLY_FULFILLED"
REJECTED = "REJECTED"
CANCELLED = "CANCELLED"
FAILED = "FAILED"
TERMINAL = frozenset({COMPLETED, PARTIALLY_FULFILLED, REJECTED, CANCELLED, FAILED})

# Event types on orders.events that are not statuses.
LINE_RESULT = "LINE_RESULT"
LINE_RELEASED = "LINE_RELEASED"
PAYMENT_REJECTED = "PAYMENT_REJECTED"
SETTLING = "SETTLING"
SETTLED = "SETTLED"
CANCEL_REQUESTED = "CANCEL_REQUESTED"
CANCELLING = "CANCELLING"
CANCEL_REFUSED = "CANCEL_REFUSED"
RECONCILE = "RECONCILE"
FAILING = "FAILING"

# The ledger's reports that part of a settlement reached its account: the merchant was
# credited (REDEEMED) or the customer refunded (RETURNED). They come to the saga's inbox and
# stay in the saga's memory (``state["landed"]``); the saga publishes SETTLED once every
# part has landed, so they never appear on orders.events themselves.
REDEEMED = "REDEEMED"
RETURNED = "RETURNED"
MONEY_LANDED = frozenset({REDEEMED, RETURNED})

# The reports an order's saga waits for from the other agents: how long one took to come
# (see ``waited_ms``) tells how far behind they are.
AWAITED = frozenset({PAID, PAYMENT_REJECTED, LINE_RESULT, REDEEMED, RETURNED})

# Line statuses.
LINE_PENDING = "PENDING"
LINE_FULFILLED = "FULFILLED"
LINE_PARTIAL = "PARTIAL"
LINE_UNFULFILLED = "UNFULFILLED"
LINE_RELEASED_STATUS = "RELEASED"

ID_NAMESPACE = uuid.UUID("5f0c1d2e-8a4b-4c3d-9e6f-706f7374726f")  # fixed: ids stay stable

_ORDER_KEYS = frozenset({"customer_id", "account_id", "items"})
_REQUEST_KEYS = _ORDER_KEYS | {"order_id", "idempotency_key", "body_hash", "received_at_ms"}
MAX_ID_LEN = 200
SKU_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")


def check_sku(sku: object) -> str | None:
    """Why ``sku`` is not a valid sku, or None."""
    if not isinstance(sku, str) or not SKU_PATTERN.fullmatch(sku):
        return "must be 1-64 of letters, digits, '.', '_' or '-'"
    return None


def _text(body: Mapping[str, Any], key: str, errors: dict[str, str], required: bool) -> str | None:
    value = body.get(key)
    if value is None:
        if required:
            errors[key] = "required"
        return None
    if not isinstance(value, str) or not value.strip():
        errors[key] = "must be a non-empty string"
        return None
    if len(value) > MAX_ID_LEN:
        errors[key] = f"must be at most {MAX_ID_LEN} characters"
        return None
    return value


def validate_order(body: Any, *, max_items: int, allow: frozenset[str] = _ORDER_KEYS) -> OrderRequest:
    """Check a ``POST /orders`` body (or a request message); raise ``InvalidRequest``."""
    if not isinstance(body, dict):
        raise InvalidRequest("the body must be a JSON object", {"body": "not an object"})
    errors: dict[str, str] = {}
    unknown = sorted(set(body) - allow)
    for key in unknown:
        errors[key] = "unknown field"
    customer_id = _text(body, "customer_id", errors, required=True)
    account_id = _text(body, "account_id", errors, required=False)
    items_raw = body.get("items")
    items: list[OrderItem] = []
    if not isinstance(items_raw, list) or not items_raw:
        errors["items"] = "must be a non-empty list"
    elif len(items_raw) > max_items:
        errors["items"] = f"at most {max_items} items"
    else:
        for i, item in enumerate(items_raw):
            if not isinstance(item, dict):
                errors[f"items[{i}]"] = "must be an object"
                continue
            extra = sorted(set(item) - {"sku", "quantity"})
            if extra:
                errors[f"items[{i}].{extra[0]}"] = "unknown field"
            sku = _text(item, "sku", errors, required=True)
            if sku is not None and check_sku(sku):
                errors[f"items[{i}].sku"] = str(check_sku(sku))
                sku = None
            qty = item.get("quantity")
            if isinstance(qty, bool) or not isinstance(qty, int) or not 0 < qty <= 1_000_000:
                errors[f"items[{i}].quantity"] = "must be an integer from 1 to 1000000"
                continue
            if sku is not None:
                items.append({"sku": sku, "quantity": qty})
    if errors:
        first = next(iter(errors))
        raise InvalidRequest(f"invalid order: {first} {errors[first]}", errors)
    assert customer_id is not None
    return {"order_id": "", "customer_id": customer_id, "account_id": account_id, "items": items}


def validate_request_message(body: Any, *, max_items: int) -> OrderRequest:
    """Validate an ``orders.requests`` message (the body plus ``order_id``)."""
    try:
        request = validate_order(body, max_items=max_items, allow=_REQUEST_KEYS)
        errors: dict[str, str] = {}
        order_id = _text(body, "order_id", errors, required=True)
        if errors or order_id is None:
            raise InvalidRequest("invalid order: order_id " + errors.get("order_id", ""), errors)
    except InvalidRequest as exc:
        raise InvalidEvent(f"{exc.message} {exc.fields}", code="invalid_request") from exc
    request["order_id"] = order_id
    for key in ("idempotency_key", "body_hash"):
        value = body.get(key)
        if value is not None and not isinstance(value, str):
            raise InvalidEvent(f"{key} must be a string", code="invalid_request")
        request[key] = value  # type: ignore[literal-required]
    received = body.get("received_at_ms")
    if received is not None and (isinstance(received, bool) or not isinstance(received, int)):
        raise InvalidEvent("received_at_ms must be an integer", code="invalid_request")
    request["received_at_ms"] = received
    return request


def body_hash(request: OrderRequest) -> str:
    """A fingerprint of what was ordered, to tell a retry from a different order."""
    canonical = {
        "customer_id": request["customer_id"],
        "account_id": request.get("account_id"),
        "items": [[i["sku"], i["quantity"]] for i in request["items"]],
    }
    return hashlib.sha256(orjson.dumps(canonical)).hexdigest()[:32]


def new_order_id(customer_id: str, idempotency_key: str | None) -> str:
    """A fresh id, or the same id every time for one customer's Idempotency-Key."""
    if idempotency_key:
        return str(uuid.uuid5(ID_NAMESPACE, f"{customer_id}\x00{idempotency_key}"))
    return str(uuid.uuid4())


def line_id(order_id: str, sku: str) -> str:
    return f"{order_id}/{sku}"


def event_id(order_id: str, kind: str, detail: str = "") -> str:
    return f"{order_id}:{kind}:{detail}" if detail else f"{order_id}:{kind}"


def accept(
    request: OrderRequest, price_of: Callable[[str], int | None], now_ms: int
) -> OrderEvent:
    """Decide ACCEPTED (with priced lines, one per sku) or REJECTED for a request."""
    order_id = request["order_id"]
    quantities: dict[str, int] = {}
    for item in request["items"]:
        quantities[item["sku"]] = quantities.get(item["sku"], 0) + item["quantity"]
    base: OrderEvent = {
        "order_id": order_id,
        "at_ms": now_ms,
        "cause_id": order_id,
        "customer_id": request["customer_id"],
        "account_id": request.get("account_id"),
        "requested_at_ms": request.get("received_at_ms") or now_ms,
    }
    prices = {sku: price_of(sku) for sku in quantities}  # one read per sku
    unknown = [sku for sku, price in prices.items() if price is None]
    if unknown:
        return {
            **base,
            "event_id": event_id(order_id, REJECTED),
            "type": REJECTED,
            "reason": "unknown sku: " + ", ".join(sorted(unknown)),
        }
    lines: list[OrderLine] = []
    for sku, qty in quantities.items():
        price = prices[sku]
        assert price is not None
        lines.append(
            {
                "line_id": line_id(order_id, sku),
                "order_id": order_id,
                "sku": sku,
                "quantity": qty,
                "unit_price": price,
                "attempt": 0,
                "sent_at_ms": now_ms,
            }
        )
    return {
        **base,
        "event_id": event_id(order_id, ACCEPTED),
        "type": ACCEPTED,
        "amount": sum(line["quantity"] * line["unit_price"] for line in lines),
        "lines": lines,
    }


# --- the order projection --------------------------------------------------------------


def new_state(order_id: str) -> dict[str, Any]:
    return {"order_id": order_id, "events": [], "sent": []}


def waited_ms(state: Mapping[str, Any], reported: OrderEvent, now_ms: int) -> int | None:
    """How long the order waited for ``reported``: a new order's acceptance since it was
    requested, or one of the steps its saga waits for since its newest event. None for
    anything else: a customer's cancel, the reconciler's redo, a report after the end, or
    any step of an order that was ever redone (its waits are the fault's, not the queue's).
    """
    events = state["events"]
    kind = reported["type"]
    since: Any = None
    if kind == ACCEPTED:
        since = None if events else reported.get("requested_at_ms")
    elif (kind in AWAITED and events and state["status"] not in TERMINAL
          and RECONCILE not in state["types"]):
        since = events[-1]["at_ms"]
    return None if since is None else now_ms - int(since)


def note_landed(state: dict[str, Any], report: OrderEvent) -> bool:
    """Remember that a part of the settlement landed; return False if it was known."""
    landed = state.setdefault("landed", [])
    if report["type"] in landed:
        return False
    landed.append(report["type"])
    return True


def _settlement(state: Mapping[str, Any]) -> tuple[int, int, int, int]:
    """The requested settlement's credit and refund, and what of each has not landed."""
    settling = next(e for e in state["events"] if e["type"] == SETTLING)
    credit, refund = int(settling.get("amount") or 0), int(settling.get("refunded") or 0)
    landed = state.get("landed") or ()
    return (credit, refund, 0 if REDEEMED in landed else credit,
            0 if RETURNED in landed else refund)


def _settled_if_due(state: Mapping[str, Any], cause: str, now_ms: int) -> OrderEvent | None:
    """``SETTLED`` once every part of the requested settlement has landed."""
    types = set(state["types"])
    if SETTLING not in types or SETTLED in types:
        return None
    credit, refund, unlanded_credit, unlanded_refund = _settlement(state)
    if unlanded_credit or unlanded_refund:
        return None
    return _event(state, SETTLED, cause, now_ms, amount=credit, refunded=refund)


def _summary(event: OrderEvent) -> dict[str, Any]:
    """What the order keeps of an event in its history (no nested lines)."""
    return {k: v for k, v in event.items() if v is not None and k != "lines"}


def _history_key(event: Mapping[str, Any]) -> tuple[int, str]:
    return event["at_ms"], event["event_id"]


def apply_event(state: dict[str, Any], event: OrderEvent) -> bool:
    """Add ``event`` to the order; return False if it was already there."""
    events = state["events"]
    event_id = event["event_id"]
    for seen in events:
        if seen["event_id"] == event_id:
            return False
    summary = _summary(event)
    if event.get("lines"):
        summary["lines"] = [
            {"line_id": line["line_id"], "sku": line["sku"], "quantity": line["quantity"],
             "unit_price": line["unit_price"]}
            for line in event["lines"] or []
        ]
    # The history stays sorted by time, then id; an event usually comes after the last.
    if events and _history_key(events[-1]) > _history_key(summary):
        bisect.insort(events, summary, key=_history_key)
    else:
        events.append(summary)
    state["last_event_id"] = event_id
    derive(state)
    return True


def derive(state: dict[str, Any]) -> None:
    """Recompute status, lines and amounts from the set of events alone."""
    events = state["events"]
    by_type: dict[str, dict[str, Any]] = {}
    results: dict[str, dict[str, Any]] = {}
    released: dict[str, dict[str, Any]] = {}
    for e in events:
        kind = e["type"]
        if kind == LINE_RESULT:
            results[e["line_id"]] = e
        elif kind == LINE_RELEASED:
            released[e["line_id"]] = e
        elif kind not in by_type:
            by_type[kind] = e
    accepted = by_type.get(ACCEPTED)
    first = accepted or (events[0] if events else {})
    state["customer_id"] = first.get("customer_id")
    state["account_id"] = first.get("account_id")
    state["requested_at_ms"] = first.get("requested_at_ms")
    lines: dict[str, dict[str, Any]] = {}
    for line in accepted.get("lines", ()) if accepted else ():
        lid = line["line_id"]
        result = results.get(lid)
        quantity = line["quantity"]
        if lid in released:
            fulfilled, status = 0, LINE_RELEASED_STATUS
        elif result:
            fulfilled = int(result["fulfilled"])
            status = line_status(quantity, fulfilled)
        else:
            fulfilled, status = 0, LINE_PENDING
        lines[lid] = {
            "sku": line["sku"],
            "quantity": quantity,
            "unit_price": line["unit_price"],
            "fulfilled": fulfilled,
            "status": status,
            "reported": result is not None,
            "released": lid in released,
        }
    state["lines"] = lines
    state["types"] = sorted(by_type)
    state["amount"] = accepted.get("amount", 0) if accepted else 0
    state["fulfilled_amount"] = sum(
        line["fulfilled"] * line["unit_price"] for line in lines.values()
    )
    settled = by_type.get(SETTLED)
    state["charged"] = settled.get("amount", 0) if settled else 0
    state["refunded"] = settled.get("refunded", 0) if settled else 0
    state["status"] = status_of(by_type)


def line_status(quantity: int, fulfilled: int) -> str:
    if fulfilled >= quantity:
        return LINE_FULFILLED
    return LINE_PARTIAL if fulfilled > 0 else LINE_UNFULFILLED


def status_of(by_type: Mapping[str, Any]) -> str:
    """The order's status, whatever order its events came in."""
    for terminal in (REJECTED, CANCELLED, FAILED, COMPLETED, PARTIALLY_FULFILLED):
        if terminal in by_type:
            return terminal
    if DISPATCHED in by_type:
        return DISPATCHED
    if PAID in by_type:
        return PAID
    return ACCEPTED


def all_reported(state: Mapping[str, Any]) -> bool:
    lines = state.get("lines") or {}
    return bool(lines) and all(line["reported"] for line in lines.values())


def all_released(state: Mapping[str, Any]) -> bool:
    return all(line["released"] for line in (state.get("lines") or {}).values())


def payment_account(state: Mapping[str, Any]) -> str:
    """The account an order is paid from: its ``account_id``, else the customer's own."""
    return str(state.get("account_id") or state.get("customer_id"))


def voucher_id(order_id: str) -> str:
    return f"order:{order_id}"


def _event(state: Mapping[str, Any], kind: str, cause_id: str, now_ms: int,
           **fields: Any) -> OrderEvent:
    order_id = state["order_id"]
    event: OrderEvent = {
        "event_id": event_id(order_id, kind),
        "type": kind,
        "order_id": order_id,
        "at_ms": now_ms,
        "cause_id": cause_id,
    }
    event.update({k: v for k, v in fields.items() if v is not None})  # type: ignore[typeddict-item]
    return event


def terminal(state: Mapping[str, Any], kind: str, cause_id: str, now_ms: int,
             reason: str | None = None) -> OrderEvent:
    """The one terminal event of an order (its id is the same whichever it is)."""
    event = _event(state, kind, cause_id, now_ms, amount=state.get("charged", 0),
                   refunded=state.get("refunded", 0), reason=reason,
                   requested_at_ms=state.get("requested_at_ms"))
    event["event_id"] = event_id(state["order_id"], "TERMINAL")
    return event


def outcome(state: Mapping[str, Any]) -> tuple[str, str | None]:
    """How an order ends once its lines have all reported (and it was not cancelled)."""
    lines = state["lines"].values()
    if all(line["status"] == LINE_FULFILLED for line in lines):
        return COMPLETED, None
    if any(line["fulfilled"] > 0 for line in lines):
        return PARTIALLY_FULFILLED, "some lines could not be fulfilled"
    return REJECTED, "out of stock"


def pending_lines(state: Mapping[str, Any], now_ms: int, attempt: int = 0) -> list[OrderLine]:
    """The lines of an order that have not reported, ready to (re)dispatch."""
    order_id = state["order_id"]
    return [
        {
            "line_id": lid,
            "order_id": order_id,
            "sku": line["sku"],
            "quantity": line["quantity"],
            "unit_price": line["unit_price"],
            "attempt": attempt,
            "sent_at_ms": now_ms,
        }
        for lid, line in state["lines"].items()
        if not line["reported"]
    ]


def decide(state: Mapping[str, Any], event: OrderEvent, now_ms: int,
           max_attempts: int = 3) -> list[tuple[str, Any]]:
    """The saga's next steps after ``event``: a list of ``(kind, payload)`` actions.

    Kinds: ``emit`` (an order event), ``dispatch`` (lines), ``pay`` (a ledger debit),
    ``settle`` (the ledger's credit and refund from the order's voucher; the ledger reports
    each back, see ``note_landed``), ``release`` (stock of lines),
    ``voucher_retry`` (ask the voucher to redo its missing step).
    Steps are triggered by the event that makes them due, so each is taken once; a redone
    step is harmless because every receiver is idempotent. ``state["sent"]`` lists the kinds
    of step already taken for this order (the saga's memory, not part of the projection).

    Cancellation and giving up (``FAILING``, after ``max_attempts`` re-dispatches) are the
    same compensation: release whatever was dispatched, then refund everything paid.
    """
    kind = event["type"]
    types = set(state["types"])
    cause = event["event_id"]
    actions: list[tuple[str, Any]] = []
    if ACCEPTED not in types:
        return actions
    if kind in MONEY_LANDED or kind == SETTLING:
        settled = _settled_if_due(state, cause, now_ms)
        if settled is not None:
            actions.append(("emit", settled))
    status = state["status"]
    if kind == PAID and status in (CANCELLED, FAILED) and SETTLING not in types:
        # The payment landed after the order gave up: the money goes straight back.
        return _settle(state, 0, cause, now_ms)
    if status in TERMINAL:
        return actions
    cancelling = CANCELLING in types
    failing = FAILING in types
    compensating = cancelling or failing
    dispatched = DISPATCHED in types or "dispatch" in state.get("sent", ())
    if kind == ACCEPTED:
        actions.append(("pay", _pay(state, cause)))
    elif kind == PAYMENT_REJECTED:
        reason = event.get("reason") or "payment rejected"
        final = FAILED if failing else CANCELLED if cancelling else REJECTED
        actions.append(("emit", terminal(state, final, cause, now_ms, reason)))
    elif kind == PAID and not compensating:
        actions.append(("dispatch", pending_lines(state, now_ms)))
        actions.append(("emit", _event(state, DISPATCHED, cause, now_ms)))
    elif kind == CANCEL_REQUESTED and not types & {CANCELLING, CANCEL_REFUSED, FAILING}:
        if all_reported(state):
            actions.append(("emit", _event(state, CANCEL_REFUSED, cause, now_ms,
                                           reason="every line was already fulfilled")))
        else:
            actions.append(("emit", _event(state, CANCELLING, cause, now_ms)))
    elif kind == RECONCILE:
        actions.extend(_reconcile(state, event, now_ms, max_attempts, dispatched))
    if kind == LINE_RESULT and all_reported(state) and not compensating and PAID in types:
        actions.extend(_settle(state, state["fulfilled_amount"], cause, now_ms))
    if compensating and kind in (CANCELLING, FAILING) and dispatched:
        lines = [lid for lid, line in state["lines"].items() if not line["released"]]
        if lines:
            actions.append(("release", [(lid, state["lines"][lid]["sku"]) for lid in lines]))
    if compensating and PAID in types and SETTLING not in types:
        released = not dispatched or all_released(state)
        if kind in (CANCELLING, FAILING, PAID, LINE_RELEASED) and released:
            actions.extend(_settle(state, 0, cause, now_ms))
    if kind == FAILING and not types & {PAID, PAYMENT_REJECTED}:
        # Never paid (as far as anyone knows): fail now; a late payment is refunded.
        actions.append(("emit", terminal(state, FAILED, cause, now_ms, event.get("reason"))))
    if kind == SETTLED:
        actions.append(("emit", _final(state, cause, now_ms)))
    return actions


def _final(state: Mapping[str, Any], cause: str, now_ms: int) -> OrderEvent:
    types = set(state["types"])
    if FAILING in types:
        failing = next(e for e in state["events"] if e["type"] == FAILING)
        return terminal(state, FAILED, cause, now_ms, failing.get("reason"))
    if CANCELLING in types:
        return terminal(state, CANCELLED, cause, now_ms, "cancelled by the customer")
    final, why = outcome(state)
    return terminal(state, final, cause, now_ms, why)


def _pay(state: Mapping[str, Any], cause: str) -> dict[str, Any]:
    return {"account": payment_account(state), "amount": state["amount"],
            "voucher_id": voucher_id(state["order_id"]), "cause_id": cause}


def _reconcile(state: Mapping[str, Any], event: OrderEvent, now_ms: int, max_attempts: int,
               dispatched: bool) -> list[tuple[str, Any]]:
    """Redo whatever stage of an overdue order has not been heard back from."""
    types = set(state["types"])
    cause = event["event_id"]
    attempt = int(event.get("attempt") or 1)  # type: ignore[call-overload]
    compensating = bool(types & {CANCELLING, FAILING})
    vid = voucher_id(state["order_id"])
    if attempt > max_attempts and FAILING not in types:
        reason = f"gave up after {max_attempts} attempts at stage {state['status']}"
        return [("emit", _event(state, FAILING, cause, now_ms, reason=reason))]
    actions: list[tuple[str, Any]] = []
    if not types & {PAID, PAYMENT_REJECTED}:
        actions.append(("pay", _pay(state, cause)))
        actions.append(("voucher_retry", {"voucher_id": vid, "attempt": attempt, "cause_id": cause}))
    elif compensating:
        if dispatched:
            lines = [lid for lid, line in state["lines"].items() if not line["released"]]
            if lines:
                actions.append(("release", [(lid, state["lines"][lid]["sku"]) for lid in lines]))
        released = not dispatched or all_released(state)
        if PAID in types and released and SETTLING not in types:
            actions.extend(_settle(state, 0, cause, now_ms))
    elif PAID in types and not all_reported(state):
        actions.append(("dispatch", pending_lines(state, now_ms, attempt)))
        if DISPATCHED not in types:
            actions.append(("emit", _event(state, DISPATCHED, cause, now_ms)))
    elif PAID in types and SETTLING not in types:
        actions.extend(_settle(state, state["fulfilled_amount"], cause, now_ms))
    if SETTLING in types and SETTLED not in types:
        # Ask the ledger again for what has not landed (it answers a command it has seen
        # with its recorded outcome).
        _, _, credit, refund = _settlement(state)
        actions.append(("settle", _settle_order(state, credit, refund, cause)))
    if SETTLED in types:
        actions.append(("emit", _final(state, cause, now_ms)))
    return actions


def reconcile_event(order_id: str, attempt: int, now_ms: int) -> OrderEvent:
    """What the reconciler appends for an overdue order (one id per attempt)."""
    return {
        "event_id": event_id(order_id, RECONCILE, str(attempt)),
        "type": RECONCILE,
        "order_id": order_id,
        "at_ms": now_ms,
        "cause_id": "reconciler",
        "attempt": attempt,
    }


def stage(state: Mapping[str, Any]) -> str:
    """The stage an order is in, for the outstanding-requests table."""
    types = set(state["types"])
    for marker in (FAILING, CANCELLING, SETTLED, SETTLING):
        if marker in types:
            return marker
    return str(state["status"])


def _settle(state: Mapping[str, Any], credit: int, cause: str, now_ms: int
            ) -> list[tuple[str, Any]]:
    refund = int(state["amount"]) - credit
    return [
        ("settle", _settle_order(state, credit, refund, cause)),
        ("emit", _event(state, SETTLING, cause, now_ms, amount=credit, refunded=refund)),
    ]


def _settle_order(state: Mapping[str, Any], credit: int, refund: int, cause: str
                  ) -> dict[str, Any]:
    """The ``settle`` action: credit the merchant, refund the payer, from the voucher."""
    return {"voucher_id": voucher_id(state["order_id"]), "account": payment_account(state),
            "credit": credit, "refund": refund, "cause_id": cause}


def cancellable(state: Mapping[str, Any] | None) -> bool:
    """Whether ``DELETE /orders/{id}`` may still ask to cancel (not terminal, not fulfilled)."""
    if state is None:
        return True
    return state.get("status") not in TERMINAL and not all_reported(state)


def public_view(state: Mapping[str, Any]) -> dict[str, Any]:
    """The ``GET /orders/{order_id}`` answer."""
    return {
        "order_id": state["order_id"],
        "status": state.get("status", ACCEPTED),
        "customer_id": state.get("customer_id"),
        "account_id": state.get("account_id"),
        "items": [
            {
                "sku": line["sku"],
                "quantity": line["quantity"],
                "fulfilled": line["fulfilled"],
                "status": line["status"],
            }
            for line in (state.get("lines") or {}).values()
        ],
        "amount": state.get("amount", 0),
        "fulfilled_amount": state.get("fulfilled_amount", 0),
        "charged": state.get("charged", 0),
        "refunded": state.get("refunded", 0),
        "events": state.get("events", []),
    }
