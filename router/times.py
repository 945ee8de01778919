"""Times as the router writes them: ISO-8601, in UTC."""

from __future__ import annotations

from datetime import UTC, datetime


def now_iso(timespec: str = "microseconds") -> str:
    """The current UTC time, e.g. `2026-11-29T02:44:50.123456+00:00` (the store keeps times
    so, so they compare as text); `timespec` as for `datetime.isoformat`."""
    return datetime.now(UTC).isoformat(timespec=timespec)
