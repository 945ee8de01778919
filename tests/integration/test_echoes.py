"""Our own write-back coming back (issue 20): the webhooks the store sends because the
storefront consumer told it the tracking number, signed as the providers sign them, through the
real ingress and the real consumers, on both stores. They are recognised as echoes (outcome
`echo` in consumer_attempts and the trace) and change nothing: the order does not move, no
second label, write-back or shipment, nothing new announced, nothing dead-lettered or held.
What the same webhooks bring that is not ours (a fulfillment typed in by hand, a new address)
still applies.

The bodies are the providers' documented ones (tests/fixtures/providers/README.md) with our
order, tracking number and carrier put in: Shopify's fulfillments/create sample payload; its
documented order 450789469 once fulfilled, with that fulfillment (orders/updated and
orders/fulfilled carry the order); WooCommerce's order 727 and its documented update to
`completed` (order.updated)."""

from __future__ import annotations

import contextlib
import dataclasses
import io
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import orjson
import pytest
import test_labels
import test_storefront
from test_consumer_process import wait_until
from test_labels import (
    SHOPIFY_ORDER,
    TRACKER_UPDATED,
    Carrier,
    becomes,
    depth,
    one,
    running,
    status,
    stock_shopify_order,
)
from test_storefront import counters, with_storefront, written

from consumers.order_admin import orders_command
from consumers.store import Store, open_store
from consumers.trace import trace
from router.broker.topology import Topology
from router.providers import signed_headers
from router.settings import Settings

pytestmark = pytest.mark.integration
carrier = test_labels.carrier  # the EasyPost emulator (labels)
stores = test_storefront.stores  # the Shopify and WooCommerce emulators (write-back)
declared = test_storefront.declared  # the labels and storefront queues

PROVIDERS = Path(__file__).resolve().parents[1] / "fixtures" / "providers"
FULFILLMENT = (PROVIDERS / "shopify" / "webhook-fulfillments-create.json").read_bytes()
WOO_ORDER = (PROVIDERS / "woocommerce" / "order-727.json").read_bytes()
WOO_COMPLETED = (PROVIDERS / "woocommerce" / "order-727-completed.json").read_bytes()
ORDER_ID = {"shopify": "450789469", "woocommerce": "727"}
CONSUMERS = ("orders", "labels", "storefront", "shipping", "audit")
ECHO_AT = "2026-12-07T10:00:00-05:00"  # after the order's own times, as a new webhook is
HAND_TRACKING = "1Z999AA10123456784"  # a number typed into Shopify's admin, not ours


def fulfillment(order_id: str, tracking: str, company: str, url: str | None) -> dict[str, Any]:
    """Shopify's documented fulfillment as our fulfillmentCreate makes it (SUCCESS)."""
    body = orjson.loads(FULFILLMENT)
    body |= {"order_id": int(order_id), "status": "success", "tracking_company": company,
             "tracking_number": tracking, "tracking_numbers": [tracking], "tracking_url": url,
             "tracking_urls": [url] if url else [], "created_at": ECHO_AT,
             "updated_at": ECHO_AT}
    return body


def fulfilled_order(*fulfillments: dict[str, Any], address1: str | None = None) -> bytes:
    """Shopify's documented order 450789469 once fulfilled: fulfillment_status "fulfilled",
    the fulfillments added to its list (which holds a documented failed one), a newer
    updated_at; optionally with a new street."""
    order = orjson.loads(SHOPIFY_ORDER)
    order |= {"fulfillment_status": "fulfilled", "updated_at": ECHO_AT,
              "fulfillments": [*order["fulfillments"], *fulfillments]}
    if address1 is not None:
        order["shipping_address"] = {**order["shipping_address"], "address1": address1}
    return orjson.dumps(order)


def woo_completed(address_1: str | None = None) -> bytes:
    """WooCommerce's documented order 727 updated to completed, as our write-back makes it
    send order.updated; optionally with a new street."""
    if address_1 is None:
        return WOO_COMPLETED
    order = orjson.loads(WOO_COMPLETED)
    order["shipping"] = {**order["shipping"], "address_1": address_1}
    return orjson.dumps(order)


class Shop:
    """One order through the ingress and the consumers until the store was told its tracking
    number; then the store's webhooks and the carrier's, posted as they are signed."""

    def __init__(self, client, on: Settings, store: Store, provider: str) -> None:
        self.client, self.on, self.store, self.provider = client, on, store, provider
        self.order_id = ORDER_ID[provider]
        self.label: dict[str, Any] = {}

    async def post(self, source: str, body: bytes, topic: str | None) -> str:
        """Post a signed delivery; the event id the ingress accepted it under."""
        response = await self.client.post(f"/webhooks/{source}", data=body,
                                          headers=signed_headers(self.on, source, body, topic))
        answer = await response.json()
        assert (202, "accepted") == (response.status, answer.get("status")), answer
        return str(answer["id"])

    async def ordered_and_written_back(self) -> None:
        if self.provider == "shopify":
            await stock_shopify_order(self.store)
            await self.post("shopify", SHOPIFY_ORDER, "orders/create")
        else:
            async with self.store.transaction() as tx:
                for sku in ("product:93", "Bar3"):
                    await tx.execute("INSERT INTO stock (sku, location, on_hand, reserved,"
                                     " as_of) VALUES ($1, 'default', 5, 0,"
                                     " '2026-12-07T00:00:00+00:00')", sku)
            await self.post("woocommerce", WOO_ORDER, "order.created")
        await wait_until(lambda: written(self.store, self.order_id))
        label = await one(self.store, "SELECT * FROM labels WHERE order_id = $1", self.order_id)
        assert label is not None
        self.label = label
        assert ("label_purchased", None) == await status(self.store, self.order_id)

    async def carrier_says(self, tracker_status: str) -> None:
        """EasyPost's signed tracker.updated for our label (shipped, or delivered)."""
        tracker = orjson.loads(TRACKER_UPDATED)
        tracker["id"] = f"evt_{self.label['tracking_code']}_{tracker_status}"
        tracker["result"] |= {"tracking_code": self.label["tracking_code"],
                              "carrier": self.label["carrier"], "status": tracker_status}
        await self.post("easypost", orjson.dumps(tracker), None)
        wanted = "delivered" if tracker_status == "delivered" else "shipped"
        await wait_until(becomes(self.store, self.order_id, wanted))

    def ours(self) -> dict[str, Any]:
        return fulfillment(self.order_id, self.label["tracking_code"], self.label["carrier"],
                           self.label["tracking_url"])

    async def echoes(self) -> list[str]:
        """What the store sends after our write-back; the event ids."""
        if self.provider == "woocommerce":  # the customer note sends no webhook
            return [await self.post("woocommerce", woo_completed(), "order.updated")]
        order = fulfilled_order(self.ours())
        return [await self.post("shopify", orjson.dumps(self.ours()), "fulfillments/create"),
                await self.post("shopify", order, "orders/updated"),
                await self.post("shopify", order, "orders/fulfilled")]

    async def outcomes(self, event_ids: list[str]) -> list[str | None]:
        """Each event's outcome, once every one has one."""
        async def row(event_id: str) -> dict[str, Any] | None:
            return await one(self.store, "SELECT outcome FROM consumer_attempts WHERE"
                                         " event_id = $1 AND consumer <> 'audit'", event_id)

        async def all_done() -> bool:
            return all([await row(event_id) is not None for event_id in event_ids])

        await wait_until(all_done)
        return [(await row(event_id) or {}).get("outcome") for event_id in event_ids]


@contextlib.asynccontextmanager
async def shop_of(provider: str, store_url: str, settings: Settings, carrier: Carrier,
                  stores, make_client, complete_order: bool = True) -> AsyncIterator[Shop]:
    on = with_storefront(settings, stores, carrier)
    woo = dataclasses.replace(on.storefront.stores["woocommerce"],
                              complete_order=complete_order)
    on = dataclasses.replace(on, storefront=dataclasses.replace(
        on.storefront, stores={**on.storefront.stores, "woocommerce": woo}))
    client = await make_client(on)
    async with open_store(store_url) as store, running(on, store, *CONSUMERS):
        shop = Shop(client, on, store, provider)
        await shop.ordered_and_written_back()
        yield shop


async def counts(shop: Shop) -> dict[str, Any]:
    """What must not grow when an echo comes in."""
    oid, store = shop.order_id, shop.store
    async with store.transaction() as tx:
        found = {name: await tx.fetchval(f"SELECT COUNT(*) FROM {table} WHERE order_id = $1",
                                         oid)
                 for name, table in (("writebacks", "writebacks"), ("shipments", "shipments"),
                                     ("labels", "labels"))}
        found["outbox"] = await tx.fetchval("SELECT COUNT(*) FROM outbox")
        found["reserved"] = await tx.fetchval(
            "SELECT COALESCE(SUM(reserved), 0) FROM order_lines WHERE order_id = $1", oid)
    return found


async def at_the_store(shop: Shop, stores) -> int:
    """Write-backs the store holds for our tracking number: Shopify fulfillments, WooCommerce
    notes."""
    number = shop.label["tracking_code"]
    state = counters(stores, shop.provider)["orders"][shop.order_id]
    if shop.provider == "shopify":
        return sum(number in [t["number"] for t in f["trackingInfo"]]
                   for f in state["fulfillments"])
    return sum(number in note["note"] for note in state["notes"])


async def nothing_dead(amqp, on: Settings) -> None:
    topology = Topology.of(on.broker)
    for name in CONSUMERS:
        assert 0 == await depth(amqp, topology.dead_queue(name)), name


class TestEchoes:
    @pytest.mark.parametrize("provider", ["shopify", "woocommerce"])
    @pytest.mark.parametrize("carrier_said", [None, "in_transit", "delivered"],
                             ids=["label_purchased", "shipped", "delivered"])
    async def test_our_write_back_coming_back_changes_nothing(
        self, store_url, settings, carrier, stores, declared, make_client, amqp, provider,
        carrier_said
    ):
        """The store's webhooks caused by our write-back, arriving while the order is
        label_purchased, or after the carrier's tracker moved it on: each is an `echo` (in
        consumer_attempts and the trace), the order stays where it is, and there is still one
        label, one write-back (one fulfillment or note at the store), one shipment row, no new
        notification and no reservation given up; nothing is dead-lettered or held."""
        async with shop_of(provider, store_url, settings, carrier, stores, make_client) as shop:
            if carrier_said is not None:
                await shop.carrier_says(carrier_said)
            where = await status(shop.store, shop.order_id)
            before = await counts(shop)
            events = await shop.echoes()
            assert ["echo"] * len(events) == await shop.outcomes(events)
            assert where == await status(shop.store, shop.order_id)
            assert before == await counts(shop)
            traced = await trace(store_url, shop.order_id)  # every event of the order
            assert ["echo"] * len(events) == [
                a["outcome"] for e in traced["events"] if e["event_id"] in events
                for a in e["attempts"] if a["consumer"] != "audit"]
            shown = io.StringIO()
            stored = dataclasses.replace(shop.on, consumers=dataclasses.replace(
                shop.on.consumers, store=store_url))
            assert 0 == await orders_command(stored, "show", order_id=shop.order_id,
                                             out=shown)
            assert "echo" not in shown.getvalue()  # no change, so not the last one
        assert 1 == carrier.sold()["labels_sold"]
        assert 1 == await at_the_store(shop, stores)
        await nothing_dead(amqp, shop.on)


class TestNotOurs:
    async def test_a_fulfillment_typed_in_by_hand_still_ships_the_order(
        self, store_url, settings, carrier, stores, declared, make_client, amqp
    ):
        """Shopify's fulfillments/create with another tracking number (typed into the admin)
        is a shipment of its own, linked to the order; the orders/updated that lists it beside
        ours says the store sent the order, and it is shipped, as before."""
        async with shop_of("shopify", store_url, settings, carrier, stores,
                           make_client) as shop:
            await shop.echoes()
            hand = fulfillment(shop.order_id, HAND_TRACKING, "UPS", None)
            created = await shop.post("shopify", orjson.dumps(hand), "fulfillments/create")
            assert ["advanced"] == await shop.outcomes([created])
            linked = await one(shop.store, "SELECT order_id FROM shipments WHERE"
                                           " tracking_code = $1", HAND_TRACKING)
            assert {"order_id": shop.order_id} == linked
            updated = await shop.post("shopify", fulfilled_order(shop.ours(), hand),
                                      "orders/updated")
            assert ["shipped"] == await shop.outcomes([updated])
            assert ("shipped", None) == await status(shop.store, shop.order_id)
        await nothing_dead(amqp, shop.on)

    @pytest.mark.parametrize("provider", ["shopify", "woocommerce"])
    async def test_a_new_address_beside_our_write_back_still_applies(
        self, store_url, settings, carrier, stores, declared, make_client, amqp, provider
    ):
        """The store's update that carries our write-back and a new street: the street is
        stored (not an echo), and the order, told nothing by its carrier yet, stays
        label_purchased with its one label."""
        async with shop_of(provider, store_url, settings, carrier, stores, make_client) as shop:
            street = "1 Changed Street"
            if provider == "shopify":
                body = fulfilled_order(shop.ours(), address1=street)
                event = await shop.post("shopify", body, "orders/updated")
            else:
                event = await shop.post("woocommerce", woo_completed(street), "order.updated")
            assert ["label_purchased"] == await shop.outcomes([event])
            row = await one(shop.store, "SELECT status, shipping_address FROM orders WHERE"
                                        " order_id = $1", shop.order_id)
            assert row is not None and "label_purchased" == row["status"]
            assert street == orjson.loads(row["shipping_address"])["line1"]
        assert 1 == carrier.sold()["labels_sold"]
        await nothing_dead(amqp, shop.on)

    async def test_a_completion_our_write_back_does_not_make_ships_the_order(
        self, store_url, settings, carrier, stores, declared, make_client, amqp
    ):
        """With complete_order = false our write-back only adds the note: a WooCommerce
        `completed` is then the merchant's own, and ships the order, as before."""
        async with shop_of("woocommerce", store_url, settings, carrier, stores, make_client,
                           complete_order=False) as shop:
            state = counters(stores, "woocommerce")["orders"][shop.order_id]
            assert "processing" == state["status"]  # we did not complete it
            (event,) = await shop.echoes()
            assert ["shipped"] == await shop.outcomes([event])
            assert ("shipped", None) == await status(shop.store, shop.order_id)
        await nothing_dead(amqp, shop.on)
