"""Notifications benchmark: our notifications consumer (fan-out, Standard Webhooks signing,
every attempt recorded in the store, SQLite and PostgreSQL) against a plain aio-pika
consume-POST-ack loop, same run, same messages, same receiver.

    python bench/notifications.py [--count 5000] [--rounds 3] [--concurrency 8] [--only NAME]

Before every run `count` notify.order.allocated messages (as the consumers' outbox relay
publishes them) are published with confirms to the events exchange of a unique-prefix
topology, so they sit in its `notifications` queue. A local aiohttp receiver answers 204 to
every POST and notes the webhook id. Then, under uvloop, one of:

    plain     aio-pika on `notifications`, prefetch = concurrency; each message POSTed with one
              aiohttp session (no signature, nothing recorded), then acked
    sqlite    consumers.outbound.fanout.Notifications with one subscription, on a fresh SQLite
              file (WAL, synchronous=FULL)
    postgres  the same on a fresh database bench_<uuid>

delivers them. Notifications/s is measured from the first POST the receiver gets to the
moment it has every id. After each of our runs the store must hold one `deliveries` row per
message and the queues must be empty. Prints one line per run, then the medians and the
ratio to the plain loop. Deletes every queue, exchange, file and database it created.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import os
import shutil
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path

import aio_pika
import aiohttp
import orjson
import uvloop
from aiohttp import web

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.consumers import (  # noqa: E402
    AMQP_URL,
    create_pg_database,
    drop_pg_database,
    quiet_logging,
)
from consumers.outbound.fanout import Notifications  # noqa: E402
from consumers.outbound.notification import delivery_queue, delivery_queues  # noqa: E402
from consumers.store import open_store  # noqa: E402
from router.broker.topology import Topology  # noqa: E402
from router.settings import (  # noqa: E402
    BrokerSettings,
    NotificationSettings,
    Settings,
    SubscriptionSettings,
)

SECRET = "whsec_" + base64.b64encode(b"bench-notifications-key-0123456").decode()
RUN_TIMEOUT = 600.0


class Receiver:
    """Answers 204 to every POST and notes when each id first arrived."""

    def __init__(self) -> None:
        self.seen: set[str] = set()
        self.first = 0.0
        self.last = 0.0
        self.want = 0
        self.done = asyncio.Event()

    def reset(self, want: int) -> None:
        self.seen, self.first, self.last, self.want = set(), 0.0, 0.0, want
        self.done = asyncio.Event()

    async def handle(self, request: web.Request) -> web.Response:
        await request.read()
        key = request.headers.get("webhook-id") or request.headers.get("x-id", "")
        now = time.perf_counter()
        if not self.seen:
            self.first = now
        if key not in self.seen:
            self.seen.add(key)
            self.last = now
            if len(self.seen) >= self.want:
                self.done.set()
        return web.Response(status=204)

    def rate(self) -> float:
        return len(self.seen) / (self.last - self.first)


async def publish(topology: Topology, run: str, count: int, in_flight: int = 512) -> None:
    async with await aio_pika.connect(AMQP_URL) as connection:
        channel = await connection.channel(publisher_confirms=True)
        exchange = await channel.get_exchange(topology.exchange)
        semaphore = asyncio.Semaphore(in_flight)

        async def one(n: int) -> None:
            message_id = f"evt-{run}-{n}:order.allocated:o-{n}"
            body = orjson.dumps({
                "id": message_id, "type": "order.allocated",
                "timestamp": "2026-11-28T00:00:00Z", "cause": f"evt-{run}-{n}",
                "data": {"order_id": f"o-{n}", "lines": [{"sku": "SKU-1", "quantity": 2}]}})
            async with semaphore:
                await exchange.publish(
                    aio_pika.Message(body, message_id=message_id, type="notify.order.allocated",
                                     content_type="application/json", headers={"attempt": 0},
                                     delivery_mode=aio_pika.DeliveryMode.PERSISTENT),
                    routing_key="notify.order.allocated")

        await asyncio.gather(*(one(n) for n in range(count)))


async def depth_total(names: list[str]) -> int:
    async with await aio_pika.connect(AMQP_URL) as connection:
        channel = await connection.channel()
        total = 0
        for name in names:
            queue = await channel.declare_queue(name, passive=True)
            total += queue.declaration_result.message_count
        return total


async def run_plain(topology: Topology, receiver: Receiver, url: str, concurrency: int) -> None:
    async with await aio_pika.connect(AMQP_URL) as connection, aiohttp.ClientSession() as http:
        channel = await connection.channel()
        await channel.set_qos(prefetch_count=concurrency)
        queue = await channel.get_queue(topology.queue("notifications"))

        async def on_message(message: aio_pika.abc.AbstractIncomingMessage) -> None:
            async with http.post(url, data=message.body,
                                 headers={"x-id": message.message_id or ""}) as response:
                await response.read()
            await message.ack()

        tag = await queue.consume(on_message)
        async with asyncio.timeout(RUN_TIMEOUT):
            await receiver.done.wait()
        await queue.cancel(tag)


async def run_ours(settings: Settings, store_url: str, receiver: Receiver, count: int) -> int:
    """Run our consumer until the receiver has every id; the number of deliveries rows."""
    store = open_store(store_url)
    await store.open()
    stop = asyncio.Event()
    task = asyncio.create_task(Notifications(settings, store).run(stop))
    try:
        async with asyncio.timeout(RUN_TIMEOUT):
            await receiver.done.wait()
        stop.set()
        await task
        async with store.transaction() as tx:
            return int(await tx.fetchval("SELECT COUNT(*) FROM deliveries WHERE attempt = 1"))
    finally:
        stop.set()
        await asyncio.gather(task, return_exceptions=True)
        await store.close()


async def main_async(args: argparse.Namespace) -> int:
    prefix = f"bench-{uuid.uuid4().hex[:6]}."
    receiver = Receiver()
    app = web.Application()
    app.router.add_post("/hook", receiver.handle)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    url = f"http://127.0.0.1:{port}/hook"
    sub = SubscriptionSettings(name="bench", url=url, events=("order.*",),
                               secrets=(SECRET.encode(),), allow_private=True)
    settings = Settings(
        file=ROOT / "config" / "router.toml",
        broker=BrokerSettings(url=AMQP_URL, prefix=prefix),
        notifications=NotificationSettings(mode="development", concurrency=args.concurrency),
        subscriptions={"bench": sub},
    )
    topology = Topology(prefix, settings.broker.retry_ladder, settings.broker.delivery_limit)
    extra_queues = delivery_queues(topology, settings)
    queues = [topology.queue("notifications"), topology.queue(delivery_queue("bench"))]
    async with await aio_pika.connect(AMQP_URL) as connection:
        channel = await connection.channel()
        await topology.declare(channel)
        await topology.declare_queues(channel, extra_queues)
    tmp = Path(tempfile.mkdtemp(prefix="bench-notifications-"))
    names = ["plain", *(args.only or ["sqlite", "postgres"])]
    results: dict[str, list[float]] = {name: [] for name in names}
    failures = 0
    print(f"{args.count} notifications per run, concurrency {args.concurrency}, "
          f"{args.rounds} rounds, {os.cpu_count()} cores, uvloop, prefix {prefix}", flush=True)
    try:
        for round_no in range(1, args.rounds + 1):
            for name in names:
                run = f"{round_no}{name[0]}{uuid.uuid4().hex[:6]}"
                await publish(topology, run, args.count)
                receiver.reset(args.count)
                extra = ""
                if name == "plain":
                    await run_plain(topology, receiver, url, args.concurrency)
                else:
                    database = None
                    if name == "sqlite":
                        store_url = f"sqlite:///{tmp / f'{run}.sqlite3'}"
                    else:
                        database = await create_pg_database()
                        store_url = f"postgresql://root@127.0.0.1:5432/{database}"
                    try:
                        rows = await run_ours(settings, store_url, receiver, args.count)
                    finally:
                        if database:
                            await drop_pg_database(database)
                    left = await depth_total(queues)
                    ok = rows == args.count and left == 0
                    failures += not ok
                    extra = (f"  deliveries rows {rows}, left on queues {left}"
                             f"{'' if ok else '  VERIFY FAILED'}")
                rate = receiver.rate()
                results[name].append(rate)
                print(f"round {round_no} {name:>8}: {rate:8.0f} notifications/s{extra}",
                      flush=True)
    finally:
        await runner.cleanup()
        shutil.rmtree(tmp, ignore_errors=True)
        async with await aio_pika.connect(AMQP_URL) as connection:
            channel = await connection.channel()
            for spec in extra_queues:
                await channel.queue_delete(spec.name)
            await topology.delete(channel)

    plain = statistics.median(results["plain"])
    print("\nmedians")
    print(f"{'consumer':>15} {'notif/s':>9} {'ratio':>6}")
    for name, rates in results.items():
        rate = statistics.median(rates)
        print(f"{name:>15} {rate:9.0f} {rate / plain:6.2f}")
    if failures:
        print(f"{failures} run(s) failed verification", file=sys.stderr)
        return 1
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=5000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--concurrency", type=int, default=8,
                        help="deliveries in flight (ours: [notifications] concurrency)")
    parser.add_argument("--only", action="append", choices=["sqlite", "postgres"],
                        help="run only this store beside plain (repeatable)")
    args = parser.parse_args()
    quiet_logging()
    return uvloop.run(main_async(args))


if __name__ == "__main__":
    raise SystemExit(main())
