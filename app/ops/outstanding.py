"""Pure bookkeeping of outstanding requests: what is not terminal, since when, due when.

An entry is written when a request is accepted and deleted when it is terminal (and updated
when it is re-dispatched); the reconciler reads them on a timer and asks the owner of each one
that is overdue and has stalled to redo its stage.
Deadlines back off: a request re-dispatched ``n`` times is next due after
``deadline_s * backoff ** n``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any


def track(
    entry: Mapping[str, Any] | None,
    kind: str,
    stage: str,
    now_ms: int,
    deadline_s: float,
    accepted_at_ms: int | None = None,
) -> dict[str, Any] | None:
    """The entry after a request reached ``stage``; None when nothing changed."""
    if entry is not None and entry.get("stage") == stage:
        return None
    attempts = int(entry.get("attempts", 0)) if entry else 0
    return {
        "kind": kind,
        "accepted_at_ms": (entry or {}).get("accepted_at_ms") or accepted_at_ms or now_ms,
        "stage": stage,
        "stage_at_ms": now_ms,
        "deadline_ms": now_ms + int(deadline_s * 1000),
        "attempts": attempts,
    }


def attempted(
    entry: Mapping[str, Any], attempt: int, now_ms: int, deadline_s: float, backoff: float
) -> dict[str, Any]:
    """The entry after its ``attempt``-th re-dispatch: counted, next deadline backed off."""
    attempts = max(int(entry.get("attempts", 0)), attempt)
    return {
        **entry,
        "attempts": attempts,
        "deadline_ms": now_ms + int(deadline_s * 1000 * backoff**attempts),
    }


def follow(
    entry: Mapping[str, Any] | None,
    *,
    kind: str,
    started: bool,
    terminal: bool,
    attempt: int | None,
    now_ms: int,
    deadline_s: float,
    backoff: float,
    accepted_at_ms: int | None = None,
) -> tuple[str, dict[str, Any] | None]:
    """What a request's event does to its entry: ``("put", entry)``, ``("delete", None)``
    or ``("keep", None)``. Started requests get an entry, re-dispatches count, terminal
    ones are removed."""
    if terminal:
        return ("delete", None) if entry is not None else ("keep", None)
    if attempt is not None and entry is not None:
        return "put", attempted(entry, attempt, now_ms, deadline_s, backoff)
    if started and entry is None:
        return "put", track(None, kind, "OPEN", now_ms, deadline_s, accepted_at_ms)
    return "keep", None


def moves(*, started: bool, terminal: bool, attempt: int | None) -> bool:
    """Whether an event can change its request's entry at all; when it cannot,
    :func:`follow` keeps the entry whatever it is, so it need not be read."""
    return started or terminal or attempt is not None


def apply(table: Any, key: str, decision: tuple[str, dict[str, Any] | None]) -> None:
    """Carry out :func:`follow`'s decision on an outstanding table."""
    action, entry = decision
    if action == "put":
        table[key] = entry
    elif action == "delete":
        del table[key]


class Survey:
    """One pass over a table's outstanding entries: how many, how many overdue, the oldest
    acceptance, and the overdue entries themselves (a scan reads each entry once)."""

    def __init__(self, now_ms: int) -> None:
        self.now_ms = now_ms
        self.count = 0
        self.oldest_accepted_ms: int | None = None
        self._late: list[tuple[Any, Mapping[str, Any]]] = []

    def add(self, key: Any, entry: Mapping[str, Any]) -> None:
        """Count one entry; ``key`` is kept as given, for the overdue ones."""
        self.count += 1
        if int(entry["deadline_ms"]) <= self.now_ms:
            self._late.append((key, entry))
        accepted = int(entry["accepted_at_ms"])
        if self.oldest_accepted_ms is None or accepted < self.oldest_accepted_ms:
            self.oldest_accepted_ms = accepted

    def overdue(self) -> list[tuple[Any, Mapping[str, Any]]]:
        """The entries whose deadline has passed, oldest deadline first."""
        return sorted(self._late, key=lambda item: int(item[1]["deadline_ms"]))

    def summary(self) -> dict[str, Any]:
        """Outstanding and overdue counts and the age of the oldest outstanding request."""
        oldest = self.oldest_accepted_ms
        return {
            "outstanding": self.count,
            "overdue": len(self._late),
            "oldest_outstanding_age_s": None if oldest is None else max(
                0.0, (self.now_ms - oldest) / 1000),
        }


def stalled(entry: Mapping[str, Any], last_progress_ms: int | None, now_ms: int,
            deadline_s: float, backoff: float, queued_ms: int = 0) -> bool:
    """Whether an overdue request has also made no progress for its (backed-off) deadline.

    The entry's deadline counts from acceptance; a request that is still moving (its last
    event is recent) is slow, not lost, and is left alone. ``queued_ms`` (see
    :class:`RecentWait`) stretches both: a request that has waited no longer than others
    are waiting for their next step is queued behind them, not lost.
    """
    if due_ms(entry, queued_ms) > now_ms:
        return False
    if last_progress_ms is None:
        return True
    wait_ms = deadline_s * 1000 * backoff ** int(entry.get("attempts", 0))
    return now_ms - last_progress_ms >= wait_ms + queued_ms


def due_ms(entry: Mapping[str, Any], queued_ms: int = 0) -> int:
    """When an entry may first count as stalled: its deadline, stretched by ``queued_ms``."""
    return int(entry["deadline_ms"]) + queued_ms


class RecentWait:
    """The longest wait lately between two steps of one request, as its owner saw them:
    how far behind the workers are. Kept over two windows of ``span_ms``, so a wait is
    remembered for one to two windows; with nothing seen for two, it is zero.

    At a steady flow a step follows the one before within a fraction of a second. While a
    backlog drains, every request waits its turn at each stage, as long as the queue in
    front of it, and one that has waited no longer than that is queued, not lost.
    """

    def __init__(self, span_ms: int) -> None:
        self.span_ms = span_ms
        self._since = 0  # when the current window began
        self._current = 0
        self._previous = 0

    def _roll(self, now_ms: int) -> None:
        elapsed = now_ms - self._since
        if elapsed >= self.span_ms:
            self._previous = self._current if elapsed < 2 * self.span_ms else 0
            self._current = 0
            self._since = now_ms

    def note(self, wait_ms: int, now_ms: int) -> None:
        self._roll(now_ms)
        if wait_ms > self._current:
            self._current = wait_ms

    def longest(self, now_ms: int) -> int:
        self._roll(now_ms)
        return max(self._current, self._previous)
