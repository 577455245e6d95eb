"""Payment agents: the ledger that owns balances, and the voucher saga that moves money.

::

    postroom.ledger   --apply_ledger_commands--> account_by_id
                                              --> postroom.vouchers (ISSUED, REDEEMED, ...)
                                              --> postroom.inbox (an order's PAID,
                                                  PAYMENT_REJECTED, REDEEMED, RETURNED)
    postroom.vouchers --run_voucher_saga--> voucher_by_id (projection)
                                         --> postroom.ledger (a transfer's DEBIT, CREDIT,
                                             REFUND; an order's only on RETRY)
                                         --> postroom.inbox (an order's steps, on RETRY)
"""

from __future__ import annotations

from typing import Any

from app.ops import outstanding as book
from app.payments import logic
from app.runtime import Runtime, now_ms
from app.unit import Unit


def register(rt: Runtime) -> None:
    settings = rt.settings
    metrics = rt.metrics

    def apply_one(unit: Unit, msg: Any) -> None:
        """Apply one command to its account once; report the voucher's new step."""
        account_by_id = unit.table("account_by_id")
        cmd: logic.LedgerCommand = rt.decode("postroom.ledger", msg)
        account_id, command_id = cmd["account_id"], cmd["command_id"]
        account = account_by_id.get(account_id) or logic.new_account(account_id)
        record = account_by_id.get(logic.command_key(command_id))
        done, outcome = logic.recorded_outcome(account, command_id, record)
        if done:
            metrics.duplicates.labels("ledger").inc()
        else:
            account, outcome = logic.apply_command(account, cmd, now_ms())
            # The balance and its command in one write first, then the command's own
            # record: a crash loses a suffix, and either write tells a retry it was done.
            account_by_id[account_id] = logic.with_last_command(account, command_id, outcome)
        if record is None:
            account_by_id[logic.command_key(command_id)] = {"outcome": outcome}
        if outcome is not None:
            unit.send("postroom.vouchers", outcome["voucher_id"], outcome)
            report = logic.order_report(outcome)  # an order's saga hears it at once
            if report is not None:
                unit.send("postroom.inbox", report["order_id"], report)

    def voucher_step(unit: Unit, msg: Any) -> None:
        """Fold one step into its voucher and ask the ledger for the next one."""
        voucher_by_id = unit.table("voucher_by_id")
        event: logic.VoucherEvent = rt.decode("postroom.vouchers", msg)
        voucher_id = event["voucher_id"]
        state = voucher_by_id.get(voucher_id) or logic.new_voucher(voucher_id)
        fresh = logic.apply_voucher_event(state, event)
        if not fresh:
            metrics.duplicates.labels("vouchers").inc()
        if fresh or state.get("last_event_id") == event["event_id"]:
            for kind, payload in logic.decide_voucher(state, event, now_ms()):
                if kind == "ledger":
                    unit.send("postroom.ledger", payload["account_id"], payload)
                else:
                    unit.send("postroom.inbox", payload["order_id"], payload)
        if fresh:
            state["last_event_id"] = event["event_id"]
            voucher_by_id[voucher_id] = state
            if state.get("purpose") == logic.TRANSFER:
                keep_outstanding(unit, state, event)

    def keep_outstanding(unit: Unit, state: dict[str, Any], event: logic.VoucherEvent) -> None:
        """Track a transfer in the outstanding table from its request until it is terminal."""
        outstanding = unit.table("outstanding_transfers")
        voucher_id = state["voucher_id"]
        decision = book.follow(
            outstanding.get(voucher_id), kind="transfer", started=True,
            terminal=state["status"] in logic.TRANSFER_TERMINAL,
            attempt=int(event.get("attempt") or 1) if event["type"] == logic.RETRY else None,
            now_ms=now_ms(), deadline_s=settings.reconcile_deadline_s,
            backoff=settings.reconcile_backoff,
        )
        book.apply(outstanding, voucher_id, decision)

    rt.agent("postroom.ledger", "apply_ledger_commands", apply_one)
    rt.agent("postroom.vouchers", "run_voucher_saga", voucher_step)
