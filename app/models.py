"""The records that travel on Kafka, as typed dicts whose fields match ``schemas/*.avsc``.

Messages stay plain dicts end to end (fastavro reads and writes dicts), so no object is
built per message; these types only tell mypy and the reader what a dict holds.
"""

from __future__ import annotations

from typing import NotRequired, TypedDict


class OrderItem(TypedDict):
    sku: str
    quantity: int


class OrderRequest(TypedDict):
    order_id: str
    customer_id: str
    account_id: str | None
    items: list[OrderItem]
    idempotency_key: NotRequired[str | None]
    body_hash: NotRequired[str | None]
    received_at_ms: NotRequired[int | None]


class OrderLine(TypedDict):
    line_id: str
    order_id: str
    sku: str
    quantity: int
    unit_price: int
    attempt: int
    sent_at_ms: int


class FulfillmentBatch(TypedDict):
    batch_id: str
    sku: str
    created_at_ms: int
    lines: list[OrderLine]


class StockCommand(TypedDict):
    command_id: str
    kind: str  # SET | RELEASE
    sku: str
    on_hand: int | None
    price: int | None
    line_id: str | None
    order_id: str | None
    at_ms: int


class CatalogEntry(TypedDict):
    command_id: str
    sku: str
    on_hand: int
    price: int
    at_ms: int


class OrderEvent(TypedDict, total=False):
    event_id: str
    type: str
    order_id: str
    at_ms: int
    cause_id: str
    customer_id: str | None
    account_id: str | None
    sku: str | None
    line_id: str | None
    quantity: int | None
    fulfilled: int | None
    amount: int | None
    reason: str | None
    lines: list[OrderLine] | None
    requested_at_ms: int | None
    refunded: int | None
    attempt: int | None
