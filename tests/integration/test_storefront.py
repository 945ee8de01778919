"""The storefront consumer against the Shopify and WooCommerce emulators on local ports, the
real RabbitMQ and both stores: one write-back per label at the store whatever is delivered
twice or dies between the store's answer and our commit; a revoked token pauses the store."""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator
from typing import Any

import aio_pika
import orjson
import pytest
import test_labels
from aiohttp.test_utils import TestServer
from test_consumer_process import wait_until
from test_labels import (
    SHOPIFY_ORDER,
    Carrier,
    depth,
    labelled,
    notifications,
    one,
    publish,
    running,
    stock_shopify_order,
)

from consumers.store import Store, open_store
from emulators import shopify, woocommerce
from emulators.control import CONTROL, Fault
from router.broker.topology import Topology
from router.providers import signed_headers
from router.settings import Settings
from router.storefront_settings import StorefrontSettings, StoreTarget

pytestmark = pytest.mark.integration
carrier = test_labels.carrier  # the EasyPost emulator fixture, for the labels consumer
TOKEN = "shpat_storefront_test"
WOO_KEY, WOO_SECRET = "ck_storefront_test", "cs_storefront_test"


@pytest.fixture
async def stores() -> AsyncIterator[dict[str, TestServer]]:
    servers = {"shopify": TestServer(shopify.create_app(TOKEN), host="127.0.0.1"),
               "woocommerce": TestServer(woocommerce.create_app(WOO_KEY, WOO_SECRET),
                                         host="127.0.0.1")}
    for server in servers.values():
        await server.start_server()
    yield servers
    for server in servers.values():
        await server.close()


def with_storefront(settings: Settings, stores: dict[str, TestServer], carrier: Carrier,
                    token: str = TOKEN) -> Settings:
    """[labels] on against the carrier emulator, [storefront] on against the stores'."""
    labels = labelled(settings, carrier)
    targets = {
        "shopify": StoreTarget("shopify", str(stores["shopify"].make_url("")).rstrip("/"),
                               {"access_token": token}),
        "woocommerce": StoreTarget("woocommerce",
                                   str(stores["woocommerce"].make_url("")).rstrip("/"),
                                   {"consumer_key": WOO_KEY, "consumer_secret": WOO_SECRET}),
    }
    broker = dataclasses.replace(labels.broker, optional_queues=("labels", "storefront"))
    return dataclasses.replace(labels, broker=broker, storefront=StorefrontSettings(
        enabled=True, stores=targets))


@pytest.fixture
async def declared(settings: Settings, topology: Topology,
                   amqp: aio_pika.abc.AbstractConnection) -> AsyncIterator[None]:
    """The labels and storefront queues declared, and deleted after the test."""
    ours = Topology.of(dataclasses.replace(settings.broker,
                                           optional_queues=("labels", "storefront")))
    await ours.declare(await amqp.channel())
    yield
    async with await aio_pika.connect(settings.broker.url) as connection:
        channel = await connection.channel()
        for name in ("labels", "storefront"):
            for spec in ours.work_queues(name, ours.retry_ladder):
                queue = await channel.get_queue(spec.name, ensure=False)
                await queue.delete(if_unused=False, if_empty=False)


async def written(store: Store, order_id: str) -> dict[str, Any] | None:
    return await one(store, "SELECT * FROM writebacks WHERE order_id = $1 AND state = 'done'",
                     order_id)


def counters(stores: dict[str, TestServer], kind: str) -> dict[str, Any]:
    app = stores[kind].app
    state = app[shopify.SHOP].state() if kind == "shopify" else app[woocommerce.STORE].state()
    return dict(state)


async def label_created(store: Store, amqp, settings: Settings, order_id: str,
                        tracking: str, source: str, event_id: str) -> bytes:
    """An order of `source` and the labels consumer's notification for it, published."""
    async with store.transaction() as tx:
        await tx.execute("INSERT INTO orders (order_id, source, status) VALUES ($1, $2,"
                         " 'label_purchased') ON CONFLICT (order_id) DO NOTHING",
                         order_id, source)
    body = orjson.dumps({
        "id": event_id, "type": "shipment.label_created", "occurred_at": "2026-12-07T10:00:00Z",
        "data": {"order_id": order_id, "order_status": "label_purchased",
                 "tracking_code": tracking, "carrier": "USPS", "service": "GroundAdvantage",
                 "tracking_url": f"https://track.example/{tracking}"}})
    await publish(amqp, settings, body, "notify.shipment.label_created")
    return body


class TestWriteBack:
    async def test_a_shopify_order_gets_one_fulfillment_even_delivered_twice(
        self, store_url, settings, carrier, stores, declared, make_client, amqp
    ):
        """Shopify's documented order, signed through the real ingress: label bought, the
        Shopify emulator holds one fulfillment with that tracking number; the notification
        delivered again, and again after the row was lost between the store's answer and our
        commit (back to pending), still one: the driver finds its own earlier write."""
        on = with_storefront(settings, stores, carrier)
        client = await make_client(on)
        async with open_store(store_url) as store, \
                running(on, store, "orders", "labels", "storefront"):
            await stock_shopify_order(store)
            response = await client.post("/webhooks/shopify", data=SHOPIFY_ORDER,
                                         headers=signed_headers(on, "shopify", SHOPIFY_ORDER,
                                                                "orders/create"))
            assert 202 == response.status, await response.text()
            await wait_until(lambda: written(store, "450789469"))
            row = await written(store, "450789469")
            assert row is not None and not row["already_done"]
            tracking = row["tracking_code"]
            (fulfillment,) = counters(stores, "shopify")["orders"]["450789469"]["fulfillments"]
            assert [tracking] == [t["number"] for t in fulfillment["trackingInfo"]]

            (created,) = await notifications(store, "shipment.label_created")
            await publish(amqp, on, orjson.dumps(created), "notify.shipment.label_created")
            # as if the first attempt died after the store's answer, before its commit
            async with store.transaction() as tx:
                await tx.execute("UPDATE writebacks SET state = 'pending' WHERE order_id = $1",
                                 "450789469")
            await publish(amqp, on, orjson.dumps({**created, "id": "label-created-again"}),
                          "notify.shipment.label_created")
            await wait_until(lambda: _already(store, "450789469"))
        shop = counters(stores, "shopify")
        assert 1 == shop["fulfillments_created"]
        assert 1 == len(shop["orders"]["450789469"]["fulfillments"])
        assert 0 == await depth(amqp, Topology.of(on.broker).dead_queue("storefront"))

    async def test_a_woocommerce_order_gets_one_customer_note_and_is_completed(
        self, store_url, settings, carrier, stores, declared, amqp
    ):
        on = with_storefront(settings, stores, carrier)
        async with open_store(store_url) as store, running(on, store, "storefront"):
            body = await label_created(store, amqp, on, "727", "9400TRACK727", "woocommerce",
                                       "woo-label-1")
            await wait_until(lambda: written(store, "727"))
            await publish(amqp, on, body, "notify.shipment.label_created")
            async with store.transaction() as tx:
                await tx.execute("UPDATE writebacks SET state = 'pending' WHERE order_id = '727'")
            await publish(amqp, on, orjson.dumps({**orjson.loads(body), "id": "woo-label-2"}),
                          "notify.shipment.label_created")
            await wait_until(lambda: _already(store, "727"))
        order = counters(stores, "woocommerce")["orders"]["727"]
        notes = [n for n in order["notes"] if "9400TRACK727" in n["note"]]
        assert 1 == len(notes) and notes[0]["customer_note"]
        assert "completed" == order["status"]

    async def test_a_revoked_token_pauses_the_store_without_dead_letters(
        self, store_url, settings, carrier, stores, declared, amqp
    ):
        on = with_storefront(settings, stores, carrier, token="shpat_revoked")
        async with open_store(store_url) as store, running(on, store, "storefront"):
            await label_created(store, amqp, on, "1001", "9400TRACK1001", "shopify",
                                "revoked-1")
            await wait_until(lambda: one(store, "SELECT * FROM storefront_pauses"
                                                " WHERE source = 'shopify'"))
            topology = Topology.of(on.broker)
            await wait_until(lambda: _queued(amqp, topology.retry_queue(
                "storefront", topology.retry_ladder[0])))
            pending = await one(store, "SELECT state FROM writebacks WHERE order_id = '1001'")
            assert {"state": "pending"} == pending
        assert 0 == await depth(amqp, topology.dead_queue("storefront"))
        assert 0 == counters(stores, "shopify")["fulfillments_created"]
        from consumers.storefront import PAUSED
        assert 1 == PAUSED.labels(source="shopify")._value.get()

    async def test_a_refusal_goes_to_the_dead_letter_queue_with_the_stores_message(
        self, store_url, settings, carrier, stores, declared, amqp
    ):
        stores["shopify"].app[CONTROL].faults.append(Fault(
            status="user_error", operation="fulfillmentCreate", message="Invalid tracking url"))
        on = with_storefront(settings, stores, carrier)
        topology = Topology.of(on.broker)
        async with open_store(store_url) as store, running(on, store, "storefront"):
            await label_created(store, amqp, on, "1002", "9400TRACK1002", "shopify",
                                "refused-1")
            await wait_until(lambda: _queued(amqp, topology.dead_queue("storefront")))
        channel = await amqp.channel()
        queue = await channel.get_queue(topology.dead_queue("storefront"))
        message = await queue.get(no_ack=True)
        assert "Invalid tracking url" in str(message.headers)
        assert 0 == counters(stores, "shopify")["fulfillments_created"]


async def _already(store: Store, order_id: str) -> bool:
    row = await written(store, order_id)
    return row is not None and bool(row["already_done"])


async def _queued(amqp, name: str) -> bool:
    return await depth(amqp, name) > 0
