"""The worker's local table state: kept after a clean stop, rebuilt after a crash.

Faust writes a table change to the local RocksDB at once and to its changelog topic a moment
later. After a crash (SIGKILL, power loss) the local store can hold changes whose changelog
messages never left, and recovery replays the changelog *over* them, key by key: the result
is neither the old state nor the new one (a balance from before a debit beside the record
that the debit was done). So a worker that did not stop cleanly starts from its changelogs
alone, which always hold an in-order prefix of each partition's changes.
"""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

MARKER = "clean-shutdown"
log = logging.getLogger(__name__)


def open_state(data_dir: Path) -> bool:
    """Prepare ``data_dir`` for a worker; return True if local state was discarded."""
    data_dir.mkdir(parents=True, exist_ok=True)
    marker = data_dir / MARKER
    has_state = any(p.name != MARKER for p in data_dir.iterdir())
    discarded = False
    if has_state and not marker.exists():
        log.warning("%s: the last worker did not stop cleanly; rebuilding tables from their "
                    "changelogs", data_dir)
        for path in data_dir.iterdir():
            if path.is_dir():
                shutil.rmtree(path)
            else:
                path.unlink()
        discarded = True
    marker.unlink(missing_ok=True)
    return discarded


def close_state(data_dir: Path) -> None:
    """Record that the worker stopped cleanly (its changelogs hold every local change)."""
    if data_dir.exists():
        (data_dir / MARKER).touch()
