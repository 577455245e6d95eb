"""The front desk: ``POST /orders`` and ``GET /orders/{order_id}``.

A request is validated, given its order id and appended to ``orders.requests``; the answer
(``202``) goes out only after Kafka acknowledged it. Nothing else happens on this path.
"""

from __future__ import annotations

from typing import Any

import orjson
from faust.web import View

from app.codecs import JSON_CONTENT_TYPE
from app.errors import IdempotencyConflict, InvalidRequest, NotAcknowledged
from app.orders import logic
from app.runtime import Runtime, now_ms
from app.web import BodyTooLarge, Recent, error, read_json

IDEMPOTENCY_HEADER = "Idempotency-Key"
MAX_KEY_LEN = 200


def register(rt: Runtime) -> None:
    app = rt.app
    settings = rt.settings
    request_by_order = rt.tables["request_by_order"]
    order_by_id = rt.tables["order_by_id"]
    requests_topic = rt.topic_name("orders.requests")
    recent: Recent[str] = Recent()  # order id -> fingerprint, until accept records it
    metrics = rt.metrics

    def accepted_answer(order_id: str) -> tuple[dict[str, Any], dict[str, str]]:
        url = f"/orders/{order_id}"
        return {"order_id": order_id, "status": logic.ACCEPTED, "status_url": url}, {
            "Location": url
        }

    def known_fingerprint(order_id: str) -> str | None:
        prior = request_by_order.get(order_id)
        return prior["hash"] if prior is not None else recent.get(order_id)

    @app.page("/orders")
    class Orders(View):  # type: ignore[misc]
        async def post(self, request: Any) -> Any:
            try:
                body = await read_json(request, settings.max_body_bytes)
                order = logic.validate_order(body, max_items=settings.max_items_per_order)
                key = request.headers.get(IDEMPOTENCY_HEADER)
                if key is not None and not 0 < len(key) <= MAX_KEY_LEN:
                    raise InvalidRequest(
                        f"{IDEMPOTENCY_HEADER} must be 1 to {MAX_KEY_LEN} characters",
                        {IDEMPOTENCY_HEADER: "bad length"},
                    )
                fingerprint = logic.body_hash(order)
                order_id = logic.new_order_id(order["customer_id"], key)
                if key is not None:
                    prior = known_fingerprint(order_id)
                    if prior is not None and prior != fingerprint:
                        raise IdempotencyConflict(
                            f"{IDEMPOTENCY_HEADER} {key!r} was used with another body",
                            {IDEMPOTENCY_HEADER: "reused with a different body"},
                        )
                    if prior is not None:
                        answer, headers = accepted_answer(order_id)
                        return self.json(answer, status=202, headers=headers)
            except BodyTooLarge:
                metrics.requests_refused.labels("413").inc()
                return error(
                    self, 413, "body_too_large", f"the body exceeds {settings.max_body_bytes} bytes"
                )
            except IdempotencyConflict as exc:
                metrics.requests_refused.labels("422").inc()
                return error(self, 422, exc.code, exc.message, fields=exc.fields)
            except InvalidRequest as exc:
                metrics.requests_refused.labels("400").inc()
                return error(self, 400, exc.code, exc.message, fields=exc.fields)
            throttle = rt.extras.get("throttle")
            if throttle is not None:
                verdict = throttle()
                if verdict is not None:
                    metrics.requests_refused.labels(str(verdict.status)).inc()
                    return error(
                        self, verdict.status, "throttled", verdict.reason,
                        headers={"Retry-After": str(verdict.retry_after_s)},
                    )
            message = {
                **order,
                "order_id": order_id,
                "idempotency_key": key,
                "body_hash": fingerprint,
                "received_at_ms": now_ms(),
            }
            assert rt.producer is not None
            try:
                await rt.producer.send(
                    requests_topic,
                    key=order_id.encode(),
                    value=orjson.dumps(message),
                    headers=[("content-type", JSON_CONTENT_TYPE)],
                )
            except NotAcknowledged as exc:
                metrics.requests_refused.labels("503").inc()
                return error(
                    self, 503, "unavailable", f"Kafka did not take the order: {exc}",
                    headers={"Retry-After": "1"},
                )
            recent.add(order_id, fingerprint)
            metrics.requests_accepted.inc()
            answer, headers = accepted_answer(order_id)
            return self.json(answer, status=202, headers=headers)

    @app.page("/orders/{order_id}")
    class Order(View):  # type: ignore[misc]
        async def get(self, request: Any, order_id: str) -> Any:
            state = order_by_id.get(order_id)
            if state is not None:
                return self.json(logic.public_view(state))
            if known_fingerprint(order_id) is not None:
                return self.json(
                    logic.public_view({"order_id": order_id, "status": logic.ACCEPTED})
                )
            return error(self, 404, "not_found", f"no order {order_id}")

        async def delete(self, request: Any, order_id: str) -> Any:
            """Ask to cancel: a CANCEL_REQUESTED event; the saga decides what it undoes."""
            state = order_by_id.get(order_id)
            if state is None and known_fingerprint(order_id) is None:
                return error(self, 404, "not_found", f"no order {order_id}")
            if not logic.cancellable(state):
                status = state.get("status") if state else None
                return error(self, 409, "conflict",
                             f"order {order_id} is {status or 'fulfilled'}; it cannot be cancelled")
            event = {
                "event_id": logic.event_id(order_id, logic.CANCEL_REQUESTED),
                "type": logic.CANCEL_REQUESTED,
                "order_id": order_id,
                "at_ms": now_ms(),
                "cause_id": f"http:DELETE /orders/{order_id}",
            }
            try:
                await rt.publish("postroom.inbox", order_id, event)
            except NotAcknowledged as exc:
                return error(self, 503, "unavailable", str(exc), headers={"Retry-After": "1"})
            url = f"/orders/{order_id}"
            return self.json({"order_id": order_id, "status": "CANCEL_REQUESTED",
                              "status_url": url}, status=202)
