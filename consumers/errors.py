"""What a consumer's handler raises to steer the runner (consumers.runner).

    Exception         anything else a handler raises: the effect could not be applied now
    ├── Transient     the same, said explicitly (store busy, downstream timeout): retry later,
    │   │             not before `retry_after` seconds when the other side said so
    │   └── Deferred  the effect waits for someone (an operator renewing credentials): wait
    │                 on the ladder without using up an attempt; never dead-lettered for it
    └── Permanent     the event can never be applied (bad payload): dead-letter it now

A retried message goes through the retry ladder (NAME.retry.<seconds>); once the ladder is
used up, or at once for Permanent, it goes to NAME.dead with the reason. With `retry_after`
the rung is the smallest one at least that long (the longest if none is), and never shorter
than the rung the attempt would have taken anyway (consumers.runner.rung).
"""

from __future__ import annotations


class Transient(Exception):
    """The effect could not be applied now (store busy, downstream timeout): retry later,
    after at least `retry_after` seconds when the other side said how long (Retry-After, a
    rate limit's refill time)."""

    def __init__(self, message: str = "", retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class Deferred(Transient):
    """The effect waits for something only an operator can change (a store that refused our
    credentials): the message waits on the ladder (the rung for `retry_after`, else the
    longest) and comes back, as often as it takes, without its attempts running out."""


class Permanent(Exception):
    """The event can never be applied (bad payload, unknown order): dead-letter it."""
