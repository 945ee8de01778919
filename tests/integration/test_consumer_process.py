"""`python -m consumers NAME` as a real process: SIGTERM drains, SIGKILL loses nothing."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import os
import signal
import sys
import time
from pathlib import Path

import aio_pika
import aiohttp
import orjson
import pytest
from conftest import _admin, sqlite_write_locked
from ports import free_port

from consumers.store import open_store
from router.providers import signed_headers

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[2]
N = 300


def stock_event(i: int) -> bytes:
    return orjson.dumps({
        "id": f"stock-{i}", "type": "inventory.updated", "source": "inventory",
        "received_at": "2026-11-28T00:00:00Z", "occurred_at": None,
        "schema": "inventory.updated/v1",
        "data": {"sku": "SKU-P", "location": "default", "delta": 1,
                 "as_of": "2026-11-28T00:00:00Z"},
    })


async def publish_events(amqp, topology, count: int) -> None:
    channel = await amqp.channel(publisher_confirms=True)
    exchange = await channel.get_exchange(topology.exchange)
    await asyncio.gather(*(
        exchange.publish(
            aio_pika.Message(stock_event(i), delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
                             headers={"attempt": 0}),
            routing_key="inventory.updated",
        )
        for i in range(count)
    ))
    # The same events again: a provider retry or a broker redelivery.
    await channel.close()


def write_test_config(settings) -> Path:
    """The shipped router.toml with this test's broker prefix and short retries."""
    text = (ROOT / "config" / "router.toml").read_text()
    text = text.replace('prefix = ""', f'prefix = "{settings.broker.prefix}"')
    text = text.replace("retry_ladder = [5, 15, 45]", "retry_ladder = [1, 2]")
    path = Path(os.environ.get("TMPDIR", "/tmp")) / f"{settings.broker.prefix}router.toml"
    path.write_text(text.replace('= "mappings/', f'= "{ROOT}/config/mappings/')
                    .replace('= "samples/', f'= "{ROOT}/config/samples/')
                    .replace('schemas = "schemas"', f'schemas = "{ROOT}/config/schemas"'))
    return path


async def start_consumer(store_url: str, settings, test_env, name: str = "inventory",
                         prefetch: int = 20, log: Path | None = None
                         ) -> asyncio.subprocess.Process:
    """`python -m consumers NAME`; its output to `log` if given."""
    env = {**os.environ, **test_env, "DATABASE_URL": store_url}
    path = write_test_config(settings)
    with open(log, "ab") if log else open(os.devnull, "wb") as out:  # noqa: ASYNC230
        return await asyncio.create_subprocess_exec(
            sys.executable, "-m", "consumers", name, "--config", str(path),
            "--prefetch", str(prefetch), cwd=ROOT, env=env, stdout=out, stderr=out,
        )


async def applied(store) -> int:
    async with store.transaction() as tx:
        return await tx.fetchval(
            "SELECT COALESCE(SUM(on_hand), 0) FROM stock WHERE sku = $1", "SKU-P"
        ) or 0


async def claimed(store) -> int:
    async with store.transaction() as tx:
        return await tx.fetchval("SELECT COUNT(*) FROM inbox WHERE consumer = $1", "inventory")


class Ingress:
    """A running ingress at `base`, posted to as its providers post (signed)."""

    def __init__(self, session, base: str, settings) -> None:
        self.session, self.base, self.settings = session, base, settings

    async def ready(self) -> bool:
        try:
            async with self.session.get(f"{self.base}/readyz") as response:
                return response.status == 200
        except aiohttp.ClientError:
            return False

    async def post(self, source: str, body: bytes, topic: str | None = None) -> dict:
        """Post signed; the JSON answer, which must be a 202."""
        headers = signed_headers(self.settings, source, body, topic)
        async with self.session.post(f"{self.base}/webhooks/{source}", data=body,
                                     headers=headers) as response:
            assert 202 == response.status, await response.text()
            return await response.json()


async def wait_until(check, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if await check():
            return
        await asyncio.sleep(0.05)
    raise AssertionError("condition not met in time")


class TestConsumerProcess:
    async def test_sigterm_drains_and_sigkill_loses_nothing(
        self, store_url, settings, test_env, amqp, topology, queue_depths
    ):
        """A consumer SIGKILLed mid-stream and one SIGTERMed leave every event applied exactly
        once after a restart, with nothing left on the queue; SIGTERM exits 0."""
        await publish_events(amqp, topology, N)
        await publish_events(amqp, topology, N)  # every event twice
        async def consuming() -> bool:
            channel = await amqp.channel()
            queue = await channel.declare_queue(topology.queue("inventory"), passive=True)
            await channel.close()
            return queue.declaration_result.consumer_count == 1

        async with open_store(store_url) as store:
            proc = await start_consumer(store_url, settings, test_env)
            await wait_until(lambda: _at_least(applied(store), 20))
            proc.kill()  # mid-batch: whatever was not committed is redelivered
            await proc.wait()

            proc = await start_consumer(store_url, settings, test_env)
            await wait_until(consuming)  # SIGTERM while it works, not while it starts
            await wait_until(lambda: _at_least(applied(store), 100))
            proc.send_signal(signal.SIGTERM)
            assert 0 == await asyncio.wait_for(proc.wait(), 30)

            proc = await start_consumer(store_url, settings, test_env)

            async def drained() -> bool:
                return 0 == (await queue_depths())[topology.queue("inventory")]

            await wait_until(consuming)
            await wait_until(drained)
            await wait_until(lambda: _at_least(claimed(store), N))
            proc.send_signal(signal.SIGTERM)
            assert 0 == await asyncio.wait_for(proc.wait(), 30)
            assert (N, N) == (await applied(store), await claimed(store))
        depths = await queue_depths()
        assert 0 == depths[topology.dead_queue("inventory")]


class TestRacingConsumers:
    async def test_two_orders_processes_never_oversell(
        self, store_url, settings, test_env, amqp, topology, queue_depths
    ):
        """Two orders consumer processes on one store race for the last 40 units of a SKU
        with 100 one-unit orders: exactly 40 are allocated, 60 backordered, and stock ends
        with reserved == on_hand."""
        async with open_store(store_url) as store:
            async with store.transaction() as tx:
                await tx.execute(
                    "INSERT INTO stock (sku, location, on_hand, reserved, as_of)"
                    " VALUES ($1, $2, 40, 0, $3)", "LAST-UNITS", "default",
                    "2026-11-28T00:00:00+00:00")
            procs = [await start_consumer(store_url, settings, test_env, "orders", prefetch=5)
                     for _ in range(2)]
            try:
                async def both_consuming() -> bool:
                    channel = await amqp.channel()
                    queue = await channel.declare_queue(topology.queue("orders"), passive=True)
                    await channel.close()
                    return queue.declaration_result.consumer_count == 2

                await wait_until(both_consuming)
                channel = await amqp.channel(publisher_confirms=True)
                exchange = await channel.get_exchange(topology.exchange)
                await asyncio.gather(*(
                    exchange.publish(aio_pika.Message(orjson.dumps({
                        "id": f"race-{i}", "type": "order.created", "source": "portal",
                        "occurred_at": "2026-11-28T00:00:00Z",
                        "data": {"order_id": f"R-{i:03d}", "status": "received",
                                 "created_at": f"2026-11-28T00:{i // 60:02d}:{i % 60:02d}Z",
                                 "lines": [{"sku": "LAST-UNITS", "quantity": 1}],
                                 "shipping_address": {"name": "A", "line1": "1 Main St",
                                                      "city": "Austin", "country": "US"}},
                    }), delivery_mode=aio_pika.DeliveryMode.PERSISTENT, headers={"attempt": 0}),
                        routing_key="order.created")
                    for i in range(100)
                ))
                await channel.close()

                async def all_stored() -> bool:
                    async with store.transaction() as tx:
                        return 100 == await tx.fetchval("SELECT COUNT(*) FROM orders")

                await wait_until(all_stored)
            finally:
                for proc in procs:
                    proc.send_signal(signal.SIGTERM)
                codes = [await asyncio.wait_for(proc.wait(), 30) for proc in procs]
            assert [0, 0] == codes
            async with store.transaction() as tx:
                statuses = {row["status"]: row["n"] for row in await tx.fetch(
                    "SELECT status, COUNT(*) AS n FROM orders GROUP BY status")}
                stock = await tx.fetchrow(
                    "SELECT on_hand, reserved FROM stock WHERE sku = $1", "LAST-UNITS")
                held = await tx.fetchval("SELECT SUM(reserved) FROM order_lines")
        assert {"allocated": 40, "backordered": 60} == statuses
        assert (40, 40, 40) == (stock["on_hand"], stock["reserved"], held)
        depths = await queue_depths()
        assert 0 == depths[topology.queue("orders")] + depths[topology.dead_queue("orders")]


async def _at_least(value, floor: int) -> bool:
    return await value >= floor


@contextlib.asynccontextmanager
async def store_away(store_url: str):
    """The store unusable until the block ends. SQLite: another connection holds the write
    lock (BEGIN IMMEDIATE), far past the consumers' busy timeout. PostgreSQL: the database
    is not there (dropped), and is created when the block ends, as an operator provisioning
    it after the consumers were deployed would."""
    if store_url.startswith("sqlite"):
        async with open_store(store_url):
            pass  # the file and its schema, so the lock is on a real store
        async with sqlite_write_locked(store_url):
            yield
        return
    admin, _ = await _admin()
    name = store_url.rpartition("/")[2]
    try:
        await admin.execute(f'DROP DATABASE "{name}" WITH (FORCE)')
        yield
    finally:
        await admin.execute(f'CREATE DATABASE "{name}"')
        await admin.close()


def order_created(event_id: str, order_id: str) -> aio_pika.Message:
    return aio_pika.Message(orjson.dumps({
        "id": event_id, "type": "order.created", "source": "portal",
        "occurred_at": "2026-11-28T00:00:00Z",
        "data": {"order_id": order_id, "status": "received",
                 "created_at": "2026-11-28T00:00:00Z",
                 "lines": [{"sku": "SKU-START", "quantity": 1}],
                 "shipping_address": {"name": "A", "line1": "1 Main St", "city": "Austin",
                                      "country": "US"}},
    }), delivery_mode=aio_pika.DeliveryMode.PERSISTENT, headers={"attempt": 0})


class TestStoreAtStart:
    async def test_a_consumer_waits_for_its_store_and_comes_up(
        self, store_url, settings, test_env, amqp, topology, tmp_path
    ):
        """`python -m consumers orders` started while its store is unusable (SQLite locked by
        another connection; PostgreSQL's database not there yet) says `store_unavailable` and
        keeps trying instead of exiting; once the store is back it consumes and applies a
        published order; SIGTERM exits 0."""
        log = tmp_path / "orders.log"

        async def said_unavailable() -> bool:
            return log.exists() and b'"store_unavailable"' in log.read_bytes()

        async def consuming() -> bool:
            channel = await amqp.channel()
            queue = await channel.declare_queue(topology.queue("orders"), passive=True)
            await channel.close()
            return queue.declaration_result.consumer_count == 1

        async with store_away(store_url):
            proc = await start_consumer(store_url, settings, test_env, "orders", log=log)
            try:
                # A try failed (on SQLite after the busy timeout), and it is still waiting.
                await wait_until(said_unavailable, timeout=30)
                assert proc.returncode is None, log.read_text()
            except BaseException:
                proc.kill()
                await proc.wait()
                raise
        try:
            await wait_until(consuming, timeout=30)
            channel = await amqp.channel(publisher_confirms=True)
            exchange = await channel.get_exchange(topology.exchange)
            await exchange.publish(order_created("start-1", "S-1"), routing_key="order.created")
            await channel.close()
            async with open_store(store_url) as store:
                async def stored() -> bool:
                    async with store.transaction() as tx:
                        return await tx.fetchval(
                            "SELECT COUNT(*) FROM orders WHERE order_id = $1", "S-1") == 1

                await wait_until(stored)
        finally:
            if proc.returncode is None:
                proc.send_signal(signal.SIGTERM)
        assert 0 == await asyncio.wait_for(proc.wait(), 30), log.read_text()


class TestAllInOne:
    async def test_signed_order_for_stock_that_exists_ends_allocated(
        self, tmp_path, settings, test_env, topology
    ):
        """`python -m consumers all` on SQLite, as the README runs it: stock posted by the
        inventory system, then a signed Shopify order, ends `allocated`; Shopify's fulfillment
        and EasyPost's tracker updates for its tracking code end it `delivered`; a second
        order, short of stock, is backordered until a received batch allocates it. SIGTERM
        exits 0."""
        from aiohttp import web
        from standardwebhooks.webhooks import Webhook

        # The customer portal: a receiver that verifies every delivery as the README says.
        portal_secret = "whsec_" + base64.b64encode(b"portal-test-key-0123456789").decode()
        portal: list[dict] = []

        async def receive(request: web.Request) -> web.Response:
            body = await request.read()
            payload = Webhook(portal_secret).verify(body, dict(request.headers))
            portal.append({"id": request.headers["webhook-id"], **payload})
            return web.Response(status=204)

        receiver = web.AppRunner(web.Application())
        receiver.app.router.add_post("/webhooks/fulfillment", receive)
        await receiver.setup()
        portal_port = free_port()
        await web.TCPSite(receiver, "127.0.0.1", portal_port).start()

        store_url = f"sqlite:///{tmp_path}/all.sqlite3"
        port = free_port()
        config = write_test_config(settings)
        config.write_text(
            config.read_text()
            .replace('mode = "production"', 'mode = "development"')
            .replace("https://portal.example.com/webhooks/fulfillment",
                     f"http://127.0.0.1:{portal_port}/webhooks/fulfillment")
            .replace("enabled = false              # switch on once the portal has the secret",
                     "enabled = true\nallow_private = true"))
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "consumers", "all", "--config", str(config),
            "--port", str(port), "--store", store_url, cwd=ROOT,
            env={**os.environ, **test_env, "PORTAL_NOTIFY_SECRET": portal_secret},
            stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL,
        )
        base = f"http://127.0.0.1:{port}"
        samples = ROOT / "config" / "samples"
        order_id = "5820982911946154508"
        async with aiohttp.ClientSession() as session, open_store(store_url) as store:
            ingress = Ingress(session, base, settings)
            ready, post = ingress.ready, ingress.post

            async def value(sql: str, *args) -> object:
                async with store.transaction() as tx:
                    return await tx.fetchval(sql, *args)

            async def order_is(wanted: str, order: str = order_id) -> bool:
                return wanted == await value(
                    "SELECT status FROM orders WHERE order_id = $1", order)

            async def stock(sku: str, on_hand: int, as_of: str, delta: bool = False) -> None:
                body = {"event_id": f"inv-{sku}-{as_of}", "sku": sku, "location": "default",
                        "as_of": as_of, ("delta" if delta else "on_hand"): on_hand}
                await post("inventory", orjson.dumps(body))

            await wait_until(ready)
            await stock("PEP-BPC157-5MG", 3, "2026-11-28T00:00:00Z")
            await stock("BAC-WATER-10ML", 10, "2026-11-28T00:00:00Z")
            await wait_until(lambda: _at_least(value("SELECT COUNT(*) FROM stock"), 2))
            order = (samples / "shopify-orders-create.json").read_bytes()
            await post("shopify", order, "orders/create")
            await wait_until(lambda: order_is("allocated"))

            fulfillment = orjson.loads((samples / "shopify-fulfillments-create.json").read_bytes())
            fulfillment.update(order_id=int(order_id), tracking_number="9400111899223344556677",
                               tracking_company="USPS")
            await post("shopify", orjson.dumps(fulfillment), "fulfillments/create")
            tracker = orjson.loads((samples / "easypost-tracker-updated.json").read_bytes())
            for n, (status, at) in enumerate([("in_transit", "2026-11-29T09:00:00Z"),
                                              ("delivered", "2026-11-30T15:00:00Z")]):
                tracker["id"] = f"evt_done_when_{n}"
                result = tracker["result"]
                result.update(tracking_code="9400111899223344556677", carrier="USPS",
                              status=status, updated_at=at)
                result["tracking_details"][-1].update(status=status, datetime=at)
                await post("easypost", orjson.dumps(tracker))
                await wait_until(lambda s=status: order_is(
                    "shipped" if s == "in_transit" else "delivered"))
            # Delivered: the 2 units left the warehouse.
            assert (1, 0) == (
                await value("SELECT on_hand FROM stock WHERE sku = $1", "PEP-BPC157-5MG"),
                await value("SELECT reserved FROM stock WHERE sku = $1", "PEP-BPC157-5MG"))

            second = orjson.loads(order)
            second["id"] = 5820982911946154509
            await post("shopify", orjson.dumps(second), "orders/create")  # 2 wanted, 1 left
            await wait_until(lambda: order_is("backordered", "5820982911946154509"))
            await stock("PEP-BPC157-5MG", 4, "2026-11-30T16:00:00Z", delta=True)
            await wait_until(lambda: order_is("allocated", "5820982911946154509"))

            # The portal heard, verified: the allocations and every shipment move.
            async def portal_heard() -> bool:
                kinds = [(n["type"], n["data"].get("status")) for n in portal]
                return kinds.count(("order.allocated", "allocated")) == 2 and all(
                    ("shipment.updated", s) in kinds
                    for s in ("pre_transit", "in_transit", "delivered"))

            await wait_until(portal_heard)
            first = next(n for n in portal if n["type"] == "order.allocated")
            assert order_id == first["data"]["order_id"]
            assert first["id"] == f"{first['cause']}:order.allocated:{order_id}"
            delivered = next(n for n in portal if n["data"].get("status") == "delivered")
            assert ("9400111899223344556677", order_id, "delivered") == (
                delivered["data"]["tracking_code"], delivered["data"]["order_id"],
                delivered["data"]["order_status"])
        proc.send_signal(signal.SIGTERM)
        assert 0 == await asyncio.wait_for(proc.wait(), 30)
        await receiver.cleanup()
