"""Hand each partition's messages to a handler in offset order, with none skipped.

Faust's consumer can skip messages while a worker joins its group: it fetches before it
seeks the partitions back to their committed offsets, drops what it fetched meanwhile, and
can then resume past it (faust-streaming #216's family). Postroom's consumed topics are
never compacted and never transactional, so their offsets have no legitimate holes: an
agent that sees one asks the consumer to go back to the first missing offset and holds
the messages after the hole until their copies come round again. Faust's own gap
bookkeeping, which would commit past such a hole, is switched off (:mod:`app.seekfix`).

A hole shows when a later message arrives. When none does (the skipped messages were the
last on their partition: a burst that ended while a worker restarted), the consumer's
position is past what the agent was handed while nothing is on its way to the agent: the
agent then asks to go back as well (:meth:`Sequencer.stalled`).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

RESEEK_S = 1.0  # a rewind not answered within this is asked for again
GIVE_UP_S = 60.0  # then the hole is accepted (the log may have been truncated)
STALL_S = 5.0  # a position this long past what the agent was handed, with nothing queued


class Sequencer:
    """Per partition, the next offset an agent expects, for one consumer generation."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self.clock = clock
        self.generation: Any = object()
        self.next: dict[Any, int] = {}
        self.held: dict[Any, dict[int, Any]] = {}
        self.rewinding: dict[Any, tuple[int, float, float]] = {}  # tp -> want, asked, since
        # tp -> (since when its position is ahead, the offset expected then)
        self.stalls: dict[Any, tuple[float, int]] = {}

    def admit(self, event: Any, generation: Any, committed: dict[Any, Any]
              ) -> tuple[bool, int | None]:
        """Whether to handle ``event`` now; if not, the offset to rewind to (or None: the
        rewind is already under way)."""
        self._join(generation)
        message = event.message
        tp, offset = message.tp, message.offset
        want = self._expected(tp, committed)
        if want is not None and offset > want:
            now = self.clock()
            asked = self.rewinding.get(tp)
            if asked is None or asked[0] != want:
                self.rewinding[tp] = (want, now, now)
                self.held.setdefault(tp, {})[offset] = event
                return False, want
            if now - asked[2] < GIVE_UP_S:
                self.held.setdefault(tp, {})[offset] = event
                if now - asked[1] >= RESEEK_S:
                    self.rewinding[tp] = (want, now, asked[2])
                    return False, want
                return False, None
        self.next[tp] = offset + 1 if want is None else max(want, offset + 1)
        return True, None

    def _join(self, generation: Any) -> None:
        """Forget what an earlier consumer generation expected."""
        if generation != self.generation:
            self.generation = generation
            self.next.clear()
            self.held.clear()
            self.rewinding.clear()
            self.stalls.clear()

    def _expected(self, tp: Any, committed: dict[Any, Any]) -> int | None:
        """The next offset of ``tp`` the agent should be handed (None: not known)."""
        want = self.next.get(tp)
        if want is None:
            start = committed.get(tp)
            want = int(start) if start is not None and start >= 0 else None
        return want

    def stalled(self, positions: dict[Any, int | None], generation: Any,
                committed: dict[Any, Any]) -> list[tuple[Any, int]]:
        """Partitions whose consumer position has been past the next offset the agent
        expects for ``STALL_S`` (that offset not moving meanwhile), to go back to; the caller
        checks that nothing is queued for the agent, so the messages in between were dropped
        on the way, and no later message will reveal it. Asked again every ``STALL_S`` until
        the agent is handed one."""
        self._join(generation)
        now = self.clock()
        found = []
        for tp, position in positions.items():
            want = self._expected(tp, committed)
            asked = self.rewinding.get(tp)
            under_way = asked is not None and not self._answered(tp, asked[0])
            if want is None or position is None or position <= want or under_way:
                self.stalls.pop(tp, None)
                continue
            since, then = self.stalls.get(tp, (now, want))
            if then != want:  # the agent was handed more since: the clock starts again
                since = now
            if now - since >= STALL_S:
                since = now
                found.append((tp, want))
            self.stalls[tp] = (since, want)
        return found

    def _answered(self, tp: Any, want: int) -> bool:
        """Whether the agent has been handed offset ``want`` of ``tp`` (a rewind answered)."""
        return self.next.get(tp, -1) > want

    def overdue(self) -> list[tuple[Any, int]]:
        """Rewinds not answered within ``RESEEK_S``, to be asked for again (now)."""
        now = self.clock()
        again = []
        for tp, (want, asked, since) in list(self.rewinding.items()):
            if self._answered(tp, want) or now - since >= GIVE_UP_S:
                continue
            if now - asked >= RESEEK_S:
                self.rewinding[tp] = (want, now, since)
                again.append((tp, want))
        return again

    def release(self, event: Any) -> Any:
        """The held original of a message whose copy was just handled, if any."""
        message = event.message
        return self.held.get(message.tp, {}).pop(message.offset, None)
