"""Ledger and voucher logic, no broker."""

from __future__ import annotations

from typing import Any

from app.ops import outstanding
from app.payments import logic


def cmd(kind: str, account: str, amount: int, cid: str = "c1", voucher: str = "v1"
        ) -> logic.LedgerCommand:
    return {"command_id": cid, "kind": kind, "account_id": account, "amount": amount,
            "voucher_id": voucher, "purpose": logic.TRANSFER, "counterparty": "bob", "ref": None,
            "status": None, "cause_id": "x", "at_ms": 1}


def test_a_debit_never_takes_a_balance_below_zero() -> None:
    acc, _ = logic.apply_command(logic.new_account("a"), cmd(logic.DEPOSIT, "a", 100), 1)
    after, event = logic.apply_command(acc, cmd(logic.DEBIT, "a", 101), 2)
    assert after["balance"] == 100 and event is not None and event["type"] == logic.DEBIT_REJECTED
    after, event = logic.apply_command(acc, cmd(logic.DEBIT, "a", 100), 2)
    assert after["balance"] == 0 and event is not None and event["type"] == logic.ISSUED


def test_a_credit_to_a_closed_account_fails_but_a_refund_always_lands() -> None:
    closed = {**logic.new_account("b"), "status": logic.CLOSED}
    _, event = logic.apply_command(closed, cmd(logic.CREDIT, "b", 5), 1)
    assert event is not None and event["type"] == logic.CREDIT_FAILED
    after, event = logic.apply_command(closed, cmd(logic.REFUND, "b", 5), 1)
    assert after["balance"] == 5 and event is not None and event["type"] == logic.RETURNED


def test_a_command_is_recognised_by_its_record_or_by_the_account_note() -> None:
    acc = logic.with_last_command(logic.new_account("a"), "c9", None)
    assert logic.recorded_outcome(acc, "c9", None) == (True, None)
    assert logic.recorded_outcome(acc, "c8", None) == (False, None)
    assert logic.recorded_outcome(acc, "c8", {"outcome": None}) == (True, None)


def fold(events: list[logic.VoucherEvent]) -> dict[str, Any]:
    state = logic.new_voucher("v1")
    for e in events:
        logic.apply_voucher_event(state, e)
    return state


def vev(kind: str, at: int, **fields: Any) -> logic.VoucherEvent:
    return {"event_id": f"v1:{kind}", "type": kind, "voucher_id": "v1", "at_ms": at,
            "cause_id": "x", "purpose": logic.TRANSFER, **fields}  # type: ignore[typeddict-item]


def test_a_refused_credit_sends_the_voucher_back_to_the_payer() -> None:
    events = [vev(logic.REQUESTED, 1, payer="a", payee="b", amount=30),
              vev(logic.ISSUED, 2, amount=30), vev(logic.CREDIT_FAILED, 3, amount=30)]
    state = fold(events)
    [(kind, refund)] = logic.decide_voucher(state, events[-1], 4)
    assert kind == "ledger" and refund["kind"] == logic.REFUND and refund["account_id"] == "a"
    assert state["status"] == logic.T_DEBITED and state["held"] == 30
    state = fold([*events, vev(logic.RETURNED, 5, amount=30)])
    assert state["status"] == logic.T_COMPENSATED and state["held"] == 0


def test_a_retry_redoes_only_the_missing_step() -> None:
    events = [vev(logic.REQUESTED, 1, payer="a", payee="b", amount=30),
              vev(logic.ISSUED, 2, amount=30)]
    state = fold(events)
    retry = logic.retry_event("v1", 1, "reconciler", 9)
    logic.apply_voucher_event(state, retry)
    steps = logic.decide_voucher(state, retry, 9)
    assert [(k, p["kind"]) for k, p in steps] == [("ledger", logic.CREDIT)]


def test_an_order_voucher_settles_into_credit_and_refund() -> None:
    base: dict[str, Any] = {"purpose": logic.ORDER, "ref": "o1"}
    issued = vev(logic.ISSUED, 1, payer="c", payee="m", amount=100, **base)
    settle = vev(logic.SETTLE_REQUESTED, 2, credit=70, refund=30, **base)
    state = fold([issued, settle])
    steps = logic.decide_voucher(state, settle, 3)
    assert sorted((p["kind"], p["account_id"], p["amount"]) for _, p in steps) == [
        (logic.CREDIT, "m", 70), (logic.REFUND, "c", 30)]
    done = [vev(logic.REDEEMED, 4, amount=70, **base), vev(logic.RETURNED, 5, amount=30, **base)]
    state = fold([issued, settle, *done])
    [(kind, settled)] = logic.decide_voucher(state, done[-1], 6)
    assert kind == "order" and settled["type"] == "SETTLED" and settled["refunded"] == 30
    assert state["held"] == 0


def test_outstanding_deadlines_back_off_per_attempt() -> None:
    entry = outstanding.track(None, "order", "PAID", now_ms=0, deadline_s=2)
    assert entry is not None and entry["deadline_ms"] == 2_000
    assert outstanding.track(entry, "order", "PAID", now_ms=5, deadline_s=2) is None
    later = outstanding.attempted(entry, 3, now_ms=10_000, deadline_s=2, backoff=2)
    assert later["attempts"] == 3 and later["deadline_ms"] == 10_000 + 16_000
    late = outstanding.overdue([("a", entry), ("b", later)], now_ms=3_000)
    assert [k for k, _ in late] == ["a"]
    report = outstanding.summary([entry, later], now_ms=3_000)
    assert report == {"outstanding": 2, "overdue": 1, "oldest_outstanding_age_s": 3.0}


def test_an_overdue_request_that_still_moves_is_not_stalled() -> None:
    entry = {"deadline_ms": 1_000, "attempts": 1, "accepted_at_ms": 0}
    assert not outstanding.stalled({**entry, "deadline_ms": 9_000}, None, 5_000, 1, 2)
    assert outstanding.stalled(entry, None, 5_000, deadline_s=1, backoff=2)
    assert not outstanding.stalled(entry, 4_000, 5_000, deadline_s=1, backoff=2)  # moved 1 s ago
    assert outstanding.stalled(entry, 3_000, 5_000, deadline_s=1, backoff=2)  # quiet for 2 s
