"""What a consumer's handler raises to steer the runner (consumers.runner).

    Exception         anything else a handler raises: the effect could not be applied now
    ├── Transient     the same, said explicitly (store busy, downstream timeout): retry later
    └── Permanent     the event can never be applied (bad payload): dead-letter it now

A retried message goes through the retry ladder (NAME.retry.<seconds>); once the ladder is
used up, or at once for Permanent, it goes to NAME.dead with the reason.
"""

from __future__ import annotations


class Transient(Exception):
    """The effect could not be applied now (store busy, downstream timeout): retry later."""


class Permanent(Exception):
    """The event can never be applied (bad payload, unknown order): dead-letter it."""
