"""`webhook-router orders show ORDER_ID` / `orders list [--status S]`: where orders stand in
the store (consumers.order_status), for operators: what is on hold and why, what waits for
payment or stock, what each line holds. The store is opened without creating it.

Customer details stay out: of the address only the city and country are shown.
"""

from __future__ import annotations

import sys
from typing import Any, TextIO

import orjson

from consumers.store import open_store
from router.settings import Settings


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


def _line(line: dict[str, Any]) -> str:
    if not line["ships"]:
        held = "does not ship"
    elif line["reserved"]:
        held = f"reserved {line['reserved']} at {line['location']}"
    else:
        held = "waiting for stock"
    return f"  line {line['line_no']:<3} {line['sku']:<28} x{line['quantity']:<4} {held}"


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
                print(f"{row['order_id']:<22} {row['status'] + why:<28} payment "
                      f"{row['payment_status'] or '-':<18} {row['source'] or '-':<12} "
                      f"{row['created_at']}", file=out)
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
    why = f" ({row['hold_reason']})" if row["hold_reason"] else ""
    print(f"order {row['order_id']} from {row['source'] or '-'}: {row['status']}{why}", file=out)
    print(f"  payment {row['payment_status'] or 'not said'}; allocation "
          f"{row['allocation'] or '-'}; {_where(row['shipping_address'])}", file=out)
    print(f"  created {row['created_at']}; last order event {row['updated_at'] or '-'}"
          + (f"; stock held until {row['expires_at']} unless paid" if row["expires_at"] else ""),
          file=out)
    for line in lines:
        print(_line({**line, "ships": bool(line["ships"])}), file=out)
    return 0
