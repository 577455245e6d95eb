"""A peer pipeline (a ``bench.peers`` module) as a system under test."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from bench.measure import json_progress
from bench.peers import common
from bench.runs.common import Context, stock_checks

ROOT = Path(__file__).resolve().parent.parent.parent


class PeerSystem:
    """``python -m bench.peers.<module>`` on its own prefixed topics."""

    decode = staticmethod(json_progress)

    def __init__(self, ctx: Context, name: str, module: str, *args: str) -> None:
        self.ctx = ctx
        self.name = name
        self.module = module
        self.args = list(args)
        self.prefix = ctx.prefix(name)
        self.topics = common.topic_names(self.prefix)
        self.requests_topic = self.topics["requests"]
        self.events_topic = self.topics["events"]
        self.proc: subprocess.Popen[bytes] | None = None
        self.pid = 0
        self.log = ctx.rundir(name) / f"{module}.log"
        self.funds: dict[str, int] = {}

    def start(self, stock: dict[str, int], prices: dict[str, int],
              funds: dict[str, int]) -> None:
        common.create_topics(self.ctx.bootstrap, self.prefix)
        common.publish_catalogue(self.ctx.bootstrap, self.topics, stock, prices, funds)
        self.funds = funds
        self.log.parent.mkdir(parents=True, exist_ok=True)
        with self.log.open("wb") as out:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", f"bench.peers.{self.module}",
                 "--bootstrap", self.ctx.bootstrap, "--prefix", self.prefix,
                 "--max-seconds", str(int(self.ctx.timeout * 3 + 600)), *self.args],
                cwd=ROOT, stdout=out, stderr=subprocess.STDOUT,
            )
        self.pid = self.proc.pid

    def verify(self, stock: dict[str, int], prices: dict[str, int],
               billed: int) -> list[tuple[str, bool, str]]:
        # The changelog is written after the events; give the last writes a moment.
        import time

        checks: list[tuple[str, bool, str]] = []
        deposited = sum(self.funds.values())
        for _ in range(20):
            views = common.read_stock(self.ctx.bootstrap, self.topics["stock"])
            checks = stock_checks(dict(views), stock, prices, billed)
            balances = common.read_balances(self.ctx.bootstrap, self.topics["accounts"])
            merchant = balances.get(common.MERCHANT, 0)
            checks += [
                ("money conserved (balances == deposits), none negative",
                 sum(balances.values()) == deposited and min(balances.values(), default=0) >= 0,
                 f"balances {sum(balances.values())} vs deposits {deposited}"),
                ("merchant credited what the orders were charged", merchant == billed,
                 f"merchant {merchant} vs orders {billed}"),
            ]
            if all(ok for _, ok, _ in checks):
                break
            time.sleep(0.5)
        return checks

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.terminate()
        try:
            self.proc.wait(60)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(10)
