"""``make run``: a local Kafka (unless one is named), the topics, a demo catalogue, the worker.

Ctrl-C or SIGTERM stops everything this command started, and nothing else.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path
from types import FrameType

from app import localkafka, seed, topology
from app.settings import load_settings

KAFKA_DATA = Path(".data/kafka")


def main() -> int:
    settings = load_settings()
    started_kafka = False
    worker: subprocess.Popen[bytes] | None = None
    stopping = False

    def on_signal(signum: int, frame: FrameType | None) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    try:
        if settings.kafka_external:
            print(f"run: using the Kafka cluster at {settings.kafka_bootstrap}")
        else:
            started_kafka = not localkafka.is_running(KAFKA_DATA)
            port = settings.kafka_bootstrap.rpartition(":")[2]
            localkafka.start(KAFKA_DATA, port=int(port), controller_port=int(port) + 1)
        created = topology.apply(settings)
        print(f"run: topology applied ({len(created)} topic(s) created)")
        worker = subprocess.Popen([sys.executable, "-m", "app", "worker", "-l", "info"])
        seed.wait_healthy(settings.web_url)
        if seed.main([]) != 0:
            raise SystemExit("run: seeding the demo catalogue failed")
        base = settings.web_url
        print(
            "\nPostroom is running. Try:\n\n"
            f"  curl -si -X POST {base}/orders -H 'Content-Type: application/json' \\\n"
            "       -d '{\"customer_id\": \"alice\", \"items\": [{\"sku\": \"book-123\", "
            "\"quantity\": 2}]}'\n"
            f"  curl -s {base}/orders/<order_id from the answer>\n"
            f"  curl -s {base}/inventory/book-123\n\n"
            "Ctrl-C stops the worker" + (" and the local Kafka." if started_kafka else ".")
        )
        while not stopping:
            if worker.poll() is not None:
                print(f"run: the worker exited with {worker.returncode}", file=sys.stderr)
                return worker.returncode or 1
            time.sleep(0.3)
        return 0
    finally:
        if worker is not None and worker.poll() is None:
            print("run: stopping the worker ...")
            worker.send_signal(signal.SIGTERM)
            try:
                worker.wait(60)
            except subprocess.TimeoutExpired:
                worker.kill()
                worker.wait(10)
        if started_kafka:
            print("run: stopping the local Kafka ...")
            localkafka.stop(KAFKA_DATA)


if __name__ == "__main__":
    sys.exit(main())
