"""Test support: a real worker process on its own topics, and a small HTTP client."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from app import topology
from app.codecs import avro_decode
from app.localkafka import free_port
from app.settings import load_settings

ROOT = Path(__file__).resolve().parent.parent
TERMINAL = frozenset({"COMPLETED", "PARTIALLY_FULFILLED", "REJECTED", "CANCELLED", "FAILED"})


@dataclass
class Reply:
    status: int
    body: Any
    headers: Mapping[str, str]


def call(method: str, url: str, body: Any = None, headers: Mapping[str, str] | None = None,
         raw: bytes | None = None, timeout: float = 30.0) -> Reply:
    data = raw if raw is not None else (json.dumps(body).encode() if body is not None else None)
    req = urllib.request.Request(url, data=data, method=method)
    req.add_header("Content-Type", "application/json")
    for k, v in (headers or {}).items():
        req.add_header(k, v)
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            payload = resp.read()
            status, hdrs = resp.status, dict(resp.headers)
    except urllib.error.HTTPError as exc:
        payload, status, hdrs = exc.read(), exc.code, dict(exc.headers)
    try:
        parsed = json.loads(payload) if payload else None
    except ValueError:
        parsed = payload.decode(errors="replace")
    return Reply(status, parsed, hdrs)


def wait_for(check: Callable[[], Any], timeout: float = 60.0, interval: float = 0.2,
             what: str = "condition") -> Any:
    """Poll ``check`` until it returns something truthy; fail after ``timeout``."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        last = check()
        if last:
            return last
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}; last: {last!r}")


@dataclass
class Worker:
    """One ``python -m app worker`` process with its own topic prefix, port and data dir."""

    bootstrap: str
    workdir: Path
    env_extra: dict[str, str] = field(default_factory=dict)
    prefix: str = field(default_factory=lambda: f"t{uuid.uuid4().hex[:8]}-")
    port: int = field(default_factory=free_port)
    proc: subprocess.Popen[bytes] | None = None
    log_path: Path | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def env(self) -> dict[str, str]:
        env = dict(os.environ)
        env.update(
            {
                "POSTROOM_KAFKA_BOOTSTRAP": self.bootstrap,
                "POSTROOM_TOPIC_PREFIX": self.prefix,
                "POSTROOM_WEB_PORT": str(self.port),
                "POSTROOM_DATA_DIR": str(self.workdir / "worker-data"),
                "POSTROOM_MERGE_MAX_WAIT_MS": "200",
            }
        )
        env.update(self.env_extra)
        return env

    @property
    def settings(self) -> Any:
        return load_settings(self.env)

    def topic(self, declared: str) -> str:
        return self.settings.topic(declared)

    def apply_topology(self) -> None:
        topology.apply(self.settings)

    def start(self, timeout: float = 90.0) -> Worker:
        self.apply_topology()
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.log_path = self.workdir / f"worker-{int(time.time() * 1000)}.log"
        log = self.log_path.open("wb")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "app", "worker", "-l", "info"],
            cwd=ROOT, env=self.env, stdout=log, stderr=subprocess.STDOUT,
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"worker exited early:\n{self.log_tail()}")
            try:
                if call("GET", f"{self.url}/health", timeout=2).status == 200:
                    return self
            except OSError:
                pass
            time.sleep(0.2)
        raise AssertionError(f"worker not healthy after {timeout}s:\n{self.log_tail()}")

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 60.0) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(sig)
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(10)

    def kill(self) -> None:
        self.stop(signal.SIGKILL)

    def log_tail(self, lines: int = 60) -> str:
        if self.log_path is None or not self.log_path.exists():
            return ""
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])

    # --- the public API -------------------------------------------------------------

    def get(self, path: str) -> Reply:
        return call("GET", self.url + path)

    def post(self, path: str, body: Any = None, **kw: Any) -> Reply:
        return call("POST", self.url + path, body, **kw)

    def put(self, path: str, body: Any = None, **kw: Any) -> Reply:
        return call("PUT", self.url + path, body, **kw)

    def delete(self, path: str, **kw: Any) -> Reply:
        return call("DELETE", self.url + path, **kw)

    def stock(self, sku: str, on_hand: int, price: int) -> None:
        """Set a sku's stock and wait until the fulfiller has it."""
        reply = self.put(f"/inventory/{sku}", {"on_hand": on_hand, "price": price})
        assert reply.status == 202, reply
        wait_for(
            lambda: (r := self.get(f"/inventory/{sku}")).status == 200
            and r.body["on_hand"] == on_hand
            and r.body["price"] == price,
            timeout=30, what=f"stock of {sku}",
        )

    def fund(self, account: str, amount: int) -> None:
        """Deposit into an account and wait until the balance shows it."""
        before = self.balance(account)
        reply = self.post(f"/accounts/{account}/deposits", {"amount": amount})
        assert reply.status == 202, reply
        wait_for(lambda: self.balance(account) == before + amount, timeout=30,
                 what=f"deposit to {account}")

    def balance(self, account: str) -> int:
        reply = self.get(f"/accounts/{account}")
        return int(reply.body["balance"]) if reply.status == 200 else 0

    def order(self, items: list[tuple[str, int]], customer: str = "c1", **kw: Any) -> str:
        body: dict[str, Any] = {
            "customer_id": customer,
            "items": [{"sku": s, "quantity": q} for s, q in items],
        }
        body.update(kw.pop("extra", {}))
        reply = self.post("/orders", body, **kw)
        assert reply.status == 202, reply
        return str(reply.body["order_id"])

    def terminal_view(self, order_id: str) -> dict[str, Any] | None:
        """The order's view once it is terminal; None while it is open or unknown."""
        r = self.get(f"/orders/{order_id}")
        return dict(r.body) if r.status == 200 and r.body["status"] in TERMINAL else None

    def wait_terminal(self, order_id: str, timeout: float = 60.0) -> dict[str, Any]:
        return dict(wait_for(lambda: self.terminal_view(order_id), timeout=timeout,
                             what=f"order {order_id} terminal"))


def consume_all(bootstrap: str, topic: str, timeout: float = 10.0,
                until: Callable[[list[Any]], bool] | None = None) -> list[Any]:
    """Read a topic from the beginning with a throwaway group (confluent-kafka messages)."""
    from confluent_kafka import Consumer

    consumer = Consumer({
        "bootstrap.servers": bootstrap,
        "group.id": f"test-reader-{uuid.uuid4().hex}",
        "auto.offset.reset": "earliest",
        "enable.auto.commit": False,
    })
    consumer.subscribe([topic])
    out: list[Any] = []
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            msg = consumer.poll(0.5)
            if msg is None:
                if until is not None and until(out):
                    break
                continue
            if msg.error() is None:
                out.append(msg)
    finally:
        consumer.close()
    return out


def decode_events(messages: list[Any]) -> Iterator[dict[str, Any]]:
    for m in messages:
        yield avro_decode(("postroom.OrderEvent",), m.value())


def samples(text: str, name: str, **labels: str) -> Iterator[float]:
    """The values of a Prometheus text exposition's samples of ``name`` that carry
    ``labels`` (and any others)."""
    from prometheus_client.parser import text_string_to_metric_families

    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and all(sample.labels.get(k) == v
                                           for k, v in labels.items()):
                yield float(sample.value)


def metric(text: str, name: str, **labels: str) -> float | None:
    """One sample of a Prometheus text exposition, by name and labels (None: absent)."""
    return next(samples(text, name, **labels), None)
