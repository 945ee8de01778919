"""What every carrier driver speaks: the request, the typed results, the errors and the one
small interface (`Carrier`).

A driver holds no state of ours: it returns the carrier's ids (shipment id, rate id) for the
caller to store before the call that spends, and takes them back to look up, buy or refund.

    CarrierError
    ├── AddressRejected     the carrier refused the destination address (its message kept):
    │                       permanent for this order; an operator fixes the address
    ├── NoRate              no rate matches the configured rule: permanent until the rule or
    │                       the order changes
    ├── CarrierRefused      any other 4xx: the request itself is wrong; retrying will not help
    ├── CarrierUnavailable  5xx, 429, a timeout or a refused connection before anything was
    │                       sent: transient, `retry_after` seconds when the carrier said so
    ├── Uncertain           the request went out but its answer was lost: the carrier may have
    │                       acted (sold a label); look the shipment up before spending again
    └── NotSupported        the carrier has no such operation
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal
from typing import Protocol


@dataclass(frozen=True)
class Address:
    name: str
    line1: str
    city: str
    postal_code: str
    country: str  # ISO 3166-1 alpha-2
    line2: str = ""
    region: str = ""  # state or province code
    company: str = ""
    phone: str = ""
    email: str = ""


@dataclass(frozen=True)
class Parcel:
    """Weight in ounces and dimensions in inches, as the US carriers and EasyPost want them;
    no dimensions (all None) means the carrier rates by weight alone."""

    weight_oz: float
    length_in: float | None = None
    width_in: float | None = None
    height_in: float | None = None

    def __post_init__(self) -> None:
        if not self.weight_oz > 0:
            raise ValueError(f"parcel weight must be positive ounces, not {self.weight_oz!r}")
        dimensions = (self.length_in, self.width_in, self.height_in)
        if any(d is None for d in dimensions) and any(d is not None for d in dimensions):
            raise ValueError("parcel dimensions: give length, width and height, or none")
        if any(d is not None and not d > 0 for d in dimensions):
            raise ValueError(f"parcel dimensions must be positive inches, not {dimensions!r}")


@dataclass(frozen=True)
class ShipmentRequest:
    """One parcel from our warehouse to the order's address. `reference` is ours (the order
    id): the carrier stores it on the shipment, so a shipment can be found by it."""

    reference: str
    from_address: Address
    to_address: Address
    parcel: Parcel
    verify_address: bool = True  # ask the carrier to refuse an undeliverable address


@dataclass(frozen=True)
class Rate:
    id: str
    carrier: str
    service: str
    amount: Decimal
    currency: str
    delivery_days: int | None = None


@dataclass(frozen=True)
class Label:
    shipment_id: str
    tracking_code: str
    carrier: str
    service: str
    amount: Decimal
    currency: str
    label_url: str
    tracking_url: str = ""


@dataclass(frozen=True)
class Shipment:
    """A shipment as the carrier has it: its rates, and its label once one was bought."""

    id: str
    reference: str | None
    rates: tuple[Rate, ...]
    label: Label | None = None
    refund_status: str | None = None


@dataclass(frozen=True)
class Refund:
    shipment_id: str
    status: str  # the carrier's word: "submitted", "refunded", "rejected", ...


class CarrierError(Exception):
    """Something the carrier said or did not say; see the module's tree."""


class AddressRejected(CarrierError):
    """The carrier cannot deliver to this address; `message` is the carrier's own words."""

    def __init__(self, message: str, code: str = "") -> None:
        super().__init__(message)
        self.message = message
        self.code = code


class NoRate(CarrierError):
    """No rate of the shipment matches the configured rule."""


class CarrierRefused(CarrierError):
    """A 4xx other than an address: the request is wrong and retrying it will not help."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(f"{status} {code}: {message}" if code else f"{status}: {message}")
        self.status = status
        self.code = code
        self.message = message


class CarrierUnavailable(CarrierError):
    """The carrier could not answer now (5xx, 429, timeout, connection refused): retry later,
    not before `retry_after` seconds when the carrier gave them."""

    def __init__(self, message: str, status: int | None = None,
                 retry_after: float | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.retry_after = retry_after


class Uncertain(CarrierError):
    """The request was sent and its answer lost: the carrier may have acted on it."""


class NotSupported(CarrierError):
    """The carrier has no such operation."""


class Carrier(Protocol):
    """One carrier API. Each call is one request (or, for `buy` on a shipment already
    bought, one more to read its label); none keeps anything between calls."""

    name: str

    async def create_shipment(self, request: ShipmentRequest) -> Shipment:
        """Create the shipment and return it with its rates (nothing is bought)."""
        ...

    async def retrieve_shipment(self, shipment_id: str) -> Shipment:
        """Look a shipment up by the carrier's id; its `label` is set once bought."""
        ...

    async def buy(self, shipment_id: str, rate_id: str) -> Label:
        """Buy the label at that rate: this spends money."""
        ...

    async def refund(self, shipment_id: str) -> Refund:
        """Ask for the label's postage back (void the label)."""
        ...
