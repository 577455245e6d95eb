"""Inventory: ``PUT /inventory/{sku}`` (through the catalogue topic) and ``GET /inventory/{sku}``."""

from __future__ import annotations

import uuid
from typing import Any

from faust.web import View

from app.errors import InvalidRequest, NotAcknowledged
from app.fulfillment.logic import public_stock
from app.models import CatalogEntry
from app.orders.logic import check_sku
from app.runtime import Runtime, now_ms
from app.web import BodyTooLarge, authorized, error, int_field, read_json


def register(rt: Runtime) -> None:
    app = rt.app
    settings = rt.settings
    stock_by_sku = rt.tables["stock_by_sku"]

    @app.page("/inventory/{sku}")
    class Inventory(View):  # type: ignore[misc]
        async def get(self, request: Any, sku: str) -> Any:
            stock = stock_by_sku.get(sku) if check_sku(sku) is None else None
            if stock is None or not stock.get("known"):
                return error(self, 404, "not_found", f"no sku {sku}")
            return self.json(public_stock(stock))

        async def put(self, request: Any, sku: str) -> Any:
            if not authorized(request, settings):
                return error(self, 401, "unauthorized", "admin token required")
            try:
                problem = check_sku(sku)
                if problem:
                    raise InvalidRequest(f"sku {problem}", {"sku": problem})
                body = await read_json(request, settings.max_body_bytes)
                if not isinstance(body, dict):
                    raise InvalidRequest("the body must be a JSON object", {"body": "not an object"})
                errors: dict[str, str] = {}
                on_hand = int_field(body, "on_hand", minimum=0, errors=errors)
                price = int_field(body, "price", minimum=0, errors=errors)
                for key in sorted(set(body) - {"on_hand", "price"}):
                    errors[key] = "unknown field"
                if on_hand > 2**31 - 1:
                    errors["on_hand"] = "too large"
                if errors:
                    first = next(iter(errors))
                    raise InvalidRequest(f"invalid inventory: {first} {errors[first]}", errors)
            except BodyTooLarge:
                return error(self, 413, "body_too_large", "the body is too large")
            except InvalidRequest as exc:
                return error(self, 400, exc.code, exc.message, fields=exc.fields)
            entry: CatalogEntry = {
                "command_id": str(uuid.uuid4()),
                "sku": sku,
                "on_hand": on_hand,
                "price": price,
                "at_ms": now_ms(),
            }
            try:
                await rt.publish("postroom.catalog", sku, entry)
            except NotAcknowledged as exc:
                return error(self, 503, "unavailable", str(exc), headers={"Retry-After": "1"})
            return self.json(
                {"sku": sku, "status": "ACCEPTED", "status_url": f"/inventory/{sku}"}, status=202
            )
