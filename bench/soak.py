"""Soak and fault run: nothing accepted is lost, nothing is applied twice, while things break.

    python bench/soak.py [--store sqlite|postgresql|both] [--orders 3000] [--rate 150]
    python bench/soak.py --short            # the form CI runs: both stores, ~1,500 events each

For each store in turn it starts the real thing as separate processes, with a config of its
own (a unique broker prefix, short retry ladders): the ingress (`python -m router serve`) and
the orders, inventory, shipping, notifications, audit, labels and storefront consumers
(`python -m consumers NAME`), the EasyPost, Shopify and WooCommerce emulators (`python -m
emulators NAME`, processes of their own as the providers are: what they sold and hold
outlives every consumer killed; [labels] and [storefront] point at them), plus a
customer-portal receiver in this process that verifies every webhook with the official
`standardwebhooks` package.

A sender then behaves like the providers: it signs every webhook (Shopify orders and
fulfillments, WooCommerce orders, the inventory system's stock counts and received batches,
EasyPost tracker updates), keeps each delivery's id across its retries, retries anything but
2xx with back-off (up to 8 retries, as Shopify does, on a compressed clock), and sends a
share of deliberate duplicates of deliveries already accepted. Half the orders are ready to
ship (paid Shopify orders, WooCommerce `processing` ones): the labels consumer buys each a
label, the storefront consumer writes its tracking number back to the order's store. As
EasyPost does for a label it sold, the carrier's tracker updates for a third of those follow
as soon as the emulator has sold the label (they may overtake the label's commit); the other
shipped orders get a Shopify fulfillment with a tracking code the sender invents, and its
tracker updates. A few poison events are mixed
in (a received batch that would take an unknown SKU below zero): the inventory consumer must
dead-letter exactly those.

While it sends, faults are injected at fixed points of progress, in rounds (one per 4,000
orders, at least one; `--fault-rounds`): RabbitMQ stopped and started (`rabbitmqctl
stop_app` / `start_app`), a consumer SIGKILLed and restarted (orders in the first round,
then inventory, shipping and notifications in turn), the ingress SIGKILLed and restarted,
the portal receiver failing (503) for a while, and the store failing under the consumers:
on PostgreSQL every connection they hold ended (`pg_terminate_backend`, a few times over
`--outage` seconds; the server keeps running), on SQLite the write lock held by another
connection past the consumers' busy timeout. The new consumers in each round: the labels
consumer SIGKILLed while the carrier has sold a label the store has not recorded (watched
for, up to 20 s), the storefront consumer while a store holds a write-back the store has not
recorded as done; the carrier answering 503 to creates and buys for half `--outage`, then
losing the answer of 5 buys it did; the stores the same for fulfillmentCreate / the note. A
consumer's kill and restart and the store's failure take turns (a consumer starting on a
failing store exits: a fault not injected here).

Then, once every queue has drained, it reconciles the store, the queues and the receiver
against what the sender was told, working out what the store must hold from the accepted
deliveries alone:

    lost        accepted deliveries with no effect (no inbox claim; for orders, no order row;
                an event its consumer took that the audit consumer did not record)
                that are not poison
    doubled     effects applied twice: an order line stored twice or lines other than those
                sent, a tracking event in the history twice, a second label sold for an
                order (the carrier's count by reference), a second fulfillment (Shopify) or
                customer note (WooCommerce) with the label's tracking number
    labels      for each order accepted ready to ship: exactly 1 label sold by the carrier,
                its `labels` row bought with that tracking code, its shipment row linked to
                the order; exactly 1 fulfillment or customer note with that number at its
                store (nothing else written there), the write-back done, a WooCommerce order
                completed. An order never ready (unpaid, payment unknown) has no label and
                nothing written at its store (phantom otherwise)
    phantom     effects of deliveries never answered 2xx, order rows nobody sent
    wrong       any other state that is not what was sent: stock on_hand != initial +
                accepted deltas - units of the orders shipped, reserved != what the order
                lines hold or outside 0..on_hand, a shipment not at the furthest status
                accepted for it, an order not allocated / label_purchased / shipped /
                delivered as its payment, label and shipments say
    dead        dead letters found vs poison events sent, each read off the dead-letter queue
                and matched by event id (a duplicate delivery of a poison event is
                dead-lettered again: shown as a second copy, accounted for by the same
                poison event); nothing may be on any other dead-letter queue
    left        messages still on a work or retry queue
    owed        portal notifications in the outbox not received (verified) at least once;
                a webhook-id received again must carry the same payload
and prints one table per store with end-to-end latency: ingress accept -> effect (the inbox
claim's processed_at, stamped in the transaction that commits the effect, before its
COMMIT) and -> notification delivered (first verified receipt at the portal). Exit status
1 if anything is lost, doubled, phantom, wrong, left or owed, or the dead letters are not
exactly the poison events.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import os
import random
import shutil
import signal
import sqlite3
import sys
import tempfile
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import aio_pika
import aiohttp
import asyncpg
import orjson
from aiohttp import web
from standardwebhooks.webhooks import Webhook, WebhookVerificationError

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from consumers.outbound.notification import delivery_queues  # noqa: E402
from consumers.store import open_store  # noqa: E402
from consumers.store.sqlite import SQLITE_BUSY_TIMEOUT_MS  # noqa: E402
from router.broker.topology import Topology  # noqa: E402
from router.providers import signed_headers  # noqa: E402
from router.settings import load_settings  # noqa: E402
from tests.ports import free_port  # noqa: E402

AMQP_URL = os.environ.get("AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/")
PG_ADMIN_URL = os.environ.get("PG_ADMIN_URL", "postgresql://root@127.0.0.1:5432/postgres")
PORTAL_SECRET = "whsec_" + base64.b64encode(b"soak-portal-key-0123456789ab").decode()
ENV = {
    "SHOPIFY_WEBHOOK_SECRET": "soak-shopify",
    "WOOCOMMERCE_WEBHOOK_SECRET": "soak-woo",
    "PORTAL_WEBHOOK_TOKEN": "soak-portal",
    "INVENTORY_WEBHOOK_SECRET": "soak-inventory",
    "EASYPOST_WEBHOOK_SECRET": "soak-easypost",
    "AFTERSHIP_WEBHOOK_SECRET": "soak-aftership",
    "PORTAL_NOTIFY_SECRET": PORTAL_SECRET,
    "AMQP_URL": AMQP_URL,
    # the emulators' credentials ([labels] and [storefront] name them as env: references)
    "EASYPOST_API_KEY": "soak-easypost-key",
    "SHOPIFY_ADMIN_TOKEN": "shpat_soak",
    "WOO_CONSUMER_KEY": "ck_soak",
    "WOO_CONSUMER_SECRET": "cs_soak",
}
SKUS = [f"SOAK-{n:02d}" for n in range(20)]
INITIAL = 100_000
CONSUMERS = ("orders", "inventory", "shipping", "notifications", "audit", "labels",
             "storefront")
PORTAL_WANTS = ("order.allocated", "shipment.updated", "shipment.label_created")
CARRIER_AUTH = {"Authorization": "Basic " + base64.b64encode(
    f"{ENV['EASYPOST_API_KEY']}:".encode()).decode()}  # EasyPost: the key as Basic user
# The emulators the labels and storefront consumers call, and what each is started with.
EMULATORS = {
    "easypost": ["--key", ENV["EASYPOST_API_KEY"]],
    # Shopify's bucket is the emulator's default size (2,000 points) refilled as a Shopify
    # Plus shop's is, 1,000 points a second (shopify.dev/docs/api/usage/rate-limits): a
    # backlog of write-backs (each ~127 requested points here) is more than it holds, so the
    # storefront driver's pacing is exercised and a THROTTLED answer shows in the emulator's
    # counters, while the soak's 200 Shopify write-backs take ~25 s of refill, not the
    # ~4 min a standard plan's 100 a second would add to every CI run.
    "shopify": ["--token", ENV["SHOPIFY_ADMIN_TOKEN"], "--restore-rate", "1000"],
    "woocommerce": ["--key", ENV["WOO_CONSUMER_KEY"], "--secret", ENV["WOO_CONSUMER_SECRET"]],
}
MAX_RETRIES = 8  # Shopify retries a failed delivery 8 times
PROVIDER_LOST = 5  # a provider fault: after its 503s, this many answers lost after the work
LABEL_WAIT = 120.0  # seconds the carrier's tracker updates wait for a label to be sold
SAMPLES = ROOT / "config" / "samples"


def now_iso() -> str:
    return datetime.now().astimezone().isoformat()


def ts(text: str) -> float:
    return datetime.fromisoformat(text).timestamp()


# --- the workload ----------------------------------------------------------------------------


@dataclass
class Delivery:
    source: str
    topic: str | None
    body: bytes
    delivery_id: str
    consumer: str  # which consumer applies it
    poison: bool = False
    meta: dict[str, Any] = field(default_factory=dict)  # what it means, for the reconcile
    duplicate_of: Delivery | None = None
    attempts: int = 0
    statuses: list[str] = field(default_factory=list)
    accepted_at: float | None = None


def build_workload(orders: int, seed: int) -> list[Delivery]:
    """Deliveries in sending order, each with what it means (Delivery.meta)."""
    rng = random.Random(seed)
    run = uuid.uuid4().hex[:8]
    out: list[Delivery] = []
    shopify = orjson.loads((SAMPLES / "shopify-orders-create.json").read_bytes())
    woo = orjson.loads((SAMPLES / "woocommerce-order-created.json").read_bytes())
    fulfillment = orjson.loads((SAMPLES / "shopify-fulfillments-create.json").read_bytes())

    def stock(sku: str, *, on_hand: int | None = None, delta: int | None = None,
              poison: bool = False) -> None:
        event_id = f"inv-{run}-{len(out)}"
        body: dict[str, Any] = {"event_id": event_id, "sku": sku, "location": "main",
                                "as_of": "2026-11-28T00:00:00Z"}
        if on_hand is not None:
            body["on_hand"] = on_hand
        else:
            body["delta"] = delta
        out.append(Delivery("inventory", None, orjson.dumps(body), event_id, "inventory",
                            poison=poison, meta={"sku": sku, "delta": delta}))

    for sku in SKUS:
        stock(sku, on_hand=INITIAL)
    shipments: list[tuple[str, str]] = []
    placed = now_iso()
    for n in range(orders):
        lines = [(sku, rng.randint(1, 3)) for sku in rng.sample(SKUS, rng.randint(1, 3))]
        if n % 4 == 3:  # WooCommerce
            order_id = str(9_000_000 + n)
            body = {**woo, "id": int(order_id), "number": order_id,
                    "line_items": [{"id": i, "sku": s, "quantity": q, "name": s, "price": 1,
                                    "product_id": i, "variation_id": 0, "total": "1.00"}
                                   for i, (s, q) in enumerate(lines)]}
            # `processing` is paid: with its stock and address the order is ready to ship.
            out.append(Delivery("woocommerce", "order.created", orjson.dumps(body),
                                f"woo-{run}-{n}", "orders",
                                meta={"order_id": order_id, "lines": lines,
                                      "open": "ready_to_ship"}))
        else:
            order_id = str(5_000_000_000 + n)
            body = {**shopify, "id": int(order_id),
                    "line_items": [{"id": i, "sku": s, "quantity": q, "name": s, "price": "1.00"}
                                   for i, (s, q) in enumerate(lines)]}
            # The sample says nothing of payment: allocated, not gated. A quarter of the
            # orders are paid (ready to ship: a label, a fulfillment), a quarter pending (unpaid:
            # allocated, never ready, no label).
            paid = {1: "paid", 2: "pending"}.get(n % 4)
            if paid:
                body["financial_status"] = paid
            if paid == "pending":  # placed now: unpaid for less than unpaid_expiry
                body["created_at"] = body["updated_at"] = placed
            out.append(Delivery("shopify", "orders/create", orjson.dumps(body),
                                f"shop-{run}-{n}", "orders",
                                meta={"order_id": order_id, "lines": lines,
                                      "open": "ready_to_ship" if paid == "paid"
                                      else "allocated"}))
        order = out[-1]
        if n % 10 == 5:
            stock(lines[0][0], delta=rng.randint(5, 50))
        if n % 3 == 0 and order.meta["open"] == "ready_to_ship":
            # Shipped on the label the labels consumer buys: the carrier's tracker updates
            # for its tracking number follow once the carrier sold it (Sender.follow_label).
            order.meta["track"] = True
        elif n % 3 == 0:
            shipments.append((order_id, f"T{run}{n}"))
        if n % 250 == 125:
            sku = f"POISON-{run}-{n}"
            stock(sku, delta=-1, poison=True)
        # Ship orders placed a while ago (their order is most likely applied by now).
        if n >= 30 and shipments and rng.random() < 0.5:
            order_id, code = shipments.pop(0)
            body = {**fulfillment, "id": int(order_id[-6:]) + 1, "order_id": int(order_id),
                    "tracking_number": code, "tracking_company": "FedEx", "shipment_status": None}
            out.append(Delivery("shopify", "fulfillments/create", orjson.dumps(body),
                                f"ful-{run}-{code}", "shipping",
                                meta={"order_id": order_id, "code": code}))
            out += tracker_updates(f"ep-{run}-{code}", code, "FedEx")
    return out


def tracker_updates(prefix: str, code: str, carrier: str,
                    order_id: str | None = None) -> list[Delivery]:
    """EasyPost's tracker.updated for `code`, in transit then delivered (delivery ids
    PREFIX-0, PREFIX-1). `order_id`: the order the sender knows it ships (a label the labels
    consumer bought: the carrier knows its reference), for the reconcile only."""
    tracker = orjson.loads((SAMPLES / "easypost-tracker-updated.json").read_bytes())
    out = []
    for step, status in enumerate(("in_transit", "delivered")):
        at = f"2026-11-2{8 + step}T10:00:00Z"
        detail = {**tracker["result"]["tracking_details"][-1], "status": status,
                  "datetime": at}
        event = {**tracker, "id": f"{prefix}-{step}",
                 "result": {**tracker["result"], "tracking_code": code,
                            "carrier": carrier, "status": status, "updated_at": at,
                            "tracking_details": [detail]}}
        meta = {"code": code, "status": status} | ({"order_id": order_id} if order_id else {})
        out.append(Delivery("easypost", None, orjson.dumps(event), event["id"], "shipping",
                            meta=meta))
    return out


# --- the processes ---------------------------------------------------------------------------


class System:
    """The ingress and the four consumers as child processes."""

    def __init__(self, config: Path, store_url: str, port: int, tmp: Path) -> None:
        self.config, self.store_url, self.port, self.tmp = config, store_url, port, tmp
        self.procs: dict[str, asyncio.subprocess.Process] = {}
        self.env = {**os.environ, **ENV, "DATABASE_URL": store_url}

    async def start(self, name: str) -> None:
        log = open(self.tmp / f"{name}.log", "ab")  # noqa: SIM115, ASYNC230 - the child's
        if name == "ingress":
            args = ["-m", "router", "--config", str(self.config), "serve", "--port",
                    str(self.port)]
        else:
            args = ["-m", "consumers", name, "--config", str(self.config)]
        self.procs[name] = await asyncio.create_subprocess_exec(
            sys.executable, *args, cwd=ROOT, env=self.env, stdout=log, stderr=log)

    async def kill(self, name: str) -> None:
        proc = self.procs[name]
        proc.kill()
        await proc.wait()

    async def stop_all(self) -> dict[str, int]:
        for proc in self.procs.values():
            if proc.returncode is None:
                proc.send_signal(signal.SIGTERM)
        codes = {}
        for name, proc in self.procs.items():
            try:
                codes[name] = await asyncio.wait_for(proc.wait(), 40)
            except TimeoutError:
                proc.kill()
                codes[name] = await proc.wait()
        return codes


class Emulators:
    """EasyPost's, Shopify's and WooCommerce's APIs (`python -m emulators NAME`), each a
    process of its own as the providers are: what they sold and hold outlives every consumer
    the soak kills, and serving them takes nothing from the sender's event loop."""

    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.procs: dict[str, asyncio.subprocess.Process] = {}
        self.urls: dict[str, str] = {}
        self.session: aiohttp.ClientSession | None = None

    async def start(self) -> None:
        self.session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30))
        for name, options in EMULATORS.items():
            port = free_port()
            log = open(self.tmp / f"emulator-{name}.log", "ab")  # noqa: SIM115, ASYNC230
            self.procs[name] = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "emulators", name, "--port", str(port), *options,
                cwd=ROOT, stdout=log, stderr=log)
            self.urls[name] = f"http://127.0.0.1:{port}"
        for name in EMULATORS:
            deadline = time.monotonic() + 30
            while True:
                try:
                    await self.counters(name)
                    break
                except (aiohttp.ClientError, TimeoutError):
                    if time.monotonic() > deadline or self.procs[name].returncode is not None:
                        raise RuntimeError(f"the {name} emulator did not start") from None
                    await asyncio.sleep(0.1)

    async def counters(self, name: str) -> dict[str, Any]:
        """What the emulator sold, holds and was asked (GET /_emulator/counters)."""
        assert self.session is not None
        async with self.session.get(f"{self.urls[name]}/_emulator/counters") as response:
            response.raise_for_status()
            counters: dict[str, Any] = await response.json()
            return counters

    async def fault(self, name: str, **fault: Any) -> None:
        """POST /_emulator/faults (emulators/control.py Fault)."""
        assert self.session is not None
        async with self.session.post(f"{self.urls[name]}/_emulator/faults",
                                     json=fault) as response:
            response.raise_for_status()

    async def clear_faults(self, name: str) -> None:
        """DELETE /_emulator/faults: those not used up end."""
        assert self.session is not None
        async with self.session.delete(f"{self.urls[name]}/_emulator/faults") as response:
            response.raise_for_status()

    async def shipment(self, reference: str) -> dict[str, Any] | None:
        """The carrier's shipment for `reference` (EasyPost finds one by its reference), None
        if it has none; with the soak's API key, as the labels consumer asks."""
        assert self.session is not None
        async with self.session.get(f"{self.urls['easypost']}/v2/shipments/{reference}",
                                    headers=CARRIER_AUTH) as response:
            if response.status == 404:
                return None
            response.raise_for_status()
            shipment: dict[str, Any] = await response.json()
            return shipment

    async def stop(self) -> None:
        for proc in self.procs.values():
            if proc.returncode is None:
                proc.send_signal(signal.SIGTERM)
        for proc in self.procs.values():
            try:
                await asyncio.wait_for(proc.wait(), 10)
            except TimeoutError:
                proc.kill()
                await proc.wait()
        if self.session is not None:
            await self.session.close()


async def wait_ready(port: int, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    async with aiohttp.ClientSession() as session:
        while time.monotonic() < deadline:
            try:
                async with session.get(f"http://127.0.0.1:{port}/readyz") as response:
                    if response.status == 200:
                        return
            except aiohttp.ClientError:
                pass
            await asyncio.sleep(0.1)
    raise RuntimeError("the ingress did not become ready")


async def queue_depths(topology: Topology, names: list[str]) -> dict[str, tuple[int, int]]:
    """{queue: (messages, consumers)}; missing queues are left out."""
    result = {}
    async with await aio_pika.connect(AMQP_URL) as connection:
        for name in names:
            channel = await connection.channel()
            try:
                queue = await channel.declare_queue(name, passive=True)
                result[name] = (queue.declaration_result.message_count,
                                queue.declaration_result.consumer_count)
                await channel.close()
            except aio_pika.exceptions.AMQPException:
                pass
    return result


async def rabbitmqctl(*args: str) -> None:
    proc = await asyncio.create_subprocess_exec("rabbitmqctl", "-q", *args,
                                                stdout=asyncio.subprocess.DEVNULL)
    if await proc.wait() != 0:
        raise RuntimeError(f"rabbitmqctl {' '.join(args)} failed")


async def store_fault(store_url: str, database: str | None, seconds: float) -> None:
    """PostgreSQL: end every connection to the soak's database (the consumers' pools), three
    times over `seconds`, catching transactions in flight. SQLite: another connection holds
    the write lock past the consumers' busy timeout, so their transactions fail."""
    if database:
        conn = await asyncpg.connect(PG_ADMIN_URL)
        try:
            for _ in range(3):
                await conn.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                                   " WHERE datname = $1", database)
                await asyncio.sleep(seconds / 3)
        finally:
            await conn.close()
        return

    def hold() -> None:
        lock = sqlite3.connect(store_url[len("sqlite:///"):], timeout=60, isolation_level=None)
        try:
            lock.execute("BEGIN IMMEDIATE")
            time.sleep(SQLITE_BUSY_TIMEOUT_MS / 1000 + 1)
            lock.execute("ROLLBACK")
        finally:
            lock.close()

    await asyncio.to_thread(hold)


async def count(store_url: str, query: str) -> int:
    """One COUNT(*) read on a connection of its own, outside the store's transactions (on
    SQLite those take the write lock: a watcher must not hold up the consumers)."""
    if store_url.startswith("sqlite:///"):
        def read() -> int:
            conn = sqlite3.connect(store_url[len("sqlite:///"):], timeout=30)
            try:
                return int(conn.execute(query).fetchone()[0])
            finally:
                conn.close()

        return await asyncio.to_thread(read)
    conn = await asyncpg.connect(store_url)
    try:
        return int(await conn.fetchval(query))
    finally:
        await conn.close()


async def made_and_recorded(emulators: Emulators, store_url: str, consumer: str
                            ) -> tuple[int, int]:
    """(labels the carrier sold, labels the store holds as bought) for the labels consumer;
    (fulfillments and tracking notes the stores hold, write-backs the store holds as done)
    for the storefront consumer. The provider is read first: a purchase committed between
    the two reads cannot look uncommitted."""
    if consumer == "labels":
        made = (await emulators.counters("easypost"))["labels_sold"]
        query = "SELECT COUNT(*) FROM labels WHERE state = 'bought'"
    else:
        made = (await emulators.counters("shopify"))["fulfillments_created"]
        woo = await emulators.counters("woocommerce")
        made += sum(1 for order in woo["orders"].values() for note in order["notes"]
                    if note["customer_note"])
        query = "SELECT COUNT(*) FROM writebacks WHERE state = 'done'"
    return made, await count(store_url, query)


async def kill_in_window(system: System, emulators: Emulators, store_url: str,
                         consumer: str, timeout: float = 20.0) -> int:
    """SIGKILL the labels (storefront) consumer while the provider has answered a purchase
    (a write-back) that its store has not committed yet: watched for up to `timeout`
    seconds, then killed regardless. Returns how many it caught so (counted once it is dead,
    when nothing can commit them): each must still end as one label (one fulfillment)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            made, recorded = await made_and_recorded(emulators, store_url, consumer)
        except Exception:  # noqa: BLE001 - the store may be failing on purpose
            made = recorded = 0
        if made > recorded:
            break
        await asyncio.sleep(0.005)
    await system.kill(consumer)
    for _ in range(50):  # the store may be failing on purpose: ask until it answers
        try:
            made, recorded = await made_and_recorded(emulators, store_url, consumer)
            return made - recorded
        except Exception:  # noqa: BLE001
            await asyncio.sleep(0.2)
    return 0


async def provider_fault(emulators: Emulators, name: str, seconds: float,
                         *operations: str) -> None:
    """The provider answers 503 to every request of `operations` for `seconds`, and then does
    the last one's work (a label sold, a fulfillment written) but loses the answer (the
    connection dropped) PROVIDER_LOST times."""
    for operation in operations:
        await emulators.fault(name, status=503, count=1_000_000, operation=operation)
    await asyncio.sleep(seconds)
    await emulators.clear_faults(name)
    await emulators.fault(name, reset=True, count=PROVIDER_LOST, operation=operations[-1])


# --- the portal ------------------------------------------------------------------------------


class Portal:
    """The customer portal's webhook endpoint: verifies with `standardwebhooks`."""

    def __init__(self) -> None:
        self.received: dict[str, float] = {}  # webhook-id -> first verified receipt
        self.receipts = 0
        self.bad = 0
        self.failing = False
        self.inconsistent = 0  # receipts whose webhook-id was seen with another body
        self.body_of: dict[str, dict[str, Any]] = {}

    async def handle(self, request: web.Request) -> web.Response:
        if self.failing:
            return web.Response(status=503, headers={"Retry-After": "1"})
        body = await request.read()
        try:
            payload = Webhook(PORTAL_SECRET).verify(body, dict(request.headers))
        except WebhookVerificationError:
            self.bad += 1
            return web.Response(status=400)
        webhook_id = request.headers["webhook-id"]
        self.receipts += 1
        self.received.setdefault(webhook_id, time.time())
        if self.body_of.setdefault(webhook_id, payload) != payload:
            self.inconsistent += 1
        return web.Response(status=204)


# --- the sender ------------------------------------------------------------------------------


class Sender:
    def __init__(self, settings: Any, port: int, concurrency: int = 32) -> None:
        self.settings = settings
        self.base = f"http://127.0.0.1:{port}"
        self.slots = asyncio.Semaphore(concurrency)
        self.retried = 0

    async def send(self, session: aiohttp.ClientSession, d: Delivery) -> None:
        path = self.settings.sources[d.source].path
        async with self.slots:
            for attempt in range(MAX_RETRIES + 1):
                if attempt:
                    self.retried += 1
                    await asyncio.sleep(min(8.0, 0.5 * 2 ** (attempt - 1)))
                headers = signed_headers(self.settings, d.source, d.body, d.topic,
                                         delivery_id=d.delivery_id)
                d.attempts += 1
                try:
                    async with session.post(self.base + path, data=d.body,
                                            headers=headers) as response:
                        await response.read()
                        d.statuses.append(str(response.status))
                        if 200 <= response.status < 300:
                            d.accepted_at = time.time()
                            return
                except (aiohttp.ClientError, TimeoutError) as exc:
                    d.statuses.append(type(exc).__name__)

    async def follow_label(self, session: aiohttp.ClientSession, d: Delivery,
                           emulators: Emulators, out: list[Delivery]) -> None:
        """As EasyPost does for a label it sold: once the carrier has sold the label of order
        `d` (its reference is the order id), tracker updates for that tracking number, sent
        as soon as it is sold (they may overtake the labels consumer's commit). Each is added
        to `out`, the deliveries the reconcile reads. Given up after LABEL_WAIT seconds:
        then no updates are sent, and the order must end label_purchased."""
        deadline = time.monotonic() + LABEL_WAIT
        while True:
            await asyncio.sleep(1.0)
            if time.monotonic() > deadline:
                return
            try:
                shipment = await emulators.shipment(d.meta["order_id"])
            except (aiohttp.ClientError, TimeoutError):
                continue
            if shipment is not None and shipment.get("tracking_code"):
                break
        updates = tracker_updates(f"ep-{d.delivery_id}", shipment["tracking_code"],
                                  shipment["tracker"]["carrier"], d.meta["order_id"])
        for update in updates:
            out.append(update)
            await self.send(session, update)


# --- one run ---------------------------------------------------------------------------------


def write_config(tmp: Path, prefix: str, port: int, portal_url: str,
                 urls: dict[str, str]) -> Path:
    text = (ROOT / "config" / "router.toml").read_text()
    for old, new in [
        ('prefix = ""', f'prefix = "{prefix}"'),
        ("retry_ladder = [5, 15, 45]", "retry_ladder = [1, 2, 4]"),
        ("retry_ladder = [5, 300, 1800, 7200, 18000, 36000, 36000]",
         "retry_ladder = [1, 1, 2, 2, 4, 4, 8, 8]"),
        ("pause_after = 20", "pause_after = 100000"),
        ('mode = "production"', 'mode = "development"'),
        ("https://portal.example.com/webhooks/fulfillment", portal_url),
        ("enabled = false              # switch on once the portal has the secret",
         "enabled = true\nallow_private = true"),
        ("rate_limit = { rate = 20, burst = 40 }", "rate_limit = { rate = 1000, burst = 1000 }"),
        ('= "mappings/', f'= "{ROOT}/config/mappings/'),
        ('= "samples/', f'= "{ROOT}/config/samples/'),
        ('schemas = "schemas"', f'schemas = "{ROOT}/config/schemas"'),
        ("port = 8080", f"port = {port}"),
        # [labels] and [storefront] on, pointed at the emulators
        ("enabled = false              # its queue and consumer exist only once switched on",
         "enabled = true"),
        ('base_url = "https://api.easypost.com/v2"', f'base_url = "{urls["easypost"]}/v2"'),
        ("enabled = false              # on: its queue and the consumer are declared and may"
         " run", "enabled = true"),
    ]:
        if old not in text:
            raise RuntimeError(f"config/router.toml changed: {old!r} not found")
        text = text.replace(old, new)
    text += (f'\n[storefront.shopify]\nbase_url = "{urls["shopify"]}"\n'
             'access_token = "env:SHOPIFY_ADMIN_TOKEN"\n'
             f'\n[storefront.woocommerce]\nbase_url = "{urls["woocommerce"]}"\n'
             'consumer_key = "env:WOO_CONSUMER_KEY"\n'
             'consumer_secret = "env:WOO_CONSUMER_SECRET"\n')
    path = tmp / "router.toml"
    path.write_text(text)
    return path


def describe_faults(faults: list[tuple[str, float]]) -> str:
    """`broker 5x (<= 6.1 s), orders 2x (<= 1.0 s), ...` in the order they first happened."""
    kinds: dict[str, list[float]] = {}
    for what, seconds in faults:
        kinds.setdefault(what, []).append(seconds)
    return ", ".join(f"{what} {len(times)}x (<= {max(times):.1f} s)"
                     for what, times in kinds.items())


def pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    values = sorted(values)
    return values[min(len(values) - 1, int(q * len(values)))]


async def run_once(kind: str, args: argparse.Namespace) -> dict[str, Any]:
    prefix = f"soak-{uuid.uuid4().hex[:6]}."
    tmp = Path(tempfile.mkdtemp(prefix="soak-"))
    database = None
    if kind == "sqlite":
        store_url = f"sqlite:///{tmp / 'soak.sqlite3'}"
    else:
        database = f"soak_{uuid.uuid4().hex}"
        conn = await asyncpg.connect(PG_ADMIN_URL)
        await conn.execute(f'CREATE DATABASE "{database}"')
        await conn.close()
        store_url = PG_ADMIN_URL.rsplit("/", 1)[0] + f"/{database}"
    portal = Portal()
    app = web.Application()
    app.router.add_post("/portal", portal.handle)
    receiver = web.AppRunner(app, access_log=None)
    await receiver.setup()
    portal_port = free_port()
    await web.TCPSite(receiver, "127.0.0.1", portal_port).start()
    port = free_port()
    emulators = Emulators(tmp)
    try:
        await emulators.start()
        config = write_config(tmp, prefix, port, f"http://127.0.0.1:{portal_port}/portal",
                              emulators.urls)
        settings = load_settings(config, environ=ENV)
    except BaseException:
        await emulators.stop()
        await receiver.cleanup()
        raise
    topology = Topology.of(settings.broker)  # with the labels and storefront queues
    # Every subscription's queues (the notifications consumer declares them all), and the
    # sources' hold queues (the ingress declares them): nothing the soak sends may be held.
    extra_queues = [spec.name for spec in delivery_queues(topology, settings)]
    extra_queues += [spec.name for spec in topology.hold_queues(settings.sources)]
    system = System(config, store_url, port, tmp)
    deliveries = build_workload(args.orders, args.seed)
    duplicates: list[Delivery] = []
    faults: list[tuple[str, float]] = []
    # What a kill of the labels or storefront consumer caught between the provider's answer
    # and the commit: labels sold (fulfillments written) the store had not recorded.
    caught: Counter[str] = Counter()
    result: dict[str, Any] = {"store": kind}
    try:
        await system.start("ingress")
        await wait_ready(port)
        for name in CONSUMERS:
            await system.start(name)
        main_queues = [topology.queue(n) for n in CONSUMERS]
        deadline = time.monotonic() + 60
        while True:
            depths = await queue_depths(topology, main_queues + extra_queues[:1])
            if len(depths) == len(main_queues) + 1 and all(c >= 1 for _, c in depths.values()):
                break
            if time.monotonic() > deadline:
                raise RuntimeError(f"consumers did not start: {depths}")
            await asyncio.sleep(0.2)

        sender = Sender(settings, port)
        rng = random.Random(args.seed + 1)
        done = 0
        total = len(deliveries)
        # Each round: the broker, then one consumer (a different one each round), then the
        # ingress, then the portal, then the store, spread over its share of the run.
        rounds = args.fault_rounds or max(1, args.orders // 4000)
        marks = {}
        for r in range(rounds):
            share = total / rounds
            for at, what in ((0.2, "broker"), (0.4, CONSUMERS[r % len(CONSUMERS)]),
                             (0.45, "kill labels"), (0.55, "kill storefront"),
                             (0.6, "ingress"), (0.7, "carrier"), (0.75, "portal"),
                             (0.8, "shop"), (0.9, "store")):
                marks[int(share * (r + at))] = what

        # The store fault waits for the broker: while it is away the consumers get no
        # messages, and a store failing under idle consumers tests nothing.
        broker_up = asyncio.Event()
        broker_up.set()

        # A consumer (re)starting while the store fails exits (its start-up relays the outbox
        # unsent, once): a fault of its own, not one this soak injects. So a consumer's kill
        # and restart and the store's failure take turns.
        store_quiet = asyncio.Lock()

        async def restart(name: str) -> None:
            """Start a killed consumer a second later; back once it consumes again."""
            await asyncio.sleep(1.0)
            await system.start(name)
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline:
                await broker_up.wait()
                try:
                    depth = await queue_depths(topology, [topology.queue(name)])
                except (aio_pika.exceptions.AMQPError, OSError):
                    depth = {}  # the broker going away: ask again
                if depth.get(topology.queue(name), (0, 0))[1] >= 1:
                    return
                await asyncio.sleep(0.2)

        async def fault(what: str) -> None:
            started = time.monotonic()
            if what == "broker":
                broker_up.clear()
                try:
                    await rabbitmqctl("stop_app")
                    await asyncio.sleep(args.outage)
                finally:
                    await rabbitmqctl("start_app")
                    await rabbitmqctl("await_startup")
                    broker_up.set()
            elif what == "store":
                await broker_up.wait()
                async with store_quiet:
                    started = time.monotonic()
                    await store_fault(store_url, database, args.outage)
            elif what.startswith("kill "):
                what = what.removeprefix("kill ")
                async with store_quiet:
                    caught[what] += await kill_in_window(system, emulators, store_url, what)
                    await restart(what)
            elif what == "carrier":
                # half the outage: the soak's short retry ladder (1, 2, 4 s) outlasts it
                await provider_fault(emulators, "easypost", args.outage / 2, "create_shipment",
                                     "buy_shipment")
            elif what == "shop":
                await asyncio.gather(
                    provider_fault(emulators, "shopify", args.outage / 2, "fulfillmentCreate"),
                    provider_fault(emulators, "woocommerce", args.outage / 2, "create_note"))
            elif what == "ingress":
                await system.kill(what)
                await asyncio.sleep(1.0)
                await system.start(what)
                await wait_ready(port)
            elif what in system.procs:
                async with store_quiet:
                    await system.kill(what)
                    await restart(what)
            else:
                portal.failing = True
                await asyncio.sleep(args.outage)
                portal.failing = False
            faults.append((what, time.monotonic() - started))

        started = time.monotonic()
        tasks: list[asyncio.Task[None]] = []
        fault_tasks: list[asyncio.Task[None]] = []
        timeout = aiohttp.ClientTimeout(total=10)
        async with aiohttp.ClientSession(timeout=timeout) as session:
            for d in list(deliveries):  # follow_label adds the carrier's tracker updates
                tasks.append(asyncio.create_task(sender.send(session, d)))
                if d.meta.get("track"):
                    tasks.append(asyncio.create_task(
                        sender.follow_label(session, d, emulators, deliveries)))
                done += 1
                if done in marks:
                    fault_tasks.append(asyncio.create_task(fault(marks[done])))
                # A share of duplicates of what was already accepted (a provider's retry
                # after a lost answer).
                if rng.random() < args.duplicates:
                    accepted = [x for x in deliveries[:done] if x.accepted_at]
                    if accepted:
                        original = rng.choice(accepted)
                        copy = Delivery(original.source, original.topic, original.body,
                                        original.delivery_id, original.consumer,
                                        duplicate_of=original)
                        tasks.append(asyncio.create_task(sender.send(session, copy)))
                        duplicates.append(copy)
                await asyncio.sleep(1.0 / args.rate)
            await asyncio.gather(*tasks)
            await asyncio.gather(*fault_tasks)
        send_time = time.monotonic() - started

        # Wait until everything has drained: work and retry queues empty, outbox all sent,
        # the portal has every notification it is owed.
        all_queues = topology.names() + extra_queues
        busy = [q for q in all_queues if not q.endswith(".dead") and not q.endswith("unrouted")]
        store = open_store(store_url)
        await store.open()
        try:
            deadline = time.monotonic() + args.drain_timeout
            # A retried message between its retry queue and its work queue (or in a
            # consumer's hands) is on no queue's count: drained must hold for longer than
            # the longest retry delay.
            settle = max(settings.broker.retry_ladder) + 1.0
            quiet_since: float | None = None
            while True:
                depths = await queue_depths(topology, busy)
                async with store.transaction() as tx:
                    unsent = await tx.fetchval(
                        "SELECT COUNT(*) FROM outbox WHERE sent_at IS NULL")
                    owed_ids = [r["message_id"] for r in await tx.fetch(
                        "SELECT message_id FROM outbox WHERE kind IN"
                        f" ({', '.join(f'${n}' for n in range(1, len(PORTAL_WANTS) + 1))})",
                        *PORTAL_WANTS)]
                owed = [m for m in owed_ids if m not in portal.received]
                quiet = not any(n for n, _ in depths.values()) and not unsent and not owed
                quiet_since = (quiet_since or time.monotonic()) if quiet else None
                drained = quiet_since is not None and time.monotonic() - quiet_since >= settle
                if drained or time.monotonic() > deadline:
                    break
                await asyncio.sleep(0.5)
            drain_time = time.monotonic() - started - send_time
            codes = await system.stop_all()
            final = await queue_depths(topology, all_queues)
            dead = await dead_letters(topology.dead_queue("inventory"))
            providers = await provider_state(emulators, deliveries)
            result.update(await reconcile(store, deliveries, portal, owed, final, dead,
                                          providers))
        finally:
            await store.close()
        result.update(sent=len(deliveries), duplicates=len(duplicates),
                      retried=sender.retried, faults=faults, send_time=send_time,
                      drain_time=drain_time, exit_codes=codes, unsent=unsent, drained=drained,
                      caught=dict(caught))
    finally:
        await system.stop_all()
        await emulators.stop()
        await receiver.cleanup()
        try:
            async with await aio_pika.connect(AMQP_URL) as connection:
                channel = await connection.channel()
                await topology.delete(channel)
                for name in extra_queues:
                    await channel.queue_delete(name)
        except Exception as exc:  # noqa: BLE001 - clean-up must not hide the result
            print(f"clean-up of {prefix} failed: {exc}", file=sys.stderr)
        if database:
            conn = await asyncpg.connect(PG_ADMIN_URL)
            await conn.execute(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')
            await conn.close()
        if not result.get("drained") or any(result.get("exit_codes", {}).values()):
            show_log_tails(tmp, result.get("exit_codes", {}))
        if args.keep:
            print(f"logs kept in {tmp}", file=sys.stderr)
        else:
            shutil.rmtree(tmp, ignore_errors=True)
    return result


def show_log_tails(tmp: Path, codes: dict[str, int], lines: int = 40) -> None:
    """A run that did not drain or whose processes did not exit 0: the end of each process's
    log on stderr (the logs themselves go with the temporary directory, and CI keeps only
    its output), the ones that exited otherwise than 0 first."""
    logs = sorted(tmp.glob("*.log"), key=lambda log: codes.get(log.stem, 0) == 0)
    for log in logs:
        tail = log.read_text(errors="replace").splitlines()[-lines:]
        code = codes.get(log.stem)
        print(f"--- last {len(tail)} lines of {log.name}"
              f"{'' if code is None else f' (exit {code})'}", file=sys.stderr)
        for line in tail:
            print(f"    {line}", file=sys.stderr)


async def dead_letters(queue: str) -> list[str]:
    """The event ids of the messages on a dead-letter queue (read, left in place)."""
    ids = []
    async with await aio_pika.connect(AMQP_URL) as connection:
        channel = await connection.channel()
        dead = await channel.declare_queue(queue, passive=True)
        while (message := await dead.get(no_ack=False, fail=False)) is not None:
            ids.append(str(message.message_id or orjson.loads(message.body).get("id")))
        await channel.close()  # unacknowledged: they go back to the queue
    return ids


def ready_orders(deliveries: list[Delivery]) -> set[str]:
    """The orders accepted paid, allocated and addressed: each must get one label."""
    return {d.meta["order_id"] for d in deliveries
            if d.accepted_at and d.meta.get("open") == "ready_to_ship"}


@dataclass
class Providers:
    """What the emulators hold at the end."""

    sold: dict[str, int]  # the carrier's labels sold, by reference (the order id)
    codes: dict[str, str | None]  # order id -> the tracking code of its carrier shipment
    written: dict[str, list[str]]  # order id -> its store's fulfillments' tracking numbers
                                   # (Shopify) or its customer notes (WooCommerce)
    woo_status: dict[str, str]  # WooCommerce order id -> its status at the store
    throttled: int  # the Shopify emulator's THROTTLED answers (the driver paces to avoid them)


async def provider_state(emulators: Emulators, deliveries: list[Delivery]) -> Providers:
    sold = (await emulators.counters("easypost"))["labels_by_reference"]
    codes = {}
    for order_id in sorted(ready_orders(deliveries) | set(sold)):
        shipment = await emulators.shipment(order_id)
        codes[order_id] = shipment.get("tracking_code") if shipment else None
    shopify = await emulators.counters("shopify")
    shop = shopify["orders"]
    written = {order_id: [info["number"] for f in order["fulfillments"]
                          for info in f["trackingInfo"]] for order_id, order in shop.items()}
    woo = (await emulators.counters("woocommerce"))["orders"]
    written |= {order_id: [note["note"] for note in order["notes"] if note["customer_note"]]
                for order_id, order in woo.items()}  # not its own status-change notes
    return Providers(sold, codes, written,
                     {order_id: order["status"] for order_id, order in woo.items()},
                     int(shopify["requests"].get("THROTTLED", 0)))


async def reconcile(store: Any, deliveries: list[Delivery], portal: Portal, owed: list[str],
                    final: dict[str, tuple[int, int]], dead: list[str],
                    providers: Providers) -> dict[str, Any]:
    """What the store, the queues and the portal hold against what the sender was told."""
    accepted = {d.delivery_id: d for d in deliveries if d.accepted_at}
    never = {d.delivery_id for d in deliveries if not d.accepted_at}
    poison = {d.delivery_id for d in deliveries if d.poison}
    async with store.transaction() as tx:
        inbox = {(r["consumer"], r["event_id"]): r["processed_at"] for r in await tx.fetch(
            "SELECT consumer, event_id, processed_at FROM inbox")}
        orders = {r["order_id"]: r["status"] for r in await tx.fetch(
            "SELECT order_id, status FROM orders")}
        lines = Counter((r["order_id"], r["sku"], r["quantity"]) for r in await tx.fetch(
            "SELECT order_id, sku, quantity FROM order_lines"))
        history = await tx.fetch(
            "SELECT event_id, COUNT(*) AS n FROM shipment_events GROUP BY event_id"
            " HAVING COUNT(*) > 1")
        shipments = {r["tracking_code"]: r["status"] for r in await tx.fetch(
            "SELECT tracking_code, status FROM shipments")}
        stock = {r["sku"]: r for r in await tx.fetch(
            "SELECT sku, on_hand, reserved FROM stock WHERE location = 'main'")}
        reserved = {r["sku"]: r["reserved"] for r in await tx.fetch(
            "SELECT sku, SUM(reserved) AS reserved FROM order_lines GROUP BY sku")}
        labels = {r["order_id"]: r for r in await tx.fetch(
            "SELECT order_id, state, tracking_code, carrier FROM labels")}
        shipped_by = {(r["tracking_code"], r["carrier"]): r["order_id"] for r in await tx.fetch(
            "SELECT tracking_code, carrier, order_id FROM shipments")}
        writebacks = {(r["order_id"], r["tracking_code"]): r["state"] for r in await tx.fetch(
            "SELECT order_id, tracking_code, state FROM writebacks")}

    # What the accepted deliveries say the store must hold, worked out from the workload
    # alone (never from the store's own bookkeeping).
    want_orders = {d.meta["order_id"]: d.meta["lines"] for d in accepted.values()
                   if d.consumer == "orders"}
    deltas: Counter[str] = Counter()
    for d in accepted.values():
        if d.consumer == "inventory" and d.meta["delta"] is not None and not d.poison:
            deltas[d.meta["sku"]] += d.meta["delta"]
    linked = {d.meta["code"]: d.meta["order_id"] for d in accepted.values()
              if "code" in d.meta and "order_id" in d.meta}
    furthest: dict[str, str] = {}
    for d in accepted.values():
        if d.meta.get("status"):
            code = d.meta["code"]
            if furthest.get(code) != "delivered":
                furthest[code] = d.meta["status"]
    shipped_units: Counter[str] = Counter()
    # A ready order gets its label: label_purchased (until its carrier's tracking moves it).
    want_status = {d.meta["order_id"]: {"ready_to_ship": "label_purchased"}.get(
        d.meta["open"], d.meta["open"]) for d in accepted.values() if "open" in d.meta}
    for code, status in furthest.items():
        order_id = linked.get(code)
        if order_id in want_orders:
            want_status[order_id] = "delivered" if status == "delivered" else "shipped"
            for sku, quantity in want_orders[order_id]:
                shipped_units[sku] += quantity

    lost = [i for i, d in accepted.items() if (d.consumer, i) not in inbox and i not in poison]
    # Every event its consumer took is recorded by the audit consumer too (once: its key).
    lost += [f"audit {i}" for i, d in accepted.items()
             if (d.consumer, i) in inbox and ("audit", i) not in inbox]
    lost += [f"order {o}" for o in want_orders if o not in orders]
    phantom = [i for i in never if any((c, i) in inbox for c in CONSUMERS)]
    phantom += [f"order {o}" for o in orders if o not in want_orders]
    doubled = [f"order {o} line {sku} x{n}" for (o, sku, _), n in lines.items() if n > 1]
    for order_id, order_lines in want_orders.items():
        stored = sorted((sku, q) for (o, sku, q) in lines if o == order_id)
        if order_id in orders and stored != sorted(order_lines):
            doubled.append(f"order {order_id}: lines {stored}, sent {sorted(order_lines)}")
    doubled += [f"tracking event {r['event_id']} x{r['n']}" for r in history]
    wrong = []  # effects that are neither lost nor doubled, but not what was sent
    for sku in SKUS:
        row = stock.get(sku)
        want = INITIAL + deltas[sku] - shipped_units[sku]
        if row is None or row["on_hand"] != want:
            wrong.append(f"stock {sku}: on_hand {row and row['on_hand']}, want {want}")
        elif row["reserved"] != (reserved.get(sku) or 0) or not 0 <= row["reserved"] <= want:
            wrong.append(f"stock {sku}: reserved {row['reserved']}, lines hold "
                         f"{reserved.get(sku) or 0}, on_hand {row['on_hand']}")
    wrong += [f"shipment {code}: {shipments.get(code)}, want {status}"
              for code, status in furthest.items() if shipments.get(code) != status]
    wrong += [f"order {o}: {orders[o]}, want {status}" for o, status in want_status.items()
              if o in orders and orders[o] != status]

    found = labels_and_fulfillments(ready_orders(deliveries), providers, labels, shipped_by,
                                    writebacks)
    lost += found["lost"]
    doubled += found["doubled"]
    phantom += found["phantom"]
    wrong += found["wrong"]

    dead_unexplained = [i for i in dead if i not in poison]
    # A duplicate delivery (or a redelivery) of a poison event is dead-lettered again: a
    # second copy of the same event id, accounted for by the same poison event.
    all_dead = sum(n for q, (n, _) in final.items() if q.endswith(".dead"))
    left = sum(n for q, (n, _) in final.items() if not q.endswith(".dead"))

    applied = [(d, inbox[(d.consumer, i)]) for i, d in accepted.items()
               if (d.consumer, i) in inbox]
    to_effect = [max(0.0, ts(at) - d.accepted_at) * 1000 for d, at in applied]
    to_notify = []
    for message_id, got in portal.received.items():
        d = accepted.get(portal.body_of[message_id].get("cause"))
        if d is not None:
            to_notify.append(max(0.0, got - d.accepted_at) * 1000)
    return {
        "accepted": len(accepted), "never_accepted": len(never), "applied": len(applied),
        "lost": len(lost), "lost_ids": lost[:5], "doubled": len(doubled),
        "doubled_what": doubled[:5], "phantom": len(phantom),
        "phantom_what": phantom[:5], "wrong": wrong[:5],
        "wrong_count": len(wrong), "orders": len(orders),
        "shipments_delivered": sum(1 for v in shipments.values() if v == "delivered"),
        "dead_expected": len(poison), "dead_found": len(set(dead) & poison),
        "dead_copies": len(dead) - len(set(dead)), "dead_elsewhere": all_dead - len(dead),
        "dead_unexplained": dead_unexplained[:5] + (["missing: " + i for i in
                                                      sorted(poison - set(dead))[:5]]),
        "left": left, "owed": len(owed), "notified": len(portal.received),
        "portal_receipts": portal.receipts, "bad_signatures": portal.bad,
        "inconsistent": portal.inconsistent, **found["figures"],
        "effect_ms": (pct(to_effect, 0.5), pct(to_effect, 0.95), pct(to_effect, 0.99)),
        "notify_ms": (pct(to_notify, 0.5), pct(to_notify, 0.95), pct(to_notify, 0.99)),
    }


def labels_and_fulfillments(ready: set[str], providers: Providers,
                            labels: dict[str, Any], shipped_by: dict[tuple[str, str], str],
                            writebacks: dict[tuple[str, str], str]) -> dict[str, Any]:
    """Each ready order: one label sold by the carrier (reference = order id), its `labels`
    row bought with that tracking code, the shipment row linked to the order, and one
    fulfillment (Shopify) or customer note (WooCommerce, the order completed) at its store
    carrying that code, its write-back done. No order that never became ready has a label or
    a write-back."""
    lost, doubled, phantom, wrong = [], [], [], []
    bought = written = 0
    for order_id in sorted(ready):
        sold, code = providers.sold.get(order_id, 0), providers.codes.get(order_id)
        if sold == 0:
            lost.append(f"label for order {order_id}")
            continue
        bought += sold == 1
        if sold > 1:
            doubled.append(f"order {order_id}: {sold} labels sold")
        row = labels.get(order_id)
        if row is None or row["state"] != "bought" or row["tracking_code"] != code:
            wrong.append(f"label of order {order_id}: {row and dict(row)}, sold {code}")
            continue
        if code is None or shipped_by.get((code, row["carrier"].lower())) != order_id:
            wrong.append(f"shipment {code} not linked to order {order_id}")
        at_store = providers.written.get(order_id, [])
        ours = [w for w in at_store if code and code in w]
        written += len(ours) == 1
        if not ours:
            lost.append(f"fulfillment of order {order_id} ({code})")
        elif len(ours) > 1:
            doubled.append(f"order {order_id}: {len(ours)} fulfillments for {code}")
        if len(at_store) != len(ours):
            wrong.append(f"order {order_id} at its store: {at_store}, want {code}")
        if code and writebacks.get((order_id, code)) != "done":
            wrong.append(f"write-back of order {order_id}: {writebacks.get((order_id, code))}")
        if order_id in providers.woo_status and providers.woo_status[order_id] != "completed":
            wrong.append(f"WooCommerce order {order_id}: {providers.woo_status[order_id]}")
    phantom += [f"label for order {o} (never ready)" for o in providers.sold if o not in ready]
    phantom += [f"labels row for order {o} (never ready)" for o in labels if o not in ready]
    phantom += [f"write-back to order {o} (never ready)" for o, at_store in
                providers.written.items() if at_store and o not in ready]
    return {"lost": lost, "doubled": doubled, "phantom": phantom, "wrong": wrong, "figures": {
        "labels_expected": len(ready), "labels_bought": bought,
        "labels_doubled": sum(n - 1 for n in providers.sold.values() if n > 1),
        "fulfillments_written": written, "shopify_throttled": providers.throttled,
        "fulfillments_doubled": sum(max(0, sum(1 for w in at_store if code in w) - 1)
                                    for o, at_store in providers.written.items()
                                    if (code := providers.codes.get(o)))}}


def ok(r: dict[str, Any]) -> bool:
    return (r["labels_bought"] == r["labels_expected"] == r["fulfillments_written"]
            and r["lost"] == 0 and r["doubled"] == 0 and r["phantom"] == 0 and r["left"] == 0
            and r["wrong_count"] == 0 and r["owed"] == 0 and r["bad_signatures"] == 0
            and r["inconsistent"] == 0 and r["drained"] and not r["dead_unexplained"]
            and r["dead_found"] == r["dead_expected"] and r["dead_elsewhere"] == 0
            and all(code == 0 for code in r["exit_codes"].values()))


def report(r: dict[str, Any]) -> None:
    e, n = r["effect_ms"], r["notify_ms"]
    rows = [
        ("store", r["store"]),
        ("sent (deliveries)", r["sent"]),
        ("accepted (2xx)", r["accepted"]),
        ("never accepted", r["never_accepted"]),
        ("duplicates sent", r["duplicates"]),
        ("retried by sender", r["retried"]),
        ("faults injected", describe_faults(r["faults"])),
        ("applied", r["applied"]),
        ("lost (must be 0)", f"{r['lost']} {r['lost_ids'] or ''}" + (
            f" (not drained: up to {r['left']} of these may still be on a queue)"
            if r["lost"] and r["left"] else "")),
        ("doubled (must be 0)", f"{r['doubled']} {r['doubled_what'] or ''}"),
        ("phantom (must be 0)", f"{r['phantom']} {r['phantom_what'] or ''}"),
        ("wrong state (must be 0)", f"{r['wrong_count']} {r['wrong'] or ''}"),
        ("orders stored / shipments delivered", f"{r['orders']} / {r['shipments_delivered']}"),
        ("labels bought / expected (doubled)", f"{r['labels_bought']} / {r['labels_expected']}"
                                               f" ({r['labels_doubled']})"),
        ("fulfillments written / expected (doubled)",
         f"{r['fulfillments_written']} / {r['labels_expected']} ({r['fulfillments_doubled']})"),
        ("Shopify THROTTLED answers", r["shopify_throttled"]),
        ("killed between answer and commit", ", ".join(
            f"{k} with {v} uncommitted" for k, v in r["caught"].items()) or "-"),
        ("dead-lettered (expected/found)", f"{r['dead_expected']} / {r['dead_found']}"
                                           f" {r['dead_unexplained'] or ''}" + (
            f" (+{r['dead_copies']} second copies of poison events, from duplicate"
            " deliveries)" if r["dead_copies"] else "") + (
            f"; {r['dead_elsewhere']} on other dead-letter queues (must be 0)"
            if r["dead_elsewhere"] else "")),
        ("left on queues (must be 0)", r["left"]),
        ("notifications owed not received", r["owed"]),
        ("notifications received (receipts)", f"{r['notified']} ({r['portal_receipts']})"),
        ("same webhook-id, different body", r["inconsistent"]),
        ("accept -> effect p50/p95/p99 ms", f"{e[0]:.0f} / {e[1]:.0f} / {e[2]:.0f}"),
        ("accept -> notified p50/p95/p99 ms", f"{n[0]:.0f} / {n[1]:.0f} / {n[2]:.0f}"),
        ("send / drain time", f"{r['send_time']:.1f} s / {r['drain_time']:.1f} s"
                              f"{'' if r['drained'] else ' (NOT drained in time)'}"),
        ("outbox rows unsent at the end", r["unsent"]),
        ("exit codes on SIGTERM", ", ".join(f"{k} {v}" for k, v in r["exit_codes"].items())),
        ("result", "PASS" if ok(r) else "FAIL"),
    ]
    width = max(len(k) for k, _ in rows)
    for key, value in rows:
        print(f"{key:<{width}}  {value}")
    print(flush=True)


async def main_async(args: argparse.Namespace) -> int:
    stores = ["sqlite", "postgresql"] if args.store == "both" else [args.store]
    failures = 0
    for kind in stores:
        result = await run_once(kind, args)
        report(result)
        failures += not ok(result)
    return 1 if failures else 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--store", choices=["sqlite", "postgresql", "both"], default="both")
    parser.add_argument("--orders", type=int, default=3000)
    parser.add_argument("--rate", type=float, default=150.0, help="new deliveries per second")
    parser.add_argument("--duplicates", type=float, default=0.05,
                        help="share of deliberate duplicate deliveries")
    parser.add_argument("--outage", type=float, default=3.0,
                        help="seconds the broker, the portal and the store stay down")
    parser.add_argument("--drain-timeout", type=float, default=180.0)
    parser.add_argument("--seed", type=int, default=20261128)
    parser.add_argument("--fault-rounds", type=int, default=0,
                        help="rounds of faults (default: one per 4,000 orders, at least one)")
    parser.add_argument("--short", action="store_true",
                        help="the CI form: 800 orders (~1,500 deliveries) per store")
    parser.add_argument("--keep", action="store_true", help="keep the processes' logs")
    args = parser.parse_args()
    if args.short:
        args.orders = 800
    return asyncio.run(main_async(args))


if __name__ == "__main__":
    raise SystemExit(main())
