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


async def start_consumer(store_url: str, settings, test_env) -> asyncio.subprocess.Process:
    config = ROOT / "config" / "router.toml"
    env = {**os.environ, **test_env, "DATABASE_URL": store_url}
    text = config.read_text().replace('prefix = ""', f'prefix = "{settings.broker.prefix}"')
    text = text.replace("retry_ladder = [5, 15, 45]", "retry_ladder = [1, 2]")
    path = Path(env.get("TMPDIR", "/tmp")) / f"{settings.broker.prefix}router.toml"
    path.write_text(text.replace('= "mappings/', f'= "{ROOT}/config/mappings/')
                    .replace('= "samples/', f'= "{ROOT}/config/samples/')
                    .replace('schemas = "schemas"', f'schemas = "{ROOT}/config/schemas"'))
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
        async with open_store(store_url) as store:
            proc = await start_consumer(store_url, settings, test_env)
            await wait_until(lambda: _at_least(applied(store), 20))
            proc.kill()  # mid-batch: whatever was not committed is redelivered
            await proc.wait()

            proc = await start_consumer(store_url, settings, test_env)
            await wait_until(lambda: _at_least(applied(store), 100))
            proc.send_signal(signal.SIGTERM)
            assert 0 == await asyncio.wait_for(proc.wait(), 30)

            proc = await start_consumer(store_url, settings, test_env)

            async def drained() -> bool:
                return 0 == (await queue_depths())[topology.queue("inventory")]

            async def consuming() -> bool:
                channel = await amqp.channel()
                queue = await channel.declare_queue(topology.queue("inventory"), passive=True)
                await channel.close()
                return queue.declaration_result.consumer_count == 1

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
