"""The orders consumer: `order.created`, `.updated`, `.restored`, `.cancelled`, `.fulfilled`
and `.refunded`, and the expiry of unpaid orders. Statuses: consumers.order_status.

created   store the order and its lines and reserve stock for the lines that ship
          (consumers.stock: `allocated`, else `backordered` with nothing reserved, or
          `partially_allocated` when the policy allows it); a line that does not ship (a
          gift card, a tip, a download) is stored but reserves nothing. The status then says
          what fulfilment waits for: `on_hold` (no_address) without a usable shipping
          address, `ready_to_ship` once allocated and paid, `completed` when nothing ships.
          An unpaid order keeps its stock until [consumers] unpaid_expiry after it was made.
          An order id already stored is left alone ("exists"). One the storefront says it
          already sent (canonical status `completed`, WooCommerce's) is moved to `shipped`.
updated   for an open order (and an expired or completed one): release its reservations,
          replace address, note, payment and lines, reserve again; an address arriving
          releases an on_hold, a payment makes it ready_to_ship. A "stale" update (below)
          changes nothing. An update for an unknown order creates it (the created event may
          still be on its way; it is then ignored as "exists"). An expired order still unpaid
          stays expired.
          Our own write-back comes back as an update (consumers.storefront): Shopify's
          orders/updated with our fulfillment, WooCommerce's `completed`. A `completed` whose
          fulfillments all carry our tracking codes (consumers.shipments.written_back), or,
          from a store our write-back completes ([storefront.<source>] complete_order), of an
          order we write back to, is ours: it does not ship the order (the carrier's tracking
          does); with nothing else new it changes nothing ("echo"), else the rest applies.
restored  an order the storefront deleted and restored: a cancelled one is made anew (unless
          stale), any other is updated.
cancelled release its reservations, status `cancelled`. It may name only the order (a
          storefront's deletion). Unknown order: stored as cancelled, so a late created
          event cannot allocate it. Too late once shipped or delivered; a stale one changes
          nothing. A created/updated whose canonical status is cancelled or refunded cancels
          too.
fulfilled the storefront shipped it all: `shipped`, its reservations consumed (stored first
          if unknown); our own write-back come back (as for updated) is an "echo".
refunded  refunded lines leave the order before it ships: their stock goes back; with none
          left the order is `refunded`. A refund without lines (money only), or once
          shipped, changes nothing ("ignored"); one already applied (its refund_id) is
          "stale".
Versions: effects follow the body's own timestamps, not the delivery. The order's
`updated_at` (canonical: the source's version, e.g. Shopify updated_at, WooCommerce
date_modified_gmt) is stored with it (source_version), with a digest of each body applied
at that version (source_digests); an update, cancellation or restoration whose version is
older than the stored one is "stale" and changes nothing, so a replayed body, under
whatever delivery id or topic, is never a new effect. The same version is stale only if
its content was applied already: Shopify's updated_at has whole seconds, so two changes
within one second share it, and the later arrival must not be lost (its headers' finer
X-Shopify-Triggered-At is not signed, so it cannot order them). Without a version on
either side (our own feeds, orders stored before versions), an update older than the last
order event applied (envelope occurred_at) is stale.
Stock given back goes to waiting orders, oldest first. An order stored after the shipping
consumer already saw its shipment (a fulfillment that overtook its order) is moved on to
where that shipment is (consumers.shipments).

Outbox kinds: order.<status> for each status an event leaves an order in.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any

import orjson

from consumers.errors import Permanent
from consumers.events import Event, data_of, event_time, integer, iso, text
from consumers.order_status import (
    UNPAID,
    address_complete,
    derive,
    expires_at,
    stored_address_complete,
)
from consumers.outbox import notify
from consumers.shipments import (
    follow_shipments,
    move_order,
    orders_with_shipments,
    written_back,
)
from consumers.stock import (
    DEFAULT_POLICY,
    Policy,
    allocate_waiting,
    insert_lines,
    lock_order,
    lock_orders_and_stock,
    new_lines,
    order_lines,
    order_summary,
    release_lines,
    release_order,
    reserve_lines,
    shippable,
)
from consumers.store import Tx
from router.times import now_iso

# What handle() returns, for the runner to count.
OUTCOMES = ("allocated", "partially_allocated", "backordered", "on_hold", "ready_to_ship",
            "label_purchased", "completed", "expired", "cancelled", "refunded", "shipped",
            "exists", "ignored", "stale", "echo")

CANCELLED_STATUSES = frozenset({"cancelled", "refunded"})  # canonical order statuses
FULFILLED_STATUSES = frozenset({"completed"})  # the storefront says it was sent
NOT_UPDATABLE = frozenset({"shipped", "delivered", "exception", "cancelled", "refunded"})
NOT_CANCELLABLE = frozenset({"shipped", "delivered"})
# A storefront fulfillment in one of these does not stand (as consumers.storefronts.shopify
# reads them): it says nothing of who sent the order.
GONE_FULFILLMENTS = frozenset({"cancelled", "error", "failure"})
MAX_QUANTITY = 1_000_000  # per line, as config/schemas/order.v1.json says


@dataclass(frozen=True)
class OrdersBatch:
    """What `prepare` learned about a batch, for its handlers (one query per batch instead of
    one per message)."""

    shipped: frozenset[str]  # the batch's order ids that a stored shipment already names


def _lines(data: dict[str, Any], *, ships: bool = True) -> list[tuple[str, int, bool]]:
    lines = data.get("lines")
    if not isinstance(lines, list) or not lines:
        raise Permanent("lines: expected a non-empty list")
    parsed = []
    for number, line in enumerate(lines):
        if not isinstance(line, dict):
            raise Permanent(f"lines[{number}]: expected an object")
        quantity = integer(line, "quantity")
        if not 1 <= quantity <= MAX_QUANTITY:
            raise Permanent(f"lines[{number}].quantity: must be 1 to {MAX_QUANTITY}")
        flag = line.get("ships", True)
        parsed.append((text(line, "sku"), quantity, flag if isinstance(flag, bool) else ships))
    return parsed


def _order(event: Event) -> dict[str, Any]:
    data = data_of(event)
    address = data.get("shipping_address")
    note = data.get("note")
    payment = data.get("payment_status")
    fulfillments = data.get("fulfillments")
    return {
        "order_id": text(data, "order_id"),
        "source": data.get("source") or event.get("source"),
        "status": data.get("status"),
        "payment_status": payment if isinstance(payment, str) else None,
        "lines": _lines(data),
        "shipping_address": None if address is None else orjson.dumps(address).decode(),
        "addressed": address_complete(address if isinstance(address, dict) else None),
        "note": note if isinstance(note, str) else None,
        "fulfillments": fulfillments if isinstance(fulfillments, list) else None,
        "created_at": iso(data.get("created_at"), "created_at"),
        "at": event_time(event),
        "version": _version(data),
        "digest": _digest(data),
    }


def _version(data: dict[str, Any]) -> str | None:
    """The source's version of the order its body carries (canonical updated_at), if any."""
    if data.get("updated_at") is None:
        return None
    return iso(data["updated_at"], "updated_at")


def _digest(data: dict[str, Any]) -> str:
    """A short digest of the event's canonical content, to tell two bodies of one version
    apart."""
    return hashlib.sha256(orjson.dumps(data, option=orjson.OPT_SORT_KEYS)).hexdigest()[:16]


def _stale(row: dict[str, Any], order: dict[str, Any]) -> bool:
    """True when the event is not newer than what is stored: by the body's own version when
    both have one (an older body is stale; one of the same version only if its content was
    applied at that version, or if the order was stored before digests were), else by the
    time of the event (only an older one is)."""
    if order["version"] is not None and row["source_version"] is not None:
        if order["version"] != row["source_version"]:
            return bool(order["version"] < row["source_version"])
        seen = row["source_digests"]
        return seen is None or order["digest"] in seen.split()
    return bool(row["updated_at"]) and order["at"] < row["updated_at"]


def _digests(row: dict[str, Any] | None, order: dict[str, Any]) -> str | None:
    """source_digests once `order` is applied: its digest joins those of its version, or
    starts the list of a new one; None (keep what is stored) for a body without one."""
    if order["version"] is None:
        return None
    if row is not None and row["source_version"] == order["version"] and row["source_digests"]:
        return f"{row['source_digests']} {order['digest']}"
    return str(order["digest"])


async def _insert(
    tx: Tx, order: dict[str, Any], status: str, allocation: str | None = None,
    hold_reason: str | None = None, expires: str | None = None,
) -> bool:
    """Insert the order row; False if the order id is already stored. An id prepare found
    not stored (Tx.views) is written behind, without ON CONFLICT: were it stored after all,
    the held INSERT fails and the batch runs again carefully."""
    row = (order["order_id"], order["source"], status, order["shipping_address"], order["note"],
           order["created_at"], order["at"], allocation, order["payment_status"], hold_reason,
           expires, order["version"], _digests(None, order))
    absent = tx.views.get("orders") if tx.write_behind else None
    if absent is not None and order["order_id"] in absent:
        absent.discard(order["order_id"])
        await tx.write_later("orders", _INSERT_ORDER, [row])
        return True
    return await tx.execute(f"{_INSERT_ORDER} ON CONFLICT (order_id) DO NOTHING", *row) == 1


_INSERT_ORDER = (
    "INSERT INTO orders (order_id, source, status, shipping_address, note, created_at,"
    " updated_at, allocation, payment_status, hold_reason, expires_at, source_version,"
    " source_digests) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13)"
)


async def _notify_state(
    tx: Tx, event: Event, order_id: str, status: str, lines: list[dict[str, Any]],
    hold_reason: str | None = None, payment_status: str | None = None,
) -> None:
    await notify(tx, event, f"order.{status}", order_id, order_summary(
        order_id, status, lines, hold_reason=hold_reason, payment_status=payment_status))


async def _cancelled(
    tx: Tx, event: Event, order: dict[str, Any], policy: Policy, row: dict[str, Any] | None
) -> str:
    """Give the order's stock back and make it `cancelled` (keeping the stored version when
    the event carries none: a deletion names only the order). `row`: the order as stored
    before, if it was."""
    order_id = order["order_id"]
    lines = await release_order(tx, order_id)
    await tx.execute(
        "UPDATE orders SET status = 'cancelled', updated_at = $2, allocation = NULL,"
        " hold_reason = NULL, expires_at = NULL, source_version = COALESCE($3, source_version),"
        " source_digests = COALESCE($4, source_digests) WHERE order_id = $1",
        order_id, order["at"], order["version"], _digests(row, order),
    )
    await _notify_state(tx, event, order_id, "cancelled", lines)
    await allocate_waiting(tx, event, [line["sku"] for line in lines], policy)
    return "cancelled"


async def _reserve(
    tx: Tx, lines: list[dict[str, Any]], order: dict[str, Any], created_at: str, policy: Policy
) -> tuple[str, str | None, str | None, str | None]:
    """Reserve the lines that ship; (status, allocation, hold_reason, expires_at)."""
    to_ship = shippable(lines)
    allocation = await reserve_lines(tx, to_ship, policy) if to_ship else None
    status, hold_reason = derive(allocation, order["addressed"], order["payment_status"])
    expires = None
    if allocation is not None:
        expires = expires_at(created_at, order["payment_status"], policy.unpaid_expiry)
    return status, allocation, hold_reason, expires


async def _replace_lines(
    tx: Tx, order_id: str, items: list[tuple[str, int, bool]], order: dict[str, Any],
    created_at: str, policy: Policy, *, reserve: bool = True,
) -> tuple[list[dict[str, Any]], tuple[str, str | None, str | None, str | None]]:
    """Put `items` in place of the order's lines (whose stock was given back) and, unless
    told not to, reserve those that ship: the new lines and (status, allocation,
    hold_reason, expires_at); without reserving, it is expired."""
    await tx.execute("DELETE FROM order_lines WHERE order_id = $1", order_id)
    lines = new_lines(items)
    state: tuple[str, str | None, str | None, str | None] = ("expired", None, None, None)
    if reserve:
        state = await _reserve(tx, lines, order, created_at, policy)
    await insert_lines(tx, order_id, lines)
    return lines, state


async def _created(
    tx: Tx, event: Event, order: dict[str, Any], policy: Policy, batch: OrdersBatch | None
) -> str:
    order_id = order["order_id"]
    lines = new_lines(order["lines"])
    if order["status"] in CANCELLED_STATUSES:
        if not await _insert(tx, order, "cancelled"):
            return "exists"
        await insert_lines(tx, order_id, lines)
        await _notify_state(tx, event, order_id, "cancelled", lines)
        return "cancelled"
    # Reserve first, then insert the order with its final status: the usual path is one
    # statement per line plus three. A repeat (the order is already stored) gives it back.
    status, allocation, hold_reason, expires = await _reserve(
        tx, lines, order, order["created_at"], policy)
    if not await _insert(tx, order, status, allocation, hold_reason, expires):
        await release_lines(tx, lines)
        return "exists"
    await insert_lines(tx, order_id, lines)
    await _notify_state(tx, event, order_id, status, lines, hold_reason, order["payment_status"])
    if batch is None or order_id in batch.shipped:  # no prepare ran: look
        await follow_shipments(tx, order_id)
    return await _sent_already(tx, order, allocation, status)


async def _sent_already(
    tx: Tx, order: dict[str, Any], allocation: str | None, status: str
) -> str:
    """A storefront that says the order was sent (WooCommerce `completed`) moves it to
    shipped, its stock consumed; an order with nothing to ship stays completed."""
    if order["status"] not in FULFILLED_STATUSES or allocation is None:
        return status
    return await move_order(tx, order["order_id"], "shipped") or status


async def _updated(
    tx: Tx, event: Event, order: dict[str, Any], policy: Policy, batch: OrdersBatch | None
) -> str:
    order_id = order["order_id"]
    row = await lock_order(tx, order_id)
    if row is None:
        return await _created(tx, event, order, policy, batch)
    ours = await _sent_by_us(tx, order, policy)
    if ours and await _unchanged(tx, row, order):
        return "echo"
    if row["status"] in NOT_UPDATABLE:
        return "ignored"
    if _stale(row, order):
        return "stale"
    if order["status"] in CANCELLED_STATUSES:
        return await _cancelled(tx, event, order, policy, row)
    released = [line["sku"] for line in await release_order(tx, order_id)]
    # Past its time to pay and still unpaid, it stays expired, reserving nothing.
    reserve = not (row["status"] == "expired" and order["payment_status"] in UNPAID)
    lines, (status, allocation, hold_reason, expires) = await _replace_lines(
        tx, order_id, order["lines"], order, row["created_at"], policy, reserve=reserve)
    status, hold_reason = _kept_for_labels(row, order, status, hold_reason)
    await tx.execute(
        "UPDATE orders SET shipping_address = $2, note = $3, updated_at = $4, status = $5,"
        " allocation = $6, hold_reason = $7, payment_status = $8, expires_at = $9,"
        " source_version = COALESCE($10, source_version),"
        " source_digests = COALESCE($11, source_digests) WHERE order_id = $1",
        order_id, order["shipping_address"], order["note"], order["at"], status, allocation,
        hold_reason, order["payment_status"], expires, order["version"], _digests(row, order),
    )
    await _notify_state(tx, event, order_id, status, lines, hold_reason, order["payment_status"])
    await allocate_waiting(tx, event, released, policy)
    if ours:  # the store says it was sent because we told it: the carrier's tracking decides
        return status
    return await _sent_already(tx, order, allocation, status)


async def _sent_by_us(tx: Tx, order: dict[str, Any], policy: Policy) -> bool:
    """Whether the storefront says the order was sent (canonical `completed`) only because
    our write-back told it: every fulfillment that stands carries a tracking code of ours
    (consumers.shipments.written_back); for a store whose orders list no fulfillments
    (WooCommerce), our write-back to it completes orders and has begun for this one."""
    if order["status"] not in FULFILLED_STATUSES:
        return False
    order_id = order["order_id"]
    if order["fulfillments"] is not None:
        standing = [f for f in order["fulfillments"]
                    if isinstance(f, dict) and f.get("status") not in GONE_FULFILLMENTS]
        ours = await written_back(tx, order_id)
        return bool(standing) and all(f.get("tracking_code") in ours for f in standing)
    if order["source"] not in policy.completed_by_writeback:
        return False
    return await tx.fetchval("SELECT 1 FROM writebacks WHERE order_id = $1 AND source = $2"
                             " LIMIT 1", order_id, order["source"]) is not None


async def _unchanged(tx: Tx, row: dict[str, Any], order: dict[str, Any]) -> bool:
    """Whether the event brings nothing the stored order lacks: the same address, note,
    payment and lines."""
    note = await tx.fetchval("SELECT note FROM orders WHERE order_id = $1", order["order_id"])
    lines = [(line["sku"], line["quantity"], line["ships"])
             for line in await order_lines(tx, order["order_id"])]
    return (row["shipping_address"], note, row["payment_status"], lines) == (
        order["shipping_address"], order["note"], order["payment_status"], order["lines"])


def _kept_for_labels(row: dict[str, Any], order: dict[str, Any], status: str,
                     hold_reason: str | None) -> tuple[str, str | None]:
    """What the labels consumer made of a ready order outlives an update that changes nothing
    it depends on: a label bought (label_purchased), a hold for an address the carrier
    refused (until the address changes), a hold for no rate (until `labels buy`)."""
    if status != "ready_to_ship":
        return status, hold_reason
    if row["status"] == "label_purchased":
        return "label_purchased", None
    if row["status"] == "on_hold" and (row["hold_reason"] == "no_rate" or (
            row["hold_reason"] == "address_invalid"
            and row["shipping_address"] == order["shipping_address"])):
        return "on_hold", row["hold_reason"]
    return status, hold_reason


async def _restored(
    tx: Tx, event: Event, order: dict[str, Any], policy: Policy, batch: OrdersBatch | None
) -> str:
    row = await lock_order(tx, order["order_id"])
    if row is not None and row["status"] == "cancelled":
        if _stale(row, order):  # a body from before the deletion, replayed
            return "stale"
        # Deleted at the storefront, then restored: it starts again from what it is now.
        await tx.execute("DELETE FROM order_lines WHERE order_id = $1", order["order_id"])
        await tx.execute("DELETE FROM orders WHERE order_id = $1", order["order_id"])
        return await _created(tx, event, order, policy, batch)
    return await _updated(tx, event, order, policy, batch)


async def _cancel(tx: Tx, event: Event, policy: Policy, batch: OrdersBatch | None) -> str:
    data = data_of(event)
    if data.get("lines") is not None:
        order = _order(event)
    else:  # a deletion names only the order
        at = event_time(event)
        order = {"order_id": text(data, "order_id"), "source": event.get("source"),
                 "status": "cancelled", "payment_status": None, "lines": [],
                 "shipping_address": None, "addressed": False, "note": None,
                 "fulfillments": None, "created_at": at, "at": at, "version": None, "digest": None}
    order_id = order["order_id"]
    row = await lock_order(tx, order_id)
    if row is None:
        if await _insert(tx, order, "cancelled"):
            await insert_lines(tx, order_id, new_lines(order["lines"]))
        return await _cancelled(tx, event, order, policy, None)
    if row["status"] in CANCELLED_STATUSES or row["status"] in NOT_CANCELLABLE:
        return "ignored"
    if order["version"] is not None and _stale(row, order):
        return "stale"
    return await _cancelled(tx, event, order, policy, row)


async def _fulfilled(
    tx: Tx, event: Event, order: dict[str, Any], policy: Policy, batch: OrdersBatch | None
) -> str:
    if await lock_order(tx, order["order_id"]) is None:
        await _created(tx, event, order, policy, batch)
    elif await _sent_by_us(tx, order, policy):
        return "echo"
    moved = await move_order(tx, order["order_id"], "shipped")
    return "shipped" if moved == "shipped" else "ignored"


async def _refunded(tx: Tx, event: Event, policy: Policy) -> str:
    data = data_of(event)
    order_id = text(data, "order_id")
    refunded = data.get("lines") or []
    row = await lock_order(tx, order_id)
    if row is None or row["status"] in NOT_UPDATABLE or not refunded:
        return "ignored"
    refund_id = data.get("refund_id")
    if isinstance(refund_id, str):  # a refund's effect is once per refund, whatever carries it
        recorded = await tx.execute(
            "INSERT INTO order_refunds (order_id, refund_id, applied_at) VALUES ($1, $2, $3)"
            " ON CONFLICT (order_id, refund_id) DO NOTHING", order_id, refund_id, now_iso())
        if recorded != 1:
            return "stale"
    left: dict[str, int] = {}
    for number, line in enumerate(refunded):
        if not isinstance(line, dict):
            raise Permanent(f"lines[{number}]: expected an object")
        sku = text(line, "sku")
        left[sku] = left.get(sku, 0) + integer(line, "quantity")
    released = await release_order(tx, order_id)
    remaining = []
    for line in released:  # take the refunded units off the order's lines, in line order
        taken = min(line["quantity"], left.get(line["sku"], 0))
        left[line["sku"]] = left.get(line["sku"], 0) - taken
        if line["quantity"] > taken:
            remaining.append((line["sku"], line["quantity"] - taken, line["ships"]))
    at = event_time(event)
    skus = [line["sku"] for line in released]
    if not remaining:
        await tx.execute("DELETE FROM order_lines WHERE order_id = $1", order_id)
        await tx.execute(
            "UPDATE orders SET status = 'refunded', updated_at = $2, allocation = NULL,"
            " hold_reason = NULL, expires_at = NULL WHERE order_id = $1", order_id, at)
        await _notify_state(tx, event, order_id, "refunded", released)
        await allocate_waiting(tx, event, skus, policy)
        return "refunded"
    kept = {"addressed": stored_address_complete(row["shipping_address"]),
            "payment_status": row["payment_status"]}
    lines, (status, allocation, hold_reason, expires) = await _replace_lines(
        tx, order_id, remaining, kept, row["created_at"], policy)
    await tx.execute(
        "UPDATE orders SET status = $2, allocation = $3, hold_reason = $4, expires_at = $5"
        " WHERE order_id = $1", order_id, status, allocation, hold_reason, expires)
    await _notify_state(tx, event, order_id, status, lines, hold_reason, row["payment_status"])
    await allocate_waiting(tx, event, skus, policy)
    return status


_WITH_ORDER = {
    "order.created": _created,
    "order.updated": _updated,
    "order.restored": _restored,
    "order.fulfilled": _fulfilled,
}


async def handle(
    tx: Tx, event: Event, batch: OrdersBatch | None = None, *, policy: Policy = DEFAULT_POLICY
) -> str:
    """Apply one order event in `tx` (`batch`: what `prepare` found for its batch, if it
    ran); returns one of OUTCOMES."""
    kind = str(event.get("type"))
    apply = _WITH_ORDER.get(kind)
    if apply is not None:
        return await apply(tx, event, _order(event), policy, batch)
    if kind == "order.cancelled":
        return await _cancel(tx, event, policy, batch)
    if kind == "order.refunded":
        return await _refunded(tx, event, policy)
    raise Permanent(f"orders: unknown event type {event.get('type')!r}")


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
    if tx.write_behind and ids:
        # Locked (lock_orders): which ids are not stored, so storing them costs no question.
        stored = await tx.fetch(
            "SELECT order_id FROM orders WHERE order_id = ANY($1::text[])", sorted(ids))
        tx.views["orders"] = ids - {row["order_id"] for row in stored}
    return OrdersBatch(shipped=frozenset(await orders_with_shipments(tx, ids)))


EXPIRY_BATCH = 200


async def tick(tx: Tx, now: str, *, policy: Policy = DEFAULT_POLICY) -> int:
    """Give back the stock of unpaid orders whose time to pay has passed (`now`, the store's
    ISO form): status `expired`, an `order.expired` notification, the stock to waiting
    orders. Run by the runner every few seconds; several processes may run it at once (each
    order is locked and looked at again). How many expired."""
    due = await tx.fetch(
        "SELECT order_id FROM orders WHERE expires_at <= $1 AND allocation IS NOT NULL"
        " ORDER BY expires_at LIMIT $2", now, EXPIRY_BATCH)
    ids = {row["order_id"] for row in due}
    await lock_orders_and_stock(tx, ids, set())
    expired = 0
    for order_id in sorted(ids):
        row = await lock_order(tx, order_id)
        if (row is None or row["allocation"] is None or row["expires_at"] is None
                or row["expires_at"] > now or row["payment_status"] not in UNPAID):
            continue  # paid, shipped or expired since it was picked
        cause: Event = {"id": f"expiry:{order_id}:{row['expires_at']}", "type": "order.expired"}
        lines = await release_order(tx, order_id)
        await tx.execute(
            "UPDATE orders SET status = 'expired', allocation = NULL, hold_reason = NULL,"
            " expires_at = NULL WHERE order_id = $1", order_id)
        await _notify_state(tx, cause, order_id, "expired", lines,
                            payment_status=row["payment_status"])
        await allocate_waiting(tx, cause, [line["sku"] for line in lines], policy)
        expired += 1
    return expired

