"""Token buckets per (source, client): steady `rate` per second, bursts up to `burst`."""

from __future__ import annotations

import math
from collections import OrderedDict


class TokenBuckets:
    """Many token buckets keyed by client; the least recently seen are dropped past `capacity`.

    A dropped bucket was idle the longest, so it would have refilled anyway: forgetting it
    never lets a client through that a full bucket would have stopped.
    """

    def __init__(self, rate: float, burst: int, *, capacity: int = 100_000) -> None:
        if rate <= 0 or burst < 1:
            raise ValueError("rate must be > 0 and burst >= 1")
        self.rate = rate
        self.burst = float(burst)
        self.capacity = capacity
        self._buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()

    def take(self, key: str, now: float) -> float:
        """Take one token for `key`; return 0.0 if allowed, else seconds until one is free."""
        buckets = self._buckets
        entry = buckets.get(key)
        if entry is None:
            tokens = self.burst
            if len(buckets) >= self.capacity:
                buckets.popitem(last=False)
        else:
            tokens, last = entry
            tokens = min(self.burst, tokens + (now - last) * self.rate)
            buckets.move_to_end(key)
        if tokens >= 1.0:
            buckets[key] = (tokens - 1.0, now)
            return 0.0
        buckets[key] = (tokens, now)
        return (1.0 - tokens) / self.rate


def retry_after_seconds(wait: float) -> int:
    """Retry-After is whole seconds, at least 1."""
    return max(1, math.ceil(wait))
