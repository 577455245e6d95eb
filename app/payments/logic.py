"""Pure payment logic: account balances, and the voucher that carries money between accounts.

No Faust import, no I/O; the clock is passed in.

Money moves without two-phase commit. The payer's ledger partition debits the payer and
records a voucher (``ISSUED``); the voucher travels through Kafka; the payee's partition
credits it (``REDEEMED``) or refuses (``CREDIT_FAILED``), and a refused voucher goes back to
the payer (``RETURNED``), a compensating transaction. Every ledger command carries a
deterministic id and its outcome is recorded, so a redelivered or repeated command changes
nothing and reports the same outcome again.

::

    transfer:  REQUESTED -> ISSUED -> REDEEMED                      COMPLETED
                         -> DEBIT_REJECTED                          REJECTED
                         -> ISSUED -> CREDIT_FAILED -> RETURNED     COMPENSATED
    order:     ISSUED (paid) -> SETTLE_REQUESTED(credit, refund) -> REDEEMED + RETURNED

An order's voucher is driven by the order's saga, which sends the debit and the settlement's
credit and refund itself; the ledger reports each outcome both to the voucher (which keeps
the money in flight) and straight to the order's saga (:func:`order_report`), one hop instead
of two. The voucher saga redoes an order's steps only when the reconciler asks it to.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, TypedDict

OPEN, FROZEN, CLOSED = "OPEN", "FROZEN", "CLOSED"
ACCOUNT_STATUSES = (OPEN, FROZEN, CLOSED)

DEPOSIT, DEBIT, CREDIT, REFUND, SET_STATUS = "DEPOSIT", "DEBIT", "CREDIT", "REFUND", "SET_STATUS"

REQUESTED = "REQUESTED"
ISSUED = "ISSUED"
DEBIT_REJECTED = "DEBIT_REJECTED"
REDEEMED = "REDEEMED"
CREDIT_FAILED = "CREDIT_FAILED"
RETURNED = "RETURNED"
SETTLE_REQUESTED = "SETTLE_REQUESTED"
RETRY = "RETRY"

TRANSFER, ORDER = "transfer", "order"

# Transfer statuses (DESIGN.md section 3).
T_PENDING, T_DEBITED, T_COMPLETED = "PENDING", "DEBITED", "COMPLETED"
T_REJECTED, T_COMPENSATED = "REJECTED", "COMPENSATED"


class LedgerCommand(TypedDict, total=False):
    command_id: str
    kind: str
    account_id: str
    amount: int
    voucher_id: str | None
    purpose: str | None
    counterparty: str | None
    ref: str | None
    status: str | None
    cause_id: str
    at_ms: int


class VoucherEvent(TypedDict, total=False):
    event_id: str
    type: str
    voucher_id: str
    at_ms: int
    cause_id: str
    purpose: str | None
    payer: str | None
    payee: str | None
    amount: int | None
    credit: int | None
    refund: int | None
    ref: str | None
    reason: str | None
    attempt: int | None


COMMAND_PREFIX = "cmd:"  # starts the key of a command's record in the account table


def command_key(command_id: str) -> str:
    """Key of a command's recorded outcome in the account table (beside the account keys)."""
    return f"{COMMAND_PREFIX}{command_id}"


def new_account(account_id: str) -> dict[str, Any]:
    return {"account_id": account_id, "balance": 0, "deposited": 0, "status": OPEN, "known": False}


def voucher_event(cmd: LedgerCommand, kind: str, now_ms: int, **fields: Any) -> VoucherEvent:
    voucher_id = cmd.get("voucher_id") or ""
    event: VoucherEvent = {
        "event_id": f"{voucher_id}:{kind}",
        "type": kind,
        "voucher_id": voucher_id,
        "at_ms": now_ms,
        "cause_id": cmd["command_id"],
        "purpose": cmd.get("purpose"),
        "amount": cmd["amount"],
        "ref": cmd.get("ref"),
    }
    event.update(fields)  # type: ignore[typeddict-item]
    return event


def apply_command(
    account: Mapping[str, Any], cmd: LedgerCommand, now_ms: int
) -> tuple[dict[str, Any], VoucherEvent | None]:
    """Apply one command to one account; return the new account and the voucher event.

    Never lets a balance go negative. A refund always lands (the money is the payer's);
    a credit to a frozen or closed account fails, and a debit from one is rejected.
    """
    acc = dict(account)
    acc["known"] = True
    kind, amount = cmd["kind"], int(cmd.get("amount") or 0)
    if kind == DEPOSIT:
        acc["balance"] += amount
        acc["deposited"] += amount
        return acc, None
    if kind == SET_STATUS:
        acc["status"] = cmd.get("status") or OPEN
        return acc, None
    if kind == DEBIT:
        if acc["status"] != OPEN:
            return acc, voucher_event(cmd, DEBIT_REJECTED, now_ms, payer=acc["account_id"],
                                      payee=cmd.get("counterparty"),
                                      reason=f"account {acc['status'].lower()}")
        if acc["balance"] < amount:
            return acc, voucher_event(cmd, DEBIT_REJECTED, now_ms, payer=acc["account_id"],
                                      payee=cmd.get("counterparty"), reason="insufficient funds")
        acc["balance"] -= amount
        return acc, voucher_event(cmd, ISSUED, now_ms, payer=acc["account_id"],
                                  payee=cmd.get("counterparty"))
    if kind == CREDIT:
        if acc["status"] != OPEN:
            return acc, voucher_event(cmd, CREDIT_FAILED, now_ms, payee=acc["account_id"],
                                      reason=f"account {acc['status'].lower()}")
        acc["balance"] += amount
        return acc, voucher_event(cmd, REDEEMED, now_ms, payee=acc["account_id"])
    if kind == REFUND:
        acc["balance"] += amount
        return acc, voucher_event(cmd, RETURNED, now_ms, payer=acc["account_id"])
    raise ValueError(f"unknown ledger command {kind!r}")


def with_last_command(account: Mapping[str, Any], command_id: str,
                      outcome: VoucherEvent | None) -> dict[str, Any]:
    """The account record carrying the command that changed it (crash-safe idempotency)."""
    return {**account, "last_command": {"id": command_id, "outcome": outcome}}


def recorded_outcome(
    account: Mapping[str, Any], command_id: str, record: Mapping[str, Any] | None
) -> tuple[bool, VoucherEvent | None]:
    """Whether ``command_id`` was applied already, and what it produced."""
    if record is not None:
        return True, record.get("outcome")
    last = account.get("last_command") or {}
    if last.get("id") == command_id:
        return True, last.get("outcome")
    return False, None


def public_account(account: Mapping[str, Any]) -> dict[str, Any]:
    return {
        "account_id": account["account_id"],
        "balance": account["balance"],
        "status": account["status"],
    }


# --- vouchers ---------------------------------------------------------------------------


def new_voucher(voucher_id: str) -> dict[str, Any]:
    return {"voucher_id": voucher_id, "events": []}


def apply_voucher_event(state: dict[str, Any], event: VoucherEvent) -> bool:
    """Add an event to a voucher (idempotent) and recompute it; False if already there."""
    if any(e["event_id"] == event["event_id"] for e in state["events"]):
        return False
    state["events"].append({k: v for k, v in event.items() if v is not None})
    state["events"].sort(key=lambda e: (e["at_ms"], e["event_id"]))
    derive_voucher(state)
    return True


def derive_voucher(state: dict[str, Any]) -> None:
    by_type: dict[str, dict[str, Any]] = {}
    for e in state["events"]:
        by_type.setdefault(e["type"], e)
    state["by_type"] = sorted(by_type)
    first = by_type.get(REQUESTED) or by_type.get(ISSUED) or by_type.get(DEBIT_REJECTED) or {}
    for key in ("purpose", "payer", "payee", "ref"):
        state[key] = next((e[key] for e in state["events"] if e.get(key)), None)
    state["amount"] = int(first.get("amount") or 0)
    issued = int(by_type[ISSUED]["amount"]) if ISSUED in by_type else 0
    redeemed = int(by_type[REDEEMED]["amount"]) if REDEEMED in by_type else 0
    returned = int(by_type[RETURNED]["amount"]) if RETURNED in by_type else 0
    state["held"] = issued - redeemed - returned
    state["redeemed"] = redeemed
    state["returned"] = returned
    state["status"] = voucher_status(by_type)


def voucher_status(by_type: Mapping[str, Any]) -> str:
    if DEBIT_REJECTED in by_type:
        return T_REJECTED
    if CREDIT_FAILED in by_type:
        return T_COMPENSATED if RETURNED in by_type else T_DEBITED
    if SETTLE_REQUESTED in by_type:
        settle = by_type[SETTLE_REQUESTED]
        done = (not settle.get("credit") or REDEEMED in by_type) and (
            not settle.get("refund") or RETURNED in by_type
        )
        return T_COMPLETED if done else T_DEBITED
    if REDEEMED in by_type:
        return T_COMPLETED
    if ISSUED in by_type:
        return T_DEBITED
    return T_PENDING


def ledger_command(kind: str, account: str, amount: int, voucher: Mapping[str, Any],
                   cause_id: str, now_ms: int, step: str = "") -> LedgerCommand:
    voucher_id = voucher["voucher_id"]
    return {
        "command_id": f"{voucher_id}:{step or kind.lower()}",
        "kind": kind,
        "account_id": account,
        "amount": amount,
        "voucher_id": voucher_id,
        "purpose": voucher.get("purpose"),
        "counterparty": voucher.get("payee") if kind == DEBIT else voucher.get("payer"),
        "ref": voucher.get("ref"),
        "status": None,
        "cause_id": cause_id,
        "at_ms": now_ms,
    }


TRANSFER_TERMINAL = frozenset({T_COMPLETED, T_REJECTED, T_COMPENSATED})


def retry_event(voucher_id: str, attempt: int, cause_id: str, now_ms: int) -> VoucherEvent:
    """Ask a voucher to redo whichever step it has not heard back from."""
    return {"event_id": f"{voucher_id}:{RETRY}:{attempt}", "type": RETRY,
            "voucher_id": voucher_id, "at_ms": now_ms, "cause_id": cause_id, "attempt": attempt}


def decide_retry(state: Mapping[str, Any], event: VoucherEvent, now_ms: int
                 ) -> list[tuple[str, Any]]:
    """Redo the voucher's pending step with the same ids (every receiver is idempotent)."""
    have = set(state["by_type"])
    out: list[tuple[str, Any]] = []
    for step in (REQUESTED, ISSUED, DEBIT_REJECTED, CREDIT_FAILED, SETTLE_REQUESTED):
        if step in have:
            original = next(e for e in state["events"] if e["type"] == step)
            out.extend(decide_voucher(state, original, now_ms, cause=event["event_id"],  # type: ignore[arg-type]
                                      redo=True))
    return out


def decide_voucher(state: Mapping[str, Any], event: VoucherEvent, now_ms: int,
                   cause: str = "", redo: bool = False) -> list[tuple[str, Any]]:
    """The next step after ``event``: ``("ledger", command)`` or ``("order", order_event)``.

    An order's own steps (its payment's outcome, the settlement's credit and refund, and
    ``SETTLED``) are taken by the order's saga and reported to it by the ledger, so they are
    taken here only when ``redo`` (a ``RETRY``) asks for them again.
    """
    kind = event["type"]
    if kind == RETRY:
        return decide_retry(state, event, now_ms)
    have = set(state["by_type"])
    cause = cause or event["event_id"]
    purpose = state.get("purpose")
    out: list[tuple[str, Any]] = []
    if kind == REQUESTED and not have & {ISSUED, DEBIT_REJECTED}:
        out.append(("ledger", ledger_command(DEBIT, state["payer"], state["amount"], state,
                                             cause, now_ms)))
    elif kind == ISSUED and purpose == TRANSFER and not have & {REDEEMED, CREDIT_FAILED}:
        out.append(("ledger", ledger_command(CREDIT, state["payee"], state["amount"], state,
                                             cause, now_ms)))
    elif kind == ISSUED and purpose == ORDER and redo:
        out.append(("order", order_payment_event(state, "PAID", cause, now_ms)))
    elif kind == DEBIT_REJECTED and purpose == ORDER and redo:
        out.append(("order", order_payment_event(state, "PAYMENT_REJECTED", cause, now_ms,
                                                 reason=event.get("reason"))))
    elif kind == CREDIT_FAILED and RETURNED not in have:
        out.append(("ledger", ledger_command(REFUND, state["payer"], state["amount"], state,
                                             cause, now_ms)))
    elif kind == SETTLE_REQUESTED and redo:
        credit, refund = int(event.get("credit") or 0), int(event.get("refund") or 0)
        out.extend(("ledger", command) for command in settle_commands(
            state, credit if REDEEMED not in have else 0, refund if RETURNED not in have else 0,
            cause, now_ms))
        if (not credit or REDEEMED in have) and (not refund or RETURNED in have):
            out.append(("order", order_payment_event(state, "SETTLED", cause, now_ms,
                                                     amount=credit, refunded=refund)))
    return out


def settle_commands(voucher: Mapping[str, Any], credit: int, refund: int, cause_id: str,
                    now_ms: int) -> list[LedgerCommand]:
    """The ledger commands that settle an order's voucher: credit the payee what was
    fulfilled, refund the payer the rest (none for a zero amount)."""
    out: list[LedgerCommand] = []
    if credit:
        out.append(ledger_command(CREDIT, voucher["payee"], credit, voucher, cause_id, now_ms))
    if refund:
        out.append(ledger_command(REFUND, voucher["payer"], refund, voucher, cause_id, now_ms))
    return out


# What the ledger reports to an order's saga, by the voucher event it produced.
_ORDER_REPORTS = {ISSUED: "PAID", DEBIT_REJECTED: "PAYMENT_REJECTED",
                  REDEEMED: REDEEMED, RETURNED: RETURNED}


def order_report(outcome: VoucherEvent) -> dict[str, Any] | None:
    """The report the ledger sends straight to an order's saga for a command's outcome on
    the order's voucher (``None`` for a transfer): ``PAID`` or ``PAYMENT_REJECTED`` for the
    debit, ``REDEEMED`` (the merchant credited) or ``RETURNED`` (the customer refunded) for
    the settlement's parts. Its id is fixed by the outcome, so a repeat is a duplicate."""
    kind = _ORDER_REPORTS.get(outcome["type"])
    if outcome.get("purpose") != ORDER or kind is None:
        return None
    return order_payment_event(outcome, kind, outcome["event_id"], outcome["at_ms"],
                               reason=outcome.get("reason"))


def order_payment_event(state: Mapping[str, Any], kind: str, cause_id: str, now_ms: int,
                        **fields: Any) -> dict[str, Any]:
    order_id = state["ref"]
    event = {
        "event_id": f"{order_id}:{kind}",
        "type": kind,
        "order_id": order_id,
        "at_ms": now_ms,
        "cause_id": cause_id,
        "amount": state["amount"],
    }
    event.update({k: v for k, v in fields.items() if v is not None})
    return event


def order_debit(pay: Mapping[str, Any], merchant: str, now_ms: int) -> LedgerCommand:
    """The ledger command that pays an order into its voucher."""
    voucher_id = pay["voucher_id"]
    return {
        "command_id": f"{voucher_id}:debit",
        "kind": DEBIT,
        "account_id": pay["account"],
        "amount": int(pay["amount"]),
        "voucher_id": voucher_id,
        "purpose": ORDER,
        "counterparty": merchant,
        "ref": voucher_id.removeprefix("order:"),
        "status": None,
        "cause_id": pay["cause_id"],
        "at_ms": now_ms,
    }


def order_voucher(voucher_id: str, payer: str, payee: str) -> dict[str, Any]:
    """What the order's saga knows of its order's voucher, enough to command the ledger."""
    return {"voucher_id": voucher_id, "purpose": ORDER, "payer": payer, "payee": payee,
            "ref": voucher_id.removeprefix("order:")}


def settle_request(settle: Mapping[str, Any], now_ms: int) -> VoucherEvent:
    """Ask an order's voucher to credit the merchant and refund the customer."""
    voucher_id = settle["voucher_id"]
    return {
        "event_id": f"{voucher_id}:{SETTLE_REQUESTED}",
        "type": SETTLE_REQUESTED,
        "voucher_id": voucher_id,
        "at_ms": now_ms,
        "cause_id": settle["cause_id"],
        "purpose": ORDER,
        "credit": int(settle["credit"]),
        "refund": int(settle["refund"]),
        "ref": voucher_id.removeprefix("order:"),
    }


def public_transfer(state: Mapping[str, Any]) -> dict[str, Any]:
    return {
        "transfer_id": state["voucher_id"],
        "status": state.get("status", T_PENDING),
        "from_account": state.get("payer"),
        "to_account": state.get("payee"),
        "amount": state.get("amount"),
        "held": state.get("held", 0),
        "events": state.get("events", []),
    }


def public_voucher(state: Mapping[str, Any]) -> dict[str, Any]:
    return {
        "voucher_id": state["voucher_id"],
        "status": state.get("status", T_PENDING),
        "purpose": state.get("purpose"),
        "payer": state.get("payer"),
        "payee": state.get("payee"),
        "amount": state.get("amount"),
        "held": state.get("held", 0),
        "redeemed": state.get("redeemed", 0),
        "returned": state.get("returned", 0),
        "ref": state.get("ref"),
        "history": state.get("events", []),
    }
