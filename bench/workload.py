"""The generated workload every run shares: a seeded catalogue and seeded orders.

Orders have 1 to 5 lines over distinct skus drawn with a Zipf-like popularity (the weight of
the sku of rank r is 1 / r**s), quantities 1 to 3. The same seed gives the same catalogue and
the same sequence of orders, so a run of n orders is the first n orders of any longer run.
"""

from __future__ import annotations

import bisect
import itertools
import math
import random
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

Order = dict[str, Any]  # {"order_id", "customer_id", "items": [{"sku", "quantity"}]}

MAX_LINES = 5
MAX_QUANTITY = 3
SHORT_EVERY = 10  # every 10th sku by rank is stocked short, so some orders end partial
SHORT_SHARE = 0.8


@dataclass(frozen=True)
class Workload:
    """A catalogue of ``skus`` skus with Zipf(``zipf``) popularity, and orders over it."""

    seed: int = 42
    skus: int = 500
    zipf: float = 1.1
    customers: int = 1_000
    _cum: list[float] = field(default_factory=list, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        total = 0.0
        for rank in range(1, self.skus + 1):
            total += 1.0 / rank**self.zipf
            self._cum.append(total)

    def sku(self, rank: int) -> str:
        return f"sku-{rank:05d}"

    def catalogue(self) -> dict[str, int]:
        """sku -> price in minor units, most popular first."""
        rng = random.Random(f"{self.seed}/prices")
        return {self.sku(r): rng.randint(100, 9_999) for r in range(1, self.skus + 1)}

    def _draw(self, rng: random.Random) -> int:
        x = rng.random() * self._cum[-1]
        return bisect.bisect_left(self._cum, x) + 1

    def stream(self, tag: str = "o") -> Iterator[Order]:
        """An endless, reproducible sequence of orders with ids ``<tag>-<n>``."""
        rng = random.Random(f"{self.seed}/{tag}")
        for n in itertools.count():
            want = min(rng.randint(1, MAX_LINES), self.skus)
            ranks: list[int] = []
            while len(ranks) < want:
                rank = self._draw(rng)
                if rank not in ranks:
                    ranks.append(rank)
            yield {
                "order_id": f"{tag}-{n:08d}",
                "customer_id": f"c{rng.randrange(self.customers):05d}",
                "items": [
                    {"sku": self.sku(r), "quantity": rng.randint(1, MAX_QUANTITY)} for r in ranks
                ],
            }

    def orders(self, n: int, tag: str = "o") -> list[Order]:
        return list(itertools.islice(self.stream(tag), n))

    def stock_for(self, orders: Iterable[Order]) -> dict[str, int]:
        """On-hand per sku: the demand, except every 10th sku gets 80% of it (some lines
        end partial or unfulfilled, so both outcomes are exercised)."""
        demand = {sku: 0 for sku in self.catalogue()}
        for order in orders:
            for item in order["items"]:
                demand[item["sku"]] += item["quantity"]
        stock: dict[str, int] = {}
        for rank in range(1, self.skus + 1):
            sku = self.sku(rank)
            need = demand[sku]
            stock[sku] = math.floor(need * SHORT_SHARE) if rank % SHORT_EVERY == 3 else need + 5
        return stock


def spend(orders: Iterable[Order], prices: dict[str, int]) -> dict[str, int]:
    """What each customer's orders cost in full (minor units)."""
    out: dict[str, int] = {}
    for order in orders:
        cost = sum(prices[i["sku"]] * i["quantity"] for i in order["items"])
        out[order["customer_id"]] = out.get(order["customer_id"], 0) + cost
    return out


def lines_of(orders: Iterable[Order]) -> int:
    return sum(len(o["items"]) for o in orders)
