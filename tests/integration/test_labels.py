"""The labels consumer against the EasyPost emulator on a local port, the real RabbitMQ and
both stores: one label per order whatever is delivered twice or dies half-way, and each
carrier failure where it belongs (a hold, the retry ladder, the dead-letter queue)."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import os
import signal
import sqlite3
import sys
import time
from collections.abc import AsyncIterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import aio_pika
import aiohttp
import asyncpg
import orjson
import pytest
from aiohttp.test_utils import TestServer
from test_consumer_process import Ingress, free_port, wait_until, write_test_config

from consumers import labels, orders, shipping
from consumers.carriers.base import Label
from consumers.cli import _runner
from consumers.store import Store, open_store
from emulators.control import CONTROL, Fault
from emulators.easypost import Emulator, build_app
from router.broker.topology import Topology
from router.label_settings import OUTAGE_LADDER, ServiceChoice
from router.providers import signed_headers
from router.settings import Settings

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[2]
KEY = "EZTK_labels_test_key"
NOWHERE = "1 Nowhere Lane"  # the emulator cannot verify it
TRACKER_UPDATED = (ROOT / "config" / "samples" / "easypost-tracker-updated.json").read_bytes()
# Every rung a test's ladder here may have: their retry queues are deleted after each test.
ALL_TEST_RUNGS = (1, 2, 4, 5, 8, 10, 20, 30, 60)
SHOPIFY_ORDER = (ROOT / "tests" / "fixtures" / "providers" / "shopify"
                 / "2024-04-order-450789469.json").read_bytes()


@dataclasses.dataclass
class Carrier:
    emulator: Emulator
    server: TestServer
    base_url: str

    def sold(self) -> dict[str, Any]:
        return self.emulator.counters()

    def fail(self, fault: Fault) -> None:
        self.server.app[CONTROL].faults.append(fault)


@pytest.fixture
async def carrier() -> AsyncIterator[Carrier]:
    emulator = Emulator(key=KEY, rejected_streets=frozenset({NOWHERE}))
    server = TestServer(build_app(emulator), host="127.0.0.1")
    await server.start_server()
    yield Carrier(emulator, server, str(server.make_url("/v2")))
    await server.close()


def labelled(settings: Settings, carrier: Carrier, ladder: tuple[int, ...] | None = None,
             **changes: Any) -> Settings:
    """The test's settings with [labels] on, pointed at the emulator; the labels queue's
    ladder is `ladder` (default: the test's short [broker] one, so retries take seconds)."""
    ladder = ladder or settings.broker.retry_ladder
    labels = dataclasses.replace(settings.labels, enabled=True, api_key=KEY.encode(),
                                 base_url=carrier.base_url, retry_ladder=ladder, **changes)
    broker = dataclasses.replace(settings.broker, optional_queues=("labels",),
                                 ladders=(("labels", ladder),))
    return dataclasses.replace(settings, labels=labels, broker=broker)


@pytest.fixture
async def on(settings: Settings, carrier: Carrier, topology: Topology,
             amqp: aio_pika.abc.AbstractConnection) -> AsyncIterator[Settings]:
    """Labels on; the labels queues declared, and deleted after the test (the conftest
    topology deletes the rest)."""
    switched = labelled(settings, carrier)
    await Topology.of(switched.broker).declare(await amqp.channel())
    yield switched
    await delete_queues(settings, "labels")


async def delete_queues(settings: Settings, *names: str) -> None:
    """Delete the work queues `names` with the retry queues of any ladder a test gave them
    (the conftest topology deletes the rest)."""
    topology = Topology.of(settings.broker)
    async with await aio_pika.connect(settings.broker.url) as connection:
        channel = await connection.channel()
        for name in names:
            # the test ladders', and the shipped one's (a CLI run on the shipped config
            # declares the labels queue with [labels]' default ladder)
            rungs = dict.fromkeys((*ALL_TEST_RUNGS, *OUTAGE_LADDER))
            retries = [topology.retry_queue(name, delay) for delay in rungs]
            for queue_name in [spec.name for spec in topology.work_queues(name, ())] + retries:
                queue = await channel.get_queue(queue_name, ensure=False)
                await queue.delete(if_unused=False, if_empty=False)


@contextlib.asynccontextmanager
async def running(settings: Settings, store: Store, *names: str,
                  prefetch: int = 10) -> AsyncIterator[None]:
    """Consumers in this process (as `python -m consumers NAME` runs them) until the block
    ends."""
    stop = asyncio.Event()
    async with aiohttp.ClientSession() as session:
        tasks = [asyncio.create_task(_runner(name, settings, store, session, prefetch,
                                             1).run(stop))
                 for name in names]
        try:
            yield
        finally:
            stop.set()
            await asyncio.gather(*tasks)


def order_event(order_id: str, sku: str, street: str = "12 Analytical Way") -> dict[str, Any]:
    return {
        "id": f"evt-{order_id}", "type": "order.created", "source": "portal",
        "received_at": "2026-12-07T10:00:01Z", "occurred_at": "2026-12-07T10:00:00Z",
        "schema": "order.created/v1",
        "data": {"order_id": order_id, "status": "received", "payment_status": "paid",
                 "created_at": "2026-12-07T10:00:00Z",
                 "lines": [{"sku": sku, "quantity": 2}],
                 "shipping_address": {"name": "Ada Lovelace", "line1": street,
                                      "city": "Portland", "region": "OR",
                                      "postal_code": "97201", "country": "US"}},
    }


async def ready(store: Store, amqp, settings: Settings, order_id: str,
                street: str = "12 Analytical Way") -> bytes:
    """A paid order with stock made ready_to_ship by the orders consumer's own handler, and
    its notification published as the runner publishes its outbox; the notification."""
    sku = f"SKU-{order_id}"

    async def work(tx):
        await tx.execute("INSERT INTO stock (sku, location, on_hand, reserved, as_of)"
                         " VALUES ($1, 'default', 10, 0, '2026-12-07T00:00:00+00:00')", sku)
        assert "ready_to_ship" == await orders.handle(tx, order_event(order_id, sku, street))
        return [row for row in tx.outbox if row["routing_key"] == "notify.order.ready_to_ship"]

    (row,) = await store.run(work)
    await publish(amqp, settings, row["body"], row["routing_key"])
    await store.mark_sent([row["id"]])  # as the runner does once the broker confirmed it
    return row["body"]


async def updated(store: Store, amqp, settings: Settings, order_id: str, street: str,
                  minute: int) -> str:
    """The order updated at the store (a new address, or the same with a note), applied by
    the orders consumer's handler, its ready_to_ship notification (if any) published."""
    event = order_event(order_id, f"SKU-{order_id}", street)
    event |= {"id": f"upd-{order_id}-{minute}", "type": "order.updated",
              "occurred_at": f"2026-12-07T10:{minute:02d}:00Z"}
    event["data"]["note"] = f"update {minute}"

    async def work(tx):
        outcome = await orders.handle(tx, event)
        return outcome, [row for row in tx.outbox
                         if row["routing_key"] == "notify.order.ready_to_ship"]

    outcome, rows = await store.run(work)
    for row in rows:
        await publish(amqp, settings, row["body"], row["routing_key"])
        await store.mark_sent([row["id"]])
    return str(outcome)


async def stock_shopify_order(store: Store) -> None:
    """Stock for every line of SHOPIFY_ORDER."""
    async with store.transaction() as tx:
        for sku in ("IPOD2008GREEN", "IPOD2008RED", "IPOD2008BLACK"):
            await tx.execute("INSERT INTO stock (sku, location, on_hand, reserved, as_of) VALUES"
                             " ($1, 'default', 5, 0, '2026-12-07T00:00:00+00:00')", sku)


async def publish(amqp, settings: Settings, body: bytes, routing_key: str) -> None:
    channel = await amqp.channel(publisher_confirms=True)
    exchange = await channel.get_exchange(Topology.of(settings.broker).exchange)
    await exchange.publish(aio_pika.Message(body, delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
                                            headers={"attempt": 0}), routing_key=routing_key)
    await channel.close()


async def one(store: Store, sql: str, *args: Any) -> dict[str, Any] | None:
    async with store.transaction() as tx:
        return await tx.fetchrow(sql, *args)


async def status(store: Store, order_id: str) -> tuple[str | None, str | None]:
    row = await one(store, "SELECT status, hold_reason FROM orders WHERE order_id = $1",
                    order_id)
    return (None, None) if row is None else (row["status"], row["hold_reason"])


def becomes(store: Store, order_id: str, wanted: str):
    async def check() -> bool:
        return (await status(store, order_id))[0] == wanted
    return check


async def attempts(store: Store, outcome: str) -> int:
    row = await one(store, "SELECT COUNT(*) AS n FROM consumer_attempts WHERE consumer ="
                           " 'labels' AND outcome = $1", outcome)
    assert row is not None
    return int(row["n"])


async def notifications(store: Store, kind: str) -> list[dict[str, Any]]:
    async with store.transaction() as tx:
        rows = await tx.fetch("SELECT body FROM outbox WHERE routing_key = $1 ORDER BY id",
                              f"notify.{kind}")
    return [orjson.loads(row["body"]) for row in rows]


async def depth(amqp, name: str) -> int:
    channel = await amqp.channel()
    queue = await channel.declare_queue(name, passive=True)
    await channel.close()
    return int(queue.declaration_result.message_count)


class TestOneLabelPerOrder:
    async def test_a_paid_shopify_order_gets_one_label_even_delivered_twice(
        self, store_url, on, carrier, make_client, amqp
    ):
        """Shopify's documented order, signed through the real ingress, with stock: the
        orders consumer makes it ready_to_ship, the labels consumer buys one label (the
        cheapest allowed), the order is label_purchased with the label's tracking code on a
        shipment row and a shipment.label_created notification; the ready_to_ship
        notification delivered again buys nothing, and never reaches the orders queue; the
        carrier's signed tracker.updated for that tracking code moves the order to shipped."""
        client = await make_client(on)
        async with open_store(store_url) as store, \
                running(on, store, "orders", "labels", "shipping"):
            await stock_shopify_order(store)
            response = await client.post("/webhooks/shopify", data=SHOPIFY_ORDER,
                                         headers=signed_headers(on, "shopify", SHOPIFY_ORDER,
                                                                "orders/create"))
            assert 202 == response.status, await response.text()
            await wait_until(becomes(store, "450789469", "label_purchased"))
            label = await one(store, "SELECT * FROM labels WHERE order_id = $1", "450789469")
            (shipment,) = carrier.emulator.shipments.values()
            assert label is not None and "bought" == label["state"]
            assert (shipment["id"], shipment["tracking_code"], "USPS", "GroundAdvantage",
                    "6.07") == (label["shipment_id"], label["tracking_code"], label["carrier"],
                                label["service"], label["rate_amount"])
            tracked = await one(store, "SELECT order_id, status FROM shipments WHERE"
                                       " tracking_code = $1 AND carrier = 'usps'",
                                label["tracking_code"])
            assert {"order_id": "450789469", "status": "pre_transit"} == tracked
            (created,) = await notifications(store, "shipment.label_created")
            assert (label["tracking_code"], "label_purchased", label["label_url"]) == (
                created["data"]["tracking_code"], created["data"]["order_status"],
                created["data"]["label_url"])

            (ready_body,) = [n for n in await notifications(store, "order.ready_to_ship")]
            again = orjson.dumps(ready_body)
            await publish(amqp, on, again, "notify.order.ready_to_ship")
            await wait_until(lambda: _at_least(attempts(store, "duplicate"), 1))
            assert {"450789469": 1} == carrier.sold()["labels_by_reference"]
            assert 1 == carrier.sold()["labels_sold"]

            tracker = orjson.loads(TRACKER_UPDATED)
            tracker["id"] = f"evt_{label['tracking_code']}"
            tracker["result"] |= {"tracking_code": label["tracking_code"], "carrier": "USPS"}
            body = orjson.dumps(tracker)
            response = await client.post("/webhooks/easypost", data=body, headers=signed_headers(
                on, "easypost", body, None))
            assert 202 == response.status, await response.text()
            await wait_until(becomes(store, "450789469", "shipped"))
        topology = Topology.of(on.broker)
        assert 0 == await depth(amqp, topology.dead_queue("orders"))
        assert 0 == await depth(amqp, topology.unrouted_queue)
        # the subscribers' copies are there as before, the label's among them
        channel = await amqp.channel()
        queue = await channel.get_queue(topology.queue("notifications"))
        kinds = []
        while (message := await queue.get(no_ack=True, fail=False)) is not None:
            kinds.append(message.routing_key)
        assert {"notify.order.ready_to_ship", "notify.shipment.label_created"} <= set(kinds)

    async def test_the_same_notification_twice_at_once_and_another_for_the_order(
        self, store_url, on, carrier, amqp
    ):
        """Two copies in one batch and a later notification of another id: one label."""
        async with open_store(store_url) as store:
            body = await ready(store, amqp, on, "TWICE-1")
            await publish(amqp, on, body, "notify.order.ready_to_ship")
            other = {**orjson.loads(body), "id": "another-ready-to-ship"}
            async with running(on, store, "labels"):
                await wait_until(becomes(store, "TWICE-1", "label_purchased"))
                await publish(amqp, on, orjson.dumps(other), "notify.order.ready_to_ship")
                await wait_until(lambda: _at_least(attempts(store, "exists"), 1))
            assert 1 == await attempts(store, "duplicate")
            assert {"TWICE-1": 1} == carrier.sold()["labels_by_reference"]
            assert 1 == len(await notifications(store, "shipment.label_created"))

    async def test_two_consumers_racing_for_one_order_buy_one_label(
        self, store_url, on, carrier, amqp
    ):
        """Twenty notifications for one order taken by two labels consumers at once (the
        creates answering late, so both are under way together): whatever each creates, only
        the shipment recorded first is bought, once."""
        carrier.fail(Fault(count=2, delay=0.5, operation="create_shipment"))
        async with open_store(store_url) as store:
            body = orjson.loads(await ready(store, amqp, on, "RACE-1"))
            for n in range(19):
                await publish(amqp, on, orjson.dumps({**body, "id": f"race-{n}"}),
                              "notify.order.ready_to_ship")
            async with running(on, store, "labels", "labels"):
                await wait_until(becomes(store, "RACE-1", "label_purchased"))

                async def all_settled() -> bool:
                    row = await one(store, "SELECT COUNT(*) AS n FROM consumer_attempts"
                                           " WHERE consumer = 'labels'")
                    return row is not None and row["n"] >= 20
                await wait_until(all_settled)
            assert 1 == len(await notifications(store, "shipment.label_created"))
        assert ({"RACE-1": 1}, 1) == (carrier.sold()["labels_by_reference"],
                                      carrier.sold()["labels_sold"])


async def _at_least(value, minimum: int) -> bool:
    return await value >= minimum


class TestFailures:
    async def test_an_address_the_carrier_rejects_holds_the_order(
        self, store_url, on, carrier, amqp
    ):
        """ADDRESS.VERIFY.FAILURE: on_hold address_invalid, the carrier's message on the
        label row and in the order.on_hold notification; nothing bought."""
        async with open_store(store_url) as store, running(on, store, "labels"):
            await ready(store, amqp, on, "BAD-ADDRESS", street=NOWHERE)
            await wait_until(becomes(store, "BAD-ADDRESS", "on_hold"))
            assert ("on_hold", "address_invalid") == await status(store, "BAD-ADDRESS")
            label = await one(store, "SELECT state, message FROM labels WHERE order_id = $1",
                              "BAD-ADDRESS")
            assert label is not None and "held" == label["state"]
            assert "Address not found" in label["message"]
            (held,) = await notifications(store, "order.on_hold")
            assert ("address_invalid", label["message"]) == (held["data"]["hold_reason"],
                                                             held["data"]["detail"])
        assert 0 == carrier.sold()["labels_sold"]

    async def test_an_update_fixing_the_address_gets_the_label_and_none_undoes_it(
        self, store_url, on, carrier, amqp
    ):
        """Held address_invalid, the order updated with the same address stays held (nothing
        asked of the carrier); updated with another address it is ready again and gets its
        label; a later update (a note) leaves it label_purchased."""
        async with open_store(store_url) as store, running(on, store, "labels"):
            await ready(store, amqp, on, "FIXED-1", street=NOWHERE)
            await wait_until(becomes(store, "FIXED-1", "on_hold"))
            assert "on_hold" == await updated(store, amqp, on, "FIXED-1", NOWHERE, 1)
            assert ("on_hold", "address_invalid") == await status(store, "FIXED-1")
            assert "ready_to_ship" == await updated(store, amqp, on, "FIXED-1", "2 Main St", 2)
            await wait_until(becomes(store, "FIXED-1", "label_purchased"))
            assert "label_purchased" == await updated(store, amqp, on, "FIXED-1", "2 Main St", 3)
            # the labels consumer's hold, with the carrier's words (the update's says on_hold)
            assert 1 == len([n for n in await notifications(store, "order.on_hold")
                             if "detail" in n["data"]])
        assert ({"FIXED-1.2": 1}, 1) == (carrier.sold()["labels_by_reference"],
                                         carrier.sold()["shipments_created"])

    async def test_no_rate_matching_the_rule_holds_the_order(
        self, store_url, on, carrier, amqp
    ):
        """A rule allowing only FedEx against USPS and UPS rates: on_hold no_rate."""
        fedex = labelled(on, carrier, allowed=(ServiceChoice("FedEx"),))
        async with open_store(store_url) as store, running(fedex, store, "labels"):
            await ready(store, amqp, on, "NO-RATE")
            await wait_until(becomes(store, "NO-RATE", "on_hold"))
            assert ("on_hold", "no_rate") == await status(store, "NO-RATE")
            label = await one(store, "SELECT message FROM labels WHERE order_id = $1", "NO-RATE")
            assert label is not None and "FedEx" in label["message"]
        assert 0 == carrier.sold()["labels_sold"]

    @pytest.mark.parametrize("fault", [
        # a 500 to the create: the retry creates it
        Fault(status=500, operation="create_shipment"),
        # the buy done, its answer lost (Uncertain): the retry looks the recorded shipment up
        # and takes its label
        Fault(reset=True, operation="buy_shipment"),
        # rate limited at the buy
        Fault(status=429, retry_after=1, operation="buy_shipment"),
    ], ids=["500", "answer-lost", "429"])
    async def test_a_failed_call_is_retried_and_one_label_bought(
        self, store_url, on, carrier, amqp, fault
    ):
        """The carrier fails once: the message goes round the retry ladder and the next
        attempt ends with the one label."""
        carrier.fail(fault)
        async with open_store(store_url) as store, running(on, store, "labels"):
            await ready(store, amqp, on, "FLAKY-1")
            await wait_until(becomes(store, "FLAKY-1", "label_purchased"))
            assert 1 == await attempts(store, "retry")
        assert {"FLAKY-1": 1} == carrier.sold()["labels_by_reference"]

    async def test_a_create_whose_answer_is_lost_is_found_by_its_reference(
        self, store_url, on, carrier, amqp
    ):
        """The shipment is created but the answer lost (Uncertain): it is looked up by our
        reference (the order id) and bought, with no second shipment and no retry."""
        carrier.fail(Fault(reset=True, operation="create_shipment"))
        async with open_store(store_url) as store, running(on, store, "labels"):
            await ready(store, amqp, on, "LOST-CREATE")
            await wait_until(becomes(store, "LOST-CREATE", "label_purchased"))
            assert 0 == await attempts(store, "retry")
        assert ({"LOST-CREATE": 1}, 1) == (carrier.sold()["labels_by_reference"],
                                           carrier.sold()["shipments_created"])

    async def test_a_refusal_is_dead_lettered_with_the_carriers_reason(
        self, store_url, on, carrier, amqp, test_env
    ):
        """A key the carrier refuses (401): Permanent, on labels.dead with the reason (which
        `dlq show labels` prints); the order stays ready_to_ship for an operator."""
        wrong = dataclasses.replace(on, labels=dataclasses.replace(on.labels,
                                                                   api_key=b"not-the-key"))
        async with open_store(store_url) as store, running(wrong, store, "labels"):
            await ready(store, amqp, on, "REFUSED-1")
            await wait_until(lambda: _at_least(attempts(store, "dead"), 1))
            row = await one(store, "SELECT reason FROM consumer_attempts WHERE consumer ="
                                   " 'labels' AND outcome = 'dead'")
            assert row is not None and "UNAUTHORIZED" in row["reason"], row
            assert ("ready_to_ship", None) == await status(store, "REFUSED-1")
        assert 1 == await depth(amqp, Topology.of(on.broker).dead_queue("labels"))
        code, out = await cli(labels_config(on, carrier), {**os.environ, **test_env},
                              "dlq", "show", "labels")
        assert 0 == code and "evt-REFUSED-1:order.ready_to_ship:REFUSED-1" in out, out
        assert "UNAUTHORIZED" in out, out


class TestOutages:
    """The labels queue has a ladder of its own ([labels] retry_ladder, hours long by
    default): an outage of the carrier outlasting [broker]'s ladder never dead-letters."""

    async def waits_out(self, store_url: str, settings: Settings, carrier: Carrier, amqp,
                        order_id: str, seconds: float, ladder: tuple[int, ...]) -> None:
        on = labelled(settings, carrier, ladder=ladder)
        await Topology.of(on.broker).declare(await amqp.channel())
        try:
            carrier.fail(Fault(status=503, seconds=seconds, message="carrier down"))
            started = time.monotonic()
            async with open_store(store_url) as store, running(on, store, "labels"):
                await ready(store, amqp, on, order_id)
                # past the rungs that [broker]'s ladder would have ended with a dead letter
                await wait_until(lambda: _at_least(attempts(store, "retry"), 3),
                                 timeout=seconds + 10)
                assert ("ready_to_ship", None) == await status(store, order_id)
                await wait_until(becomes(store, order_id, "label_purchased"),
                                 timeout=seconds + 2 * max(ladder))
                assert time.monotonic() - started >= seconds  # bought after the outage only
                assert 0 == await attempts(store, "dead")
            assert 0 == await depth(amqp, Topology.of(on.broker).dead_queue("labels"))
            assert {order_id: 1} == carrier.sold()["labels_by_reference"]
        finally:
            await delete_queues(on, "labels")

    @pytest.mark.parametrize("store_url", ["postgresql"], indirect=True)
    async def test_a_carrier_down_for_a_real_minute_gets_one_label_after(
        self, store_url, settings, carrier, amqp, topology
    ):
        """503 for 60 real seconds; a ladder whose first three rungs sum to 35 s (the old
        [broker] one, 5 15 45, dead-lettered after 65 s): the order waits ready_to_ship and
        gets exactly one label once the carrier is back. One store (a minute of CI each): the
        compressed variant below runs the same path on both."""
        await self.waits_out(store_url, settings, carrier, amqp, "MINUTE-1", 60.0,
                             (5, 10, 20, 30, 60))

    async def test_an_outage_longer_than_the_broker_ladder_gets_one_label_after(
        self, store_url, settings, carrier, amqp, topology
    ):
        """The same compressed: down 6 s, [broker]'s test ladder (1, 2) is used up after
        3 s; the labels ladder (1, 2, 4, 8) waits it out."""
        await self.waits_out(store_url, settings, carrier, amqp, "OUTAGE-1", 6.0,
                             (1, 2, 4, 8))


class TestRetryAfter:
    @pytest.mark.parametrize(("status", "retry_after", "rung"), [
        (429, 3, 4),   # the smallest rung at least as long as asked
        (503, 7, 8),
        (503, 60, 8),  # longer than any: the longest
    ])
    async def test_the_carriers_retry_after_picks_the_rung(
        self, store_url, settings, carrier, amqp, topology, status, retry_after, rung
    ):
        """EasyPost's Retry-After on a 429 or 503: the message waits on the smallest rung at
        least that long (the ladder's first would be 1 s), and the label is bought after."""
        on = labelled(settings, carrier, ladder=(1, 2, 4, 8))
        await Topology.of(on.broker).declare(await amqp.channel())
        try:
            carrier.fail(Fault(status=status, retry_after=retry_after,
                               operation="create_shipment"))
            async with open_store(store_url) as store, running(on, store, "labels"):
                await ready(store, amqp, on, f"AFTER-{status}-{retry_after}")
                await wait_until(lambda: _at_least(attempts(store, "retry"), 1))
                row = await one(store, "SELECT delay_seconds FROM consumer_attempts WHERE"
                                       " consumer = 'labels' AND outcome = 'retry'")
                assert {"delay_seconds": rung} == row
                await wait_until(becomes(store, f"AFTER-{status}-{retry_after}",
                                         "label_purchased"), timeout=rung + 20)
        finally:
            await delete_queues(on, "labels")


# -- a real process, killed ---------------------------------------------------------------

def labels_config(settings: Settings, carrier: Carrier) -> Path:
    path = write_test_config(settings)
    text = path.read_text()
    for old, new in (("enabled = false              # its queue", "enabled = true  # its queue"),
                     ('base_url = "https://api.easypost.com/v2"',
                      f'base_url = "{carrier.base_url}"')):
        assert old in text
        text = text.replace(old, new)
    path.write_text(text)
    return path


async def start_labels(store_url: str, config: Path, test_env) -> asyncio.subprocess.Process:
    env = {**os.environ, **test_env, "DATABASE_URL": store_url, "EASYPOST_API_KEY": KEY}
    return await asyncio.create_subprocess_exec(
        sys.executable, "-m", "consumers", "labels", "--config", str(config), cwd=ROOT,
        env=env, stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL)


@contextlib.asynccontextmanager
async def commits_blocked(store_url: str, order_id: str,
                          table: str = "labels") -> AsyncIterator[None]:
    """No transaction can write the order's row of `table` (labels, writebacks) until the
    block ends: its row locked (PostgreSQL), the database's write lock held (SQLite)."""
    if store_url.startswith("sqlite"):
        conn = sqlite3.connect(store_url.removeprefix("sqlite:///"), isolation_level=None)
        conn.execute("BEGIN IMMEDIATE")
        try:
            yield
        finally:
            conn.execute("ROLLBACK")
            conn.close()
        return
    pg = await asyncpg.connect(store_url)
    transaction = pg.transaction()
    await transaction.start()
    await pg.execute(f"SELECT 1 FROM {table} WHERE order_id = $1 FOR UPDATE", order_id)
    try:
        yield
    finally:
        await transaction.rollback()
        await pg.close()


class TestTrackedFirst:
    async def test_a_tracker_update_before_the_labels_commit_moves_the_order(self, store_url):
        """EasyPost tracks a label from its sale, and its tracker.updated can be applied
        before the labels consumer commits the label (killed between the carrier's answer and
        the commit, or a batch still calling): the shipping consumer stores that shipment
        without an order. The label's commit links it, so the order follows it to delivered
        and its stock is consumed, instead of staying label_purchased for good (found by
        bench/soak.py, which sends the carrier's updates as soon as a label is sold)."""
        order_id, code = "tracked-first-1", "9400111206213859837426"
        sku = f"SKU-{order_id}"
        delivered = {"id": f"ep-{code}", "type": "shipment.updated", "source": "easypost",
                     "received_at": "2026-12-07T12:00:01Z",
                     "occurred_at": "2026-12-07T12:00:00Z", "schema": "shipment.updated/v1",
                     "data": {"tracking_code": code, "carrier": "usps", "status": "delivered",
                              "occurred_at": "2026-12-07T12:00:00Z"}}
        label = Label(shipment_id="shp_tracked_first", tracking_code=code, carrier="USPS",
                      service="GroundAdvantage", amount=Decimal("6.07"), currency="USD",
                      label_url="https://easypost.example/label.png", tracking_url="")
        ready_event = {"id": f"evt-{order_id}:order.ready_to_ship", "type": "order.ready_to_ship",
                       "data": {"order_id": order_id}}

        async def first(tx) -> None:
            await tx.execute("INSERT INTO stock (sku, location, on_hand, reserved, as_of)"
                             " VALUES ($1, 'default', 10, 0, '2026-12-07T00:00:00+00:00')", sku)
            assert "ready_to_ship" == await orders.handle(tx, order_event(order_id, sku))
            await tx.execute(
                "INSERT INTO labels (order_id, purchase, reference, carrier_api, state,"
                " shipment_id, created_at, updated_at) VALUES ($1, 1, $1, 'easypost',"
                " 'creating', $2, $3, $3)", order_id, label.shipment_id, "2026-12-07T12:00:00Z")
            assert "advanced" == await shipping.handle(tx, delivered)

        async with open_store(store_url) as store:
            await store.run(first)
            assert (None, "delivered") == tuple((await one(
                store, "SELECT order_id, status FROM shipments WHERE tracking_code = $1",
                code) or {}).values())
            assert "label_purchased" == await store.run(lambda tx: labels._bought(
                tx, ready_event, labels.Bought(order_id, 1, label)))
            assert ("delivered", None) == await status(store, order_id)
            assert {"order_id": order_id, "status": "delivered"} == await one(
                store, "SELECT order_id, status FROM shipments WHERE tracking_code = $1", code)
            assert {"on_hand": 8, "reserved": 0} == await one(
                store, "SELECT on_hand, reserved FROM stock WHERE sku = $1", sku)
            (created,) = await notifications(store, "shipment.label_created")
            assert "delivered" == created["data"]["order_status"]


class TestKilled:
    async def test_killed_between_the_carriers_answer_and_the_commit(
        self, store_url, on, carrier, amqp, test_env
    ):
        """`python -m consumers labels` SIGKILLed after the carrier sold the label and before
        the label was committed; restarted, it takes that label: the emulator sold exactly
        one, and the order is label_purchased with its tracking code."""
        config = labels_config(on, carrier)
        # the buy answers late: time to block the commit once the shipment id is recorded
        carrier.fail(Fault(delay=3.0, operation="buy_shipment"))
        async with open_store(store_url) as store:
            await ready(store, amqp, on, "CRASH-1")
            proc = await start_labels(store_url, config, test_env)
            try:
                async def sold() -> bool:
                    return bool(carrier.sold()["labels_sold"])

                async def recorded_or_sold() -> bool:
                    # block the commits only once the shipment id is recorded: blocking its
                    # record would stop the buy (a consumer that bought without recording
                    # is seen by the sale, and fails the check below)
                    row = await one(store, "SELECT shipment_id FROM labels WHERE"
                                           " order_id = $1", "CRASH-1")
                    return bool(row and row["shipment_id"]) or await sold()

                await wait_until(recorded_or_sold)
                async with commits_blocked(store_url, "CRASH-1"):
                    await wait_until(sold)
                    proc.kill()
                    await proc.wait()
                # it died before its commit, and after the shipment id was committed
                (shipment,) = carrier.emulator.shipments.values()
                row = await one(store, "SELECT state, shipment_id FROM labels WHERE"
                                       " order_id = $1", "CRASH-1")
                assert {"state": "creating", "shipment_id": shipment["id"]} == row
                assert ("ready_to_ship", None) == await status(store, "CRASH-1")

                proc = await start_labels(store_url, config, test_env)
                await wait_until(becomes(store, "CRASH-1", "label_purchased"))
            finally:
                if proc.returncode is None:
                    proc.send_signal(signal.SIGTERM)
                    await asyncio.wait_for(proc.wait(), 30)
            label = await one(store, "SELECT tracking_code FROM labels WHERE order_id = $1",
                              "CRASH-1")
            assert label is not None and shipment["tracking_code"] == label["tracking_code"]
        assert {"CRASH-1": 1} == carrier.sold()["labels_by_reference"]
        assert 1 == carrier.sold()["labels_sold"]

    async def test_the_consumer_refuses_to_start_while_labels_are_off(self, test_env):
        """`python -m consumers labels` with the shipped config ([labels] enabled = false):
        exit 2 saying how to switch it on, before it touches the broker or a store."""
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "consumers", "labels", "--config",
            str(ROOT / "config" / "router.toml"), cwd=ROOT, env={**os.environ, **test_env},
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
        _, err = await asyncio.wait_for(proc.communicate(), 60)
        assert 2 == proc.returncode
        assert "labels.enabled: the labels consumer is off" in err.decode()


    async def test_all_in_one_process_buys_the_label(self, store_url, on, carrier, test_env):
        """`python -m consumers all` with [labels] on runs the labels consumer beside the
        ingress and the others: a signed Shopify order ends label_purchased, one label."""
        config = labels_config(on, carrier)
        env = {**os.environ, **test_env, "DATABASE_URL": store_url, "EASYPOST_API_KEY": KEY}
        port = free_port()
        async with open_store(store_url) as store:
            await stock_shopify_order(store)
            proc = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "consumers", "all", "--config", str(config), "--port",
                str(port), cwd=ROOT, env=env, stdout=asyncio.subprocess.DEVNULL,
                stderr=asyncio.subprocess.DEVNULL)
            try:
                async with aiohttp.ClientSession() as session:
                    ingress = Ingress(session, f"http://127.0.0.1:{port}", on)
                    await wait_until(ingress.ready)
                    await ingress.post("shopify", SHOPIFY_ORDER, "orders/create")
                    await wait_until(becomes(store, "450789469", "label_purchased"))
            finally:
                proc.send_signal(signal.SIGTERM)
                assert 0 == await asyncio.wait_for(proc.wait(), 30)
        assert {"450789469": 1} == carrier.sold()["labels_by_reference"]


# -- the operators' commands ------------------------------------------------------------------

async def cli(config: Path, env: dict[str, str], *args: str) -> tuple[int, str]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "router", "--config", str(config), *args, cwd=ROOT, env=env,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT)
    out, _ = await asyncio.wait_for(proc.communicate(), 60)
    return proc.returncode or 0, out.decode()


class TestOperators:
    async def test_show_buy_a_held_one_void_and_buy_again(
        self, store_url, on, carrier, amqp, test_env
    ):
        """A held order is shown with the carrier's message; once the carrier accepts the
        address, `labels buy` gets it its label; `labels void` refunds it and makes the order
        ready_to_ship again; `labels buy` buys a second one under a new reference; a buy for
        an order with a label is refused. Each void and buy is in operator_actions."""
        config = labels_config(on, carrier)
        env = {**os.environ, **test_env, "DATABASE_URL": store_url, "EASYPOST_API_KEY": KEY}
        async with open_store(store_url) as store, running(on, store, "labels"):
            await ready(store, amqp, on, "OPS-1", street=NOWHERE)
            await wait_until(becomes(store, "OPS-1", "on_hold"))
            code, out = await cli(config, env, "labels", "show", "OPS-1")
            assert 0 == code and "order OPS-1: on_hold (address_invalid)" in out, out
            assert "held address_invalid: Unable to verify address." in out, out

            carrier.emulator.rejected_streets = frozenset()  # the address is fixed
            code, out = await cli(config, env, "labels", "buy", "OPS-1")
            assert 0 == code, out
            await wait_until(becomes(store, "OPS-1", "label_purchased"))
            code, out = await cli(config, env, "labels", "show", "OPS-1")
            first = await one(store, "SELECT * FROM labels WHERE order_id = $1", "OPS-1")
            assert first is not None and f"tracking {first['tracking_code']}" in out, out

            code, out = await cli(config, env, "labels", "buy", "OPS-1")
            assert 2 == code and "error: order OPS-1: it has a label" in out, out

            code, out = await cli(config, env, "labels", "void", "OPS-1")
            assert 0 == code and "refund submitted" in out, out
            assert ("ready_to_ship", None) == await status(store, "OPS-1")
            assert 1 == carrier.sold()["refunds"]
            gone = await one(store, "SELECT COUNT(*) AS n FROM shipments WHERE order_id = $1",
                             "OPS-1")
            assert gone is not None and 0 == gone["n"]

            code, out = await cli(config, env, "labels", "buy", "OPS-1")
            assert 0 == code, out
            await wait_until(becomes(store, "OPS-1", "label_purchased"))
            second = await one(store, "SELECT * FROM labels WHERE order_id = $1", "OPS-1")
            # purchase 1 was held, 2 voided: 3, under its own reference
            assert second is not None and ("bought", 3, "OPS-1.3") == (
                second["state"], second["purchase"], second["reference"])
            async with store.transaction() as tx:
                actions = await tx.fetch("SELECT action, target, role, outcome FROM"
                                         " operator_actions ORDER BY id")
        assert {"OPS-1.2": 1, "OPS-1.3": 1} == carrier.sold()["labels_by_reference"]
        assert [("labels buy", "requested"), ("labels buy", "failed"),
                ("labels void", "voided"), ("labels buy", "requested")] == [
            (a["action"], a["outcome"].split(":")[0].split(" (")[0]) for a in actions]
        assert {("OPS-1", "cli")} == {(a["target"], a["role"]) for a in actions}
