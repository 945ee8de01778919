"""The one interface every storefront driver keeps, and the values it takes and gives."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol


@dataclass(frozen=True)
class Tracking:
    """A shipment's tracking as the store shows it to the customer."""

    number: str
    company: str
    url: str | None = None

    def __post_init__(self) -> None:
        if not self.number.strip():
            raise ValueError("tracking number is empty")


@dataclass(frozen=True)
class WriteBack:
    """What the store now holds: its id for our write (a fulfillment, an order note), and
    whether it was there already (an earlier attempt, or someone else, wrote it)."""

    external_id: str
    already_done: bool


class Storefront(Protocol):
    """Tells one store that an order shipped. Holds configuration only, no state: the caller
    keeps the external ids, so any process may retry any write-back."""

    kind: str

    async def fulfil(self, order_ref: str, tracking: Tracking,
                     notify_customer: bool) -> WriteBack:
        """Record `tracking` on the store's order `order_ref` exactly once: an existing
        write with the same tracking number is returned as `already_done`. Raises the
        consumers.storefronts.errors tree."""
        ...
