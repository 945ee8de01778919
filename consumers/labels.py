"""The labels consumer (`python -m consumers labels`, [labels] in the config): a shipping label
bought from the carrier, once, for each order that becomes ready_to_ship.

It reads its own queue `labels`, fed by the orders consumer's `order.ready_to_ship`
notification and by an operator's `labels buy` (`label.requested`). For each order, outside
any transaction (consumers.calling), then in the runner's:

    1 look: the order (ready_to_ship; or on_hold for a label when an operator asks) and its
      row in `labels`; a label already bought is taken as it is
    2 commit a `creating` row (reference: the order id, ORDER.N for a later purchase)
    3 the carrier's shipment: the recorded one, looked up; else, on a retry, the one found by
      our reference; else created. Its id is recorded and COMMITTED before anything is
      bought; if another attempt recorded one first, that one is used
    4 a shipment already bought (an earlier attempt died after the carrier's answer): its
      label; else the rate the [labels] rule picks, bought
    5 in the runner's transaction: the label on the row (`bought`), a `shipments` row with its
      tracking code (the carrier's tracking webhooks then find the order), the order
      `label_purchased`, and a `shipment.label_created` notification

So a label is bought only for the one shipment the store recorded, and the carrier itself
refuses a second label for a shipment: never two labels for one order. An order cancelled
while its label was being bought keeps the label (recorded, announced) for an operator to
void (`webhook-router labels void`).

Failures: an address the carrier refuses holds the order (on_hold, address_invalid, the
carrier's message kept on the row and in the `order.on_hold` notification); no rate
matching the rule holds it (no_rate); the carrier unavailable (5xx, 429, timeout) or an
answer lost is Transient: the labels queue's own retry ladder ([labels] retry_ladder, about a
day long by default, so a carrier outage of a minute or an hour never dead-letters), waiting
at least as long as the carrier's Retry-After says; anything else the carrier refuses is
Permanent (the dead-letter queue, with its message).
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

import orjson

from consumers.calling import CallResults
from consumers.carriers.base import (
    Address,
    AddressRejected,
    Carrier,
    CarrierRefused,
    CarrierUnavailable,
    Label,
    NoRate,
    NotSupported,
    Parcel,
    Shipment,
    ShipmentRequest,
    Uncertain,
)
from consumers.carriers.rates import RateRule, Service, choose_rate
from consumers.errors import Permanent, Transient
from consumers.events import Event, data_of, text
from consumers.outbox import notify
from consumers.shipments import follow_shipments
from consumers.stock import lock_order, lock_orders, order_summary
from consumers.store import Store, Tx
from router.label_settings import LabelSettings
from router.times import now_iso

# What handle() returns, for the runner to count.
OUTCOMES = ("label_purchased", "on_hold", "exists", "ignored")
# The holds this consumer puts an order in, and an operator's `labels buy` takes it out of.
LABEL_HOLDS = frozenset({"address_invalid", "no_rate"})
REQUESTED = "label.requested"  # an operator's `labels buy`: the routing key and type


@dataclass(frozen=True)
class Bought:
    order_id: str
    purchase: int
    label: Label


@dataclass(frozen=True)
class Held:
    order_id: str
    purchase: int
    reason: str  # one of LABEL_HOLDS
    message: str  # the carrier's words, or what the rule looked for


@dataclass(frozen=True)
class Skipped:
    why: str


Result = Bought | Held | Skipped | Exception


# -- pure pieces ------------------------------------------------------------------------------

def requested(event: Event) -> tuple[str, bool]:
    """(order id, asked by an operator?) of a message on the labels queue."""
    kind = event.get("type")
    if kind not in ("order.ready_to_ship", REQUESTED):
        raise Permanent(f"labels: unknown event type {kind!r}")
    return text(data_of(event), "order_id"), kind == REQUESTED


def wanted(order: dict[str, Any], forced: bool) -> bool:
    """A label is bought for a ready_to_ship order, and, when an operator asks, for one this
    consumer held."""
    return order["status"] == "ready_to_ship" or (
        forced and order["status"] == "on_hold" and order["hold_reason"] in LABEL_HOLDS)


def destination(shipping_address: str | None) -> Address:
    """The order's stored address (canonical JSON) as the carrier wants it."""
    stored = orjson.loads(shipping_address) if shipping_address else {}
    fields = {name: stored.get(name) or "" for name in (
        "name", "line1", "line2", "city", "region", "postal_code", "country")}
    return Address(**fields)


def parcel_for(lines: Iterable[dict[str, Any]], settings: LabelSettings) -> Parcel | None:
    """One parcel for the lines that ship (None: nothing does): their weights added up (a SKU
    without a [labels.parcels] entry weighs the default parcel); the box is the SKU's own
    when one unit ships alone, else the default parcel's."""
    units = [(line["sku"], line["quantity"]) for line in lines if line["ships"]]
    if not units:
        return None
    sizes = settings.parcels
    weight = sum(sizes.get(sku, settings.default_parcel).weight_oz * quantity
                 for sku, quantity in units)
    box = settings.default_parcel
    if len(units) == 1 and units[0][1] == 1 and units[0][0] in sizes:
        box = sizes[units[0][0]]
    return Parcel(round(weight, 2), box.length_in, box.width_in, box.height_in)


def rate_rule(settings: LabelSettings) -> RateRule:
    return RateRule(
        allowed=tuple(Service(s.carrier, s.service) for s in settings.allowed),
        by_country={country: Service(s.carrier, s.service)
                    for country, s in settings.by_country.items()},
        currency=settings.currency,
    )


def label_of(row: dict[str, Any]) -> Label:
    """The label a `bought` row holds."""
    return Label(shipment_id=row["shipment_id"], tracking_code=row["tracking_code"],
                 carrier=row["carrier"], service=row["service"],
                 amount=Decimal(row["rate_amount"]), currency=row["rate_currency"],
                 label_url=row["label_url"], tracking_url=row["tracking_url"] or "")


# -- the store's side -------------------------------------------------------------------------

_ROW = "SELECT * FROM labels WHERE order_id = $1"


async def _look(tx: Tx, order_id: str) -> tuple[dict[str, Any] | None, list[dict[str, Any]],
                                                 dict[str, Any] | None]:
    order = await tx.fetchrow(
        "SELECT order_id, status, hold_reason, shipping_address FROM orders"
        " WHERE order_id = $1", order_id)
    return order, await _lines(tx, order_id), await tx.fetchrow(_ROW, order_id)


async def _lines(tx: Tx, order_id: str) -> list[dict[str, Any]]:
    lines = await tx.fetch(
        "SELECT line_no, sku, quantity, reserved, location, ships FROM order_lines"
        " WHERE order_id = $1 ORDER BY line_no", order_id)
    return [{**line, "ships": bool(line["ships"])} for line in lines]


async def _begin(tx: Tx, order_id: str, before: dict[str, Any] | None,
                 carrier: str) -> tuple[dict[str, Any], bool]:
    """Start a purchase: a `creating` row (the first, or the next after a hold or a void),
    unless another attempt changed the row first. (the row now, whether this one began it)"""
    now = now_iso()
    if before is None:
        began = await tx.execute(
            "INSERT INTO labels (order_id, purchase, reference, carrier_api, state, created_at,"
            " updated_at) VALUES ($1, 1, $1, $2, 'creating', $3, $3)"
            " ON CONFLICT (order_id) DO NOTHING", order_id, carrier, now)
    else:
        purchase = before["purchase"] + 1
        began = await tx.execute(
            "UPDATE labels SET purchase = $2, reference = $3, carrier_api = $4,"
            " state = 'creating', shipment_id = NULL, tracking_code = NULL, carrier = NULL,"
            " service = NULL, rate_amount = NULL, rate_currency = NULL, label_url = NULL,"
            " tracking_url = NULL, hold_reason = NULL, message = NULL, refund_status = NULL,"
            " updated_at = $5 WHERE order_id = $1 AND purchase = $6 AND state = $7",
            order_id, purchase, f"{order_id}.{purchase}", carrier, now, before["purchase"],
            before["state"])
    row = await tx.fetchrow(_ROW, order_id)
    assert row is not None
    return row, began == 1


async def _record(tx: Tx, order_id: str, purchase: int, shipment_id: str) -> str | None:
    """Record the carrier's shipment id for this purchase unless one is recorded already;
    the id recorded now (None if the purchase was replaced meanwhile)."""
    await tx.execute(
        "UPDATE labels SET shipment_id = $3, updated_at = $4 WHERE order_id = $1"
        " AND purchase = $2 AND shipment_id IS NULL", order_id, purchase, shipment_id,
        now_iso())
    recorded = await tx.fetchval(
        "SELECT shipment_id FROM labels WHERE order_id = $1 AND purchase = $2",
        order_id, purchase)
    return recorded if isinstance(recorded, str) else None


# -- the consumer -----------------------------------------------------------------------------

class Labels:
    """The labels consumer's two halves: `call` (the carrier, outside transactions) and
    `handle` (its result, in the runner's transaction)."""

    def __init__(self, settings: LabelSettings, store: Store, carrier: Carrier) -> None:
        self.settings = settings
        self.store = store
        self.carrier = carrier
        self.rule = rate_rule(settings)
        self.origin = Address(**settings.from_address)
        self.results: CallResults[Bought | Held | Skipped] = CallResults()

    # -- outside the transaction (consumers.calling) --

    async def call(self, events: list[Event]) -> None:
        """Buy (or find) the label of each order the batch names, once per order."""
        wanting: dict[str, list[str]] = {}
        forced: set[str] = set()  # orders an operator asked for
        for event in events:
            try:
                order_id, asked = requested(event)
            except Permanent as exc:
                self.results[str(event["id"])] = exc
                continue
            wanting.setdefault(order_id, []).append(str(event["id"]))
            if asked:
                forced.add(order_id)
        await asyncio.gather(*(self._settle(order_id, order_id in forced, ids)
                               for order_id, ids in wanting.items()))

    def forget(self, events: list[Event]) -> None:
        self.results.forget(events)

    async def _settle(self, order_id: str, forced: bool, ids: list[str]) -> None:
        result: Result
        try:
            result = await self.purchase(order_id, forced)
        except Exception as exc:  # the handler raises it in the transaction: retry or dead
            result = exc
        for event_id in ids:
            self.results[event_id] = result

    async def purchase(self, order_id: str, forced: bool = False) -> Bought | Held | Skipped:
        """Steps 1-4 of the module's docstring, each store step committed on its own."""
        order, lines, row = await self.store.run(lambda tx: _look(tx, order_id))
        if order is None:
            return Skipped("unknown order")
        if row is not None and row["state"] == "bought":
            return Bought(order_id, row["purchase"], label_of(row))
        if not wanted(order, forced):
            return Skipped(f"the order is {order['status']}")
        parcel = parcel_for(lines, self.settings)
        if parcel is None:
            return Skipped("nothing on the order ships")
        if row is not None and row["state"] not in ("held", "voided"):
            current, began = row, False  # a purchase under way (or died): carry it on
        else:
            current, began = await self.store.run(
                lambda tx: _begin(tx, order_id, row, self.carrier.name))
            if current["state"] == "bought":
                return Bought(order_id, current["purchase"], label_of(current))
        purchase = current["purchase"]
        to = destination(order["shipping_address"])
        try:
            shipment = await self._shipment(order_id, current, began, to, parcel)
            if shipment.label is not None:  # bought by an attempt that died before its commit
                return Bought(order_id, purchase, shipment.label)
            rate = choose_rate(shipment.rates, self.rule, to.country)
            return Bought(order_id, purchase, await self.carrier.buy(shipment.id, rate.id))
        except AddressRejected as exc:
            return Held(order_id, purchase, "address_invalid", exc.message)
        except NoRate as exc:
            return Held(order_id, purchase, "no_rate", str(exc))
        except (CarrierUnavailable, Uncertain) as exc:
            # The carrier's Retry-After picks the retry rung (consumers.runner.rung).
            after = exc.retry_after if isinstance(exc, CarrierUnavailable) else None
            raise Transient(f"{self.carrier.name}: {exc}", retry_after=after) from exc
        except (CarrierRefused, NotSupported) as exc:
            raise Permanent(f"{self.carrier.name} refused: {exc}") from exc

    async def _shipment(self, order_id: str, row: dict[str, Any], began: bool, to: Address,
                        parcel: Parcel) -> Shipment:
        """The carrier's shipment for this purchase, its id recorded (committed) first."""
        if row["shipment_id"]:
            return await self.carrier.retrieve_shipment(row["shipment_id"])
        reference = row["reference"]
        # A retry: an earlier attempt may have created it and died before recording it.
        shipment = None if began else await self._by_reference(reference)
        if shipment is None:
            request = ShipmentRequest(reference, self.origin, to, parcel,
                                      verify_address=self.settings.verify_address)
            try:
                shipment = await self.carrier.create_shipment(request)
            except Uncertain:
                shipment = await self._by_reference(reference)
                if shipment is None:
                    raise
        found = shipment
        recorded = await self.store.run(
            lambda tx: _record(tx, order_id, row["purchase"], found.id))
        if recorded is None:
            raise Transient(f"order {order_id}: its purchase was replaced meanwhile")
        if recorded != shipment.id:  # another attempt recorded its own first: use that one
            shipment = await self.carrier.retrieve_shipment(recorded)
        return shipment

    async def _by_reference(self, reference: str) -> Shipment | None:
        try:
            return await self.carrier.retrieve_shipment(reference)
        except CarrierRefused as exc:
            if exc.status == 404:
                return None
            raise

    # -- in the runner's transaction --

    async def prepare(self, tx: Tx, events: list[Event]) -> None:
        """Lock the batch's orders in the global order every consumer uses (PostgreSQL)."""
        ids = set()
        for event in events:
            result = self.results.get(str(event["id"]))
            if isinstance(result, Bought | Held):
                ids.add(result.order_id)
        await lock_orders(tx, ids)

    async def handle(self, tx: Tx, event: Event, batch: None = None) -> str:
        """Apply what `call` found for this event; returns one of OUTCOMES."""
        result = self.results.taken(event, "labels")
        if isinstance(result, Skipped):
            return "ignored"
        if isinstance(result, Held):
            return await _hold(tx, event, result)
        return await _bought(tx, event, result)


async def _bought(tx: Tx, event: Event, bought: Bought) -> str:
    label, order_id, now = bought.label, bought.order_id, now_iso()
    recorded = await tx.execute(
        "UPDATE labels SET state = 'bought', shipment_id = $3, tracking_code = $4,"
        " carrier = $5, service = $6, rate_amount = $7, rate_currency = $8, label_url = $9,"
        " tracking_url = $10, hold_reason = NULL, message = NULL, updated_at = $11"
        " WHERE order_id = $1 AND purchase = $2 AND state <> 'bought'",
        order_id, bought.purchase, label.shipment_id, label.tracking_code, label.carrier,
        label.service, str(label.amount), label.currency, label.label_url,
        label.tracking_url or None, now)
    if not recorded:
        return "exists"  # recorded by an earlier delivery or another attempt
    # The carrier's tracking webhooks name the carrier in lower case (config/mappings).
    await tx.execute(
        "INSERT INTO shipments (tracking_code, carrier, order_id, status, rank, occurred_at)"
        " VALUES ($1, $2, $3, 'pre_transit', 1, $4) ON CONFLICT (tracking_code, carrier)"
        " DO NOTHING", label.tracking_code, label.carrier.lower(), order_id, now)
    # The carrier tracks the label from its sale and may say so before this commit (a kill
    # between its answer and the commit, a batch still calling): the shipping consumer then
    # stored the shipment without an order. It is this order's: link it, and the order
    # follows it below.
    overtaken = await tx.execute(
        "UPDATE shipments SET order_id = $2 WHERE tracking_code = $1 AND order_id IS NULL",
        label.tracking_code, order_id)
    row = await lock_order(tx, order_id)
    status = row["status"] if row else None
    if row is not None and wanted(row, forced=True):
        status = "label_purchased"
        await tx.execute("UPDATE orders SET status = $2, hold_reason = NULL WHERE order_id = $1",
                         order_id, status)
    if overtaken:
        status = await follow_shipments(tx, order_id) or status
    await notify(tx, event, "shipment.label_created", order_id, {
        "order_id": order_id, "order_status": status, "tracking_code": label.tracking_code,
        "carrier": label.carrier, "service": label.service,
        "rate": {"amount": str(label.amount), "currency": label.currency},
        "label_url": label.label_url, "tracking_url": label.tracking_url or None,
    })
    return "label_purchased"


async def _hold(tx: Tx, event: Event, held: Held) -> str:
    recorded = await tx.execute(
        "UPDATE labels SET state = 'held', hold_reason = $3, message = $4, updated_at = $5"
        " WHERE order_id = $1 AND purchase = $2 AND state = 'creating'",
        held.order_id, held.purchase, held.reason, held.message, now_iso())
    if not recorded:
        return "exists"
    row = await lock_order(tx, held.order_id)
    if row is None or not wanted(row, forced=True):
        return "ignored"  # cancelled (or moved on) while the carrier was asked
    await tx.execute("UPDATE orders SET status = 'on_hold', hold_reason = $2 WHERE order_id = $1",
                     held.order_id, held.reason)
    summary = order_summary(held.order_id, "on_hold", await _lines(tx, held.order_id),
                            hold_reason=held.reason, payment_status=row["payment_status"])
    await notify(tx, event, "order.on_hold", held.order_id, {**summary, "detail": held.message})
    return "on_hold"
