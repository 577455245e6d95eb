"""Fixtures: one real Kafka broker for the session, one worker (own topics) per test."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.support import Worker

BROKER: dict[str, str] = {}
FIGURES: list[str] = []


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    for line in FIGURES:
        terminalreporter.write_line(line)
    if BROKER:
        terminalreporter.write_line(
            f"integration tests ran against a real Kafka broker: {BROKER['bootstrap']} "
            f"({BROKER['origin']})"
        )


@pytest.fixture(scope="session")
def kafka_bootstrap() -> Iterator[str]:
    """A real broker: ``POSTROOM_KAFKA_BOOTSTRAP`` if set, else one started here and stopped after."""
    external = os.environ.get("POSTROOM_KAFKA_BOOTSTRAP")
    if external:
        BROKER.update(bootstrap=external, origin="POSTROOM_KAFKA_BOOTSTRAP")
        yield external
        return
    from app import localkafka

    data_dir = Path(tempfile.mkdtemp(prefix="postroom-test-kafka-"))
    try:
        bootstrap = localkafka.start(
            data_dir, port=localkafka.free_port(), controller_port=localkafka.free_port()
        )
    except Exception as exc:  # never skip: a missing broker fails the run
        pytest.fail(f"could not start the test Kafka broker: {exc}", pytrace=False)
    BROKER.update(bootstrap=bootstrap, origin=f"Apache Kafka {localkafka.kafka_version()} "
                  "KRaft started by this test session")
    try:
        yield bootstrap
    finally:
        localkafka.stop(data_dir)
        shutil.rmtree(data_dir, ignore_errors=True)


@pytest.fixture
def make_worker(kafka_bootstrap: str, tmp_path: Path) -> Iterator[Callable[..., Worker]]:
    """Build workers on fresh topics; every one is stopped at the end of the test."""
    made: list[Worker] = []

    def factory(start: bool = True, **env: str) -> Worker:
        worker = Worker(kafka_bootstrap, tmp_path / f"w{len(made)}", env_extra=dict(env))
        made.append(worker)
        return worker.start() if start else worker

    yield factory
    for worker in made:
        worker.stop()


@pytest.fixture
def report() -> Callable[[str], None]:
    """Print a figure in the run's summary (the outcome numbers a test measured)."""

    def add(line: str) -> None:
        print(line)
        FIGURES.append(line)

    return add


@pytest.fixture
def worker(make_worker: Callable[..., Worker]) -> Worker:
    return make_worker()
