"""Consumer benchmark: our Runner (orders handler, SQLite and PostgreSQL) against a plain
aio-pika consume-and-ack loop, same run, same messages; with `--only labels`, the labels
consumer buying labels from the EasyPost emulator against a plain loop making the same calls.

    python bench/consumers.py [--count 20000] [--rounds 3] [--prefetch 100] [--only NAME]
                              [--pg-concurrency 4]
    python bench/consumers.py --only labels [--count 2000] [--rounds 3]
    python bench/consumers.py --only labels --count 40 --rounds 1    # smoke size: ~20 s
    python bench/consumers.py --only procs [--processes 1,2,4]       # processes that add up

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

    pg-pN     N real `python -m consumers orders` processes (`--only procs`, N from
              `--processes`, default 1,2,4) on one fresh PostgreSQL database and the one
              queue, started as operators scale them (a config like the shipped one with
              the run's prefix, DATABASE_URL); events/s between the first and the last
              claim (the inbox's processed_at, stamped as a batch begins: start-up is not
              counted, the last batch's own few milliseconds are not either); then
              SIGTERM, each must exit 0

drains the queue.  events/s is measured from the first message delivered to the consumer to
the last ack (for the Runner: the return of the batch that acked the last message, which
also includes relaying that batch's outbox rows).  The Runner logs its per-message JSON lines
at level info exactly as in production (router.logs), written to /dev/null.  After each
Runner run the store must hold exactly `count` orders (their effects were committed before
the ack), the orders queue must be empty and nothing may be on a retry or dead queue.
Prints one line per run, then the medians and the ratio to the plain loop.  Deletes every
queue, exchange, file and database it created.

`--only labels` (not part of the default run; `count` defaults to 2000 there) measures
labels bought per second.  Before every run a fresh store (a SQLite file or a database
bench_<uuid>; for the runs without a store, a SQLite file used only to make the messages)
gets `count` paid portal orders to a US address, made ready_to_ship by the orders consumer's
own handler, their outbox rows marked sent as the orders runner leaves them; the `count`
order.ready_to_ship notifications among those rows are published with confirms as that
runner's relay publishes them (the Publisher, the same properties), and the topology routes
them to the `labels` queue.  A fresh EasyPost emulator serves each run in a process of its
own (`python -m emulators easypost --port 0`, as it is started by hand): the carrier is
another machine in production, and inside this process its work (a ~3 kB Shipment built and
encoded per call) would take the event loop being measured.  Then one of:

    carrier        no broker, no store: `count` create-shipment + buy pairs sent straight to
                   the emulator, `prefetch` at once on one aiohttp session: what the emulator
                   itself serves (what bounds the others), not a consumer
    labels-plain   aio-pika, prefetch 100, each message handled as it arrives: create the
                   shipment (the same body the driver sends), buy its cheapest rate, ack; one
                   aiohttp session, no store
    labels-sqlite  the labels consumer as `python -m consumers labels` builds it
                   (consumers.cli: Labels, CallingRunner, the EasyPost driver on one aiohttp
                   session; [labels] of config/router.toml pointed at the emulator), prefetch
                   100, concurrency 1, on a fresh SQLite file
    labels-pg      the same on a fresh PostgreSQL database

labels/s is measured as events/s above.  Verified after each run: the emulator sold exactly
`count` labels on `count` shipments; for the consumer, exactly `count` messages handled,
`count` labels rows bought, `count` orders label_purchased, `count` inbox claims, no outbox
row unsent; the labels queue empty and nothing on a retry or dead queue.  Each consumer run
also prints where its batches' time went: in `call` (the carrier calls and the consumer's
own short store transactions, made before the batch's transaction), and in the rest (the
batch's transaction, acks, relay), with the mean time of one store round trip and of each
carrier call, taken by wrapping those methods on the instances (microseconds against
milliseconds).
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import dataclasses
import os
import random
import shutil
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import aio_pika
import aiohttp
import asyncpg
import orjson
import uvloop

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from consumers import orders  # noqa: E402
from consumers.cli import _open, _runner  # noqa: E402
from consumers.runner import ConsumerSpec, Runner  # noqa: E402
from consumers.store import Store, open_store  # noqa: E402
from router.broker.publisher import Publisher  # noqa: E402
from router.broker.topology import Topology  # noqa: E402
from router.settings import BrokerSettings, Settings, load_settings  # noqa: E402

AMQP_URL = os.environ.get("AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/")
PG_ADMIN_URL = os.environ.get("PG_ADMIN_URL", "postgresql://root@127.0.0.1:5432/postgres")
SKUS = [f"BENCH-SKU-{n:03d}" for n in range(50)]
STOCK_ON_HAND = 1_000_000_000
RUN_TIMEOUT = 900.0
ORDERS_MODES = ("sqlite", "postgres", "pg-conc")
# What `python -m consumers orders` needs to load the shipped config (secrets it never uses).
PROCESS_ENV = {
    "SHOPIFY_WEBHOOK_SECRET": "bench", "WOOCOMMERCE_WEBHOOK_SECRET": "bench",
    "PORTAL_WEBHOOK_TOKEN": "bench", "INVENTORY_WEBHOOK_SECRET": "bench",
    "EASYPOST_WEBHOOK_SECRET": "bench", "AFTERSHIP_WEBHOOK_SECRET": "bench",
}
LABELS_MODES = ("carrier", "labels-plain", "labels-sqlite", "labels-pg")
DEFAULT_COUNT = {"orders": 20_000, "labels": 2_000}
EASYPOST_KEY = "EZTK_bench_key"  # any key: the emulator checks that this one is sent
US_ADDRESS = {"name": "Ada Lovelace", "line1": "12 Analytical Way", "line2": "Suite 3",
              "city": "Portland", "region": "OR", "postal_code": "97201", "country": "US"}
READY = "notify.order.ready_to_ship"
SEED_BATCH = 500  # orders made ready_to_ship per seeding transaction


def envelope(run: str, n: int, rng: random.Random, *, paid: bool = False) -> tuple[str, bytes]:
    """One order.created envelope as the ingress publishes it (portal mapping output);
    `paid`: paid, to a US address, so the orders consumer makes it ready_to_ship."""
    event_id = f"evt_bench_{run}_{n:07d}"
    lines = [{"sku": sku, "quantity": rng.randint(1, 3)}
             for sku in rng.sample(SKUS, rng.randint(1, 2))]
    data: dict[str, Any] = {
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
    if paid:
        data |= {"payment_status": "paid", "shipping_address": US_ADDRESS}
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


class Clock:
    """A clock around each batch of a runner, and `stop` set once `count` messages are done:
    the runner's own `_process`, wrapped on the instance (its classes stay as they are)."""

    def __init__(self, runner: Runner, count: int, stop: asyncio.Event) -> None:
        self.count = count
        self.stop = stop
        self.done = 0
        self.first: float | None = None
        self.last = 0.0
        self.batches = 0
        self._process = runner._process
        runner._process = self._timed  # type: ignore[method-assign]

    @property
    def rate(self) -> float:
        assert self.first is not None
        return self.count / (self.last - self.first)

    async def _timed(self, batch: list[Any]) -> None:
        if self.first is None:
            self.first = time.perf_counter()
        await self._process(batch)
        self.last = time.perf_counter()
        self.done += len(batch)
        self.batches += 1
        if self.done >= self.count:
            self.stop.set()


def broker_of(topology: Topology) -> BrokerSettings:
    return BrokerSettings(url=AMQP_URL, prefix=topology.prefix,
                          retry_ladder=topology.retry_ladder,
                          delivery_limit=topology.delivery_limit,
                          optional_queues=topology.optional)


async def seed(store: Store) -> None:
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
        runner = Runner(ConsumerSpec("orders", orders.handle, orders.prepare), store,
                        broker_of(topology), prefetch=prefetch, concurrency=concurrency)
        clock = Clock(runner, count, stop)
        async with asyncio.timeout(RUN_TIMEOUT):
            await runner.run(stop)
        facts = await orders_facts(store) | {"batches": clock.batches}
    finally:
        await store.close()
    return clock.rate, facts


ORDERS_FACTS = (
    ("orders", "SELECT count(*) FROM orders"),
    ("allocated", "SELECT count(*) FROM orders WHERE status = 'allocated'"),
    ("lines", "SELECT count(*) FROM order_lines"),
    ("inbox", "SELECT count(*) FROM inbox"),
    ("unsent", "SELECT count(*) FROM outbox WHERE sent_at IS NULL"),
)


async def orders_facts(store: Store) -> dict[str, int]:
    """What an orders run left in its store, for orders_round to verify."""
    async with store.transaction() as tx:
        return {name: int(await tx.fetchval(sql)) for name, sql in ORDERS_FACTS}


# --- labels ----------------------------------------------------------------------------------


async def ready_orders(store: Store, run: str, count: int) -> list[dict[str, Any]]:
    """`count` paid orders made ready_to_ship by the orders consumer's own handler, left as
    its runner leaves them (committed, outbox rows marked sent); their ready_to_ship outbox
    rows, for `relay`."""
    await seed(store)
    rng = random.Random(run)
    ready: list[dict[str, Any]] = []
    for start in range(0, count, SEED_BATCH):
        events = [orjson.loads(envelope(run, n, rng, paid=True)[1])
                  for n in range(start, min(start + SEED_BATCH, count))]

        async def work(tx: Any, events: list[dict[str, Any]] = events) -> tuple[Any, Any]:
            return [await orders.handle(tx, event) for event in events], tx.outbox

        outcomes, outbox = await store.run(work)
        if set(outcomes) != {"ready_to_ship"}:
            raise RuntimeError(f"seeding: orders outcomes {sorted(set(outcomes))}")
        await store.mark_sent([row["id"] for row in outbox])
        ready += [row for row in outbox if row["routing_key"] == READY]
    if len(ready) != count:
        raise RuntimeError(f"seeding: {len(ready)} ready_to_ship notifications, not {count}")
    return ready


async def relay(topology: Topology, rows: list[dict[str, Any]]) -> float:
    """Publish outbox rows as the orders runner's relay does (consumers.runner
    _send_outbox: the Publisher, the same properties); seconds taken."""
    publisher = Publisher(broker_of(topology), connection_name="bench-consumers-relay")
    await publisher.start()
    try:
        started = time.perf_counter()
        for start in range(0, len(rows), SEED_BATCH):
            await publisher.publish_all([
                {"body": row["body"], "routing_key": row["routing_key"],
                 "message_id": row["message_id"], "type": row["routing_key"],
                 "headers": {"attempt": 0, "source": "orders"}}
                for row in rows[start:start + SEED_BATCH]])
        elapsed = time.perf_counter() - started
    finally:
        await publisher.close()
    depth = (await depths(topology))[topology.queue("labels")]
    if depth != len(rows):
        raise RuntimeError(f"published {len(rows)} but the labels queue holds {depth}")
    return elapsed


@contextlib.asynccontextmanager
async def easypost_emulator() -> AsyncIterator[str]:
    """A fresh EasyPost emulator in a process of its own, as started by hand; its URL."""
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "emulators", "easypost", "--port", "0", "--key", EASYPOST_KEY,
        cwd=ROOT, stdout=asyncio.subprocess.PIPE)
    try:
        assert process.stdout is not None
        line = (await asyncio.wait_for(process.stdout.readline(), 30)).decode()
        if not line.startswith("listening on http://"):  # its first line says where
            raise RuntimeError(f"the EasyPost emulator did not start: {line!r}")
        yield line.split()[-1]
    finally:
        if process.returncode is None:
            process.terminate()
            try:
                await asyncio.wait_for(process.wait(), 10)
            except TimeoutError:
                process.kill()
                await process.wait()


async def counters(emulator: str) -> dict[str, Any]:
    """What the emulator sold (GET /_emulator/counters)."""
    async with aiohttp.ClientSession() as session, \
            session.get(f"{emulator}/_emulator/counters") as answer:
        answer.raise_for_status()
        result: dict[str, Any] = await answer.json()
        return result


class PlainEasyPost:
    """The two calls the labels consumer makes for an order, written plainly: POST
    /v2/shipments with the body its driver sends for this order (the warehouse of
    config/router.toml, the order's address, the default parcel of 16 oz a unit), then POST
    /v2/shipments/ID/buy of the cheapest rate (every rate the emulator offers is allowed)."""

    def __init__(self, session: aiohttp.ClientSession, emulator: str,
                 warehouse: dict[str, str]) -> None:
        self.session = session
        self.api = f"{emulator}/v2"
        token = base64.b64encode(f"{EASYPOST_KEY}:".encode()).decode()
        self.headers = {"Accept": "application/json", "Authorization": f"Basic {token}",
                        "Content-Type": "application/json"}
        self.from_address = self.address(warehouse)
        self.to_address = self.address(US_ADDRESS) | {"verify_strict": ["delivery"]}

    @staticmethod
    def address(fields: dict[str, str]) -> dict[str, str]:
        names = {"name": "name", "line1": "street1", "line2": "street2", "city": "city",
                 "region": "state", "postal_code": "zip", "country": "country"}
        return {names[key]: value for key, value in fields.items() if key in names}

    async def post(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        async with self.session.post(self.api + path, data=orjson.dumps(body),
                                     headers=self.headers) as answer:
            answer.raise_for_status()
            result: dict[str, Any] = orjson.loads(await answer.read())
            return result

    async def label(self, reference: str, units: int) -> str:
        """Create the shipment, buy its cheapest rate; the tracking code."""
        shipment = await self.post("/shipments", {"shipment": {
            "reference": reference, "to_address": self.to_address,
            "from_address": self.from_address,
            "parcel": {"weight": 16.0 * units, "length": 10.0, "width": 8.0, "height": 4.0},
        }})
        rate = min(shipment["rates"], key=lambda rate: Decimal(rate["rate"]))
        bought = await self.post(f"/shipments/{shipment['id']}/buy", {"rate": {"id": rate["id"]}})
        return str(bought["tracking_code"])


async def run_carrier(count: int, in_flight: int, emulator: str, warehouse: dict[str, str]
                      ) -> float:
    """`count` create + buy pairs straight to the emulator, `in_flight` at once; pairs/s."""
    slots = asyncio.Semaphore(in_flight)
    async with aiohttp.ClientSession() as session:
        easypost = PlainEasyPost(session, emulator, warehouse)

        async def one(n: int) -> None:
            async with slots:
                await easypost.label(f"carrier-{n}", 2)

        started = time.perf_counter()
        await asyncio.gather(*(one(n) for n in range(count)))
        return count / (time.perf_counter() - started)


async def run_plain_labels(topology: Topology, count: int, prefetch: int, emulator: str,
                           warehouse: dict[str, str]) -> float:
    """aio-pika loop: each message as it arrives (up to `prefetch` at once) gets its label
    (PlainEasyPost), then its ack; labels/s from first delivery to last ack."""
    connection = await aio_pika.connect_robust(AMQP_URL)
    async with connection, aiohttp.ClientSession() as session:
        easypost = PlainEasyPost(session, emulator, warehouse)
        channel = await connection.channel()
        await channel.set_qos(prefetch_count=prefetch)
        queue = await channel.get_queue(topology.queue("labels"))
        first: float | None = None
        last = 0.0

        async def label_and_ack(message: aio_pika.abc.AbstractIncomingMessage) -> None:
            nonlocal last
            data = orjson.loads(message.body)["data"]
            units = sum(line["quantity"] for line in data["lines"] if line["ships"])
            await easypost.label(data["order_id"], units)
            await message.ack()
            last = time.perf_counter()

        labelling = []
        async with asyncio.timeout(RUN_TIMEOUT), queue.iterator() as messages:
            async for message in messages:
                if first is None:
                    first = time.perf_counter()
                labelling.append(asyncio.create_task(label_and_ack(message)))
                if len(labelling) == count:
                    break
            await asyncio.gather(*labelling)
    assert first is not None
    return count / (last - first)


@dataclasses.dataclass
class Timing:
    """Calls of one awaitable method: how many, and their summed time."""

    calls: int = 0
    seconds: float = 0.0

    def wrap(self, method: Callable[..., Awaitable[Any]]) -> Callable[..., Awaitable[Any]]:
        async def timed(*args: Any, **kwargs: Any) -> Any:
            started = time.perf_counter()
            try:
                return await method(*args, **kwargs)
            finally:
                self.calls += 1
                self.seconds += time.perf_counter() - started
        return timed

    def mean_ms(self) -> float:
        return 1000 * self.seconds / max(self.calls, 1)


class Profile:
    """Where a labels runner's batches spend their time: `call` (the Labels caller: its store
    round trips and carrier calls) against the whole batch; the store round trips made
    inside `call` and outside it (the batch's transaction)."""

    def __init__(self, runner: Any) -> None:
        labels, store = runner.caller, runner.store
        self.call, self.create, self.buy = Timing(), Timing(), Timing()
        self.store_in_call, self.store_batch = Timing(), Timing()
        self._calling = False
        labels.call = self._call(labels.call)
        labels.carrier.create_shipment = self.create.wrap(labels.carrier.create_shipment)
        labels.carrier.buy = self.buy.wrap(labels.carrier.buy)
        run = store.run
        in_call, batch = self.store_in_call.wrap(run), self.store_batch.wrap(run)

        def store_run(work: Any) -> Awaitable[Any]:
            return (in_call if self._calling else batch)(work)

        store.run = store_run

    def _call(self, call: Callable[..., Awaitable[None]]) -> Callable[..., Awaitable[None]]:
        timed = self.call.wrap(call)

        async def calling(events: list[Any]) -> None:
            self._calling = True
            try:
                await timed(events)
            finally:
                self._calling = False
        return calling

    def line(self, clock: Clock) -> str:
        batches, count = max(clock.batches, 1), clock.count
        total = clock.last - (clock.first or clock.last)
        call_ms = 1000 * self.call.seconds / batches
        return (f"per batch: call {call_ms:.0f} ms, rest {1000 * total / batches - call_ms:.0f}"
                f" ms; in call {self.store_in_call.calls / count:.1f} store round trips a"
                f" label ({self.store_in_call.mean_ms():.1f} ms each), create"
                f" {self.create.mean_ms():.1f} ms, buy {self.buy.mean_ms():.1f} ms; in the rest"
                f" {self.store_batch.calls / batches:.1f} store transactions a batch"
                f" ({self.store_batch.mean_ms():.1f} ms each)")


def labels_settings(topology: Topology, emulator: str) -> Settings:
    """config/router.toml (the file the README's walkthrough uses) with [labels] on, pointed
    at the emulator, on the benchmark's topology."""
    settings = load_settings(ROOT / "config" / "router.toml", resolve_secrets=False)
    labels = dataclasses.replace(settings.labels, enabled=True,
                                 api_key=EASYPOST_KEY.encode(), base_url=f"{emulator}/v2")
    return dataclasses.replace(settings, labels=labels, broker=broker_of(topology))


async def run_labels(topology: Topology, store: Store, count: int, prefetch: int,
                     emulator: str) -> tuple[float, dict[str, int], str]:
    """The labels consumer until `count` messages are done; labels/s, what the store holds,
    the profile's line."""
    stop = asyncio.Event()
    async with aiohttp.ClientSession() as session:
        runner = _runner("labels", labels_settings(topology, emulator), store, session,
                         prefetch, 1)
        clock = Clock(runner, count, stop)
        profile = Profile(runner)
        async with asyncio.timeout(RUN_TIMEOUT):
            await runner.run(stop)
    async with store.transaction() as tx:
        facts = {
            "bought": await tx.fetchval("SELECT count(*) FROM labels WHERE state = 'bought'"),
            "label_purchased": await tx.fetchval(
                "SELECT count(*) FROM orders WHERE status = 'label_purchased'"),
            "shipments": await tx.fetchval("SELECT count(*) FROM shipments"),
            "inbox": await tx.fetchval("SELECT count(*) FROM inbox WHERE consumer = 'labels'"),
            "unsent": await tx.fetchval("SELECT count(*) FROM outbox WHERE sent_at IS NULL"),
        }
    counted = {"messages": clock.done, "batches": clock.batches}
    return clock.rate, {k: int(v) for k, v in facts.items()} | counted, profile.line(clock)


async def labels_round(name: str, topology: Topology, run: str, args: argparse.Namespace,
                       tmp: Path, databases: list[str]) -> tuple[float, str, bool]:
    """One labels run: (labels/s, what it found, verified)."""
    count = args.count
    warehouse = dict(labels_settings(topology, "http://-").labels.from_address)
    found, facts, profile = [], {}, ""
    async with easypost_emulator() as emulator:
        if name == "carrier":
            rate = await run_carrier(count, args.prefetch, emulator, warehouse)
        else:
            url = await store_url(name, run, tmp, databases)
            async with _open(url, 1) as store:
                published = await relay(topology, await ready_orders(store, run, count))
                found.append(f"(published in {published:.2f} s)")
                if name == "labels-plain":
                    rate = await run_plain_labels(topology, count, args.prefetch, emulator,
                                                  warehouse)
                else:
                    rate, facts, profile = await run_labels(topology, store, count,
                                                            args.prefetch, emulator)
                    found.append(
                        f"labels bought {facts['bought']}, orders label_purchased "
                        f"{facts['label_purchased']}, shipments {facts['shipments']}, inbox "
                        f"{facts['inbox']}, outbox unsent {facts['unsent']}, "
                        f"{facts['messages']} messages in {facts['batches']} batches")
            await forget_store(name, url, databases)
        sold = await counters(emulator)
    left = await depths(topology)
    stuck = sum(n for q, n in left.items() if ".retry." in q or q.endswith(".dead"))
    queued = left[topology.queue("labels")]
    ok = (sold.get("labels_sold") == count and sold.get("shipments_created") == count
          and queued == 0 and stuck == 0
          and all(facts.get(k, count) == count
                  for k in ("bought", "label_purchased", "shipments", "inbox", "messages"))
          and facts.get("unsent", 0) == 0)
    found.append(f"emulator sold {sold.get('labels_sold')} on {sold.get('shipments_created')}"
                 f" shipments, queue left {queued}, retry/dead {stuck}"
                 f"{'' if ok else '  VERIFY FAILED'}")
    return rate, "  ".join(found) + (f"\n      {profile}" if profile else ""), ok


async def store_url(name: str, run: str, tmp: Path, databases: list[str]) -> str:
    """A fresh store for this run: a SQLite file, or a new PostgreSQL database."""
    if name in ("sqlite", "labels-sqlite", "labels-plain"):
        return f"sqlite:///{tmp / f'{run}.sqlite3'}"
    database = await create_pg_database()
    databases.append(database)
    return f"postgresql://root@127.0.0.1:5432/{database}"


async def forget_store(name: str, url: str, databases: list[str]) -> None:
    """Drop the run's database (SQLite files go with the temporary directory)."""
    if url.startswith("postgresql://"):
        await drop_pg_database(databases.pop())


async def create_pg_database() -> str:
    # BENCH_DATABASE_PREFIX: so that a test finds the databases of the run it started
    name = f"{os.environ.get('BENCH_DATABASE_PREFIX', 'bench_')}{uuid.uuid4().hex}"
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


def process_config(topology: Topology, tmp: Path) -> Path:
    """config/router.toml with the run's prefix and its relative paths made absolute."""
    text = (ROOT / "config" / "router.toml").read_text()
    for old, new in [('prefix = ""', f'prefix = "{topology.prefix}"'),
                     ('= "mappings/', f'= "{ROOT}/config/mappings/'),
                     ('= "samples/', f'= "{ROOT}/config/samples/'),
                     ('schemas = "schemas"', f'schemas = "{ROOT}/config/schemas"')]:
        if old not in text:
            raise RuntimeError(f"config/router.toml changed: {old!r} not found")
        text = text.replace(old, new)
    path = tmp / "router.toml"
    path.write_text(text)
    return path


async def run_processes(topology: Topology, store_url: str, count: int, prefetch: int,
                        processes: int, tmp: Path) -> tuple[float, dict[str, int]]:
    """`processes` real orders consumers on one database until every event is claimed."""
    async with open_store(store_url) as store:
        await seed(store)
    env = {**os.environ, **PROCESS_ENV, "AMQP_URL": AMQP_URL, "DATABASE_URL": store_url}
    config = process_config(topology, tmp)
    logs = [tmp / f"orders-{n}.log" for n in range(processes)]
    procs = []
    for log in logs:
        with open(log, "wb") as out:  # noqa: ASYNC230 - a log file, once per process
            procs.append(await asyncio.create_subprocess_exec(
                sys.executable, "-m", "consumers", "orders", "--config", str(config),
                "--prefetch", str(prefetch), cwd=ROOT, env=env, stdout=out, stderr=out))
    conn = await asyncpg.connect(store_url)
    try:
        async with asyncio.timeout(RUN_TIMEOUT):
            while True:
                claimed = await conn.fetchval(
                    "SELECT count(*) FROM inbox WHERE consumer = 'orders'")
                if claimed >= count:
                    break
                if any(proc.returncode is not None for proc in procs):
                    raise RuntimeError(f"a consumer exited early: see {tmp}")
                await asyncio.sleep(0.5)  # a count of a growing table: not too often
        first, last = await conn.fetchrow("SELECT min(processed_at), max(processed_at) FROM inbox")
    finally:
        await conn.close()
        for proc in procs:
            if proc.returncode is None:
                proc.terminate()
        codes = [await asyncio.wait_for(proc.wait(), 60) for proc in procs]
    async with open_store(store_url) as store:
        facts = await orders_facts(store) | {
            "batches": 0, "exit_codes_not_0": sum(code != 0 for code in codes)}
    span = datetime.fromisoformat(last) - datetime.fromisoformat(first)
    return count / span.total_seconds(), facts


async def orders_round(name: str, topology: Topology, run: str, args: argparse.Namespace,
                       tmp: Path, databases: list[str]) -> tuple[float, str, bool]:
    """One orders run: (events/s, what it found, verified)."""
    published = await publish(topology, run, args.count)
    extra, ok = "", True
    if name == "plain":
        rate = await run_plain(topology, args.count, args.prefetch)
    else:
        url = await store_url(name, run, tmp, databases)
        if name.startswith("pg-p"):
            rate, facts = await run_processes(topology, url, args.count, args.prefetch,
                                              int(name[4:]), tmp)
        else:
            concurrency = args.pg_concurrency if name == "pg-conc" else 1
            rate, facts = await run_runner(topology, url, args.count, args.prefetch,
                                           concurrency)
        left = await depths(topology)
        orders_left = left[topology.queue("orders")]
        stuck = sum(n for q, n in left.items() if ".retry." in q or q.endswith(".dead"))
        ok = (facts["orders"] == args.count and orders_left == 0 and stuck == 0
              and facts["inbox"] == args.count and facts["unsent"] == 0
              and not facts.get("exit_codes_not_0"))
        extra = (f"  orders in store: {facts['orders']} (allocated "
                 f"{facts['allocated']}, lines {facts['lines']}, inbox "
                 f"{facts['inbox']}, outbox unsent {facts['unsent']}), queue left "
                 f"{orders_left}, retry/dead {stuck}"
                 + (f", {facts['batches']} batches (avg {args.count / facts['batches']:.1f})"
                    if facts["batches"] else "")
                 + (f", {facts['exit_codes_not_0']} exited non-zero"
                    if facts.get("exit_codes_not_0") else "")
                 + ("" if ok else "  VERIFY FAILED"))
        await forget_store(name, url, databases)
    return rate, f"(published in {published:.2f} s){extra}", ok


async def delete_topology(topology: Topology, patience: float = 180.0) -> None:
    """Delete the run's queues and exchanges, waiting up to `patience` seconds for a broker
    that is restarting (other work on a shared machine may restart it)."""
    deadline = time.monotonic() + patience
    while True:
        try:
            connection = await aio_pika.connect(AMQP_URL)
            async with connection:
                await topology.delete(await connection.channel())
            return
        except (OSError, aio_pika.exceptions.AMQPError):
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(2)


LABELS = {"plain": "plain", "sqlite": "runner/sqlite", "postgres": "runner/pg",
          "carrier": "carrier alone", "labels-plain": "plain", "labels-sqlite": "labels/sqlite",
          "labels-pg": "labels/pg"}


def print_medians(results: dict[str, list[float]], names: tuple[str, ...], unit: str,
                  args: argparse.Namespace) -> None:
    base = statistics.median(results[names[0]])
    print(f"{'consumer':>15} {unit:>9} {'ratio':>6}")
    for name in names:
        rate = statistics.median(results[name])
        label = LABELS.get(name) or (f"{name[4:]} procs/pg" if name.startswith("pg-p")
                                     else f"runner/pg x{args.pg_concurrency}")
        print(f"{label:>15} {rate:9.0f} {rate / base:6.2f}")


async def main_async(args: argparse.Namespace) -> int:
    labels = "labels" in (args.only or ())
    orders_modes = [name for name in args.only or ORDERS_MODES
                    if name not in ("labels", "procs")]
    if "procs" in (args.only or ()):
        orders_modes += [f"pg-p{n}" for n in args.processes]
    names = ["plain", *orders_modes] if orders_modes else []
    if labels:
        names += LABELS_MODES
    if args.count is None:
        args.count = DEFAULT_COUNT["orders" if orders_modes else "labels"]
    prefix = f"bench-{uuid.uuid4().hex[:6]}."
    topology = Topology(prefix, optional=("labels",) if labels else ())
    tmp = Path(tempfile.mkdtemp(prefix="bench-consumers-"))
    databases: list[str] = []
    results: dict[str, list[float]] = {name: [] for name in names}
    width = max(map(len, names))
    failures = 0
    what = ("order.created events" if orders_modes else "orders ready_to_ship") + (
        " (and ready_to_ship orders to label)" if orders_modes and labels else "")
    print(f"{args.count} {what} per run, prefetch {args.prefetch}, "
          f"{args.rounds} rounds, {os.cpu_count()} cores, uvloop, prefix {prefix}", flush=True)
    try:
        connection = await aio_pika.connect(AMQP_URL)
        async with connection:
            await topology.declare(await connection.channel())
        for round_no in range(1, args.rounds + 1):
            for name in results:
                await purge(topology)
                run = f"{round_no}{name[0]}{uuid.uuid4().hex[:6]}"
                if name in LABELS_MODES:
                    rate, extra, ok = await labels_round(name, topology, run, args, tmp,
                                                         databases)
                else:
                    rate, extra, ok = await orders_round(name, topology, run, args, tmp,
                                                         databases)
                failures += not ok
                await purge(topology)  # the relayed notify.* messages: free the broker's memory
                results[name].append(rate)
                unit = "labels/s" if name in LABELS_MODES else "events/s"
                print(f"round {round_no} {name:>{width}}: {rate:8.0f} {unit}  {extra}",
                      flush=True)
    finally:
        for database in databases:
            await drop_pg_database(database)
        shutil.rmtree(tmp, ignore_errors=True)
        await delete_topology(topology)

    print("\nmedians")
    if orders_modes:
        print_medians(results, ("plain", *orders_modes), "events/s", args)
    if results.get("sqlite"):
        goal = statistics.median(results["sqlite"]) / statistics.median(results["plain"])
        print(f"\ngoal runner/sqlite >= 0.5x plain: {'met' if goal >= 0.5 else 'NOT met'} "
              f"({goal:.2f}x)")
    if labels:
        if orders_modes:
            print()
        print_medians(results, ("labels-plain", "carrier", "labels-sqlite", "labels-pg"),
                      "labels/s", args)
    if failures:
        print(f"{failures} run(s) failed verification", file=sys.stderr)
        return 1
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=None,
                        help=f"messages per run (default {DEFAULT_COUNT['orders']}, with only "
                             f"labels {DEFAULT_COUNT['labels']})")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--prefetch", type=int, default=100)
    parser.add_argument("--pg-concurrency", type=int, default=4,
                        help="batches at once for the pg-conc run")
    parser.add_argument("--processes", type=lambda text: [int(n) for n in text.split(",")],
                        default=[1, 2, 4],
                        help="with --only procs: how many consumer processes, e.g. 1,2,4")
    parser.add_argument("--only", action="append", choices=[*ORDERS_MODES, "labels", "procs"],
                        help="run only these (and plain); repeatable; `labels`: the labels "
                             "consumer against the EasyPost emulator (see above)")
    args = parser.parse_args()
    quiet_logging()
    return uvloop.run(main_async(args))


if __name__ == "__main__":
    raise SystemExit(main())
