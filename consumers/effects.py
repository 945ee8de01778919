"""What the orders, inventory and shipping consumers share: times, order locks, stock
reservations and outbox notifications.

Handlers are `async def handle(tx, event) -> str | None`: they apply the effect inside the
runner's transaction (the inbox claim is already made) and return a short outcome the runner
may count and log (see each module's OUTCOMES), or raise `Permanent` for a payload that can
never be applied; any other exception means "retry".

Stock is reserved at one location, RESERVE_LOCATION: order_lines has no location column, so
the location a line was reserved at must be known without one (see the module constant).
A line's `reserved` column holds what that line holds in stock right now (0 or its quantity);
releasing or consuming (shipping) sets it back to 0, so a release can never happen twice.

Row locks are taken with a no-op `UPDATE ... RETURNING` (PostgreSQL locks the row until
commit; SQLite's BEGIN IMMEDIATE already serialises writers), so the same SQL works on both.
Stock rows are always touched in (sku, line_no) order to keep PostgreSQL deadlocks rare;
one that happens anyway is an ordinary error, retried by the runner.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import orjson

from consumers.runner import Permanent

# The one location orders reserve stock at. Inventory updates for other locations are stored
# but never allocate orders. (Multi-location needs an order_lines.location column.)
RESERVE_LOCATION = "default"


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


def event_time(event: dict[str, Any]) -> str:
    """When the event happened at the provider, else when the ingress received it, else now."""
    for key in ("occurred_at", "received_at"):
        if event.get(key):
            return iso(event[key], key)
    return datetime.now(UTC).isoformat(timespec="microseconds")


def data_of(event: dict[str, Any]) -> dict[str, Any]:
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


async def notify(tx: Any, event: dict[str, Any], kind: str, key: str, data: dict[str, Any]) -> str:
    """Write the outbox row for `kind`; its message id comes from the cause, so a retried or
    replayed event adds no second row. Returns the message id."""
    message_id = f"{event['id']}:{kind}:{key}"
    body = orjson.dumps(
        {"id": message_id, "type": f"notify.{kind}", "data": data, "cause": event["id"]}
    )
    await tx.add_outbox(kind, f"notify.{kind}", body, message_id)
    return message_id


# --- orders and reservations -----------------------------------------------------------------


async def lock_order(tx: Any, order_id: str) -> dict[str, Any] | None:
    """The order's row (status, created_at, updated_at), locked until commit; None if unknown.
    updated_at is the time of the last order event applied (not of stock or shipping moves)."""
    return await tx.fetchrow(
        "UPDATE orders SET version = version + 1 WHERE order_id = $1"
        " RETURNING order_id, status, created_at, updated_at",
        order_id,
    )


async def order_lines(tx: Any, order_id: str) -> list[dict[str, Any]]:
    return await tx.fetch(
        "SELECT line_no, sku, quantity, reserved FROM order_lines WHERE order_id = $1"
        " ORDER BY sku, line_no",
        order_id,
    )


async def reserve_order(tx: Any, order_id: str) -> bool:
    """Reserve every line of the order at RESERVE_LOCATION, all or nothing. A conditional
    UPDATE per line, so concurrent transactions can never oversell."""
    for line in await order_lines(tx, order_id):
        if line["reserved"]:
            continue
        took = await tx.execute(
            "UPDATE stock SET reserved = reserved + $3"
            " WHERE sku = $1 AND location = $2 AND on_hand - reserved >= $3",
            line["sku"],
            RESERVE_LOCATION,
            line["quantity"],
        )
        if took != 1:
            await release_order(tx, order_id)
            return False
        await tx.execute(
            "UPDATE order_lines SET reserved = $3 WHERE order_id = $1 AND line_no = $2",
            order_id,
            line["line_no"],
            line["quantity"],
        )
    return True


async def release_order(tx: Any, order_id: str, *, consume: bool = False) -> list[str]:
    """Give back what the order's lines hold; with `consume` the units left the warehouse
    (shipped), so on_hand drops too. Returns the SKUs released."""
    released = []
    take = ", on_hand = on_hand - $3" if consume else ""
    for line in await order_lines(tx, order_id):
        if not line["reserved"]:
            continue
        done = await tx.execute(
            f"UPDATE stock SET reserved = reserved - $3{take} WHERE sku = $1 AND location = $2",
            line["sku"],
            RESERVE_LOCATION,
            line["reserved"],
        )
        if done != 1:
            raise RuntimeError(f"order {order_id}: reserved stock row {line['sku']} is missing")
        await tx.execute(
            "UPDATE order_lines SET reserved = 0 WHERE order_id = $1 AND line_no = $2",
            order_id,
            line["line_no"],
        )
        released.append(line["sku"])
    return released


async def order_summary(tx: Any, order_id: str, status: str) -> dict[str, Any]:
    lines = await tx.fetch(
        "SELECT sku, quantity, reserved FROM order_lines WHERE order_id = $1 ORDER BY line_no",
        order_id,
    )
    return {"order_id": order_id, "status": status, "location": RESERVE_LOCATION, "lines": lines}


async def allocate_backorders(tx: Any, event: dict[str, Any], sku: str) -> list[str]:
    """Allocate backordered orders that need `sku`, oldest (created_at) first, each all or
    nothing; an order that does not fit is skipped so smaller later ones may still go.
    Returns the order ids allocated."""
    candidates = await tx.fetch(
        "SELECT o.order_id, o.created_at FROM orders o"
        " WHERE o.status = 'backordered' AND EXISTS (SELECT 1 FROM order_lines l"
        " WHERE l.order_id = o.order_id AND l.sku = $1)"
        " ORDER BY o.created_at, o.order_id",
        sku,
    )
    allocated = []
    for candidate in candidates:
        available = await tx.fetchval(
            "SELECT on_hand - reserved FROM stock WHERE sku = $1 AND location = $2",
            sku,
            RESERVE_LOCATION,
        )
        if not available or available <= 0:
            break
        order_id = candidate["order_id"]
        row = await lock_order(tx, order_id)
        if row is None or row["status"] != "backordered":  # another consumer got there first
            continue
        if not await reserve_order(tx, order_id):
            continue
        await tx.execute("UPDATE orders SET status = 'allocated' WHERE order_id = $1", order_id)
        await notify(
            tx,
            event,
            "order.allocated",
            order_id,
            await order_summary(tx, order_id, "allocated"),
        )
        allocated.append(order_id)
    return allocated
