"""``python -m app seed``: put a small demo catalogue in place through the public API."""

from __future__ import annotations

import json
import sys
import time
import urllib.error
import urllib.request

from app.settings import load_settings

DEMO_ACCOUNTS = {"alice": 100_000, "bob": 20_000}
DEMO_CATALOGUE = {
    "book-123": {"on_hand": 100, "price": 1250},
    "mug-7": {"on_hand": 40, "price": 800},
    "poster-9": {"on_hand": 5, "price": 1500},
}


def _call(method: str, url: str, body: object | None = None, token: str = "",
          headers: dict[str, str] | None = None) -> tuple[int, bytes]:
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(url, data=data, method=method)
    req.add_header("Content-Type", "application/json")
    for name, value in (headers or {}).items():
        req.add_header(name, value)
    if token:
        req.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            return resp.status, resp.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def _balance(base: str, account: str) -> int:
    status, answer = _call("GET", f"{base}/accounts/{account}")
    return int(json.loads(answer)["balance"]) if status == 200 else 0


def wait_healthy(base: str, timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if _call("GET", f"{base}/health")[0] == 200:
                return
        except OSError:
            pass
        time.sleep(0.5)
    raise SystemExit(f"the worker at {base} did not become healthy within {timeout:.0f}s")


def main(argv: list[str]) -> int:
    settings = load_settings()
    base = settings.web_url
    wait_healthy(base)
    for sku, body in DEMO_CATALOGUE.items():
        status, answer = _call("PUT", f"{base}/inventory/{sku}", body, settings.admin_token.value)
        if status != 202:
            print(f"seed: PUT /inventory/{sku} -> {status} {answer.decode()}", file=sys.stderr)
            return 1
    for account, amount in DEMO_ACCOUNTS.items():
        balance = _balance(base, account)
        if balance < amount:
            body = {"amount": amount - balance}
            key = {"Idempotency-Key": f"demo-{account}-from-{balance}"}
            status, answer = _call("POST", f"{base}/accounts/{account}/deposits", body, headers=key)
            if status != 202:
                print(f"seed: deposit to {account} -> {status} {answer.decode()}", file=sys.stderr)
                return 1
    deadline = time.monotonic() + 30
    for account, amount in DEMO_ACCOUNTS.items():
        while _balance(base, account) < amount:
            if time.monotonic() > deadline:
                print(f"seed: the deposit to {account} did not land", file=sys.stderr)
                return 1
            time.sleep(0.2)
    for sku in DEMO_CATALOGUE:
        while _call("GET", f"{base}/inventory/{sku}")[0] != 200:
            if time.monotonic() > deadline:
                print(f"seed: {sku} did not appear", file=sys.stderr)
                return 1
            time.sleep(0.2)
    print("seed: demo catalogue ready: " + ", ".join(DEMO_CATALOGUE)
          + "; demo accounts: " + ", ".join(f"{a} ({n})" for a, n in DEMO_ACCOUNTS.items()))
    return 0
