"""The orders consumer: `order.created`, `order.updated`, `order.cancelled`.

created   store the order and its lines and reserve stock for them (consumers.stock:
          `allocated`, else `backordered` with nothing reserved, or `partially_allocated`
          when the policy allows it). An order id already stored is left alone ("exists").
updated   for an order not shipped, delivered, in exception or cancelled: release its
          reservations, replace address, note and lines, reserve again. An update older than
          the last order event applied (envelope occurred_at) is "stale". An update for an
          unknown order creates it (the created event may still be on its way; it is then
          ignored as "exists").
cancelled release its reservations, status `cancelled`. Unknown order: stored as cancelled,
          so a late created event cannot allocate it. Too late once shipped or delivered.
          A created/updated whose canonical status is cancelled or refunded cancels too.
Stock given back by an update or a cancellation goes to waiting orders, oldest first.
An order stored after the shipping consumer already saw its shipment (a fulfillment that
overtook its order) is moved on to where that shipment is (consumers.shipping).

Outbox kinds: order.allocated, order.partially_allocated, order.backordered, order.cancelled.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import orjson

from consumers.errors import Permanent
from consumers.events import Event, data_of, event_time, integer, iso, text
from consumers.outbox import notify
from consumers.shipments import follow_shipments, orders_with_shipments
from consumers.stock import (
    DEFAULT_POLICY,
    Policy,
    allocate_waiting,
    insert_lines,
    lock_order,
    lock_orders_and_stock,
    new_lines,
    order_summary,
    release_lines,
    release_order,
    reserve_lines,
)
from consumers.store import Tx

# What handle() returns, for the runner to count.
OUTCOMES = ("allocated", "partially_allocated", "backordered", "cancelled", "exists",
            "ignored", "stale")

CANCELLED_STATUSES = frozenset({"cancelled", "refunded"})  # canonical order statuses
NOT_UPDATABLE = frozenset({"shipped", "delivered", "exception", "cancelled"})
NOT_CANCELLABLE = frozenset({"shipped", "delivered"})


@dataclass(frozen=True)
class OrdersBatch:
    """What `prepare` learned about a batch, for its handlers (one query per batch instead of
    one per message)."""

    shipped: frozenset[str]  # the batch's order ids that a stored shipment already names


def _order(event: Event) -> dict[str, Any]:
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


async def _insert(tx: Tx, order: dict[str, Any], status: str) -> bool:
    """Insert the order row; False if the order id is already stored."""
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
    return inserted == 1


async def _cancelled(
    tx: Tx, event: Event, order_id: str, at: str, policy: Policy
) -> str:
    lines = await release_order(tx, order_id)
    await tx.execute(
        "UPDATE orders SET status = 'cancelled', updated_at = $2 WHERE order_id = $1",
        order_id,
        at,
    )
    await notify(tx, event, "order.cancelled", order_id,
                 order_summary(order_id, "cancelled", lines))
    await allocate_waiting(tx, event, [line["sku"] for line in lines], policy)
    return "cancelled"


async def _created(
    tx: Tx, event: Event, order: dict[str, Any], policy: Policy, batch: OrdersBatch | None
) -> str:
    order_id = order["order_id"]
    lines = new_lines(order["lines"])
    if order["status"] in CANCELLED_STATUSES:
        if not await _insert(tx, order, "cancelled"):
            return "exists"
        await insert_lines(tx, order_id, lines)
        await notify(tx, event, "order.cancelled", order_id,
                     order_summary(order_id, "cancelled", lines))
        return "cancelled"
    # Reserve first, then insert the order with its final status: the usual path is one
    # statement per line plus three. A repeat (the order is already stored) gives it back.
    status = await reserve_lines(tx, lines, policy)
    if not await _insert(tx, order, status):
        await release_lines(tx, lines)
        return "exists"
    await insert_lines(tx, order_id, lines)
    await notify(tx, event, f"order.{status}", order_id, order_summary(order_id, status, lines))
    if batch is None or order_id in batch.shipped:  # no prepare ran: look
        await follow_shipments(tx, order_id)
    return status


async def _updated(
    tx: Tx, event: Event, order: dict[str, Any], policy: Policy, batch: OrdersBatch | None
) -> str:
    order_id = order["order_id"]
    row = await lock_order(tx, order_id)
    if row is None:
        return await _created(tx, event, order, policy, batch)
    if row["status"] in NOT_UPDATABLE:
        return "ignored"
    if row["updated_at"] and order["at"] < row["updated_at"]:
        return "stale"
    if order["status"] in CANCELLED_STATUSES:
        return await _cancelled(tx, event, order_id, order["at"], policy)
    released = [line["sku"] for line in await release_order(tx, order_id)]
    await tx.execute("DELETE FROM order_lines WHERE order_id = $1", order_id)
    lines = new_lines(order["lines"])
    status = await reserve_lines(tx, lines, policy)
    await insert_lines(tx, order_id, lines)
    await tx.execute(
        "UPDATE orders SET shipping_address = $2, note = $3, updated_at = $4, status = $5"
        " WHERE order_id = $1",
        order_id,
        order["shipping_address"],
        order["note"],
        order["at"],
        status,
    )
    await notify(tx, event, f"order.{status}", order_id, order_summary(order_id, status, lines))
    await allocate_waiting(tx, event, released, policy)
    return status


async def _cancel(
    tx: Tx, event: Event, order: dict[str, Any], policy: Policy, batch: OrdersBatch | None
) -> str:
    order_id = order["order_id"]
    row = await lock_order(tx, order_id)
    if row is None:
        if await _insert(tx, order, "cancelled"):
            await insert_lines(tx, order_id, new_lines(order["lines"]))
        return await _cancelled(tx, event, order_id, order["at"], policy)
    if row["status"] == "cancelled" or row["status"] in NOT_CANCELLABLE:
        return "ignored"
    return await _cancelled(tx, event, order_id, order["at"], policy)


_BY_TYPE = {"order.created": _created, "order.updated": _updated, "order.cancelled": _cancel}


async def handle(
    tx: Tx, event: Event, batch: OrdersBatch | None = None, *, policy: Policy = DEFAULT_POLICY
) -> str:
    """Apply one order event in `tx` (`batch`: what `prepare` found for its batch, if it
    ran); returns one of OUTCOMES."""
    apply = _BY_TYPE.get(str(event.get("type")))
    if apply is None:
        raise Permanent(f"orders: unknown event type {event.get('type')!r}")
    return await apply(tx, event, _order(event), policy, batch)


async def prepare(tx: Tx, events: list[Event]) -> OrdersBatch:
    """Before a batch: lock its order ids, then the stock rows its orders will reserve or
    release, each in one global order (PostgreSQL); then note which of its orders a stored
    shipment already names (a fulfillment that overtook its order), so storing the others
    costs no lookup."""
    skus: set[str] = set()
    ids: set[str] = set()
    for event in events:
        data = event.get("data")
        if not isinstance(data, dict):
            continue
        if isinstance(data.get("order_id"), str):
            ids.add(data["order_id"])
        for line in data.get("lines") or ():
            if isinstance(line, dict) and isinstance(line.get("sku"), str):
                skus.add(line["sku"])
    await lock_orders_and_stock(tx, ids, skus)
    return OrdersBatch(shipped=frozenset(await orders_with_shipments(tx, ids)))
