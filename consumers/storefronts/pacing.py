"""Pacing a driver's requests to one store, so that a backlog of write-backs is sent as fast as
the store takes them instead of all at once and then round the retry ladder.

Every store: at most `max_in_flight` requests at a time (`Slots`; a WooCommerce host is often
one small PHP server). Shopify also: its GraphQL Admin API is a leaky bucket of cost points per
app and shop (https://shopify.dev/docs/api/usage/rate-limits), and every answer says how full
it is (`extensions.cost.throttleStatus`: maximumAvailable, currentlyAvailable, restoreRate).
`CostBucket` keeps the last of those with the time it was seen, estimates what the bucket holds
now (refilled at restoreRate since, never past the maximum, less what our requests still
unanswered will take) and holds a request until its cost fits, as Shopify asks of its apps.

The estimate is this process's own: what other processes of ours spend from the same shop's
bucket shows in the next answer's status, and the rare THROTTLED that slips through is
handled by the driver as before (waited out when short, else the retry ladder).
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, replace
from typing import Any

MAX_IN_FLIGHT = 4  # requests to one store at a time, unless [storefront.<source>] says


@dataclass(frozen=True)
class Seen:
    """One answer's throttleStatus, and when (the clock's seconds) it was read."""

    maximum: float
    available: float
    restore_rate: float
    at: float

    def now(self, at: float) -> float:
        """The points the bucket holds at `at`: refilled since, capped at the maximum."""
        return min(self.maximum, self.available + max(0.0, at - self.at) * self.restore_rate)


def read_status(cost: Any, at: float) -> Seen | None:
    """`extensions.cost.throttleStatus` of an answer as Seen at `at`; None if it does not say
    (or says nonsense: a rate of 0 would never refill)."""
    try:
        status = cost["throttleStatus"]
        seen = Seen(float(status["maximumAvailable"]), float(status["currentlyAvailable"]),
                    float(status["restoreRate"]), at)
    except (KeyError, TypeError, ValueError):
        return None
    numbers = (seen.maximum, seen.available, seen.restore_rate)
    if not all(math.isfinite(n) for n in numbers) or seen.restore_rate <= 0 \
            or seen.maximum <= 0:
        return None
    return seen


def room_wait(seen: Seen | None, pending: float, cost: float, at: float) -> float:
    """Seconds until `cost` fits in the bucket with `pending` points already promised to
    requests not yet answered: 0 when it fits now. A cost above the maximum waits for a full
    bucket (Shopify answers MAX_COST_EXCEEDED, not THROTTLED: nothing to gain by waiting
    longer). Nothing seen yet: 0 when nothing is pending (the first answer tells the state),
    else infinity (wait for that answer)."""
    if seen is None:
        return 0.0 if pending <= 0 else math.inf
    need = min(cost, seen.maximum) + pending
    have = seen.now(at)
    return 0.0 if have >= need else (need - have) / seen.restore_rate


class Slots:
    """At most `max_in_flight` requests to one store at a time."""

    def __init__(self, max_in_flight: int = MAX_IN_FLIGHT) -> None:
        if max_in_flight < 1:
            raise ValueError(f"max_in_flight {max_in_flight} is not at least 1")
        self.max_in_flight = max_in_flight
        self._slots = asyncio.Semaphore(max_in_flight)

    @asynccontextmanager
    async def turn(self) -> AsyncIterator[None]:
        async with self._slots:
            yield


@dataclass
class Ticket:
    """One request sent: when, its cost as reckoned, the points of requests answered before
    it went out (CostBucket.answered then), and whether its answer reported the bucket."""

    at: float
    cost: float
    answered: float
    observed: bool = False


class CostBucket:
    """One shop's GraphQL cost bucket as this process sees it, and the requests' turns: a
    request waits for a slot, then until its cost (the requestedQueryCost last answered for
    its operation, else `first_costs`' estimate) fits.

    An answer's status is read as a lower bound of the bucket, whatever order the answers
    come back in: taken as of when the answer came (the store read it before: refill is
    counted only from then, never for the time the request took to reach the store, which
    the store had counted already), less the requests answered while it was out (the store
    may have charged them after reading it; counted twice at worst); the requests still out
    are `pending`. A request answered without a status (a 5xx, a lost answer) is taken off
    the last status as if the store charged it."""

    def __init__(self, first_costs: dict[str, float], max_in_flight: int = MAX_IN_FLIGHT,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.slots = Slots(max_in_flight)
        self.costs = dict(first_costs)  # operation -> its cost as last answered
        self.clock = clock
        self.seen: Seen | None = None
        self.pending = 0.0  # points of requests sent and not yet answered
        self.answered = 0.0  # points of every request answered so far (a running total)
        self._changed = asyncio.Condition()

    def observe(self, operation: str, cost: Any, ticket: Ticket) -> None:
        """An answer's `extensions.cost`: the bucket's state and the operation's cost."""
        seen = read_status(cost, self.clock())
        if seen is not None:
            charged_meanwhile = self.answered - ticket.answered
            self.seen = replace(seen, available=seen.available - charged_meanwhile)
            ticket.observed = True
        requested = cost.get("requestedQueryCost") if isinstance(cost, dict) else None
        if isinstance(requested, (int, float)) and math.isfinite(requested) and requested >= 0:
            self.costs[operation] = float(requested)

    @asynccontextmanager
    async def turn(self, operation: str) -> AsyncIterator[Ticket]:
        """Hold the request until a slot is free and its cost fits; the block sends it and
        `observe`s the answer with the ticket this gives."""
        async with self.slots.turn():
            cost = self.costs[operation]
            async with self._changed:
                while (wait := room_wait(self.seen, self.pending, cost, self.clock())) > 0:
                    try:  # woken early by an answer or a finished request: look again
                        await asyncio.wait_for(self._changed.wait(),
                                               None if math.isinf(wait) else wait)
                    except TimeoutError:
                        pass
                self.pending += cost
                ticket = Ticket(self.clock(), cost, self.answered)
            try:
                yield ticket
            finally:
                async with self._changed:
                    self.pending -= cost
                    self.answered += cost
                    if not ticket.observed and self.seen is not None:
                        self.seen = replace(self.seen, available=self.seen.available - cost)
                    self._changed.notify_all()
