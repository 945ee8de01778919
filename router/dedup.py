"""Recently accepted event ids, so a provider's retry is answered without publishing again,
and the ids being published right now, so concurrent copies of one delivery publish once.

Per process and in memory: this only saves work.  Exactly-once effects are the consumers'
job (their inbox), so a restart or a second worker that misses a duplicate is harmless.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections import OrderedDict

from router.errors import BrokerTrouble


def signed_content_key(source: str, topic: str, body: bytes) -> str:
    """What a delivery is remembered by besides its id when its source signs the body alone
    (Verifier.signs_only_body: Shopify, WooCommerce, GitHub...). Their delivery id and topic
    headers are not signed, so a captured body sent again under a new id is the same signed
    content, answered as a duplicate. No real delivery is lost to it: a provider's own retry
    keeps its id and its body (Shopify's X-Shopify-Webhook-Id), and a new event always has a
    new body (its updated_at moves on). The same body under two topics the source maps
    (Shopify's orders/create and orders/updated) is two events; `topic` is "" for any topic the
    source does not map, so a made-up one cannot make a copy new."""
    digest = hashlib.sha256(topic.encode("utf-8", "surrogateescape") + b"\0" + body)
    return f"{source}\0body:{digest.hexdigest()}"


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


class InFlight:
    """Deliveries being published right now, by key, so that a second request with the same
    key waits for the first one's outcome instead of publishing it again:

        while not recent.seen(key):
            waited, failure = await in_flight.wait(key)
            if failure is not None:     # the first could not publish: neither can we now
                raise failure
            if not waited:              # nobody has it (any more): ours to publish
                with in_flight.lead((key,)):
                    ...publish, then recent.add(key)
                break

    A delivery known by several keys (its id, and signed_content_key) leads them all.

    The outcome a waiter gets is None when the first request ended without a broker failure
    (it was published or held, and so is in RecentIds; or it was refused, and nothing was),
    or the BrokerTrouble it ended with (503 nothing taken, 504 sent but unconfirmed).
    """

    def __init__(self) -> None:
        self._running: dict[str, asyncio.Future[BrokerTrouble | None] | None] = {}

    def __len__(self) -> int:
        return len(self._running)

    def __contains__(self, key: str) -> bool:
        return key in self._running

    async def wait(self, key: str) -> tuple[bool, BrokerTrouble | None]:
        """(True, its outcome) once the request publishing `key` ends, if one is; else
        (False, None) at once."""
        if key not in self._running:
            return False, None
        running = self._running[key]
        if running is None:  # the first waiter: the outcome gets a future only now
            running = self._running[key] = asyncio.get_running_loop().create_future()
        # Shielded: a waiter that is cancelled must not cancel the outcome for the others.
        return True, await asyncio.shield(running)

    def lead(self, keys: tuple[str, ...]) -> _Lead:
        """Mark `keys` as being published by the caller until the `with` block ends; a
        BrokerTrouble leaving the block is the outcome the waiters (on any of them) get."""
        return _Lead(self._running, keys)


class _Lead:
    """InFlight.lead's context manager (a class: cheaper per request than a generator)."""

    __slots__ = ("_running", "_keys")

    def __init__(self, running: dict[str, asyncio.Future[BrokerTrouble | None] | None],
                 keys: tuple[str, ...]) -> None:
        self._running = running
        self._keys = keys

    def __enter__(self) -> None:
        for key in self._keys:
            self._running[key] = None  # nobody waits yet (the usual case): no future

    def __exit__(self, kind: object, exc: BaseException | None, tb: object) -> None:
        outcome = exc if isinstance(exc, BrokerTrouble) else None
        for key in self._keys:
            running = self._running.pop(key)
            if running is not None:
                running.set_result(outcome)
