"""The orders consumer: `order.created`, `order.updated`, `order.cancelled`.

created   store the order and its lines and reserve stock for every line, all or nothing:
          status `allocated`, else `backordered` with nothing reserved. An order id already
          stored is left alone ("exists").
updated   for an order not shipped, delivered, in exception or cancelled: release its
          reservations, replace address, note and lines, reserve again. An update older than
          the last order event applied (envelope occurred_at) is "stale". An update for an
          unknown order creates it (the created event may still be on its way; it is then
          ignored as "exists").
cancelled release its reservations, status `cancelled`. Unknown order: stored as cancelled,
          so a late created event cannot allocate it. Too late once shipped or delivered.
          A created/updated whose canonical status is cancelled or refunded cancels too.

Outbox kinds: order.allocated, order.backordered, order.cancelled.
"""

from __future__ import annotations

from typing import Any

import orjson

from consumers.effects import (
    data_of,
    event_time,
    integer,
    iso,
    lock_order,
    notify,
    order_summary,
    release_order,
    reserve_order,
    text,
)
from consumers.runner import Permanent

# What handle() returns, for the runner to count.
OUTCOMES = ("allocated", "backordered", "cancelled", "exists", "ignored", "stale")

CANCELLED_STATUSES = frozenset({"cancelled", "refunded"})  # canonical order statuses
NOT_UPDATABLE = frozenset({"shipped", "delivered", "exception", "cancelled"})
NOT_CANCELLABLE = frozenset({"shipped", "delivered"})


def _order(event: dict[str, Any]) -> dict[str, Any]:
    data = data_of(event)
    lines = data.get("lines")
    if not isinstance(lines, list) or not lines:
        raise Permanent("lines: expected a non-empty list")
    parsed_lines = []
    for number, line in enumerate(lines):
        if not isinstance(line, dict):
            raise Permanent(f"lines[{number}]: expected an object")
        quantity = integer(line, "quantity")
        if quantity < 1:
            raise Permanent(f"lines[{number}].quantity: must be at least 1, got {quantity}")
        parsed_lines.append((text(line, "sku"), quantity))
    address = data.get("shipping_address")
    note = data.get("note")
    return {
        "order_id": text(data, "order_id"),
        "source": data.get("source") or event.get("source"),
        "status": data.get("status"),
        "lines": parsed_lines,
        "shipping_address": None if address is None else orjson.dumps(address).decode(),
        "note": note if isinstance(note, str) else None,
        "created_at": iso(data.get("created_at"), "created_at"),
        "at": event_time(event),
    }


async def _insert(tx: Any, order: dict[str, Any], status: str) -> bool:
    inserted = await tx.execute(
        "INSERT INTO orders (order_id, source, status, shipping_address, note, created_at,"
        " updated_at) VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT (order_id) DO NOTHING",
        order["order_id"],
        order["source"],
        status,
        order["shipping_address"],
        order["note"],
        order["created_at"],
        order["at"],
    )
    if inserted:
        await _insert_lines(tx, order)
    return inserted == 1


async def _insert_lines(tx: Any, order: dict[str, Any]) -> None:
    for line_no, (sku, quantity) in enumerate(order["lines"], start=1):
        await tx.execute(
            "INSERT INTO order_lines (order_id, line_no, sku, quantity, reserved)"
            " VALUES ($1, $2, $3, $4, 0)",
            order["order_id"],
            line_no,
            sku,
            quantity,
        )


async def _allocate(tx: Any, event: dict[str, Any], order_id: str) -> str:
    status = "allocated" if await reserve_order(tx, order_id) else "backordered"
    await tx.execute("UPDATE orders SET status = $2 WHERE order_id = $1", order_id, status)
    await notify(tx, event, f"order.{status}", order_id, await order_summary(tx, order_id, status))
    return status


async def _cancelled(tx: Any, event: dict[str, Any], order_id: str, at: str) -> str:
    await release_order(tx, order_id)
    await tx.execute(
        "UPDATE orders SET status = 'cancelled', updated_at = $2 WHERE order_id = $1",
        order_id,
        at,
    )
    await notify(
        tx, event, "order.cancelled", order_id, await order_summary(tx, order_id, "cancelled")
    )
    return "cancelled"


async def _created(tx: Any, event: dict[str, Any], order: dict[str, Any]) -> str:
    if order["status"] in CANCELLED_STATUSES:
        if not await _insert(tx, order, "cancelled"):
            return "exists"
        return await _cancelled(tx, event, order["order_id"], order["at"])
    if not await _insert(tx, order, "received"):
        return "exists"
    return await _allocate(tx, event, order["order_id"])


async def _updated(tx: Any, event: dict[str, Any], order: dict[str, Any]) -> str:
    order_id = order["order_id"]
    row = await lock_order(tx, order_id)
    if row is None:
        return await _created(tx, event, order)
    if row["status"] in NOT_UPDATABLE:
        return "ignored"
    if row["updated_at"] and order["at"] < row["updated_at"]:
        return "stale"
    if order["status"] in CANCELLED_STATUSES:
        return await _cancelled(tx, event, order_id, order["at"])
    await release_order(tx, order_id)
    await tx.execute("DELETE FROM order_lines WHERE order_id = $1", order_id)
    await _insert_lines(tx, order)
    await tx.execute(
        "UPDATE orders SET shipping_address = $2, note = $3, updated_at = $4 WHERE order_id = $1",
        order_id,
        order["shipping_address"],
        order["note"],
        order["at"],
    )
    return await _allocate(tx, event, order_id)


async def _cancel(tx: Any, event: dict[str, Any], order: dict[str, Any]) -> str:
    order_id = order["order_id"]
    row = await lock_order(tx, order_id)
    if row is None:
        await _insert(tx, order, "cancelled")
        return await _cancelled(tx, event, order_id, order["at"])
    if row["status"] == "cancelled" or row["status"] in NOT_CANCELLABLE:
        return "ignored"
    return await _cancelled(tx, event, order_id, order["at"])


_BY_TYPE = {"order.created": _created, "order.updated": _updated, "order.cancelled": _cancel}


async def handle(tx: Any, event: dict[str, Any]) -> str:
    """Apply one order event in `tx`; returns one of OUTCOMES."""
    apply = _BY_TYPE.get(event.get("type"))  # type: ignore[arg-type]
    if apply is None:
        raise Permanent(f"orders: unknown event type {event.get('type')!r}")
    return await apply(tx, event, _order(event))
