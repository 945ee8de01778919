"""The inventory consumer: `inventory.updated` for one (sku, location).

on_hand   absolute count as of `as_of`: applied only if as_of is newer than the stored as_of,
          else "stale" (nothing changes). A count below what is reserved is refused
          (Permanent: the warehouse and the reservations disagree, a person must look).
delta     a received batch (or a negative correction): added to on_hand; as_of is not moved,
          so deltas commute. A delta older than the last absolute count is already in that
          count: "stale". A result below what is reserved (or below 0) is refused (Permanent).
          A late absolute count older than an applied delta still overwrites it (one as_of).

When the available quantity (on_hand - reserved) grows, waiting orders for the SKU are
allocated oldest first (consumers.stock.allocate_waiting).

Outbox kinds: stock.changed (each change of on_hand), order.allocated or
order.partially_allocated (per waiting order that got stock).
"""

from __future__ import annotations

from consumers.errors import Permanent
from consumers.events import Event, data_of, integer, iso, text
from consumers.outbox import notify
from consumers.stock import DEFAULT_POLICY, Policy, allocate_waiting, lock_stock
from consumers.store import Tx

# What handle() returns, for the runner to count.
OUTCOMES = ("applied", "stale", "unchanged")


async def handle(
    tx: Tx, event: Event, batch: None = None, *, policy: Policy = DEFAULT_POLICY
) -> str:
    """Apply one stock update in `tx`; returns one of OUTCOMES."""
    if event.get("type") != "inventory.updated":
        raise Permanent(f"inventory: unknown event type {event.get('type')!r}")
    data = data_of(event)
    sku, location = text(data, "sku"), text(data, "location")
    as_of = iso(data.get("as_of"), "as_of")
    absolute, relative = data.get("on_hand"), data.get("delta")
    if (absolute is None) == (relative is None):
        raise Permanent("exactly one of on_hand and delta is required")
    amount = integer(data, "on_hand" if relative is None else "delta")
    where = f"{sku}@{location}"

    row = await tx.fetchrow(  # lock the row until commit
        "UPDATE stock SET on_hand = on_hand WHERE sku = $1 AND location = $2"
        " RETURNING on_hand, reserved, as_of",
        sku,
        location,
    )
    if row is None:
        old_on_hand, reserved, stored_as_of = 0, 0, None
    else:
        old_on_hand, reserved, stored_as_of = row["on_hand"], row["reserved"], row["as_of"]

    new_as_of: str | None
    if relative is None:
        if stored_as_of is not None and as_of <= stored_as_of:
            return "stale"
        on_hand, new_as_of = amount, as_of
    else:
        if stored_as_of is not None and as_of < stored_as_of:
            return "stale"
        on_hand, new_as_of = old_on_hand + amount, stored_as_of
    if on_hand < 0:
        raise Permanent(f"stock {where}: on_hand would be {on_hand}, below 0")
    if on_hand < reserved:
        raise Permanent(f"stock {where}: on_hand would be {on_hand}, below the {reserved} reserved")

    if row is None:
        await tx.execute(
            "INSERT INTO stock (sku, location, on_hand, reserved, as_of)"
            " VALUES ($1, $2, $3, 0, $4)",
            sku,
            location,
            on_hand,
            new_as_of,
        )
    else:
        await tx.execute(
            "UPDATE stock SET on_hand = $3, as_of = $4 WHERE sku = $1 AND location = $2",
            sku,
            location,
            on_hand,
            new_as_of,
        )
    if on_hand == old_on_hand and row is not None:
        return "unchanged"
    await notify(
        tx,
        event,
        "stock.changed",
        where,
        {
            "sku": sku,
            "location": location,
            "on_hand": on_hand,
            "reserved": reserved,
            "available": on_hand - reserved,
            "as_of": as_of,
        },
    )
    if on_hand > old_on_hand:
        await allocate_waiting(tx, event, [sku], policy)
    return "applied"


async def prepare(tx: Tx, events: list[Event]) -> None:
    """Before a batch: lock the stock rows it updates, in one order."""
    skus = {
        event["data"]["sku"] for event in events
        if isinstance(event.get("data"), dict) and isinstance(event["data"].get("sku"), str)
    }
    await lock_stock(tx, skus)
