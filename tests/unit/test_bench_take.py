"""The bench's event collector takes what has arrived without waiting for a full batch."""

from typing import Any

from bench.measure import take


class FakeConsumer:
    """Answers like confluent-kafka's consumer over a queue of already fetched messages."""

    def __init__(self, queued: list[str]) -> None:
        self.queued = queued
        self.waits: list[float] = []

    def poll(self, timeout: float) -> Any:
        self.waits.append(timeout)
        return self.queued.pop(0) if self.queued else None

    def consume(self, num_messages: int, timeout: float) -> list[Any]:
        self.waits.append(timeout)
        got, self.queued = self.queued[:num_messages], self.queued[num_messages:]
        return got


def test_what_has_arrived_is_taken_and_only_the_first_is_waited_for() -> None:
    consumer = FakeConsumer(["a", "b", "c"])
    assert take(consumer, most=1000, wait=0.05) == ["a", "b", "c"]
    assert consumer.waits == [0.05, 0]  # never a wait for a batch to fill


def test_at_most_most_and_nothing_when_nothing_came() -> None:
    consumer = FakeConsumer(["a", "b", "c"])
    assert take(consumer, most=2) == ["a", "b"]
    assert take(consumer, most=1) == ["c"]
    assert take(consumer) == []
