"""The audit consumer: a durable record of every accepted event, whatever its type.

One `audit_events` row per event (id, source, type, schema, its times and when it was
recorded) and one `event_keys` row per business key its data names (KEY_KINDS), so an
operator's id (an order, a tracking code, a SKU) finds every event about it
(`webhook-router trace`). The runner's inbox makes a redelivery a "duplicate"; the inserts
also ignore a row already there.
"""

from __future__ import annotations

from typing import Any

from consumers.events import Event
from consumers.store import Tx
from router.times import now_iso

# What handle() returns, for the runner to count.
OUTCOMES = ("recorded",)
KEY_KINDS = ("order_id", "tracking_code", "sku")

_RECORD = (
    "INSERT INTO audit_events (event_id, source, type, schema, received_at, occurred_at,"
    " recorded_at) VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT (event_id) DO NOTHING"
)
_KEY = (
    "INSERT INTO event_keys (event_id, kind, value) VALUES ($1, $2, $3)"
    " ON CONFLICT (event_id, kind, value) DO NOTHING"
)


def business_keys(data: Any) -> list[tuple[str, str]]:
    """(kind, value) for each order_id, tracking_code and SKU (its own, or its lines') that
    `data` names, in that order, each once; integers as text, and values that are neither
    non-empty text nor integers left out."""
    if not isinstance(data, dict):
        return []
    found = [(kind, data.get(kind)) for kind in KEY_KINDS]
    lines = data.get("lines")
    if isinstance(lines, list):
        found += [("sku", line.get("sku")) for line in lines if isinstance(line, dict)]
    keys: list[tuple[str, str]] = []
    for kind, value in found:
        if isinstance(value, int) and not isinstance(value, bool):
            value = str(value)
        if isinstance(value, str) and value and (kind, value) not in keys:
            keys.append((kind, value))
    return keys


def _text(event: Event, key: str) -> str | None:
    value = event.get(key)
    return value if isinstance(value, str) and value else None


async def handle(tx: Tx, event: Event, batch: None = None, *, policy: object = None) -> str:
    """Record `event` and its business keys in `tx` (the allocation policy is not its concern)."""
    event_id = str(event["id"])
    await tx.execute(_RECORD, event_id, _text(event, "source"), str(event["type"]),
                     _text(event, "schema"), _text(event, "received_at"),
                     _text(event, "occurred_at"), now_iso())
    keys = business_keys(event.get("data"))
    if keys:
        await tx.executemany(_KEY, [(event_id, kind, value) for kind, value in keys])
    return "recorded"
