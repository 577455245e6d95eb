"""``python -m app``: the worker (Faust's own CLI) plus Postroom's commands.

::

    python -m app worker [-l info]      run a worker with its web server
    python -m app topology apply        create the topics declared in topology/ (idempotent)
    python -m app topology check        report drift between topology/ and the cluster
    python -m app seed                  put a small demo catalogue in place
"""

from __future__ import annotations

import logging
import sys


def _topology(argv: list[str]) -> int:
    from app import topology
    from app.settings import load_settings

    settings = load_settings()
    if argv[:1] == ["apply"]:
        created = topology.apply(settings)
        print(f"topology: {len(created)} topic(s) created" + (": " + ", ".join(created) if created else ""))
        drift = topology.check(settings)
    elif argv[:1] == ["check"]:
        drift = topology.check(settings)
    else:
        print("usage: python -m app topology apply|check", file=sys.stderr)
        return 2
    for line in drift:
        print(f"drift: {line}")
    if not drift:
        print(f"topology: in sync with {settings.kafka_bootstrap}")
    return 1 if drift else 0


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["topology"]:
        return _topology(argv[1:])
    if argv[:1] == ["seed"]:
        from app.seed import main as seed_main

        return seed_main(argv[1:])
    if argv[:1] == ["lag"]:
        from app.ops.lagview import main as lag_main

        return int(lag_main(argv[1:]))
    from app.main import create_app, settle_heap, use_event_loop
    from app.settings import load_settings
    from app.statedir import close_state, open_state

    settings = load_settings()
    use_event_loop(settings.event_loop)  # before anything creates a loop
    app, rt = create_app(settings)
    sys.argv = [sys.argv[0], *argv]
    is_worker = argv[:1] == ["worker"]
    if is_worker:
        logging.basicConfig(level=logging.INFO)
        open_state(rt.settings.data_dir)
        settle_heap()
    try:
        app.main()
    except SystemExit as exc:
        if is_worker and exc.code in (0, None):
            close_state(rt.settings.data_dir)
        raise
    return 0


if __name__ == "__main__":
    sys.exit(main())
