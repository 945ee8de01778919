"""`webhook-router orders show ORDER_ID` / `orders list [--status S]`: where orders stand in
the store (consumers.order_status), for operators: what is on hold and why, what waits for
payment or stock, what each line holds. The store is opened without creating it.

Customer details stay out: of the address only the city and country are shown.
"""

from __future__ import annotations

import sys
from typing import Any, TextIO

import orjson

from consumers.store import Tx, open_store, placeholders
from consumers.trace import find_events, label_said, order_label
from router.settings import Settings
from router.terminal import printable

# Outcomes that leave an order as it was: not the change `orders show` names as the last.
_NO_CHANGE = ("recorded", "retry", "dead", "duplicate", "exists", "ignored", "stale", "kept",
              "unchanged", "echo")
# Statuses whose lines held stock that left the warehouse (consumers.shipments consumes it).
_SHIPPED = ("shipped", "delivered")


class Usage(Exception):
    """A mistake in the command line: exit 2 with the message."""


def _where(address: str | None) -> str:
    if not address:
        return "no shipping address"
    try:
        parts = orjson.loads(address)
    except orjson.JSONDecodeError:
        return "unreadable address"
    place = ", ".join(p for p in (parts.get("city"), parts.get("country")) if p)
    return f"ship to {place or 'an address without city or country'}"


def _line(line: dict[str, Any], status: str) -> str:
    """One line and what it holds or what became of it, for an order in `status`."""
    if not line["ships"]:
        held = "does not ship"
    elif line["reserved"]:
        held = f"reserved {line['reserved']} at {line['location']}"
    elif status in _SHIPPED:  # consumed on shipping: a consumed line keeps its location
        held = f"shipped from {line['location']}" if line["location"] else "shipped"
    elif status in ("cancelled", "expired", "refunded", "exception"):
        held = f"holds nothing (order {status})"
    else:
        held = "waiting for stock"
    return f"  line {line['line_no']:<3} {line['sku']:<28} x{line['quantity']:<4} {held}"


async def _last_change(tx: Tx, order_id: str) -> dict[str, Any] | None:
    """The newest consumer attempt that changed something, among the events about the order
    (consumers.trace.find_events: its own and its tracking codes')."""
    ids, _ = await find_events(tx, order_id)
    if not ids:
        return None
    skip = placeholders(len(_NO_CHANGE), first=len(ids) + 1)
    return await tx.fetchrow(
        "SELECT c.event_id, c.consumer, c.outcome, c.at, a.type FROM consumer_attempts c"
        " LEFT JOIN audit_events a ON a.event_id = c.event_id"
        f" WHERE c.event_id IN ({placeholders(len(ids))}) AND c.outcome NOT IN ({skip})"
        " ORDER BY c.at DESC, c.id DESC LIMIT 1", *ids, *_NO_CHANGE)


async def _history(tx: Tx, order_id: str) -> list[str]:
    """What happened to the order past its lines: its label, shipments, refunds, last change
    (the newer of its last event's and its label's)."""
    said = []
    label = await order_label(tx, order_id)
    if label is not None:
        said.append(f"label {label_said(label)}")
    for row in await tx.fetch(
            "SELECT tracking_code, carrier, status, occurred_at FROM shipments"
            " WHERE order_id = $1 ORDER BY occurred_at, tracking_code, carrier", order_id):
        said.append(f"shipment {row['tracking_code']} ({row['carrier']}): {row['status']}"
                    f" at {row['occurred_at'] or '-'}")
    for row in await tx.fetch("SELECT refund_id, applied_at FROM order_refunds"
                              " WHERE order_id = $1 ORDER BY applied_at", order_id):
        said.append(f"refund {row['refund_id']} applied at {row['applied_at']}")
    last = await _last_change(tx, order_id)
    if label is not None and (last is None or label["updated_at"] > last["at"]):
        said.append(f"last change {label['updated_at']}: its label, {label['state']}")
    elif last is not None:
        said.append(f"last change {last['at']}: event {last['event_id']}"
                    f" ({last['type'] or 'type not recorded'}), {last['consumer']}:"
                    f" {last['outcome']}")
    return said


async def orders_command(settings: Settings, action: str, *, order_id: str | None = None,
                         status: str | None = None, limit: int = 50,
                         out: TextIO = sys.stdout) -> int:
    """Run `orders show|list` against the consumers' store; the exit code."""
    if action == "show" and not order_id:
        raise Usage("orders show needs an ORDER_ID")
    if limit < 1:
        raise Usage("limit must be at least 1")
    async with open_store(settings.consumers.store, create=False) as store, \
            store.transaction() as tx:
        if action == "list":
            where, args = ("WHERE status = $2", [status]) if status else ("", [])
            rows = await tx.fetch(
                "SELECT order_id, source, status, hold_reason, payment_status, created_at"
                f" FROM orders {where} ORDER BY created_at DESC, order_id LIMIT $1",
                limit, *args)
            if not rows:
                print("no orders" + (f" with status {status}" if status else ""), file=out)
            for row in rows:
                why = f" ({row['hold_reason']})" if row["hold_reason"] else ""
                print(printable(f"{row['order_id']:<22} {row['status'] + why:<28} payment "
                                f"{row['payment_status'] or '-':<18} {row['source'] or '-':<12}"
                                f" {row['created_at']}"), file=out)
            return 0
        found = await tx.fetchrow(
            "SELECT order_id, source, status, hold_reason, payment_status, allocation,"
            " shipping_address, created_at, updated_at, expires_at FROM orders"
            " WHERE order_id = $1", order_id)
        if found is None:
            print(f"no order {order_id}", file=out)
            return 1
        row = found
        lines = await tx.fetch(
            "SELECT line_no, sku, quantity, reserved, location, ships FROM order_lines"
            " WHERE order_id = $1 ORDER BY line_no", order_id)
        history = await _history(tx, row["order_id"])

    def say(line: str) -> None:  # stored text is the providers' and customers': escaped
        print(printable(line), file=out)

    why = f" ({row['hold_reason']})" if row["hold_reason"] else ""
    say(f"order {row['order_id']} from {row['source'] or '-'}: {row['status']}{why}")
    allocation = f"allocation {row['allocation']}; " if row["allocation"] else ""
    say(f"  payment {row['payment_status'] or 'not said'}; {allocation}"
        f"{_where(row['shipping_address'])}")
    say(f"  created {row['created_at']}; last order event {row['updated_at'] or '-'}"
        + (f"; stock held until {row['expires_at']} unless paid" if row["expires_at"] else ""))
    for line in lines:
        say(_line({**line, "ships": bool(line["ships"])}, row["status"]))
    for said in history:
        say(f"  {said}")
    return 0
