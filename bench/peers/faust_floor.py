"""Faust's own floor: what one Faust worker does per second with a trivial agent.

With Postroom's Faust settings (acks=all, linger, commit interval, RocksDB table options), on
the bench's broker, one agent reads ``--count`` prefilled events of a realistic size from a
4-partition topic and, depending on ``--mode``:

- ``consume``: nothing (the per-event cost of Faust's stream path),
- ``send``: sends each event on to another topic (``topic.send``, Faust's whole send path),
- ``produce``: hands each event straight to ``app.producer.send`` (the producer alone),
- ``table``: writes each event into a RocksDB table with a changelog.

When the last event is in, it writes ``{"mode", "events", "seconds", "rate"}`` as JSON to
``--result`` (Faust's worker owns stdout) and keeps running until it is stopped.
Postroom's per-order cost is, to a first approximation, these figures times the messages an
order needs of each kind.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

import faust

from app.localkafka import free_port
from app.main import faust_settings, table_options
from app.settings import load_settings

MODES = ("consume", "send", "produce", "table")


def topic_names(prefix: str) -> dict[str, str]:
    """The topics a floor run uses (the changelog is named as Faust names it)."""
    return {
        "in": f"{prefix}floor-in",
        "out": f"{prefix}floor-out",
        "changelog": f"{prefix}postroom-floor-changelog",
        "leader": f"{prefix}postroom-__assignor-__leader",
    }


def build(bootstrap: str, prefix: str, mode: str, count: int, datadir: Path,
          result: Path) -> faust.App:
    settings = load_settings({
        "POSTROOM_KAFKA_BOOTSTRAP": bootstrap,
        "POSTROOM_TOPIC_PREFIX": prefix,
        "POSTROOM_DATA_DIR": str(datadir),
        "POSTROOM_WEB_PORT": str(free_port()),
    })
    app = faust.App(settings.app_id, **faust_settings(settings))
    names = topic_names(prefix)
    source = app.topic(names["in"], partitions=4, key_type=bytes, value_type=bytes)
    sink = app.topic(names["out"], partitions=4, key_type=bytes, value_type=bytes)
    table = app.Table("floor", partitions=4, options=table_options(settings),
                      key_type=bytes, value_type=bytes)
    seen = {"n": 0, "t0": 0.0}

    @app.agent(source, name="floor")
    async def floor(stream: Any) -> None:
        async for event in stream.events():
            if seen["n"] == 0:
                seen["t0"] = time.monotonic()
            seen["n"] += 1
            if mode == "send":
                await sink.send(key=event.key, value=event.value)
            elif mode == "produce":
                await app.producer.send(names["out"], event.key, event.value, None, None, None)
            elif mode == "table":
                table[event.key] = event.value
            if seen["n"] == count:
                took = time.monotonic() - seen["t0"]
                partial = result.with_suffix(".partial")
                partial.write_text(json.dumps({"mode": mode, "events": count, "seconds": took,
                                               "rate": (count - 1) / took if took else 0.0}))
                partial.rename(result)

    return app


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.peers.faust_floor")
    p.add_argument("--bootstrap", required=True)
    p.add_argument("--prefix", required=True)
    p.add_argument("--mode", choices=MODES, required=True)
    p.add_argument("--count", type=int, required=True)
    p.add_argument("--datadir", type=Path, required=True)
    p.add_argument("--result", type=Path, required=True)
    args = p.parse_args(argv)
    app = build(args.bootstrap, args.prefix, args.mode, args.count, args.datadir, args.result)
    sys.argv = [sys.argv[0], "worker", "-l", "warn"]
    app.main()
    return 0


if __name__ == "__main__":
    sys.exit(main())
