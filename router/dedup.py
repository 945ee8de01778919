"""Recently accepted event ids, so a provider's retry is answered without publishing again.

Per process and in memory: this only saves work.  Exactly-once effects are the consumers'
job (their inbox), so a restart or a second worker that misses a duplicate is harmless.
"""

from __future__ import annotations

from collections import OrderedDict


class RecentIds:
    """Ids seen within `window` seconds, at most `capacity` of them (oldest forgotten first)."""

    def __init__(self, window: float, capacity: int) -> None:
        self.window = window
        self.capacity = capacity
        self._seen: OrderedDict[str, float] = OrderedDict()

    def __contains__(self, key: str) -> bool:
        return key in self._seen

    def seen(self, key: str, now: float) -> bool:
        """True if `key` was added less than `window` seconds ago."""
        added = self._seen.get(key)
        return added is not None and now - added < self.window

    def add(self, key: str, now: float) -> None:
        seen = self._seen
        seen[key] = now
        seen.move_to_end(key)
        # Entries are in insertion order, so expired ones sit at the front.
        while seen:
            oldest_key, oldest = next(iter(seen.items()))
            if len(seen) > self.capacity or now - oldest >= self.window:
                del seen[oldest_key]
            else:
                break

    def __len__(self) -> int:
        return len(self._seen)
