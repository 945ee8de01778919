"""Where an order stands: its statuses, and the one function that derives an open order's
status from what it is made of (pure).

    open: it holds stock, or waits for it
        allocated, partially_allocated, backordered
                        its allocation (consumers.stock), when nothing below applies
        on_hold         it has lines to ship but no usable shipping address (hold_reason
                        no_address); its stock stays reserved until the address comes
        ready_to_ship   allocated, paid and addressed: the warehouse may pick it
        label_purchased ready_to_ship, and the labels consumer bought its shipping label
                        (consumers.labels); its stock stays reserved until it ships. A label
                        the carrier cannot buy holds it instead: on_hold with hold_reason
                        address_invalid or no_rate
    closed:
        completed       nothing on it ships (downloads, gift cards, tips)
        expired         unpaid for longer than [consumers] unpaid_expiry: its stock went back
        cancelled       cancelled, or deleted at the storefront
        refunded        every line refunded before it shipped
        shipped, delivered, exception
                        where its shipments are (consumers.shipments)

Payment gates shipping: only a paid order is ready_to_ship. An order whose source says
nothing of payment (payment_status absent or unknown) is neither gated nor expired: it stays
at its allocation.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime, timedelta
from typing import Any

import orjson

PAID = frozenset({"paid", "partially_refunded"})
UNPAID = frozenset({"pending", "authorized", "partially_paid"})  # these expire
WAITING = ("backordered", "partially_allocated")  # allocations that wait for stock
OPEN = frozenset({"allocated", "partially_allocated", "backordered", "on_hold", "ready_to_ship",
                  "label_purchased"})
ADDRESS_NEEDS = ("line1", "city", "country")


def address_complete(address: Mapping[str, Any] | None) -> bool:
    """True for an address a parcel can be sent to: a street, a city and a country."""
    return address is not None and all(
        isinstance(address.get(key), str) and address[key].strip() for key in ADDRESS_NEEDS
    )


def stored_address_complete(shipping_address: str | None) -> bool:
    """address_complete for an order's stored shipping_address (JSON text, or NULL)."""
    return shipping_address is not None and address_complete(orjson.loads(shipping_address))


def derive(
    allocation: str | None, addressed: bool, payment_status: str | None
) -> tuple[str, str | None]:
    """An open order's (status, hold_reason); `allocation` None means nothing on it ships."""
    if allocation is None:
        return "completed", None
    if not addressed:
        return "on_hold", "no_address"
    if allocation == "allocated" and payment_status in PAID:
        return "ready_to_ship", None
    return allocation, None


def expires_at(created_at: str, payment_status: str | None, unpaid_expiry: float) -> str | None:
    """When an unpaid order gives its reservation back (created_at + unpaid_expiry, in the
    store's ISO form); None for a paid one, one whose payment is not known, or with expiry
    off (0)."""
    if unpaid_expiry <= 0 or payment_status not in UNPAID:
        return None
    deadline = datetime.fromisoformat(created_at) + timedelta(seconds=unpaid_expiry)
    return deadline.isoformat(timespec="microseconds")
