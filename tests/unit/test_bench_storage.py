"""Where the bench's own broker keeps its logs (bench/__main__.py)."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from bench.__main__ import SHM, broker_dir, default_storage


def test_on_disk_the_broker_lives_in_the_bench_temporary_dir(tmp_path: Path) -> None:
    assert broker_dir("disk", tmp_path) == tmp_path / "kafka"


def test_in_memory_each_bench_gets_a_fresh_folder_on_the_tmpfs(tmp_path: Path) -> None:
    if default_storage() != "memory":
        pytest.skip("no tmpfs with room on this machine: the bench uses the disk")
    first, second = broker_dir("memory", tmp_path), broker_dir("memory", tmp_path)
    try:
        assert first.parent == second.parent == SHM
        assert first != second and first.is_dir() and second.is_dir()
    finally:
        shutil.rmtree(first, ignore_errors=True)
        shutil.rmtree(second, ignore_errors=True)
