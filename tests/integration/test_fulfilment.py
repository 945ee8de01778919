"""One order followed to the door through real processes, as a user runs them (issue 20's
"Done when"): the ingress (`python -m router serve`), one `python -m consumers NAME` per
consumer with [labels] and [storefront] switched on, and the three emulators started by hand
(`python -m emulators easypost|shopify|woocommerce`), on both stores.

A signed order of the store's documented shape, paid, with stock -> one label bought at the
EasyPost emulator -> the store's emulator holds one write-back with that tracking number
(Shopify: a fulfillment; WooCommerce: a customer note, the order completed) -> EasyPost's
signed `tracker.updated` for that number, in_transit then delivered -> the order `delivered`,
and `webhook-router trace ORDER` tells it. The notifications that drive the label and the
write-back delivered again (as a replay would) change nothing; nothing is left on a queue.
"""

from __future__ import annotations

import asyncio
import dataclasses
import os
import signal
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pytest
from ports import free_port
from test_consumer_process import Ingress, wait_until, write_test_config
from test_labels import depth, notifications, one, publish
from test_storefront import declared  # noqa: F401  (fixture: the labels and storefront queues)

from consumers.store import Store, open_store
from router.broker.topology import Topology
from router.settings import Settings

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[2]
PROVIDERS = ROOT / "tests" / "fixtures" / "providers"
# Documented bodies (tests/fixtures/providers/README.md says where each came from): Shopify's
# order 450789469 (its own library's fixture, API 2024-04, paid then partially refunded);
# WooCommerce's order 727 from its REST API docs (processing = paid); EasyPost's
# `tracker.updated` Event from its client library's webhook fixture.
SHOPIFY_ORDER = (PROVIDERS / "shopify" / "2024-04-order-450789469.json").read_bytes()
WOO_ORDER = (PROVIDERS / "woocommerce" / "order-727.json").read_bytes()
TRACKER_UPDATED = (PROVIDERS / "easypost" / "tracker-updated.json").read_bytes()
SECRETS = {"EASYPOST_API_KEY": "EZTK_e2e_test_key", "SHOPIFY_ADMIN_TOKEN": "shpat_e2e_test",
           "WOO_CONSUMER_KEY": "ck_e2e_test", "WOO_CONSUMER_SECRET": "cs_e2e_test"}
# every consumer a user starts, one process each (`python -m consumers all` runs them in one)
CONSUMERS = ("orders", "inventory", "shipping", "audit", "labels", "storefront",
             "notifications")


@dataclasses.dataclass
class Emulator:
    """One `python -m emulators NAME` process and where it listens."""

    proc: asyncio.subprocess.Process
    base: str

    async def state(self, session: aiohttp.ClientSession) -> dict[str, Any]:
        async with session.get(f"{self.base}/_emulator/counters") as response:
            assert 200 == response.status
            return dict(await response.json())


@dataclasses.dataclass
class Loop:
    """The running fulfilment loop of one test."""

    settings: Settings  # the test's settings with the labels and storefront queues on
    config: Path
    env: dict[str, str]
    ingress: Ingress
    store: Store
    session: aiohttp.ClientSession
    amqp: Any  # the test's broker connection
    easypost: Emulator
    shopify: Emulator
    woocommerce: Emulator


async def start(logs: Path, name: str, *args: str, env: dict[str, str],
                stdout: int = asyncio.subprocess.DEVNULL) -> asyncio.subprocess.Process:
    """`python ARGS` from the repository's root; its stderr kept in logs/NAME.log."""
    with (logs / f"{name}.log").open("wb") as log:
        return await asyncio.create_subprocess_exec(
            sys.executable, *args, cwd=ROOT, env=env, stdout=stdout, stderr=log)


async def start_emulator(logs: Path, env: dict[str, str], name: str, *args: str) -> Emulator:
    """`python -m emulators NAME --port P ARGS`, as the README starts it; ready once it says
    where it listens (its first line)."""
    proc = await start(logs, name, "-m", "emulators", name, "--port", str(free_port()), *args,
                       env=env, stdout=asyncio.subprocess.PIPE)
    assert proc.stdout is not None
    line = (await asyncio.wait_for(proc.stdout.readline(), 30)).decode()
    assert line.startswith("listening on http://"), line
    return Emulator(proc, line.removeprefix("listening on ").strip())


def loop_config(settings: Settings, easypost: str, shopify: str, woocommerce: str) -> Path:
    """The shipped router.toml (test broker prefix, short retries) with the lines the README's
    walkthrough has a user change: [labels] on against the EasyPost emulator, [storefront] on
    with one table per store against its emulator."""
    path = write_test_config(settings)
    text = path.read_text()
    for old, new in (
        ("enabled = false              # its queue and consumer exist only once switched on",
         "enabled = true"),
        ('base_url = "https://api.easypost.com/v2"', f'base_url = "{easypost}/v2"'),
        ("enabled = false              # on: its queue and the consumer are declared",
         "enabled = true  #"),
    ):
        assert old in text, old
        text = text.replace(old, new)
    path.write_text(text + f"""
[storefront.shopify]
base_url = "{shopify}"
access_token = "env:SHOPIFY_ADMIN_TOKEN"
[storefront.woocommerce]
base_url = "{woocommerce}"
consumer_key = "env:WOO_CONSUMER_KEY"
consumer_secret = "env:WOO_CONSUMER_SECRET"
""")
    return path


@pytest.fixture
async def loop(store_url: str, settings: Settings, test_env: dict[str, str], declared,  # noqa: F811
               amqp, tmp_path: Path) -> AsyncIterator[Loop]:
    """The emulators, the ingress and every consumer as processes on this test's broker names
    and store; each stopped with SIGTERM afterwards, which must exit 0."""
    on = dataclasses.replace(settings, broker=dataclasses.replace(
        settings.broker, optional_queues=("labels", "storefront")))
    env = {**os.environ, **test_env, **SECRETS, "DATABASE_URL": store_url}
    emulators: list[Emulator] = []
    procs: list[asyncio.subprocess.Process] = []
    try:  # whatever fails or is cancelled on the way, every process started is stopped
        for name, *credentials in (
                ("easypost", "--key", SECRETS["EASYPOST_API_KEY"]),
                ("shopify", "--token", SECRETS["SHOPIFY_ADMIN_TOKEN"]),
                ("woocommerce", "--key", SECRETS["WOO_CONSUMER_KEY"],
                 "--secret", SECRETS["WOO_CONSUMER_SECRET"])):
            emulators.append(await start_emulator(tmp_path, env, name, *credentials))
        config = loop_config(on, *(e.base for e in emulators))
        port = free_port()
        procs.append(await start(tmp_path, "serve", "-m", "router", "serve", "--config",
                                 str(config), "--port", str(port), env=env))
        for name in CONSUMERS:
            procs.append(await start(tmp_path, name, "-m", "consumers", name, "--config",
                                     str(config), "--store", store_url, env=env))
        async with aiohttp.ClientSession() as session, open_store(store_url) as store:
            ingress = Ingress(session, f"http://127.0.0.1:{port}", on)
            await wait_until(ingress.ready)
            yield Loop(on, config, env, ingress, store, session, amqp, *emulators)
    finally:
        codes = await stopped(procs)
        await stopped([emulator.proc for emulator in emulators])
    assert [0] * len(procs) == codes, [(p.pid, c) for p, c in zip(procs, codes, strict=True)]


async def stopped(procs: list[asyncio.subprocess.Process]) -> list[int]:
    """SIGTERM to each process still running, then their exit codes; one still running 30 s
    later is killed (its code then says so: -9)."""
    for proc in procs:
        if proc.returncode is None:
            proc.send_signal(signal.SIGTERM)
    codes = []
    for proc in procs:
        try:
            codes.append(await asyncio.wait_for(proc.wait(), 30))
        except TimeoutError:
            proc.kill()
            codes.append(await proc.wait())
    return codes


async def stock(loop: Loop, skus: tuple[str, ...]) -> None:
    """Five units of each SKU, as the inventory system posts them (signed)."""
    for sku in skus:
        await loop.ingress.post("inventory", orjson.dumps({
            "event_id": f"stock-{sku}", "sku": sku, "location": "austin-1", "on_hand": 5,
            "as_of": "2026-12-07T00:00:00Z"}))

    async def stocked() -> bool:
        row = await one(loop.store, "SELECT COUNT(*) AS n FROM stock")
        return row is not None and row["n"] == len(skus)

    await wait_until(stocked)


async def status(loop: Loop, order_id: str) -> str | None:
    row = await one(loop.store, "SELECT status FROM orders WHERE order_id = $1", order_id)
    return None if row is None else str(row["status"])


def becomes(loop: Loop, order_id: str, wanted: str):
    async def check() -> bool:
        return await status(loop, order_id) == wanted
    return check


async def written_back(loop: Loop, order_id: str) -> dict[str, Any]:
    """The order's label, once bought and written back to its store."""
    async def done() -> bool:
        return bool(await one(loop.store, "SELECT 1 AS x FROM writebacks WHERE order_id = $1"
                                          " AND state = 'done'", order_id))

    await wait_until(done)
    label = await one(loop.store, "SELECT * FROM labels WHERE order_id = $1", order_id)
    assert label is not None and label["state"] == "bought" and label["tracking_code"]
    return label


async def replayed(loop: Loop, order_id: str) -> None:
    """The ready_to_ship and label_created notifications of the order delivered again under
    new ids (as a replayed copy arrives): each consumer takes it as done already (`exists`),
    so neither may buy or write a second time."""
    for kind, consumer in (("order.ready_to_ship", "labels"),
                           ("shipment.label_created", "storefront")):
        (body,) = [n for n in await notifications(loop.store, kind)
                   if n["data"]["order_id"] == order_id]
        again = f"{body['id']}:again"
        await publish(loop.amqp, loop.settings,
                      orjson.dumps({**body, "id": again}), f"notify.{kind}")

        async def handled(event_id: str = again, name: str = consumer) -> bool:
            return bool(await outcome(loop, name, event_id))

        await wait_until(handled)
        assert "exists" == await outcome(loop, consumer, again)


async def outcome(loop: Loop, consumer: str, event_id: str) -> str | None:
    """What `consumer` made of the event (its last attempt), if it has seen it."""
    row = await one(loop.store, "SELECT outcome FROM consumer_attempts WHERE consumer = $1"
                                " AND event_id = $2 ORDER BY attempt DESC", consumer, event_id)
    return None if row is None else str(row["outcome"])


async def delivered(loop: Loop, order_id: str, tracking: str, carrier: str) -> list[str]:
    """EasyPost's signed tracker.updated for `tracking`, in_transit then delivered: the order
    shipped, then delivered. The events' ids."""
    ids = []
    for n, (state, at, wanted) in enumerate([
            ("in_transit", "2026-12-08T09:00:00Z", "shipped"),
            ("delivered", "2026-12-09T15:00:00Z", "delivered")]):
        event = orjson.loads(TRACKER_UPDATED)
        event["id"] = f"evt_{order_id}_{n}"
        event["result"].update(tracking_code=tracking, carrier=carrier, status=state,
                               updated_at=at)
        event["result"]["tracking_details"][-1].update(status=state, datetime=at)
        await loop.ingress.post("easypost", orjson.dumps(event))
        await wait_until(becomes(loop, order_id, wanted))
        ids.append(event["id"])
    return ids


async def traced(loop: Loop, order_id: str) -> list[str]:
    """`webhook-router trace ORDER`'s lines (python -m router trace, on the test's store)."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "router", "--config", str(loop.config), "trace", order_id,
        "--ingress", loop.ingress.base, cwd=ROOT, env=loop.env, stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT)
    out, _ = await asyncio.wait_for(proc.communicate(), 60)
    assert 0 == proc.returncode, out.decode()
    return out.decode().splitlines()


async def settled(loop: Loop) -> None:
    """Every work and retry queue of the test's topology empty (the notifications consumer may
    still be taking the last ones), and nothing on any dead-letter queue."""
    topology = Topology.of(loop.settings.broker)
    dead = {topology.dead_queue(name) for name in topology.work_queue_bases()}

    async def empty() -> bool:
        return all([await depth(loop.amqp, name) == 0
                    for name in topology.names() if name not in dead])

    await wait_until(empty)
    assert {name: 0 for name in dead} == {name: await depth(loop.amqp, name) for name in dead}


async def labelled_once(loop: Loop, skus: tuple[str, ...], source: str, order: bytes,
                        topic: str, order_id: str) -> dict[str, Any]:
    """Stock for `skus`, then the store's signed order: its label, bought and written back;
    the notifications replayed; the EasyPost emulator sold one label, for this order."""
    await stock(loop, skus)
    await loop.ingress.post(source, order, topic)
    label = await written_back(loop, order_id)
    await replayed(loop, order_id)
    sold = await loop.easypost.state(loop.session)
    assert (1, {order_id: 1}) == (sold["labels_sold"], sold["labels_by_reference"])
    return label


async def to_the_door(loop: Loop, source: str, order_id: str, label: dict[str, Any]) -> None:
    """The carrier's tracker updates for the label end the order delivered; its trace shows
    the label, the write-back to its store and those updates, and ends delivered; nothing is
    left on a queue."""
    events = await delivered(loop, order_id, label["tracking_code"], label["carrier"])
    lines = await traced(loop, order_id)
    said = "\n".join(lines)
    assert f"bought: {label['carrier']} {label['service']}, tracking {label['tracking_code']}" \
        in said, said
    assert f"write-back    {source} done: tracking {label['tracking_code']}" in said, said
    assert all(event in said for event in events), said
    assert f"order {order_id} is now delivered" == lines[-1].strip(), said
    await settled(loop)


class TestToTheDoor:
    async def test_a_shopify_order_gets_one_label_one_fulfillment_and_is_delivered(
        self, loop: Loop
    ):
        """Shopify's documented order 450789469, signed `orders/create`: one label at the
        EasyPost emulator, one `fulfillmentCreate` at the Shopify emulator with its tracking
        number, company and URL; EasyPost's tracker updates end it delivered."""
        skus = ("IPOD2008GREEN", "IPOD2008RED", "IPOD2008BLACK")
        label = await labelled_once(loop, skus, "shopify", SHOPIFY_ORDER, "orders/create",
                                    "450789469")
        tracking = label["tracking_code"]
        shop = await loop.shopify.state(loop.session)
        assert (1, 1) == (shop["fulfillments_created"], shop["requests"]["fulfillmentCreate"])
        (fulfillment,) = shop["orders"]["450789469"]["fulfillments"]
        assert [{"number": tracking, "company": label["carrier"],
                 "url": label["tracking_url"]}] == fulfillment["trackingInfo"]
        assert fulfillment["notifyCustomer"] is True
        assert ["CLOSED"] == [fo["status"] for fo
                              in shop["orders"]["450789469"]["fulfillment_orders"]]

        await to_the_door(loop, "shopify", "450789469", label)

    async def test_a_woocommerce_order_gets_one_label_one_note_completed_and_is_delivered(
        self, loop: Loop
    ):
        """WooCommerce's documented order 727, signed `order.created`: one label, one
        customer-visible note with its tracking number at the WooCommerce emulator, the order
        completed there; EasyPost's tracker updates end it delivered."""
        label = await labelled_once(loop, ("product:93", "Bar3"), "woocommerce", WOO_ORDER,
                                    "order.created", "727")
        tracking = label["tracking_code"]
        woo = await loop.woocommerce.state(loop.session)
        order = woo["orders"]["727"]
        (note,) = [n for n in order["notes"] if tracking in n["note"]]
        assert note["customer_note"] is True and label["tracking_url"] in note["note"]
        assert ("completed", 1) == (order["status"], woo["requests"]["create_note"])

        await to_the_door(loop, "woocommerce", "727", label)
