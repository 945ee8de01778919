"""A path to the broker that goes silent (no FIN, no RST: packets just stop), through a TCP
proxy in front of the real RabbitMQ: the ingress's publisher and the consumers notice within
seconds (heartbeats, repeated confirm timeouts), /readyz says so, and both reconnect once the
path is back.  Unconfirmed publishes are bounded by [broker] max_in_flight."""

from __future__ import annotations

import asyncio
import dataclasses
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import aio_pika
import orjson
import pytest
from broker_proxy import Proxy

from consumers.runner import ConsumerSpec, Runner
from consumers.store import open_store
from router.app import PUBLISHER
from router.providers import signed_headers
from router.settings import Settings

pytestmark = pytest.mark.integration
SHOPIFY_ORDER = (Path(__file__).resolve().parents[2] / "config" / "samples"
                 / "shopify-orders-create.json").read_bytes()


async def wait_until(check: Callable[[], Awaitable[bool]], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if await check():
            return
        await asyncio.sleep(0.1)
    raise AssertionError(f"not within {timeout} s")


@pytest.fixture
async def proxy() -> AsyncIterator[Proxy]:
    proxy = await Proxy().start()
    try:
        yield proxy
    finally:
        await proxy.close()


def through(settings: Settings, proxy: Proxy, **broker: Any) -> Settings:
    return dataclasses.replace(
        settings, broker=dataclasses.replace(settings.broker, url=proxy.url(), **broker)
    )


async def post_order(client: Any, settings: Settings) -> tuple[int, dict[str, Any]]:
    # An order of its own: the same signed body again would be a duplicate (router.dedup).
    delivery_id = str(uuid.uuid4())
    body = SHOPIFY_ORDER.replace(b'"#1042"', f'"#1042-{delivery_id}"'.encode())
    headers = signed_headers(settings, "shopify", body, "orders/create")
    headers["X-Shopify-Event-Id"] = delivery_id
    response = await client.post("/webhooks/shopify", data=body, headers=headers)
    return response.status, await response.json()


async def readyz(client: Any) -> int:
    return (await client.get("/readyz")).status


class TestIngressOverADeadPath:
    async def test_heartbeats_notice_a_silent_broker_and_it_reconnects(
        self, settings, proxy, make_client, queue_depths, topology
    ):
        """With heartbeat = 2, a blackholed path turns /readyz 503 within seconds; once the
        path is back the publisher reconnects and an order is accepted and queued."""
        settings = through(settings, proxy, heartbeat=2)
        client = await make_client(settings)
        proxy.blackhole()

        async def not_ready() -> bool:
            return await readyz(client) == 503

        await wait_until(not_ready, timeout=15)
        proxy.restore()

        async def ready() -> bool:
            return await readyz(client) == 200

        await wait_until(ready, timeout=30)
        assert (202, "accepted") == ((status := await post_order(client, settings))[0],
                                     status[1]["status"])
        assert 1 == (await queue_depths())[topology.queue("orders")]

    async def test_repeated_confirm_timeouts_drop_the_connection(
        self, settings, proxy, make_client, topology
    ):
        """Heartbeats off: three confirm timeouts in a row are answered 504 (sent, maybe
        delivered later) and close the connection, so /readyz turns 503; it then
        reconnects."""
        settings = through(settings, proxy, heartbeat=0, confirm_timeout=0.5)
        client = await make_client(settings)
        proxy.blackhole()
        for _ in range(3):
            status, body = await post_order(client, settings)
            assert (504, "broker_unconfirmed") == (status, body["error"])
        assert 503 == await readyz(client)
        proxy.restore()

        async def ready() -> bool:
            return await readyz(client) == 200

        await wait_until(ready, timeout=30)
        assert 202 == (await post_order(client, settings))[0]

    async def test_unconfirmed_publishes_are_bounded(self, settings, proxy, make_client,
                                                     topology):
        """With max_in_flight = 2 and two publishes waiting for a confirm that cannot come,
        a third is answered 503 at once (never written, so never delivered later)."""
        settings = through(settings, proxy, heartbeat=0, confirm_timeout=3.0, max_in_flight=2)
        client = await make_client(settings)
        publisher = client.server.app[PUBLISHER]
        proxy.blackhole()
        waiting = [asyncio.create_task(post_order(client, settings)) for _ in range(2)]

        async def two_in_flight() -> bool:
            return publisher._client is not None and publisher._client.pending == 2

        await wait_until(two_in_flight, timeout=5)
        status, body = await post_order(client, settings)
        assert (503, "broker_unavailable") == (status, body["error"])
        assert "too many" in body["message"]
        assert [504, 504] == [status for status, _ in await asyncio.gather(*waiting)]


class TestConsumerOverADeadPath:
    async def test_consumer_notices_and_reconnects(self, settings, proxy, topology, amqp,
                                                   tmp_path):
        """A consumer whose path to the broker goes silent drops its connections within
        ~15 s (heartbeat = 2) and, once the path is back, takes messages again."""
        settings = through(settings, proxy, heartbeat=2)
        seen: list[str] = []

        async def record(tx: Any, event: dict[str, Any], batch: None = None) -> None:
            seen.append(event["id"])

        async def publish(event_id: str) -> None:
            channel = await amqp.channel(publisher_confirms=True)
            exchange = await channel.get_exchange(topology.exchange)
            body = orjson.dumps({"id": event_id, "type": "order.created", "data": {}})
            await exchange.publish(aio_pika.Message(body, headers={"attempt": 0}),
                                   routing_key="order.created")
            await channel.close()

        async with open_store(f"sqlite:///{tmp_path}/store.sqlite3") as store:
            stop = asyncio.Event()
            runner = Runner(ConsumerSpec("orders", record), store, settings.broker)
            task = asyncio.create_task(runner.run(stop))
            try:
                await publish("before")

                async def took(event_id: str) -> Callable[[], Awaitable[bool]]:
                    async def check() -> bool:
                        return event_id in seen
                    return check

                await wait_until(await took("before"), timeout=20)
                caught = proxy.open_links()
                assert caught
                proxy.blackhole()

                async def all_dropped() -> bool:
                    return all(link.client_gone.is_set() for link in caught)

                await wait_until(all_dropped, timeout=20)
                proxy.restore()
                await publish("after")
                await wait_until(await took("after"), timeout=60)
            finally:
                stop.set()
                await asyncio.wait_for(task, 20)
