"""Local table state survives a clean stop and is rebuilt after a crash."""

from __future__ import annotations

from pathlib import Path

from app.statedir import close_state, open_state


def test_state_after_a_clean_stop_is_kept(tmp_path: Path) -> None:
    (tmp_path / "v1").mkdir()
    (tmp_path / "v1" / "table.db").write_text("x")
    close_state(tmp_path)
    assert open_state(tmp_path) is False
    assert (tmp_path / "v1" / "table.db").exists()


def test_state_left_by_a_crash_is_discarded(tmp_path: Path) -> None:
    (tmp_path / "v1").mkdir()
    (tmp_path / "v1" / "table.db").write_text("x")
    assert open_state(tmp_path) is True  # no clean-stop marker: the last run crashed
    assert list(tmp_path.iterdir()) == []


def test_a_fresh_directory_is_simply_created(tmp_path: Path) -> None:
    target = tmp_path / "new"
    assert open_state(target) is False and target.is_dir()
