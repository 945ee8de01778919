"""Stock as the orders, inventory and shipping consumers share it: the allocation policy,
the locks every batch takes in one global order, order lines and their reservations.

Reservations: each order line is reserved whole at one location, the one with the most units
available for its SKU (ties: the first location by name); the line records where
(order_lines.location) and how much it holds (order_lines.reserved: 0 or its quantity).
Releasing or consuming (shipping) sets reserved back to 0, so a release can never happen
twice. Only lines that ship are reserved (a gift card or a tip holds nothing). An order's
allocation is `allocated` when every such line is reserved; otherwise, by default, nothing
is reserved and it is `backordered`; with Policy(partial_allocation=True) the lines that
fit are reserved and it is `partially_allocated` (or `backordered` if none fit). Its status
follows from that (consumers.order_status). Whenever stock becomes available (an inventory
update, a cancelled or changed order), orders whose allocation waits for that SKU are
allocated oldest (created_at) first.

Every reservation is one conditional UPDATE (`on_hand - reserved >= quantity`), so no
interleaving of transactions can oversell, and CHECK constraints keep 0 <= reserved <=
on_hand. Row locks are taken with a no-op `UPDATE ... RETURNING` (PostgreSQL locks the row
until commit; SQLite's BEGIN IMMEDIATE already serialises writers), so the same SQL works on
both. Stock rows are touched in (sku, line_no) order to keep PostgreSQL deadlocks rare; one
that happens anyway is an ordinary error, retried by the runner. On PostgreSQL a line can
lose a race for the location it picked while another location still has enough: it is then
tried once more, and if that fails too the order waits like any other backorder.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from consumers.events import Event
from consumers.order_status import WAITING, derive, stored_address_complete
from consumers.outbox import notify
from consumers.store import Tx


@dataclass(frozen=True)
class Policy:
    """How the consumers allocate stock (config/router.toml, [consumers])."""

    partial_allocation: bool = False
    unpaid_expiry: float = 3 * 24 * 3600.0  # seconds an unpaid order keeps its stock; 0: ever
    # Sources whose write-back sets the order completed ([storefront.<source>] complete_order,
    # WooCommerce): the `completed` its order webhook then brings is our own, come back.
    completed_by_writeback: frozenset[str] = frozenset()


DEFAULT_POLICY = Policy()

# --- orders and reservations -----------------------------------------------------------------


async def lock_order(tx: Tx, order_id: str) -> dict[str, Any] | None:
    """The order's row, locked until commit; None if unknown. updated_at is the time of the
    last order event applied (not of stock or shipping moves), source_version the version
    its body carried and source_digests the bodies applied at it (consumers.orders)."""
    return await tx.fetchrow(
        "UPDATE orders SET version = version + 1 WHERE order_id = $1"
        " RETURNING order_id, status, created_at, updated_at, allocation, payment_status,"
        " hold_reason, shipping_address, expires_at, source_version, source_digests",
        order_id,
    )


async def set_state(
    tx: Tx, order_id: str, status: str, allocation: str | None, hold_reason: str | None
) -> None:
    """Store what an order's status is made of (consumers.order_status)."""
    await tx.execute(
        "UPDATE orders SET status = $2, allocation = $3, hold_reason = $4 WHERE order_id = $1",
        order_id, status, allocation, hold_reason,
    )


async def lock_orders(tx: Tx, order_ids: set[str]) -> None:
    """Take a transaction-scoped lock on each order id, in one global order, until commit;
    run first in a batch (before lock_stock). An order and a shipment naming it, applied at
    once by two consumers on PostgreSQL, then follow each other: the second sees the first
    committed, whichever it is, instead of both missing the other. The lock is on the id, not
    a row, so it also holds for an order not stored yet. SQLite needs nothing."""
    if order_ids and tx.dialect == "postgresql":
        await tx.fetch(
            "SELECT pg_advisory_xact_lock(k) FROM (SELECT DISTINCT hashtextextended(id, 0) AS k"
            " FROM unnest($1::text[]) AS id ORDER BY k) AS keys",
            sorted(order_ids),
        )


async def lock_stock(tx: Tx, skus: set[str]) -> None:
    """Lock every stock row of `skus`, in (sku, location) order, until commit. Run first in a
    batch (ConsumerSpec.prepare), it makes concurrent batches on PostgreSQL queue for hot
    SKUs instead of deadlocking over them. SQLite needs nothing: one writer at a time."""
    if skus and tx.dialect == "postgresql":
        rows = await tx.fetch(
            "SELECT sku, location, on_hand, reserved FROM stock WHERE sku = ANY($1::text[])"
            " ORDER BY sku, location FOR UPDATE",
            sorted(skus),
        )
        if tx.write_behind:
            # Locked, these rows change only through this transaction: _take decides from
            # them (Tx.views) while no other statement names the table.
            view: dict[str, list[list[Any]]] = {sku: [] for sku in skus}
            for row in rows:
                view[row["sku"]].append([row["location"], row["on_hand"], row["reserved"]])
            tx.views["stock"] = view


async def lock_orders_and_stock(tx: Tx, order_ids: set[str], skus: set[str]) -> None:
    """A batch's locks, in the one global order every consumer uses: the order ids, then the
    stock rows of `skus` and of the stored lines of those orders."""
    if tx.dialect != "postgresql":
        return
    await lock_orders(tx, order_ids)
    if order_ids:
        rows = await tx.fetch(
            "SELECT DISTINCT sku FROM order_lines WHERE order_id = ANY($1::text[])",
            sorted(order_ids),
        )
        skus = skus | {row["sku"] for row in rows}
    await lock_stock(tx, skus)


def new_lines(items: list[tuple[str, int, bool]]) -> list[dict[str, Any]]:
    """Order lines (sku, quantity, ships) not yet stored or reserved, numbered from 1."""
    return [
        {"line_no": n, "sku": sku, "quantity": quantity, "reserved": 0, "location": None,
         "ships": ships}
        for n, (sku, quantity, ships) in enumerate(items, start=1)
    ]


def shippable(lines: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The lines that ship: only they reserve stock."""
    return [line for line in lines if line["ships"]]


async def order_lines(tx: Tx, order_id: str) -> list[dict[str, Any]]:
    rows = await tx.fetch(
        "SELECT line_no, sku, quantity, reserved, location, ships FROM order_lines"
        " WHERE order_id = $1 ORDER BY line_no",
        order_id,
    )
    for row in rows:
        row["ships"] = bool(row["ships"])
    return rows


async def insert_lines(tx: Tx, order_id: str, lines: list[dict[str, Any]]) -> None:
    await tx.write_later(
        "order_lines",
        "INSERT INTO order_lines (order_id, line_no, sku, quantity, reserved, location, ships)"
        " VALUES ($1, $2, $3, $4, $5, $6, $7)",
        [(order_id, line["line_no"], line["sku"], line["quantity"], line["reserved"],
          line["location"], int(line["ships"])) for line in lines],
    )


async def save_lines(tx: Tx, order_id: str, lines: list[dict[str, Any]]) -> None:
    """Store what `lines` (already in the table) now hold."""
    await tx.executemany(
        "UPDATE order_lines SET reserved = $3, location = $4 WHERE order_id = $1 AND line_no = $2",
        [(order_id, line["line_no"], line["reserved"], line["location"]) for line in lines],
    )


_TAKE = (
    "UPDATE stock SET reserved = reserved + $2"
    " WHERE sku = $1 AND on_hand - reserved >= $2 AND location = ("
    "SELECT location FROM stock WHERE sku = $1 AND on_hand - reserved >= $2"
    " ORDER BY on_hand - reserved DESC, location LIMIT 1)"
    " RETURNING location"
)


_RESERVE_AT = "UPDATE stock SET reserved = reserved + $2 WHERE sku = $1 AND location = $3"


async def _take(tx: Tx, sku: str, quantity: int) -> str | None:
    """Reserve `quantity` of `sku` at one location; the location, or None if none has it.
    With the batch's locked stock rows in view (lock_stock), chosen as _TAKE chooses and
    written behind; else asked of the database."""
    rows = tx.views.get("stock", {}).get(sku) if tx.write_behind else None
    if rows is not None:
        fitting = [row for row in rows if row[1] - row[2] >= quantity]
        if not fitting:
            return None
        best = min(fitting, key=lambda row: (row[2] - row[1], row[0]))  # most free, then name
        best[2] += quantity
        await tx.write_later("stock", _RESERVE_AT, [(sku, quantity, best[0])])
        return str(best[0])
    location = await tx.fetchval(_TAKE, sku, quantity)
    if location is None:  # PostgreSQL: the chosen row may have changed under us; look again
        location = await tx.fetchval(_TAKE, sku, quantity)
    return location


async def _give_back(tx: Tx, line: dict[str, Any], *, consume: bool = False) -> None:
    take = ", on_hand = on_hand - $3" if consume else ""
    done = await tx.execute(
        f"UPDATE stock SET reserved = reserved - $3{take} WHERE sku = $1 AND location = $2",
        line["sku"],
        line["location"],
        line["reserved"],
    )
    if done != 1:
        raise RuntimeError(f"reserved stock row {line['sku']}@{line['location']} is missing")


async def reserve_lines(
    tx: Tx, lines: list[dict[str, Any]], policy: Policy = DEFAULT_POLICY
) -> str:
    """Reserve the lines not yet reserved (in memory: the caller stores them); the order's
    status: allocated, partially_allocated or backordered. Without partial allocation it is
    all or nothing: a line that does not fit gives back what this call took."""
    taken: list[dict[str, Any]] = []
    for line in sorted(lines, key=lambda line: (line["sku"], line["line_no"])):
        if line["reserved"]:
            continue
        location = await _take(tx, line["sku"], line["quantity"])
        if location is None:
            if not policy.partial_allocation:
                for done in taken:
                    await _give_back(tx, done)
                    done["reserved"], done["location"] = 0, None
                return "backordered"
            continue
        line["reserved"], line["location"] = line["quantity"], location
        taken.append(line)
    held = sum(1 for line in lines if line["reserved"])
    if held == len(lines):
        return "allocated"
    return "partially_allocated" if held else "backordered"


async def release_lines(
    tx: Tx, lines: list[dict[str, Any]], *, consume: bool = False
) -> list[str]:
    """Give back what `lines` hold (in memory: the caller stores them); with `consume` the
    units left the warehouse (shipped), so on_hand drops too. The SKUs released."""
    released = []
    for line in sorted(lines, key=lambda line: (line["sku"], line["line_no"])):
        if not line["reserved"]:
            continue
        await _give_back(tx, line, consume=consume)
        line["reserved"] = 0
        if not consume:
            line["location"] = None  # a consumed line keeps where it shipped from
        released.append(line["sku"])
    return released


async def release_order(tx: Tx, order_id: str, *, consume: bool = False) -> list[dict[str, Any]]:
    """Release (or consume) everything the stored order holds; its lines, as now stored."""
    lines = await order_lines(tx, order_id)
    changed = [dict(line) for line in lines if line["reserved"]]
    if changed:
        await release_lines(tx, changed, consume=consume)
        await save_lines(tx, order_id, changed)
        by_no = {line["line_no"]: line for line in changed}
        lines = [by_no.get(line["line_no"], line) for line in lines]
    return lines


def order_summary(
    order_id: str, status: str, lines: list[dict[str, Any]], *,
    hold_reason: str | None = None, payment_status: str | None = None,
) -> dict[str, Any]:
    """The order as notifications tell it."""
    summary: dict[str, Any] = {
        "order_id": order_id,
        "status": status,
        "lines": [
            {"sku": line["sku"], "quantity": line["quantity"], "reserved": line["reserved"],
             "location": line["location"], "ships": line["ships"]}
            for line in sorted(lines, key=lambda line: line["line_no"])
        ],
    }
    if hold_reason is not None:
        summary["hold_reason"] = hold_reason
    if payment_status is not None:
        summary["payment_status"] = payment_status
    return summary


async def allocate_waiting(
    tx: Tx, event: Event, skus: list[str], policy: Policy = DEFAULT_POLICY
) -> list[str]:
    """Stock of `skus` became available: allocate open orders whose allocation waits
    (backordered, or partially allocated) and that need them, oldest (created_at) first. An
    order that does not fit is skipped, so smaller later ones may still go. The order ids
    whose status changed."""
    changed = []
    for sku in sorted(set(skus)):
        candidates = await tx.fetch(
            "SELECT o.order_id FROM orders o WHERE o.allocation IN ($2, $3)"
            " AND EXISTS (SELECT 1 FROM order_lines l WHERE l.order_id = o.order_id"
            " AND l.sku = $1 AND l.reserved = 0 AND l.ships = 1)"
            " ORDER BY o.created_at, o.order_id",
            sku,
            *WAITING,
        )
        for candidate in candidates:
            if not await tx.fetchval(
                "SELECT 1 FROM stock WHERE sku = $1 AND on_hand - reserved > 0 LIMIT 1", sku
            ):
                break
            order_id = candidate["order_id"]
            row = await lock_order(tx, order_id)
            if row is None or row["allocation"] not in WAITING:  # another consumer got there
                continue
            lines = [dict(line) for line in await order_lines(tx, order_id)]
            before = [line["reserved"] for line in lines]
            allocation = await reserve_lines(tx, shippable(lines), policy)
            if [line["reserved"] for line in lines] == before:
                continue
            await save_lines(tx, order_id, [
                line for line, old in zip(lines, before, strict=True) if line["reserved"] != old
            ])
            status, hold_reason = derive(allocation,
                                         stored_address_complete(row["shipping_address"]),
                                         row["payment_status"])
            await set_state(tx, order_id, status, allocation, hold_reason)
            await notify(tx, event, f"order.{status}", order_id, order_summary(
                order_id, status, lines, hold_reason=hold_reason,
                payment_status=row["payment_status"]))
            if order_id not in changed:
                changed.append(order_id)
    return changed
