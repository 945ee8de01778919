"""The storefront consumer against the Shopify and WooCommerce emulators on local ports, the
real RabbitMQ and both stores: one write-back per label at the store whatever is delivered
twice or dies between the store's answer and our commit; a revoked token pauses the store."""

from __future__ import annotations

import dataclasses
import io
import time
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
    delete_queues,
    depth,
    labelled,
    notifications,
    one,
    publish,
    running,
    stock_shopify_order,
)

from consumers.store import Store, open_store
from consumers.storefront_admin import storefront_command
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
                    token: str = TOKEN, **options: Any) -> Settings:
    """[labels] on against the carrier emulator, [storefront] on against the stores' (with
    `options` of StorefrontSettings); both queues on the test's short [broker] ladder unless
    `options` gives the storefront's."""
    labels = labelled(settings, carrier)
    ladder = options.setdefault("retry_ladder", settings.broker.retry_ladder)
    targets = {
        "shopify": StoreTarget("shopify", str(stores["shopify"].make_url("")).rstrip("/"),
                               {"access_token": token}),
        "woocommerce": StoreTarget("woocommerce",
                                   str(stores["woocommerce"].make_url("")).rstrip("/"),
                                   {"consumer_key": WOO_KEY, "consumer_secret": WOO_SECRET}),
    }
    broker = dataclasses.replace(labels.broker, optional_queues=("labels", "storefront"),
                                 ladders=(*labels.broker.ladders, ("storefront", ladder)))
    return dataclasses.replace(labels, broker=broker, storefront=StorefrontSettings(
        enabled=True, stores=targets, **options))


@pytest.fixture
async def declared(settings: Settings, topology: Topology,
                   amqp: aio_pika.abc.AbstractConnection) -> AsyncIterator[None]:
    """The labels and storefront queues declared, and deleted after the test."""
    ladder = settings.broker.retry_ladder
    ours = Topology.of(dataclasses.replace(
        settings.broker, optional_queues=("labels", "storefront"),
        ladders=(("labels", ladder), ("storefront", ladder))))
    await ours.declare(await amqp.channel())
    yield
    await delete_queues(settings, "labels", "storefront")


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

    @pytest.mark.parametrize(("kind", "order_id", "rung"), [
        ("shopify", "1003", 8),    # THROTTLED: 117 points at 20 a second, 6 s: too long to
                                   # wait in the driver; the smallest rung of at least 6 s
        ("woocommerce", "731", 4),  # 503 with Retry-After: 3
    ])
    async def test_the_stores_wait_picks_the_rung(
        self, store_url, settings, carrier, stores, declared, amqp, kind, order_id, rung
    ):
        """The store says how long to wait (Shopify's cost bucket, WooCommerce's
        Retry-After): the message waits on the smallest rung at least that long (the
        ladder's first is 1 s), then the write-back is done, once."""
        if kind == "shopify":
            bucket = stores[kind].app[shopify.BUCKET]
            bucket.refill()  # from now on
            bucket.available, bucket.restore_rate = 0, 20
        else:
            stores[kind].app[CONTROL].faults.append(Fault(status=503, retry_after=3))
        on = with_storefront(settings, stores, carrier, retry_ladder=(1, 2, 4, 8))
        await Topology.of(on.broker).declare(await amqp.channel())
        try:
            async with open_store(store_url) as store, running(on, store, "storefront"):
                await label_created(store, amqp, on, order_id, f"9400WAIT{order_id}", kind,
                                    f"wait-{order_id}")
                await wait_until(lambda: written(store, order_id), timeout=rung + 20)
                delays = await one(store, "SELECT delay_seconds FROM consumer_attempts WHERE"
                                          " consumer = 'storefront' AND outcome = 'retry'")
                assert {"delay_seconds": rung} == delays
        finally:
            await delete_queues(on, "storefront")


class TestPaused:
    """A store that refuses our credentials is paused: its write-backs wait (never sent,
    never dead-lettered) while other stores' flow, until `storefront resume` or a probe."""

    async def test_a_revoked_token_holds_write_backs_until_resumed(
        self, store_url, settings, carrier, stores, declared, amqp
    ):
        """Token revoked at the shop: paused, its two labels wait round the ladder well past
        its length (the old way: storefront.dead) while a WooCommerce one is written; the
        token fixed and `storefront resume shopify`: one fulfillment per label."""
        shop = stores["shopify"].app
        shop[shopify.TOKEN][0] = "shpat_someone_else"  # ours revoked
        on = with_storefront(settings, stores, carrier, probe_every=3600.0)
        topology = Topology.of(on.broker)
        async with open_store(store_url) as store, running(on, store, "storefront"):
            for order_id in ("1101", "1102"):
                await label_created(store, amqp, on, order_id, f"9400HOLD{order_id}",
                                    "shopify", f"hold-{order_id}")
            await label_created(store, amqp, on, "741", "9400HOLD741", "woocommerce",
                                "hold-741")
            await wait_until(lambda: written(store, "741"))
            await wait_until(lambda: paused(store, "shopify"))
            # each shopify message back more often than the ladder has rungs: still waiting
            ladder = len(topology.ladder("storefront"))
            await wait_until(lambda: _at_least_retries(store, 2 * (ladder + 1)), timeout=30)
            assert 0 == await depth(amqp, topology.dead_queue("storefront"))
            # the first tries (both in one batch at most) refused; none while paused
            assert await requests(stores) <= 2
            shop[shopify.TOKEN][0] = TOKEN  # the token works again
            here = dataclasses.replace(on, consumers=dataclasses.replace(on.consumers,
                                                                         store=store_url))
            said = io.StringIO()
            assert 0 == await storefront_command(here, "resume", "shopify", out=said)
            assert said.getvalue().startswith("shopify: write-back resumed"), said.getvalue()
            for order_id in ("1101", "1102"):
                await wait_until(lambda order_id=order_id: written(store, order_id))
            action = await one(store, "SELECT action, target, outcome FROM operator_actions")
            assert {"action": "storefront resume", "target": "shopify",
                    "outcome": "resumed"} == action
        assert 0 == await depth(amqp, topology.dead_queue("storefront"))
        orders = counters(stores, "shopify")["orders"]
        for order_id in ("1101", "1102"):
            numbers = [t["number"] for f in orders[order_id]["fulfillments"]
                       for t in f["trackingInfo"]]
            assert [f"9400HOLD{order_id}"] == numbers

    async def test_a_probe_lifts_the_pause_once_the_token_works(
        self, store_url, settings, carrier, stores, declared, amqp
    ):
        """Paused with probe_every = 4 s, the message back every 2 s (the longest rung): at
        most one try per 4 s reaches the shop, the other returns wait without asking it; a
        refused probe keeps the pause; the token fixed, the next probe writes and lifts it,
        and the gauge goes back to 0."""
        from consumers.storefront import PAUSED

        shop = stores["shopify"].app
        shop[shopify.TOKEN][0] = "shpat_someone_else"
        on = with_storefront(settings, stores, carrier, probe_every=4.0)
        async with open_store(store_url) as store, running(on, store, "storefront"):
            await label_created(store, amqp, on, "1201", "9400PROBE1201", "shopify",
                                "probe-1201")
            await wait_until(lambda: paused(store, "shopify"))
            started = time.monotonic()
            assert 1 == PAUSED.labels(source="shopify")._value.get()
            await wait_until(lambda: _at_least_retries(store, 6), timeout=30)
            assert await paused(store, "shopify")
            asked, returns = await requests(stores), await retries(store)
            # the first try, then one probe per 4 s at most: fewer than the returns
            assert asked < returns, (asked, returns)
            assert asked <= 2 + (time.monotonic() - started) / 4.0
            shop[shopify.TOKEN][0] = TOKEN
            await wait_until(lambda: written(store, "1201"), timeout=20)
            assert not await paused(store, "shopify")
            assert 0 == PAUSED.labels(source="shopify")._value.get()
        assert 1 == counters(stores, "shopify")["fulfillments_created"]

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


async def paused(store: Store, source: str) -> bool:
    return await one(store, "SELECT source FROM storefront_pauses WHERE source = $1",
                     source) is not None


async def requests(stores: dict[str, TestServer]) -> int:
    """The GraphQL requests that reached the shop, with any token."""
    return int(stores["shopify"].app[CONTROL].requests["graphql"])


async def retries(store: Store) -> int:
    row = await one(store, "SELECT COUNT(*) AS n FROM consumer_attempts WHERE consumer ="
                           " 'storefront' AND outcome = 'retry'")
    return 0 if row is None else int(row["n"])


async def _at_least_retries(store: Store, n: int) -> bool:
    return await retries(store) >= n


async def _already(store: Store, order_id: str) -> bool:
    row = await written(store, order_id)
    return row is not None and bool(row["already_done"])


async def _queued(amqp, name: str) -> bool:
    return await depth(amqp, name) > 0
