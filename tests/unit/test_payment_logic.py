"""Ledger and voucher logic, no broker."""

from __future__ import annotations

import itertools
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
    # The order's saga sends the credit and the refund itself; the voucher only records.
    assert logic.decide_voucher(state, settle, 3) == []
    voucher = logic.order_voucher("v1", payer="c", payee="m")
    commands = logic.settle_commands(voucher, 70, 30, "o1:settle", 3)
    assert [(c["command_id"], c["kind"], c["account_id"], c["amount"]) for c in commands] == [
        ("v1:credit", logic.CREDIT, "m", 70), ("v1:refund", logic.REFUND, "c", 30)]
    assert logic.settle_commands(voucher, 100, 0, "o1:settle", 3)[0]["kind"] == logic.CREDIT
    assert len(logic.settle_commands(voucher, 100, 0, "o1:settle", 3)) == 1
    done = [vev(logic.REDEEMED, 4, amount=70, **base), vev(logic.RETURNED, 5, amount=30, **base)]
    state = fold([issued, settle, *done])
    assert logic.decide_voucher(state, done[-1], 6) == []
    assert state["held"] == 0 and state["status"] == logic.T_COMPLETED


def test_the_ledger_reports_an_orders_money_straight_to_its_saga() -> None:
    base: dict[str, Any] = {"purpose": logic.ORDER, "ref": "o1"}
    debit = {**cmd(logic.DEBIT, "c", 100, cid="order:o1:debit", voucher="order:o1"), **base}
    _, issued = logic.apply_command({**logic.new_account("c"), "balance": 100}, debit, 7)
    assert issued is not None
    paid = logic.order_report(issued)
    assert paid is not None and (paid["event_id"], paid["type"], paid["amount"]) == (
        "o1:PAID", "PAID", 100)
    assert paid["cause_id"] == "order:o1:ISSUED"
    _, rejected = logic.apply_command(logic.new_account("c"), debit, 7)
    report = logic.order_report(rejected)  # type: ignore[arg-type]
    assert report is not None and report["type"] == "PAYMENT_REJECTED" and report["reason"]
    refund = {**debit, "kind": logic.REFUND, "command_id": "order:o1:refund", "amount": 30}
    _, returned = logic.apply_command(logic.new_account("c"), refund, 8)
    report = logic.order_report(returned)  # type: ignore[arg-type]
    assert report is not None and (report["type"], report["amount"]) == (logic.RETURNED, 30)
    transfer = cmd(logic.DEBIT, "c", 10)
    _, outcome = logic.apply_command({**logic.new_account("c"), "balance": 10}, transfer, 9)
    assert outcome is not None and logic.order_report(outcome) is None


def test_a_retry_redoes_an_orders_missing_settlement() -> None:
    base: dict[str, Any] = {"purpose": logic.ORDER, "ref": "o1"}
    issued = vev(logic.ISSUED, 1, payer="c", payee="m", amount=100, **base)
    settle = vev(logic.SETTLE_REQUESTED, 2, credit=70, refund=30, **base)
    redeemed = vev(logic.REDEEMED, 3, amount=70, **base)
    state = fold([issued, settle, redeemed])
    retry = logic.retry_event("v1", 1, "reconciler", 9)
    logic.apply_voucher_event(state, retry)
    steps = logic.decide_voucher(state, retry, 9)
    assert [(k, p.get("kind") or p["type"]) for k, p in steps] == [
        ("order", "PAID"), ("ledger", logic.REFUND)]


def test_outstanding_deadlines_back_off_per_attempt() -> None:
    entry = outstanding.track(None, "order", "PAID", now_ms=0, deadline_s=2)
    assert entry is not None and entry["deadline_ms"] == 2_000
    assert outstanding.track(entry, "order", "PAID", now_ms=5, deadline_s=2) is None
    later = outstanding.attempted(entry, 3, now_ms=10_000, deadline_s=2, backoff=2)
    assert later["attempts"] == 3 and later["deadline_ms"] == 10_000 + 16_000
    survey = outstanding.Survey(now_ms=3_000)
    survey.add("a", entry)
    survey.add("b", later)
    late = survey.overdue()
    assert [k for k, _ in late] == ["a"]
    report = survey.summary()
    assert report == {"outstanding": 2, "overdue": 1, "oldest_outstanding_age_s": 3.0}


def test_only_a_start_an_end_or_a_redo_moves_an_outstanding_entry() -> None:
    entry = outstanding.track(None, "order", "OPEN", now_ms=0, deadline_s=2)
    for started, terminal, attempt in itertools.product((False, True), (False, True), (None, 2)):
        moves = outstanding.moves(started=started, terminal=terminal, attempt=attempt)
        for current in (None, entry):
            decision = outstanding.follow(current, kind="order", started=started,
                                          terminal=terminal, attempt=attempt, now_ms=5,
                                          deadline_s=2, backoff=2)
            if not moves:
                assert decision == ("keep", None)


def test_an_overdue_request_that_still_moves_is_not_stalled() -> None:
    entry = {"deadline_ms": 1_000, "attempts": 1, "accepted_at_ms": 0}
    assert not outstanding.stalled({**entry, "deadline_ms": 9_000}, None, 5_000, 1, 2)
    assert outstanding.stalled(entry, None, 5_000, deadline_s=1, backoff=2)
    assert not outstanding.stalled(entry, 4_000, 5_000, deadline_s=1, backoff=2)  # moved 1 s ago
    assert outstanding.stalled(entry, 3_000, 5_000, deadline_s=1, backoff=2)  # quiet for 2 s


def test_a_request_queued_behind_the_others_is_not_stalled() -> None:
    entry = {"deadline_ms": 30_000, "attempts": 0, "accepted_at_ms": 0}
    # Accepted at 0, nothing since, 60 s later: stalled, unless others wait that long too.
    assert outstanding.stalled(entry, 0, 60_000, deadline_s=30, backoff=2)
    assert not outstanding.stalled(entry, 0, 60_000, deadline_s=30, backoff=2, queued_ms=45_000)
    assert outstanding.due_ms(entry, 45_000) == 75_000
    assert outstanding.stalled(entry, 0, 76_000, deadline_s=30, backoff=2, queued_ms=45_000)


def test_the_recent_wait_is_the_longest_of_the_last_one_to_two_windows() -> None:
    waits = outstanding.RecentWait(span_ms=10_000)
    assert waits.longest(0) == 0
    waits.note(80_000, now_ms=1_000)  # a backlog: an order waited 80 s for its next step
    waits.note(200, now_ms=2_000)
    assert waits.longest(5_000) == 80_000
    waits.note(300, now_ms=12_000)  # a new window: the last one is still remembered
    assert waits.longest(15_000) == 80_000
    waits.note(150, now_ms=23_000)  # and now forgotten: the backlog has drained
    assert waits.longest(24_000) == 300
    assert waits.longest(60_000) == 0  # nothing seen for two windows
