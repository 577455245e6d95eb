"""The one error root of Postroom.

::

    PostroomError
    ├── ConfigError            a setting is missing or malformed (fail at start)
    ├── TopologyError          a topic declaration is wrong, or the cluster drifted from it
    ├── InvalidRequest         an HTTP body or a request message breaks the contract (400)
    │   └── IdempotencyConflict  an Idempotency-Key reused with another body (422)
    ├── InvalidEvent           a message on a topic cannot be decoded or validated
    │                          (parked in the dead-letter topic, never retried)
    └── RetryableError         a transient failure; the work is tried again
        └── NotAcknowledged    Kafka did not acknowledge a produce in time
"""

from __future__ import annotations

from collections.abc import Mapping


class PostroomError(Exception):
    """Root of every error Postroom raises on purpose."""


class ConfigError(PostroomError):
    """A setting is missing or malformed."""


class TopologyError(PostroomError):
    """A topic declaration is wrong, or the cluster does not match it."""


class InvalidRequest(PostroomError):
    """A request breaks the contract; ``fields`` names what is wrong."""

    code = "invalid_request"

    def __init__(self, message: str, fields: Mapping[str, str] | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.fields = dict(fields or {})


class IdempotencyConflict(InvalidRequest):
    """The same Idempotency-Key came with a different body."""

    code = "idempotency_conflict"


class InvalidEvent(PostroomError):
    """A message that can never be processed; it goes to the dead-letter topic."""

    def __init__(self, reason: str, *, code: str = "invalid_event") -> None:
        super().__init__(reason)
        self.reason = reason
        self.code = code


class RetryableError(PostroomError):
    """A transient failure: retry the work."""


class NotAcknowledged(RetryableError):
    """Kafka did not acknowledge a produced message."""
