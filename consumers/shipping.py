"""The shipping consumer: `shipment.updated` for one (tracking_code, carrier).

Every update is appended to shipment_events (the history). The shipment's status moves only
forward by RANK (a tie moves only to a later occurred_at), so a late `in_transit` after
`delivered` stays in history without changing anything.

Linking: an update that names an order (a storefront's fulfillment, an AfterShip tracking
with its order id) links that order to every shipment row with the same tracking code; an
update that names none (EasyPost trackers carry no order) takes the order linked to its
tracking code, whichever carrier name recorded it first. The first link wins. When a
shipment moves or gets linked, the order moves forward to match the furthest status among
its tracking code's rows: in transit or later -> `shipped`, delivered -> `delivered`,
return to sender / failure / cancelled -> `exception` (a cancelled order is left as it is).
On `shipped` or `delivered` the order's reservations are consumed: the units left the
warehouse, so on_hand and reserved both drop (later absolute counts no longer include them).
An order not stored yet is moved when the orders consumer stores it (consumers.shipments).

Echoes: the order's store tells us of the fulfillment our write-back made (Shopify's
fulfillments/create with our tracking code, consumers.shipments.written_back). Such an update
from the order's own source that does not move its shipment further is recorded as "echo"
and changes nothing, not even the history; one that does move it is applied as any other.

Outbox kind: shipment.updated (each status move).
"""

from __future__ import annotations

from typing import Any

from consumers.errors import Permanent
from consumers.events import Event, data_of, iso, text
from consumers.outbox import notify
from consumers.shipments import follow_shipments, written_back
from consumers.stock import DEFAULT_POLICY, Policy, lock_orders_and_stock
from consumers.store import Tx

# What handle() returns, for the runner to count.
OUTCOMES = ("advanced", "kept", "echo")

RANK = {
    "unknown": 0,
    "pre_transit": 1,
    "in_transit": 2,
    "out_for_delivery": 3,
    "available_for_pickup": 3,
    "delivered": 4,
    "return_to_sender": 5,
    "failure": 5,
    "cancelled": 5,
}


async def handle(
    tx: Tx, event: Event, batch: None = None, *, policy: Policy = DEFAULT_POLICY
) -> str:
    """Apply one tracking update in `tx`; returns one of OUTCOMES."""
    if event.get("type") != "shipment.updated":
        raise Permanent(f"shipping: unknown event type {event.get('type')!r}")
    data = data_of(event)
    code, carrier = text(data, "tracking_code"), text(data, "carrier")
    status = data.get("status")
    if status not in RANK:
        status = "unknown"
    rank = RANK[status]
    occurred_at = iso(data.get("occurred_at"), "occurred_at")
    named = data.get("order_id") if isinstance(data.get("order_id"), str) else None
    detail = data.get("detail") if isinstance(data.get("detail"), str) else None
    if named is not None and await _echo(tx, code, named, rank, data.get("source")):
        return "echo"

    await tx.execute(
        "INSERT INTO shipment_events (tracking_code, carrier, status, occurred_at, detail,"
        " event_id) VALUES ($1, $2, $3, $4, $5, $6)",
        code,
        carrier,
        status,
        occurred_at,
        detail,
        str(event["id"]),
    )
    inserted = moved = await tx.execute(
        "INSERT INTO shipments (tracking_code, carrier, order_id, status, rank, occurred_at)"
        " VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (tracking_code, carrier) DO NOTHING",
        code,
        carrier,
        named,
        status,
        rank,
        occurred_at,
    )
    if not inserted:
        moved = await tx.execute(
            "UPDATE shipments SET status = $3, rank = $4, occurred_at = $5"
            " WHERE tracking_code = $1 AND carrier = $2 AND (rank < $4"
            " OR (rank = $4 AND status <> $3 AND occurred_at < $5))",
            code,
            carrier,
            status,
            rank,
            occurred_at,
        )
    # The order this tracking code ships: the first one linked to any of its rows.
    order_id = await tx.fetchval(
        "SELECT order_id FROM shipments WHERE tracking_code = $1 AND order_id IS NOT NULL"
        " ORDER BY carrier = $2 DESC, carrier LIMIT 1",
        code,
        carrier,
    ) or named
    linked_now = 0
    if order_id is not None:
        linked_now = await tx.execute(
            "UPDATE shipments SET order_id = $2 WHERE tracking_code = $1 AND order_id IS NULL",
            code,
            order_id,
        )
    if not moved and not linked_now:
        return "kept"
    order_status = None
    if order_id is not None:
        order_status = await follow_shipments(tx, order_id)
    if not moved:  # only linked: the order follows the shipment, nothing new to announce
        return "kept"
    await notify(
        tx,
        event,
        "shipment.updated",
        f"{carrier}:{code}",
        {
            "tracking_code": code,
            "carrier": carrier,
            "status": status,
            "occurred_at": occurred_at,
            "detail": detail,
            "order_id": order_id,
            "order_status": order_status,
        },
    )
    return "advanced"


async def _echo(tx: Tx, code: str, order_id: str, rank: int, source: Any) -> bool:
    """Whether the update is our own write-back come back: from the order's own store, with
    a tracking code we gave it for that order, saying nothing the shipment has not passed."""
    if code not in await written_back(tx, order_id):
        return False
    stored = await tx.fetchrow(
        "SELECT o.source, MAX(s.rank) AS rank FROM orders o JOIN shipments s"
        " ON s.order_id = o.order_id AND s.tracking_code = $2 WHERE o.order_id = $1"
        " GROUP BY o.source", order_id, code)
    return stored is not None and stored["source"] == source and rank <= stored["rank"]


async def prepare(tx: Tx, events: list[Event]) -> None:
    """Before a batch: lock, each in one global order, the ids of the orders it may move and
    then the stock rows that shipping them may consume, as the orders and inventory consumers
    do, so none holds a lock while waiting for one another holds."""
    if tx.dialect != "postgresql":
        return
    codes, orders = set(), set()
    for event in events:
        data = event.get("data")
        if not isinstance(data, dict):
            continue
        if isinstance(data.get("tracking_code"), str):
            codes.add(data["tracking_code"])
        if isinstance(data.get("order_id"), str):
            orders.add(data["order_id"])
    if not codes and not orders:
        return
    linked = await tx.fetch(
        "SELECT DISTINCT order_id FROM shipments WHERE tracking_code = ANY($1::text[])"
        " AND order_id IS NOT NULL",
        sorted(codes),
    )
    orders.update(row["order_id"] for row in linked)
    await lock_orders_and_stock(tx, orders, set())
