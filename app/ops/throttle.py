"""Whether the front desk refuses new orders for now: a pure decision over the backlog.

The desk throttles when the backlog behind it (consumer lag) or the age of the oldest
outstanding request passes its limit, and accepts again only once both are back under
``release_ratio`` of their limits, so that it does not flap around one threshold.
``Retry-After`` is how long the measured drain rate needs to bring the lag back under
the release level, clamped to ``[min_retry_after_s, max_retry_after_s]``: the maximum when
nothing drains, a short ``unknown_retry_after_s`` when the rate is not measured yet (a
client that comes back early gets a better estimate; one sent away too long idles).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

THROTTLED = 429


@dataclass(frozen=True)
class Limits:
    """When to throttle; a limit of 0 or less turns that check off."""

    max_lag: int
    max_oldest_age_s: float
    release_ratio: float = 0.8
    min_retry_after_s: int = 1
    max_retry_after_s: int = 60
    unknown_retry_after_s: int = 5


@dataclass(frozen=True)
class Verdict:
    """Refuse new orders: ``status`` with a ``Retry-After`` of ``retry_after_s``."""

    status: int
    retry_after_s: int
    reason: str
    lag: int | None
    oldest_age_s: float | None

    def as_dict(self) -> dict[str, Any]:
        return {
            "status": self.status,
            "retry_after_s": self.retry_after_s,
            "reason": self.reason,
            "lag": self.lag,
            "oldest_outstanding_age_s": self.oldest_age_s,
        }


def retry_after(backlog: int, drain_rate_per_s: float | None, limits: Limits) -> int:
    """Seconds for ``backlog`` messages to drain at the measured rate, clamped."""
    if drain_rate_per_s is None or math.isnan(drain_rate_per_s):
        return limits.unknown_retry_after_s
    if not 0 < drain_rate_per_s < math.inf:
        return limits.max_retry_after_s
    seconds = math.ceil(max(backlog, 0) / drain_rate_per_s)
    return min(max(seconds, limits.min_retry_after_s), limits.max_retry_after_s)


def decide(
    lag: int | None,
    oldest_age_s: float | None,
    drain_rate_per_s: float | None,
    limits: Limits,
    *,
    throttled: bool,
) -> Verdict | None:
    """Return a verdict to refuse new orders, or None to accept them.

    ``lag`` and ``oldest_age_s`` are None when unknown (never measured, or stale): an
    unknown value never throttles. ``throttled`` is whether the previous decision refused;
    a throttled desk stays so until both values are under ``release_ratio`` of their limits.
    ``drain_rate_per_s`` is how fast the backlog drains (None: not measured; see
    :func:`app.ops.lag.drain_estimate`).
    """
    ratio = limits.release_ratio if throttled else 1.0
    lag_level = limits.max_lag * ratio
    age_level = limits.max_oldest_age_s * ratio
    over_lag = limits.max_lag > 0 and lag is not None and (
        lag >= lag_level if throttled else lag > lag_level
    )
    over_age = limits.max_oldest_age_s > 0 and oldest_age_s is not None and (
        oldest_age_s >= age_level if throttled else oldest_age_s > age_level
    )
    if not (over_lag or over_age):
        return None
    release_lag = int(limits.max_lag * limits.release_ratio)
    if over_lag:
        assert lag is not None
        wait = retry_after(lag - release_lag, drain_rate_per_s, limits)
        reason = (
            f"backlog of {lag} messages is over the limit of {limits.max_lag}; "
            f"accepting again under {release_lag}"
        )
    else:
        assert oldest_age_s is not None
        # The oldest request waits behind the whole backlog: retry once that has drained,
        # and not at once when there is none (it is stuck on something else).
        wait = max(retry_after(lag or 0, drain_rate_per_s, limits), limits.unknown_retry_after_s)
        wait = min(wait, limits.max_retry_after_s)
        reason = (
            f"the oldest outstanding request is {oldest_age_s:.0f} s old, over the limit "
            f"of {limits.max_oldest_age_s:.0f} s"
        )
    return Verdict(THROTTLED, wait, reason, lag, oldest_age_s)
