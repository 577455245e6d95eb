"""Helpers every web view shares: JSON errors, bounded bodies, the admin token."""

from __future__ import annotations

import hmac
from collections import OrderedDict
from collections.abc import Mapping
from typing import Any, Generic, TypeVar

import orjson

from app.errors import InvalidRequest
from app.settings import Settings

T = TypeVar("T")


class Recent(Generic[T]):
    """What this front desk sent to Kafka that its table may not show yet (bounded, oldest out)."""

    def __init__(self, size: int = 100_000) -> None:
        self.size = size
        self._items: OrderedDict[str, T] = OrderedDict()

    def get(self, key: str) -> T | None:
        return self._items.get(key)

    def __contains__(self, key: str) -> bool:
        return key in self._items

    def add(self, key: str, value: T) -> None:
        self._items[key] = value
        self._items.move_to_end(key)
        while len(self._items) > self.size:
            self._items.popitem(last=False)


def error_body(code: str, message: str, fields: Mapping[str, str] | None = None) -> dict[str, Any]:
    body: dict[str, Any] = {"error": code, "message": message}
    if fields:
        body["fields"] = dict(fields)
    return body


def error(view: Any, status: int, code: str, message: str, **kw: Any) -> Any:
    """A JSON error answer (DESIGN.md section 3)."""
    fields = kw.pop("fields", None)
    return view.json(error_body(code, message, fields), status=status, **kw)


class BodyTooLarge(Exception):
    pass


async def read_json(request: Any, limit: int) -> Any:
    """Read and parse a JSON body of at most ``limit`` bytes."""
    length = request.content_length
    if length is not None and length > limit:
        raise BodyTooLarge()
    body = await request.content.read(limit + 1)
    if len(body) > limit:
        raise BodyTooLarge()
    if not body.strip():
        raise InvalidRequest("the body is empty; send a JSON object", {"body": "empty"})
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise InvalidRequest(f"malformed JSON: {exc}", {"body": "malformed JSON"}) from exc


def authorized(request: Any, settings: Settings) -> bool:
    """True when no admin token is set, or the request carries it as a bearer token."""
    token = settings.admin_token.value
    if not token:
        return True
    given = request.headers.get("Authorization", "")
    return hmac.compare_digest(given.encode(), f"Bearer {token}".encode())


def int_field(body: Mapping[str, Any], key: str, *, minimum: int, errors: dict[str, str]) -> int:
    value = body.get(key)
    if isinstance(value, bool) or not isinstance(value, int):
        errors[key] = "must be an integer"
        return 0
    if value < minimum:
        errors[key] = f"must be >= {minimum}"
    if value > 2**62:
        errors[key] = "too large"
    return value
