"""Consumer benchmark: our Runner (orders handler, SQLite and PostgreSQL) against a plain
aio-pika consume-and-ack loop, same run, same messages.

    python bench/consumers.py [--count 20000] [--rounds 3] [--prefetch 100] [--only NAME]
                              [--pg-concurrency 4]

Before every run `count` order.created envelopes (the canonical Order the portal mapping
produces from config/samples/portal-order-created.json; a unique order_id and event id each,
1-2 lines on SKUs seeded with plenty of stock) are published with confirms to the events
exchange of a unique-prefix topology, so they sit in its `orders` quorum queue.  Then, under
uvloop, one of:

    plain     aio-pika, prefetch 100, ack each message, no store
    sqlite    Runner + consumers.orders.handle on a fresh SQLite file (WAL, synchronous=FULL),
              concurrency 1 (one writer: more batches at once would only queue for it)
    postgres  the same on a fresh database bench_<uuid> (asyncpg), concurrency 1
    pg-conc   the same with --pg-concurrency batches (transactions) at once

drains the queue.  events/s is measured from the first message delivered to the consumer to
the last ack (for the Runner: the return of the batch that acked the last message, which
also includes relaying that batch's outbox rows).  The Runner logs its per-message JSON lines
at level info exactly as in production (router.logs), written to /dev/null.  After each
Runner run the store must hold exactly `count` orders (their effects were committed before
the ack), the orders queue must be empty and nothing may be on a retry or dead queue.
Prints one line per run, then the medians and the ratio to the plain loop.  Deletes every
queue, exchange, file and database it created.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import shutil
import statistics
import sys
import tempfile
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path

import aio_pika
import asyncpg
import orjson
import uvloop

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from consumers import orders  # noqa: E402
from consumers.runner import ConsumerSpec, Runner  # noqa: E402
from consumers.store import open_store  # noqa: E402
from router.broker.topology import Topology  # noqa: E402
from router.settings import BrokerSettings  # noqa: E402

AMQP_URL = os.environ.get("AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/")
PG_ADMIN_URL = os.environ.get("PG_ADMIN_URL", "postgresql://root@127.0.0.1:5432/postgres")
SKUS = [f"BENCH-SKU-{n:03d}" for n in range(50)]
STOCK_ON_HAND = 1_000_000_000
RUN_TIMEOUT = 900.0


def envelope(run: str, n: int, rng: random.Random) -> tuple[str, bytes]:
    """One order.created envelope as the ingress publishes it (portal mapping output)."""
    event_id = f"evt_bench_{run}_{n:07d}"
    lines = [{"sku": sku, "quantity": rng.randint(1, 3)}
             for sku in rng.sample(SKUS, rng.randint(1, 2))]
    data = {
        "source": "portal",
        "order_id": f"B-{run}-{n:07d}",
        "status": "received",
        "note": "Please ring the bell twice",
        "created_at": "2026-11-20T16:15:31Z",
        "lines": lines,
        "shipping_address": {"name": "Ada Lovelace", "line1": "12 Analytical Row",
                             "line2": "Flat 3", "city": "London", "postal_code": "N1 9GU",
                             "country": "GB"},
    }
    body = orjson.dumps({
        "id": event_id,
        "type": "order.created",
        "source": "portal",
        "received_at": datetime.now(UTC).isoformat(timespec="milliseconds"),
        "occurred_at": "2026-11-20T16:15:31Z",
        "schema": "order.created/v1",
        "data": data,
    })
    return event_id, body


async def publish(topology: Topology, run: str, count: int, in_flight: int = 512) -> float:
    """Publish `count` envelopes with confirms; returns seconds taken."""
    rng = random.Random(run)
    messages = [envelope(run, n, rng) for n in range(count)]
    connection = await aio_pika.connect(AMQP_URL)
    async with connection:
        channel = await connection.channel(publisher_confirms=True)
        exchange = await channel.get_exchange(topology.exchange)
        semaphore = asyncio.Semaphore(in_flight)
        started = time.perf_counter()

        async def one(event_id: str, body: bytes) -> None:
            async with semaphore:
                await exchange.publish(
                    aio_pika.Message(
                        body, content_type="application/json",
                        delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
                        message_id=event_id, type="order.created",
                        headers={"source": "portal", "schema": "order.created/v1",
                                 "attempt": 0},
                        timestamp=datetime.now(UTC),
                    ),
                    routing_key="order.created",
                    mandatory=True,
                )

        await asyncio.gather(*(one(i, b) for i, b in messages))
        elapsed = time.perf_counter() - started
        queue = await channel.declare_queue(topology.queue("orders"), passive=True)
        depth = queue.declaration_result.message_count
        if depth != count:
            raise RuntimeError(f"published {count} but the orders queue holds {depth}")
    return elapsed


async def depths(topology: Topology) -> dict[str, int]:
    connection = await aio_pika.connect(AMQP_URL)
    async with connection:
        channel = await connection.channel()
        result = {}
        for name in topology.names():
            queue = await channel.declare_queue(name, passive=True)
            result[name] = queue.declaration_result.message_count
        return result


async def purge(topology: Topology) -> None:
    connection = await aio_pika.connect(AMQP_URL)
    async with connection:
        channel = await connection.channel()
        for name in topology.names():
            queue = await channel.declare_queue(name, passive=True)
            await queue.purge()


# --- the consumers ---------------------------------------------------------------------------


async def run_plain(topology: Topology, count: int, prefetch: int) -> float:
    """aio-pika consume-and-ack loop; events/s from first delivery to last ack."""
    connection = await aio_pika.connect_robust(AMQP_URL)
    async with connection:
        channel = await connection.channel()
        await channel.set_qos(prefetch_count=prefetch)
        queue = await channel.get_queue(topology.queue("orders"))
        done = 0
        first = 0.0
        async with asyncio.timeout(RUN_TIMEOUT):
            async with queue.iterator() as messages:
                async for message in messages:
                    if not done:
                        first = time.perf_counter()
                    await message.ack()
                    done += 1
                    if done == count:
                        break
        last = time.perf_counter()
    return count / (last - first)


class TimedRunner(Runner):
    """The Runner, unchanged, with a clock around each batch and a stop once `count` are done."""

    def __init__(self, *args, count: int, stop: asyncio.Event, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.count = count
        self.stop = stop
        self.done = 0
        self.first: float | None = None
        self.last = 0.0
        self.batches = 0

    async def _process(self, batch) -> None:
        if self.first is None:
            self.first = time.perf_counter()
        await super()._process(batch)
        self.last = time.perf_counter()
        self.done += len(batch)
        self.batches += 1
        if self.done >= self.count:
            self.stop.set()


async def seed(store) -> None:
    async with store.transaction() as tx:
        for sku in SKUS:
            await tx.execute(
                "INSERT INTO stock (sku, location, on_hand, reserved, as_of)"
                " VALUES ($1, $2, $3, 0, $4)",
                sku, "default", STOCK_ON_HAND, "2026-11-20T00:00:00+00:00",
            )


async def run_runner(topology: Topology, store_url: str, count: int,
                     prefetch: int, concurrency: int = 1) -> tuple[float, dict[str, int]]:
    store = open_store(store_url, pool_max=concurrency + 1)
    await store.open()
    try:
        await seed(store)
        stop = asyncio.Event()
        broker = BrokerSettings(url=AMQP_URL, prefix=topology.prefix,
                                retry_ladder=topology.retry_ladder,
                                delivery_limit=topology.delivery_limit)
        runner = TimedRunner(ConsumerSpec("orders", orders.handle, orders.prepare), store, broker,
                             prefetch=prefetch, concurrency=concurrency, count=count,
                             stop=stop)
        async with asyncio.timeout(RUN_TIMEOUT):
            await runner.run(stop)
        assert runner.first is not None
        rate = count / (runner.last - runner.first)
        async with store.transaction() as tx:
            stored = await tx.fetchval("SELECT count(*) FROM orders")
            allocated = await tx.fetchval(
                "SELECT count(*) FROM orders WHERE status = 'allocated'")
            lines = await tx.fetchval("SELECT count(*) FROM order_lines")
            claimed = await tx.fetchval("SELECT count(*) FROM inbox")
            unsent = await tx.fetchval("SELECT count(*) FROM outbox WHERE sent_at IS NULL")
        facts = {"orders": int(stored), "allocated": int(allocated), "lines": int(lines),
                 "inbox": int(claimed), "unsent": int(unsent), "batches": runner.batches}
    finally:
        await store.close()
    return rate, facts


async def create_pg_database() -> str:
    name = f"bench_{uuid.uuid4().hex}"
    conn = await asyncpg.connect(PG_ADMIN_URL)
    try:
        await conn.execute(f'CREATE DATABASE "{name}"')
    finally:
        await conn.close()
    return name


async def drop_pg_database(name: str) -> None:
    conn = await asyncpg.connect(PG_ADMIN_URL)
    try:
        await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await conn.close()


_DEVNULL = None


def quiet_logging() -> None:
    """Production structlog set-up (info level, JSON lines), its output sent to /dev/null."""
    from router.logs import configure_logging

    global _DEVNULL
    _DEVNULL = open(os.devnull, "w")  # noqa: SIM115 - kept open for the whole process
    real = sys.stdout
    sys.stdout = _DEVNULL
    try:
        configure_logging("info", ())
    finally:
        sys.stdout = real


async def main_async(args: argparse.Namespace) -> int:
    prefix = f"bench-{uuid.uuid4().hex[:6]}."
    topology = Topology(prefix)
    connection = await aio_pika.connect(AMQP_URL)
    async with connection:
        await topology.declare(await connection.channel())
    tmp = Path(tempfile.mkdtemp(prefix="bench-consumers-"))
    databases: list[str] = []
    names = ["plain", "sqlite", "postgres", "pg-conc"]
    if args.only:
        names = ["plain", *args.only]
    results: dict[str, list[float]] = {name: [] for name in names}
    failures = 0
    print(f"{args.count} order.created events per run, prefetch {args.prefetch}, "
          f"{args.rounds} rounds, {os.cpu_count()} cores, uvloop, prefix {prefix}", flush=True)
    try:
        for round_no in range(1, args.rounds + 1):
            for name in results:
                await purge(topology)
                run = f"{round_no}{name[0]}{uuid.uuid4().hex[:6]}"
                published = await publish(topology, run, args.count)
                extra = ""
                if name == "plain":
                    rate = await run_plain(topology, args.count, args.prefetch)
                else:
                    if name == "sqlite":
                        url = f"sqlite:///{tmp / f'{run}.sqlite3'}"
                    else:
                        database = await create_pg_database()
                        databases.append(database)
                        url = f"postgresql://root@127.0.0.1:5432/{database}"
                    concurrency = args.pg_concurrency if name == "pg-conc" else 1
                    rate, facts = await run_runner(topology, url, args.count, args.prefetch,
                                                   concurrency)
                    left = await depths(topology)
                    orders_left = left[topology.queue("orders")]
                    stuck = sum(n for q, n in left.items()
                                if ".retry." in q or q.endswith(".dead"))
                    ok = (facts["orders"] == args.count and orders_left == 0 and stuck == 0
                          and facts["inbox"] == args.count and facts["unsent"] == 0)
                    failures += not ok
                    extra = (f"  orders in store: {facts['orders']} (allocated "
                             f"{facts['allocated']}, lines {facts['lines']}, inbox "
                             f"{facts['inbox']}, outbox unsent {facts['unsent']}), queue left "
                             f"{orders_left}, retry/dead {stuck}, {facts['batches']} batches "
                             f"(avg {args.count / facts['batches']:.1f})"
                             f"{'' if ok else '  VERIFY FAILED'}")
                    if name != "sqlite":
                        await drop_pg_database(databases.pop())
                await purge(topology)  # the relayed notify.* messages: free the broker's memory
                results[name].append(rate)
                print(f"round {round_no} {name:>8}: {rate:8.0f} events/s  "
                      f"(published in {published:.2f} s){extra}", flush=True)
    finally:
        for database in databases:
            await drop_pg_database(database)
        shutil.rmtree(tmp, ignore_errors=True)
        connection = await aio_pika.connect(AMQP_URL)
        async with connection:
            await topology.delete(await connection.channel())

    plain = statistics.median(results["plain"])
    print("\nmedians")
    print(f"{'consumer':>15} {'events/s':>9} {'ratio':>6}")
    for name, rates in results.items():
        rate = statistics.median(rates)
        label = {"plain": "plain", "sqlite": "runner/sqlite", "postgres": "runner/pg",
                 "pg-conc": f"runner/pg x{args.pg_concurrency}"}[name]
        print(f"{label:>15} {rate:9.0f} {rate / plain:6.2f}")
    if results.get("sqlite"):
        goal = statistics.median(results["sqlite"]) / plain
        print(f"\ngoal runner/sqlite >= 0.5x plain: {'met' if goal >= 0.5 else 'NOT met'} "
              f"({goal:.2f}x)")
    if failures:
        print(f"{failures} Runner run(s) failed verification", file=sys.stderr)
        return 1
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=20_000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--prefetch", type=int, default=100)
    parser.add_argument("--pg-concurrency", type=int, default=4,
                        help="batches at once for the pg-conc run")
    parser.add_argument("--only", action="append", choices=["sqlite", "postgres", "pg-conc"],
                        help="run only these (and plain); repeatable")
    args = parser.parse_args()
    quiet_logging()
    return uvloop.run(main_async(args))


if __name__ == "__main__":
    raise SystemExit(main())
