"""Reading the event envelope a consumer is handed (pure): its data and its times, each
wrong field a Permanent error naming the field (never its value's meaning)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from consumers.errors import Permanent
from router.times import now_iso

# The envelope as published by the ingress (or an outbox): id, type, source, received_at,
# occurred_at, schema, data.
Event = dict[str, Any]


def iso(value: Any, field: str = "time") -> str:
    """`value` (ISO-8601, 'Z' allowed, naive means UTC) as the UTC string the store compares."""
    if not isinstance(value, str) or not value:
        raise Permanent(f"{field}: expected an ISO-8601 date-time, got {value!r}")
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError as exc:
        raise Permanent(f"{field}: not an ISO-8601 date-time: {value!r}") from exc
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    return parsed.astimezone(UTC).isoformat(timespec="microseconds")


def event_time(event: Event) -> str:
    """When the event happened at the provider, else when the ingress received it, else now."""
    for key in ("occurred_at", "received_at"):
        if event.get(key):
            return iso(event[key], key)
    return now_iso()


def data_of(event: Event) -> dict[str, Any]:
    data = event.get("data")
    if not isinstance(data, dict):
        raise Permanent("event has no data object")
    return data


def text(data: dict[str, Any], key: str) -> str:
    value = data.get(key)
    if not isinstance(value, str) or not value:
        raise Permanent(f"{key}: expected a non-empty string, got {value!r}")
    return value


def integer(data: dict[str, Any], key: str) -> int:
    value = data.get(key)
    if not isinstance(value, int) or isinstance(value, bool):
        raise Permanent(f"{key}: expected an integer, got {value!r}")
    return value
