"""Consumer lag: how far a consumer group is behind the end of the topics it consumes.

Pure functions turn offsets into lag rows, totals and rates; :class:`LagReader` is the one
place that asks Kafka, with blocking calls meant to run in a thread::

    AdminClient.list_topics     partitions of each consumed topic (refreshed every 30 s)
    AdminClient.list_offsets    beginning (earliest) and end (latest) offsets
    Consumer.committed          the group's committed offset per partition

The committed offsets come from a consumer that carries the group's id but never subscribes
(so it never joins the group), not from ``AdminClient.list_consumer_group_offsets``: with
librdkafka 2.12 that call can crash the process when the group coordinator answers
NOT_COORDINATOR (librdkafka#5040), which a fresh or failing-over cluster does.

    lag = end - max(committed, beginning)    no commit yet: end - beginning
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from app.errors import RetryableError

TP = tuple[str, int]


@dataclass(frozen=True)
class Offsets:
    """One reading of the raw offsets; ``committed`` holds only partitions with a commit."""

    beginning: Mapping[TP, int]
    end: Mapping[TP, int]
    committed: Mapping[TP, int]


@dataclass(frozen=True)
class PartitionLag:
    """How far one group is behind on one partition."""

    group: str
    topic: str
    partition: int
    committed: int | None
    end: int
    lag: int

    def as_dict(self) -> dict[str, Any]:
        return {
            "group": self.group,
            "topic": self.topic,
            "partition": self.partition,
            "committed": self.committed,
            "end": self.end,
            "lag": self.lag,
        }


@dataclass(frozen=True)
class Sample:
    """Totals of one reading, at a monotonic time, for rates over a series of readings."""

    at: float
    total_lag: int
    consumed: int  # sum over partitions of the position the group has reached


def lag_rows(group: str, offsets: Offsets) -> list[PartitionLag]:
    """Lag per partition, sorted by topic and partition."""
    rows = []
    for tp in sorted(offsets.end):
        end = offsets.end[tp]
        beginning = offsets.beginning.get(tp, 0)
        committed = offsets.committed.get(tp)
        # Below the beginning (retention deleted it), the consumer resets to the beginning.
        position = beginning if committed is None else max(committed, beginning)
        rows.append(
            PartitionLag(group, tp[0], tp[1], committed, end, max(end - position, 0))
        )
    return rows


def total_lag(rows: Iterable[PartitionLag]) -> int:
    return sum(r.lag for r in rows)


def lag_by_topic(rows: Iterable[PartitionLag]) -> dict[str, int]:
    """Total lag per topic (one topic is one stage of the flow)."""
    totals: dict[str, int] = {}
    for r in rows:
        totals[r.topic] = totals.get(r.topic, 0) + r.lag
    return totals


def sample(rows: Sequence[PartitionLag], at: float) -> Sample:
    return Sample(at, total_lag(rows), sum(r.end - r.lag for r in rows))


def _span(samples: Sequence[Sample]) -> tuple[Sample, Sample, float] | None:
    if len(samples) < 2:
        return None
    first, last = samples[0], samples[-1]
    elapsed = last.at - first.at
    return (first, last, elapsed) if elapsed > 0 else None


def drain_rate(samples: Sequence[Sample]) -> float | None:
    """Messages per second the total lag fell over the samples (negative: it grew)."""
    span = _span(samples)
    if span is None:
        return None
    first, last, elapsed = span
    return (first.total_lag - last.total_lag) / elapsed


def consume_rate(samples: Sequence[Sample]) -> float | None:
    """Messages per second the group's committed positions advanced over the samples."""
    span = _span(samples)
    if span is None:
        return None
    first, last, elapsed = span
    return max(last.consumed - first.consumed, 0) / elapsed


def drain_estimate(samples: Sequence[Sample]) -> float | None:
    """How fast the backlog will drain once no more is added: messages/s, None if unknown.

    The lag's own fall when it falls; else, while a burst is still arriving, how fast the
    workers consume. None when neither moved: idle before a burst, or commits held back
    for a few seconds under load (Faust commits what is acked, in order), which readings
    this close together cannot tell from workers that are stuck.
    """
    net = drain_rate(samples)
    if net is not None and net > 0:
        return net
    consumed = consume_rate(samples)
    return consumed if consumed else None


def rounded(rate: float | None) -> float | None:
    return None if rate is None or not math.isfinite(rate) else round(rate, 1)


class LagReader:
    """Read a group's offsets with confluent-kafka's AdminClient (blocking: use a thread)."""

    PARTITIONS_TTL_S = 30.0

    def __init__(self, bootstrap: str, group: str, topics: Sequence[str],
                 timeout_s: float = 5.0) -> None:
        self.bootstrap = bootstrap
        self.group = group
        self.topics = tuple(topics)
        self.timeout_s = timeout_s
        self._admin: Any = None
        self._consumer: Any = None
        self._tps: list[Any] = []  # TopicPartition
        self._tps_at = 0.0

    def _clients(self) -> tuple[Any, Any]:
        if self._admin is None:
            from confluent_kafka import Consumer
            from confluent_kafka.admin import AdminClient

            common = {
                "bootstrap.servers": self.bootstrap,
                "client.id": f"{self.group}-lag",
                "socket.timeout.ms": int(self.timeout_s * 1000),
            }
            # A metadata request names topics; on a cluster that creates topics on demand
            # it must not create a consumed topic that is not there yet.
            self._admin = AdminClient({**common, "allow.auto.create.topics": False})
            # Never subscribes, so it never joins the group; it only reads its commits.
            self._consumer = Consumer(
                {**common, "group.id": self.group, "enable.auto.commit": False}
            )
        return self._admin, self._consumer

    def close(self) -> None:
        if self._consumer is not None:
            self._consumer.close()
        self._admin = self._consumer = None

    def _partitions(self, admin: Any) -> list[Any]:
        """The consumed topics' partitions (``TopicPartition``), asked for topic by topic (a
        cluster's full metadata grows with every topic on it: 7.6 ms a call with 325 topics)
        and kept for ``PARTITIONS_TTL_S``, since partitions are only ever added, and rarely."""
        from confluent_kafka import TopicPartition

        now = time.monotonic()
        if self._tps and now - self._tps_at < self.PARTITIONS_TTL_S:
            return self._tps
        tps: list[Any] = []
        for topic in self.topics:
            t = admin.list_topics(topic=topic, timeout=self.timeout_s).topics.get(topic)
            if t is not None and t.error is None:
                tps.extend(TopicPartition(topic, p) for p in sorted(t.partitions))
        self._tps, self._tps_at = tps, now
        return tps

    def read_offsets(self) -> Offsets:
        """Ask Kafka for the offsets; raise :class:`RetryableError` when it cannot answer."""
        from confluent_kafka import KafkaException
        from confluent_kafka.admin import OffsetSpec

        admin, consumer = self._clients()
        timeout = self.timeout_s
        try:
            tps = self._partitions(admin)
            if not tps:
                return Offsets({}, {}, {})

            def offsets(spec: Any) -> dict[TP, int]:
                futures = admin.list_offsets(
                    {tp: spec for tp in tps}, request_timeout=timeout
                )
                return {(tp.topic, tp.partition): f.result().offset for tp, f in futures.items()}

            end = offsets(OffsetSpec.latest())
            beginning = offsets(OffsetSpec.earliest())
            committed = {
                (tp.topic, tp.partition): tp.offset
                for tp in consumer.committed(tps, timeout=timeout)
                if tp.error is None and tp.offset >= 0
            }
        except KafkaException as exc:
            raise RetryableError(f"cannot read offsets from {self.bootstrap}: {exc}") from exc
        return Offsets(beginning, end, committed)

    def read(self) -> tuple[list[PartitionLag], float]:
        """Lag rows of the group, and how long reading them took in seconds."""
        started = time.monotonic()
        rows = lag_rows(self.group, self.read_offsets())
        return rows, time.monotonic() - started
