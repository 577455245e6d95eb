"""The sequencer that keeps every agent's messages in offset order, holes fetched again."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

from app.sequence import GIVE_UP_S, RESEEK_S, STALL_S, Sequencer

TP = ("orders.events", 0)


def event(offset: int, tp: Any = TP) -> Any:
    return SimpleNamespace(message=SimpleNamespace(tp=tp, offset=offset))


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_messages_in_order_are_handled_at_once() -> None:
    order = Sequencer()
    assert [order.admit(event(n), 1, {}) for n in range(3)] == [(True, None)] * 3


def test_a_hole_is_fetched_again_and_what_followed_it_waits_for_its_copy() -> None:
    order = Sequencer(Clock())
    assert order.admit(event(0), 1, {}) == (True, None)
    five = event(5)
    assert order.admit(five, 1, {}) == (False, 1)  # go back to 1
    assert order.admit(event(6), 1, {}) == (False, None)  # rewind under way: just wait
    for n in range(1, 7):  # the copies come round again, in order
        assert order.admit(event(n), 1, {}) == (True, None)
    assert order.release(event(5)) is five
    assert order.release(event(5)) is None


def test_the_first_message_after_joining_is_checked_against_the_committed_offset() -> None:
    order = Sequencer(Clock())
    assert order.admit(event(40), 1, {TP: 12}) == (False, 12)
    assert order.admit(event(3), 2, {TP: 3}) == (True, None)  # new generation, no hole


def test_an_earlier_offset_is_a_duplicate_and_is_handled_again() -> None:
    order = Sequencer()
    order.admit(event(9), 1, {TP: 9})
    assert order.admit(event(4), 1, {TP: 9}) == (True, None)
    assert order.admit(event(10), 1, {TP: 9}) == (True, None)


def test_an_unanswered_rewind_is_asked_again_and_given_up_after_a_while() -> None:
    clock = Clock()
    order = Sequencer(clock)
    order.admit(event(0), 1, {})
    assert order.admit(event(8), 1, {}) == (False, 1)
    assert order.overdue() == []
    clock.now += RESEEK_S
    assert order.overdue() == [(TP, 1)]
    clock.now += GIVE_UP_S
    assert order.overdue() == []
    assert order.admit(event(9), 1, {}) == (True, None)  # the log lost it: go on


def test_a_position_past_what_was_handed_over_is_gone_back_to_once_it_stays_so() -> None:
    # The last messages of a partition were dropped on the way: no later message shows the
    # hole, but the consumer's position is past the committed offset and nothing is queued.
    clock = Clock()
    order = Sequencer(clock)
    other = ("orders.requests", 1)
    assert order.stalled({TP: 95, other: 7}, 1, {TP: 21, other: 7}) == []
    clock.now += STALL_S - 0.1
    assert order.stalled({TP: 95, other: 7}, 1, {TP: 21, other: 7}) == []
    clock.now += 0.1
    assert order.stalled({TP: 95, other: 7}, 1, {TP: 21, other: 7}) == [(TP, 21)]
    assert order.stalled({TP: 95}, 1, {TP: 21}) == []  # asked: again only after STALL_S
    clock.now += STALL_S
    assert order.stalled({TP: 95}, 1, {TP: 21}) == [(TP, 21)]
    assert order.admit(event(21), 1, {TP: 21}) == (True, None)  # it came back
    clock.now += STALL_S
    assert order.stalled({TP: 95}, 1, {TP: 21}) == []  # handed one: the clock starts again
    clock.now += STALL_S
    assert order.stalled({TP: 95}, 1, {TP: 21}) == [(TP, 22)]


def test_no_going_back_when_caught_up_unknown_or_already_rewinding() -> None:
    clock = Clock()
    order = Sequencer(clock)
    order.admit(event(0), 1, {})
    assert order.admit(event(8), 1, {}) == (False, 1)  # a hole: a rewind is under way
    never = ("orders.requests", 2)  # never committed, nothing handed: no offset to expect
    for _ in range(3):
        clock.now += STALL_S
        assert order.stalled({TP: 9, never: 40, ("x", 0): None}, 1, {}) == []
    assert order.stalled({("y", 0): 5}, 1, {("y", 0): 5}) == []  # caught up


class FakeConsumer:
    """Just what an agent's rewind task asks of Faust's consumer."""

    def __init__(self, positions: dict[Any, int]) -> None:
        self.positions = positions
        self.suspend_flow = SimpleNamespace(is_set=lambda: False)
        self._committed_offset = {tp: 21 for tp in positions}
        self.sought: list[tuple[Any, int]] = []

    def assignment(self) -> set[Any]:
        return set(self.positions)

    async def position(self, tp: Any) -> int:
        return self.positions[tp]

    async def seek(self, tp: Any, offset: int) -> None:
        self.sought.append((tp, offset))


async def test_an_idle_agent_goes_back_for_its_own_partitions_only() -> None:
    from collections import namedtuple

    from app.runtime import Runtime

    TopicPartition = namedtuple("TopicPartition", "topic partition")
    mine, theirs = TopicPartition("orders.requests", 1), TopicPartition("postroom.lines", 1)
    consumer = FakeConsumer({mine: 95, theirs: 60})
    log = SimpleNamespace(warning=lambda *a: None, exception=lambda *a: None)
    app = SimpleNamespace(consumer=consumer, rebalancing=False, consumer_generation_id=1,
                          log=log)
    rt = Runtime(settings=None, app=app, specs={}, metrics=None)  # type: ignore[arg-type]
    clock = Clock()
    order = Sequencer(clock)
    idle = [True]
    topics = frozenset({"orders.requests"})
    await rt._go_back(order, topics, lambda: idle[0], "saga")
    clock.now += STALL_S
    idle[0] = False  # something queued: the agent is not idle, nothing is decided
    await rt._go_back(order, topics, lambda: idle[0], "saga")
    assert consumer.sought == []
    idle[0] = True
    await rt._go_back(order, topics, lambda: idle[0], "saga")
    assert consumer.sought == [(mine, 21)]


async def test_a_position_that_does_not_come_is_skipped_for_the_round() -> None:
    import asyncio
    from collections import namedtuple

    from app.runtime import Runtime

    class Hanging(FakeConsumer):
        async def position(self, tp: Any) -> int:
            await asyncio.sleep(60)  # a position being reset
            return 0

    tp = namedtuple("TopicPartition", "topic partition")("orders.requests", 0)
    consumer = Hanging({tp: 95})
    app = SimpleNamespace(consumer=consumer, rebalancing=False, consumer_generation_id=1,
                          log=SimpleNamespace(warning=lambda *a: None))
    rt = Runtime(settings=None, app=app, specs={}, metrics=None)  # type: ignore[arg-type]
    order = Sequencer(Clock())
    await asyncio.wait_for(rt._go_back(order, frozenset({"orders.requests"}), lambda: True,
                                       "saga"), RESEEK_S * 3)
    assert consumer.sought == [] and order.stalls == {}
