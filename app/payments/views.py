"""Accounts, transfers and vouchers over HTTP.

``POST /accounts/{id}/deposits``, ``GET /accounts/{id}``, ``POST /accounts/{id}/status``
(admin), ``POST /transfers``, ``GET /transfers/{id}``, ``GET /vouchers/{id}`` and
``GET /ledger`` (admin: totals for the money-conservation check).
"""

from __future__ import annotations

import uuid
from typing import Any

import orjson
from faust.web import View

from app.errors import InvalidRequest, NotAcknowledged
from app.orders.logic import ID_NAMESPACE, MAX_ID_LEN
from app.payments import logic
from app.runtime import Runtime, now_ms
from app.unit import paced
from app.web import BodyTooLarge, Recent, authorized, error, int_field, read_json

IDEMPOTENCY_HEADER = "Idempotency-Key"
# How a command's key starts as the store holds it (JSON): the ledger view skips those
# records by key, without decoding them.
COMMAND_KEY = orjson.dumps(logic.COMMAND_PREFIX)[:-1]


def _account_id(value: Any, field: str, errors: dict[str, str]) -> str:
    if not isinstance(value, str) or not value.strip() or len(value) > MAX_ID_LEN:
        errors[field] = f"must be a non-empty string of at most {MAX_ID_LEN} characters"
        return ""
    if value.startswith(logic.COMMAND_PREFIX):
        errors[field] = f"must not start with '{logic.COMMAND_PREFIX}'"
    return value


def _raise(errors: dict[str, str], what: str) -> None:
    if errors:
        first = next(iter(errors))
        raise InvalidRequest(f"invalid {what}: {first} {errors[first]}", errors)


def register(rt: Runtime) -> None:
    app = rt.app
    settings = rt.settings
    account_by_id = rt.tables["account_by_id"]
    voucher_by_id = rt.tables["voucher_by_id"]
    recent_transfers: Recent[dict[str, Any]] = Recent()

    def command(kind: str, account_id: str, amount: int, command_id: str,
                status: str | None = None) -> logic.LedgerCommand:
        return {
            "command_id": command_id, "kind": kind, "account_id": account_id, "amount": amount,
            "voucher_id": None, "purpose": None, "counterparty": None, "ref": None,
            "status": status, "cause_id": command_id, "at_ms": now_ms(),
        }

    async def guarded(view: Any, request: Any, handler: Any) -> Any:
        try:
            return await handler()
        except BodyTooLarge:
            return error(view, 413, "body_too_large", "the body is too large")
        except InvalidRequest as exc:
            return error(view, 400, exc.code, exc.message, fields=exc.fields)
        except NotAcknowledged as exc:
            return error(view, 503, "unavailable", str(exc), headers={"Retry-After": "1"})

    @app.page("/accounts/{account_id}")
    class Account(View):  # type: ignore[misc]
        async def get(self, request: Any, account_id: str) -> Any:
            account = None if account_id.startswith(logic.COMMAND_PREFIX) else account_by_id.get(account_id)
            if account is None:
                return error(self, 404, "not_found", f"no account {account_id}")
            return self.json(logic.public_account(account))

    @app.page("/accounts/{account_id}/deposits")
    class Deposits(View):  # type: ignore[misc]
        async def post(self, request: Any, account_id: str) -> Any:
            async def handle() -> Any:
                errors: dict[str, str] = {}
                _account_id(account_id, "account_id", errors)
                body = await read_json(request, settings.max_body_bytes)
                if not isinstance(body, dict):
                    raise InvalidRequest("the body must be a JSON object", {"body": "not an object"})
                amount = int_field(body, "amount", minimum=1, errors=errors)
                for key in sorted(set(body) - {"amount"}):
                    errors[key] = "unknown field"
                _raise(errors, "deposit")
                key = request.headers.get(IDEMPOTENCY_HEADER)
                scoped = uuid.uuid5(ID_NAMESPACE, "\x00".join((account_id, key or "")))
                command_id = f"deposit:{scoped if key else uuid.uuid4()}"
                await rt.publish("postroom.ledger", account_id,
                           command(logic.DEPOSIT, account_id, amount, command_id))
                return self.json({"account_id": account_id, "deposit_id": command_id,
                                  "status_url": f"/accounts/{account_id}"}, status=202)

            return await guarded(self, request, handle)

    @app.page("/accounts/{account_id}/status")
    class AccountStatus(View):  # type: ignore[misc]
        async def post(self, request: Any, account_id: str) -> Any:
            if not authorized(request, settings):
                return error(self, 401, "unauthorized", "admin token required")
            if account_id == settings.merchant_account:
                return error(self, 409, "conflict", "the merchant account cannot change status")

            async def handle() -> Any:
                errors: dict[str, str] = {}
                _account_id(account_id, "account_id", errors)
                body = await read_json(request, settings.max_body_bytes)
                status = body.get("status") if isinstance(body, dict) else None
                if status not in logic.ACCOUNT_STATUSES:
                    errors["status"] = "must be one of " + ", ".join(logic.ACCOUNT_STATUSES)
                _raise(errors, "status change")
                command_id = f"status:{uuid.uuid4()}"
                await rt.publish("postroom.ledger", account_id,
                           command(logic.SET_STATUS, account_id, 0, command_id, status))
                return self.json({"account_id": account_id, "status": status}, status=202)

            return await guarded(self, request, handle)

    @app.page("/transfers")
    class Transfers(View):  # type: ignore[misc]
        async def post(self, request: Any) -> Any:
            throttle = rt.extras.get("throttle")
            verdict = throttle() if throttle is not None else None
            if verdict is not None:
                rt.metrics.requests_refused.labels(str(verdict.status)).inc()
                return error(self, verdict.status, "throttled", verdict.reason,
                             headers={"Retry-After": str(verdict.retry_after_s)})

            async def handle() -> Any:
                body = await read_json(request, settings.max_body_bytes)
                if not isinstance(body, dict):
                    raise InvalidRequest("the body must be a JSON object", {"body": "not an object"})
                errors: dict[str, str] = {}
                payer = _account_id(body.get("from_account"), "from_account", errors)
                payee = _account_id(body.get("to_account"), "to_account", errors)
                amount = int_field(body, "amount", minimum=1, errors=errors)
                for key in sorted(set(body) - {"from_account", "to_account", "amount"}):
                    errors[key] = "unknown field"
                if payer and payer == payee:
                    errors["to_account"] = "must differ from from_account"
                _raise(errors, "transfer")
                key = request.headers.get(IDEMPOTENCY_HEADER)
                scoped = uuid.uuid5(ID_NAMESPACE, "\x00".join(("transfer", payer, key or "")))
                transfer_id = f"t-{scoped if key else uuid.uuid4()}"
                event: logic.VoucherEvent = {
                    "event_id": f"{transfer_id}:{logic.REQUESTED}",
                    "type": logic.REQUESTED,
                    "voucher_id": transfer_id,
                    "at_ms": now_ms(),
                    "cause_id": f"http:{transfer_id}",
                    "purpose": logic.TRANSFER,
                    "payer": payer,
                    "payee": payee,
                    "amount": amount,
                }
                prior = voucher_by_id.get(transfer_id) or recent_transfers.get(transfer_id)
                if prior is not None and (prior.get("payer"), prior.get("payee"),
                                          prior.get("amount")) != (payer, payee, amount):
                    return error(self, 422, "idempotency_conflict",
                                 f"{IDEMPOTENCY_HEADER} was used with another transfer",
                                 fields={IDEMPOTENCY_HEADER: "reused with a different body"})
                if prior is None:
                    await rt.publish("postroom.vouchers", transfer_id, event)
                    recent_transfers.add(transfer_id, dict(event))
                url = f"/transfers/{transfer_id}"
                return self.json({"transfer_id": transfer_id, "status": logic.T_PENDING,
                                  "status_url": url}, status=202, headers={"Location": url})

            return await guarded(self, request, handle)

    @app.page("/transfers/{transfer_id}")
    class Transfer(View):  # type: ignore[misc]
        async def get(self, request: Any, transfer_id: str) -> Any:
            state = voucher_by_id.get(transfer_id)
            if state is None or state.get("purpose") != logic.TRANSFER:
                if transfer_id in recent_transfers:
                    return self.json({"transfer_id": transfer_id, "status": logic.T_PENDING})
                return error(self, 404, "not_found", f"no transfer {transfer_id}")
            return self.json(logic.public_transfer(state))

    @app.page("/vouchers/{voucher_id}")
    class Voucher(View):  # type: ignore[misc]
        async def get(self, request: Any, voucher_id: str) -> Any:
            if not authorized(request, settings):
                return error(self, 401, "unauthorized", "admin token required")
            state = voucher_by_id.get(voucher_id)
            if state is None:
                return error(self, 404, "not_found", f"no voucher {voucher_id}")
            return self.json(logic.public_voucher(state))

    @app.page("/ledger")
    class Ledger(View):  # type: ignore[misc]
        async def get(self, request: Any) -> Any:
            if not authorized(request, settings):
                return error(self, 401, "unauthorized", "admin token required")
            # Read from the stores in steps: the account table holds a record per command
            # and the voucher table one per order, and a scan must not stall the agents.
            accounts = [orjson.loads(value) async for key, value in
                        paced(rt.store("account_by_id").raw_items())
                        if not key.startswith(COMMAND_KEY)]
            vouchers = [orjson.loads(value) async for _, value in
                        paced(rt.store("voucher_by_id").raw_items())]
            held = sum(int(v.get("held", 0)) for v in vouchers)
            return self.json({
                "accounts": len(accounts),
                "deposited": sum(int(a["deposited"]) for a in accounts),
                "balances": sum(int(a["balance"]) for a in accounts),
                "held_in_vouchers": held,
                "open_vouchers": sum(1 for v in vouchers if int(v.get("held", 0)) != 0),
                "negative_balances": sum(1 for a in accounts if int(a["balance"]) < 0),
            })

