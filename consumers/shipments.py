"""Where an order stands given its shipments: what the orders and shipping consumers share.

A shipment's status moves its order forward (in transit or later -> `shipped`, delivered ->
`delivered`, return to sender / failure / cancelled -> `exception`; a cancelled order is
left as it is), whichever of the two arrives first: the shipping consumer moves a stored
order when its shipment moves, and the orders consumer moves an order it stores when a
shipment already names it (a fulfillment that overtook its order).
"""

from __future__ import annotations

from consumers.stock import lock_order, release_order
from consumers.store import PARAMS_PER_STATEMENT, Tx, chunks, placeholders

ORDER_STATUS = {
    "in_transit": "shipped",
    "out_for_delivery": "shipped",
    "available_for_pickup": "shipped",
    "delivered": "delivered",
    "return_to_sender": "exception",
    "failure": "exception",
    "cancelled": "exception",
}
ORDER_RANK = {"shipped": 1, "delivered": 2, "exception": 3}


async def move_order(tx: Tx, order_id: str, target: str) -> str | None:
    """Move the order forward to `target`; the status it ends in, None if unknown order."""
    row = await lock_order(tx, order_id)
    if row is None:
        return None
    current = row["status"]
    if current in ("cancelled", "refunded") or ORDER_RANK[target] <= ORDER_RANK.get(current, 0):
        return current
    if target in ("shipped", "delivered"):
        await release_order(tx, order_id, consume=True)
    # Out of the warehouse's hands: it no longer waits for stock, an address or payment.
    await tx.execute(
        "UPDATE orders SET status = $2, allocation = NULL, hold_reason = NULL,"
        " expires_at = NULL WHERE order_id = $1", order_id, target)
    return target


async def written_back(tx: Tx, order_id: str) -> set[str]:
    """The tracking codes our own write-back gives the order's store: its label's (the labels
    consumer) and those the storefront consumer wrote back or is writing back. A storefront
    webhook carrying one of them is our write-back come back (its echo), not news."""
    rows = await tx.fetch(
        "SELECT tracking_code FROM labels WHERE order_id = $1 AND tracking_code IS NOT NULL"
        " UNION SELECT tracking_code FROM writebacks WHERE order_id = $1", order_id)
    return {row["tracking_code"] for row in rows}


async def orders_with_shipments(tx: Tx, order_ids: set[str]) -> set[str]:
    """Which of `order_ids` some stored shipment names, in one query for a batch. On
    PostgreSQL, run it after lock_orders: no shipment naming them can then commit before
    this transaction."""
    found: set[str] = set()
    for chunk in chunks(sorted(order_ids), PARAMS_PER_STATEMENT):
        rows = await tx.fetch("SELECT DISTINCT order_id FROM shipments"
                              f" WHERE order_id IN ({placeholders(len(chunk))})", *chunk)
        found.update(row["order_id"] for row in rows)
    return found


async def follow_shipments(tx: Tx, order_id: str) -> str | None:
    """Move the order forward to match the furthest status among its shipments; the status it
    ends in (None if the order is not stored yet: the orders consumer calls this again when it
    stores it, so a fulfillment that overtook its order is not forgotten)."""
    furthest = await tx.fetchval(
        "SELECT status FROM shipments WHERE order_id = $1 ORDER BY rank DESC, occurred_at DESC"
        " LIMIT 1",
        order_id,
    )
    if furthest not in ORDER_STATUS:
        return None
    return await move_order(tx, order_id, ORDER_STATUS[furthest])
