"""`python -m consumers NAME` as a real process: SIGTERM drains, SIGKILL loses nothing."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
import time
from pathlib import Path

import aio_pika
import orjson
import pytest
from test_server import free_port

from consumers.store import open_store

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


async def start_consumer(store_url: str, settings, test_env) -> asyncio.subprocess.Process:
    env = {**os.environ, **test_env, "DATABASE_URL": store_url}
    path = write_test_config(settings)
    return await asyncio.create_subprocess_exec(
        sys.executable, "-m", "consumers", "inventory", "--config", str(path),
        "--prefetch", "20", cwd=ROOT, env=env,
        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL,
    )


async def applied(store) -> int:
    async with store.transaction() as tx:
        return await tx.fetchval(
            "SELECT COALESCE(SUM(on_hand), 0) FROM stock WHERE sku = $1", "SKU-P"
        ) or 0


async def claimed(store) -> int:
    async with store.transaction() as tx:
        return await tx.fetchval("SELECT COUNT(*) FROM inbox WHERE consumer = $1", "inventory")


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


async def _at_least(value, floor: int) -> bool:
    return await value >= floor


class TestAllInOne:
    async def test_signed_order_for_stock_that_exists_ends_allocated(
        self, tmp_path, settings, test_env, topology
    ):
        """`python -m consumers all` on SQLite: stock posted by the inventory system, then a
        signed Shopify order, ends `allocated` in the store; SIGTERM exits 0."""
        import aiohttp

        from router.cli import signed_headers

        store_url = f"sqlite:///{tmp_path}/all.sqlite3"
        port = free_port()
        config = write_test_config(settings)
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "consumers", "all", "--config", str(config),
            "--port", str(port), "--store", store_url, cwd=ROOT, env={**os.environ, **test_env},
            stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL,
        )
        base = f"http://127.0.0.1:{port}"
        async with aiohttp.ClientSession() as session:
            async def ready() -> bool:
                try:
                    async with session.get(f"{base}/readyz") as response:
                        return response.status == 200
                except aiohttp.ClientError:
                    return False

            await wait_until(ready)
            for i, sku in enumerate(["PEP-BPC157-5MG", "BAC-WATER-10ML"]):
                body = orjson.dumps({"event_id": f"inv-{i}", "sku": sku, "location": "default",
                                     "on_hand": 10, "as_of": "2026-11-28T00:00:00Z"})
                headers = signed_headers(settings, "inventory", body)
                async with session.post(f"{base}/webhooks/inventory", data=body,
                                        headers=headers) as response:
                    assert 202 == response.status
            order = (ROOT / "config" / "samples" / "shopify-orders-create.json").read_bytes()
            async with open_store(store_url) as store:
                async def stocked() -> bool:
                    async with store.transaction() as tx:
                        return 2 == await tx.fetchval("SELECT COUNT(*) FROM stock")

                await wait_until(stocked)
                headers = signed_headers(settings, "shopify", order, "orders/create")
                async with session.post(f"{base}/webhooks/shopify", data=order,
                                        headers=headers) as response:
                    assert 202 == response.status

                async def allocated() -> bool:
                    async with store.transaction() as tx:
                        status = await tx.fetchval(
                            "SELECT status FROM orders WHERE order_id = $1",
                            "5820982911946154508",
                        )
                    return status == "allocated"

                await wait_until(allocated)
        proc.send_signal(signal.SIGTERM)
        assert 0 == await asyncio.wait_for(proc.wait(), 30)
