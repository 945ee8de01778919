"""Token buckets and the recent-ids memory."""

from __future__ import annotations

from router.dedup import RecentIds
from router.ratelimit import TokenBuckets, retry_after_seconds


class TestTokenBuckets:
    def test_burst_then_refuse(self):
        """A client gets `burst` requests at once, then is told how long to wait."""
        buckets = TokenBuckets(rate=2, burst=3)
        assert [0.0, 0.0, 0.0] == [buckets.take("a", 100.0) for _ in range(3)]
        assert 0.5 == buckets.take("a", 100.0)

    def test_refills_at_rate(self):
        """Tokens come back at `rate` per second."""
        buckets = TokenBuckets(rate=2, burst=1)
        assert 0.0 == buckets.take("a", 0.0)
        assert 0.0 < buckets.take("a", 0.1)
        assert 0.0 == buckets.take("a", 0.7)

    def test_clients_are_independent(self):
        """One client's empty bucket does not limit another."""
        buckets = TokenBuckets(rate=1, burst=1)
        buckets.take("a", 0.0)
        assert 0.0 == buckets.take("b", 0.0)

    def test_capacity_forgets_idle_clients(self):
        """Past capacity the least recently seen bucket is dropped."""
        buckets = TokenBuckets(rate=1, burst=1, capacity=2)
        for key in ("a", "b", "c"):
            buckets.take(key, 0.0)
        assert 0.0 == buckets.take("a", 0.0)

    def test_retry_after_is_whole_seconds(self):
        """Retry-After rounds up and is at least one second."""
        assert (1, 1, 3) == (retry_after_seconds(0.01), retry_after_seconds(1.0),
                             retry_after_seconds(2.2))


class TestRecentIds:
    def test_seen_within_window(self):
        """An id is remembered for the window and forgotten after it."""
        recent = RecentIds(window=10, capacity=100)
        recent.add("x", 0.0)
        assert (True, False) == (recent.seen("x", 9.9), recent.seen("x", 10.0))

    def test_capacity_bounds_memory(self):
        """No more than `capacity` ids are kept; the oldest go first."""
        recent = RecentIds(window=100, capacity=2)
        for i, key in enumerate("abc"):
            recent.add(key, float(i))
        assert (2, False, True) == (len(recent), recent.seen("a", 3.0), recent.seen("c", 3.0))

    def test_expired_entries_are_dropped(self):
        """Adding an id drops the ones that expired."""
        recent = RecentIds(window=1, capacity=100)
        recent.add("a", 0.0)
        recent.add("b", 5.0)
        assert 1 == len(recent)
