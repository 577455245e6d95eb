"""Park a message that can never be processed, as it arrived, in the dead-letter topic."""

from __future__ import annotations

from typing import Any

from app.errors import InvalidEvent


def deadletter_headers(
    exc: InvalidEvent, topic: str, partition: int, offset: int, original: Any
) -> list[tuple[str, bytes]]:
    """The original headers plus ones naming the error and where the message came from."""
    headers: list[tuple[str, bytes]] = []
    if original:
        items = original.items() if isinstance(original, dict) else original
        headers.extend((str(k), bytes(v or b"")) for k, v in items)
    headers.extend(
        [
            ("postroom-error", exc.code.encode()),
            ("postroom-error-message", exc.reason.encode()[:1000]),
            ("postroom-origin-topic", topic.encode()),
            ("postroom-origin-partition", str(partition).encode()),
            ("postroom-origin-offset", str(offset).encode()),
        ]
    )
    return headers
