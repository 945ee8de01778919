"""The storefront consumer against the Shopify and WooCommerce emulators on local ports, the
real RabbitMQ and both stores: one write-back per label at the store whatever is delivered
twice or dies between the store's answer and our commit; a revoked token pauses the store."""

from __future__ import annotations

import asyncio
import dataclasses
import io
import os
import signal
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aio_pika
import asyncpg
import orjson
import pytest
import test_labels
from aiohttp.test_utils import TestServer
from test_consumer_process import wait_until, write_test_config
from test_labels import (
    ROOT,
    SHOPIFY_ORDER,
    Carrier,
    commits_blocked,
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



BACKLOG = 50  # write-backs of 127 points each (117 the order query, 10 fulfillmentCreate):
# three times what the bucket holds


class TestPacing:
    async def test_a_backlog_is_written_at_the_shops_rate_without_throttling(
        self, store_url, settings, carrier, stores, declared, amqp
    ):
        """BACKLOG label notifications for as many Shopify orders, queued before the consumer
        starts and taken in one batch (prefetch 100, as `python -m consumers` runs), against
        the emulator's default bucket (2,000 points) refilled as a Plus shop's is (1,000 a
        second; a standard plan's 100 would only make the test ten times longer): every
        order gets exactly one fulfillment, nothing dead-lettered. And Shopify never answered
        THROTTLED: one process paces on every answer's throttleStatus, taken as of when its
        request went out (the refill never overestimated) less the points of requests still
        unanswered, so a request goes only once the bucket holds its cost. Unpaced, the
        batch's order queries all go at once and most are THROTTLED (the test's short ladder
        then dead-letters them)."""
        bucket = stores["shopify"].app[shopify.BUCKET]
        assert shopify.STANDARD_BUCKET == bucket.maximum
        bucket.restore_rate = 1000.0
        on = with_storefront(settings, stores, carrier)
        order_ids = [str(5000 + n) for n in range(BACKLOG)]
        async with open_store(store_url) as store:
            for order_id in order_ids:
                await label_created(store, amqp, on, order_id, f"9400PACE{order_id}",
                                    "shopify", f"pace-{order_id}")
            # 6,350 points, 2,000 in the bucket, 1,000 a second: about 5 s
            async with running(on, store, "storefront", prefetch=100):
                await wait_until(lambda: _done(store, BACKLOG), timeout=60)
        state = counters(stores, "shopify")
        for order_id in order_ids:
            numbers = [t["number"] for f in state["orders"][order_id]["fulfillments"]
                       for t in f["trackingInfo"]]
            assert [f"9400PACE{order_id}"] == numbers, order_id
        assert BACKLOG == state["fulfillments_created"]
        assert 0 == stores["shopify"].app[CONTROL].requests["THROTTLED"]
        assert 0 == await depth(amqp, Topology.of(on.broker).dead_queue("storefront"))


async def _done(store: Store, n: int) -> bool:
    row = await one(store, "SELECT COUNT(*) AS n FROM writebacks WHERE state = 'done'")
    return row is not None and int(row["n"]) >= n

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


# -- a real process, killed ---------------------------------------------------------------

STORE_ENV = {"SHOPIFY_ADMIN_TOKEN": TOKEN, "WOO_CONSUMER_KEY": WOO_KEY,
             "WOO_CONSUMER_SECRET": WOO_SECRET}


def storefront_config(settings: Settings, stores: dict[str, TestServer]) -> Path:
    """The shipped router.toml with [storefront] on, the test's short retry ladder, its two
    stores the emulators, their credentials secret references (STORE_ENV)."""
    path = write_test_config(settings)
    text = path.read_text()
    ladder = ", ".join(map(str, settings.broker.retry_ladder))
    for old, new in (
        ("enabled = false              # on: its queue",
         f"retry_ladder = [{ladder}]\nenabled = true  # on: its queue"),
        ("\n[notifications]\n", f"""
[storefront.shopify]
base_url = "{str(stores['shopify'].make_url('')).rstrip('/')}"
access_token = "env:SHOPIFY_ADMIN_TOKEN"
[storefront.woocommerce]
base_url = "{str(stores['woocommerce'].make_url('')).rstrip('/')}"
consumer_key = "env:WOO_CONSUMER_KEY"
consumer_secret = "env:WOO_CONSUMER_SECRET"

[notifications]
"""),
    ):
        assert 1 == text.count(old), old
        text = text.replace(old, new)
    path.write_text(text)
    return path


async def start_storefront(store_url: str, config: Path,
                           test_env: dict[str, str]) -> asyncio.subprocess.Process:
    env = {**os.environ, **test_env, **STORE_ENV, "DATABASE_URL": store_url}
    return await asyncio.create_subprocess_exec(
        sys.executable, "-m", "consumers", "storefront", "--config", str(config), cwd=ROOT,
        env=env, stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL)


async def committing(store_url: str) -> bool:
    """A transaction waits to mark a write-back done (PostgreSQL shows it; SQLite cannot, and
    answers True)."""
    if store_url.startswith("sqlite"):
        return True
    pg = await asyncpg.connect(store_url)
    try:
        return bool(await pg.fetchval(
            "SELECT COUNT(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock'"
            " AND query LIKE 'UPDATE writebacks SET state = ''done''%'"))
    finally:
        await pg.close()


def answered(stores: dict[str, TestServer], kind: str, order_id: str, tracking: str):
    """The store did all the write-back asks (Shopify: the fulfillment; WooCommerce: the note
    and, last, the status completed)."""
    async def check() -> bool:
        state = counters(stores, kind)["orders"].get(order_id)
        if state is None:
            return False
        if kind == "shopify":
            return bool(state["fulfillments"])
        return state["status"] == "completed" and any(tracking in n["note"]
                                                      for n in state["notes"])
    return check


def held_at_store(stores: dict[str, TestServer], kind: str, order_id: str,
                  tracking: str) -> int:
    """Write-backs for `tracking` the store holds: fulfillments, or customer notes."""
    state = counters(stores, kind)["orders"][order_id]
    if kind == "shopify":
        return sum(tracking in [t["number"] for t in f["trackingInfo"]]
                   for f in state["fulfillments"])
    return sum(tracking in n["note"] for n in state["notes"])


class TestKilled:
    @pytest.mark.parametrize("kind", ["shopify", "woocommerce"])
    async def test_killed_between_the_stores_answer_and_the_commit(
        self, store_url, settings, carrier, stores, declared, amqp, test_env, kind
    ):
        """`python -m consumers storefront` SIGKILLed after the store answered the write-back
        (Shopify's fulfillmentCreate; WooCommerce's note and completion) and before the
        write-back row was committed done; restarted, it finds its own earlier write at the
        store and takes it: the store holds exactly one fulfillment, or one note, for that
        tracking number."""
        on = with_storefront(settings, stores, carrier)
        config = storefront_config(on, stores)
        order_id, tracking = ("1003", "9400CRASH1003") if kind == "shopify" else (
            "728", "9400CRASH728")
        # the store's write answers late: time to block the commit once the intent is in
        write = "fulfillmentCreate" if kind == "shopify" else "create_note"
        stores[kind].app[CONTROL].faults.append(Fault(delay=3.0, operation=write))
        async with open_store(store_url) as store:
            await label_created(store, amqp, on, order_id, tracking, kind, f"crash-{kind}")
            proc = await start_storefront(store_url, config, test_env)
            try:
                async def intended() -> bool:
                    return await one(store, "SELECT state FROM writebacks WHERE order_id = $1",
                                     order_id) is not None

                await wait_until(intended)
                async with commits_blocked(store_url, order_id, "writebacks"):
                    await wait_until(answered(stores, kind, order_id, tracking))
                    await wait_until(lambda: committing(store_url))
                    proc.kill()
                    await proc.wait()
                # it died after the store's answer, before its commit
                row = await one(store, "SELECT state FROM writebacks WHERE order_id = $1",
                                order_id)
                assert {"state": "pending"} == row
                assert 1 == held_at_store(stores, kind, order_id, tracking)

                proc = await start_storefront(store_url, config, test_env)
                dead = Topology.of(on.broker).dead_queue("storefront")

                async def settled() -> bool:  # done, or refused by the store (a second write)
                    return await written(store, order_id) is not None or await _queued(amqp,
                                                                                       dead)

                await wait_until(settled)
                row = await written(store, order_id)
            finally:
                if proc.returncode is None:
                    proc.send_signal(signal.SIGTERM)
                    await asyncio.wait_for(proc.wait(), 30)
        assert 0 == await depth(amqp, dead)
        assert 1 == held_at_store(stores, kind, order_id, tracking)
        assert row is not None and row["already_done"]  # the earlier write, found
        if kind == "shopify":
            assert 1 == counters(stores, kind)["fulfillments_created"]


class TestStopped:
    async def test_sigterm_with_a_slow_store_finishes_its_batch_and_gives_back_the_rest(
        self, store_url, settings, carrier, stores, declared, amqp, test_env
    ):
        """`python -m consumers storefront` SIGTERMed while a batch is calling a slow store
        (Shopify answering each request a second late), with more messages in hand and more
        on the queue: it finishes that batch, starts no other (no write-back is intended
        past the first batch), gives the rest back, and exits 0; every message is on a
        queue or settled, none lost."""
        count = 150  # prefetch 100: batches of 50; the queue holds more than the prefetch
        on = with_storefront(settings, stores, carrier)
        config = storefront_config(on, stores)
        stores["shopify"].app[CONTROL].faults.append(Fault(delay=1.0, count=100_000))
        topology = Topology.of(on.broker)
        queues = [topology.queue("storefront"), topology.dead_queue("storefront"),
                  *(topology.retry_queue("storefront", d) for d in on.broker.retry_ladder)]
        async with open_store(store_url) as store:
            for i in range(count):
                await label_created(store, amqp, on, "1003", f"9400STOP{i:04d}", "shopify",
                                    f"stop-{i}")
            proc = await start_storefront(store_url, config, test_env)
            try:
                async def intended() -> bool:
                    return await one(store, "SELECT order_id FROM writebacks") is not None

                await wait_until(intended)  # the first batch is calling the store
                proc.send_signal(signal.SIGTERM)
                assert 0 == await asyncio.wait_for(proc.wait(), 60)
            finally:
                if proc.returncode is None:
                    proc.kill()
                    await proc.wait()
            intents = await one(store, "SELECT COUNT(*) AS n FROM writebacks")
            assert intents is not None and 0 < intents["n"] <= 50  # one batch's, no more

            async def all_accounted() -> bool:
                claimed = await one(store, "SELECT COUNT(*) AS n FROM inbox WHERE consumer ="
                                    " 'storefront'")
                queued = sum([await depth(amqp, name) for name in queues])
                return claimed is not None and count == claimed["n"] + queued

            await wait_until(all_accounted)
