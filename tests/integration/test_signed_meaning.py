"""Meaning comes from what is signed, end to end: the real ingress, the real RabbitMQ and the
orders consumer on both stores. A captured body re-sent under another topic is held, not
published; a replayed body is stale, not a new effect; order ids beyond 2**53 stay exact;
a quantity over the bound is held."""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import orjson
import pytest
from prometheus_client import REGISTRY
from test_runner import wait_for as until

from consumers import orders
from consumers.cli import consumer_spec
from consumers.errors import Permanent
from consumers.runner import Runner
from consumers.stock import Policy
from consumers.store import Store
from router.providers import signed_headers

pytestmark = pytest.mark.integration

SAMPLES = Path(__file__).resolve().parents[2] / "config" / "samples"
SHOPIFY = orjson.loads((SAMPLES / "shopify-orders-create.json").read_bytes())
WOOCOMMERCE = orjson.loads((SAMPLES / "woocommerce-order-created.json").read_bytes())
SKUS = ("PEP-BPC157-5MG", "BAC-WATER-10ML")  # the Shopify sample's lines: 2 and 1


def shopify_order(**changes: Any) -> bytes:
    """The Shopify sample as Shopify sends it for orders/create (updated_at as created)."""
    return orjson.dumps({**SHOPIFY, "updated_at": SHOPIFY["created_at"], **changes})


async def rows(store: Store, sql: str, *args: Any) -> list[dict[str, Any]]:
    async with store.transaction() as tx:
        return await tx.fetch(sql, *args)


async def order_of(store: Store, order_id: str) -> tuple[str | None, list[int]]:
    """(status, reserved per line) of a stored order; (None, []) if unknown."""
    found = await rows(store, "SELECT status FROM orders WHERE order_id = $1", order_id)
    lines = await rows(store, "SELECT reserved FROM order_lines WHERE order_id = $1"
                              " ORDER BY line_no", order_id)
    return (found[0]["status"] if found else None), [line["reserved"] for line in lines]


def outcomes(outcome: str) -> float:
    return REGISTRY.get_sample_value(
        "consumer_messages_total", {"consumer": "orders", "outcome": outcome}) or 0.0


@pytest.fixture
async def stocked(store: Store) -> Store:
    async with store.transaction() as tx:
        for sku in SKUS:
            await tx.execute(
                "INSERT INTO stock (sku, location, on_hand, reserved, as_of)"
                " VALUES ($1, 'austin-1', 10, 0, '2026-01-01T00:00:00Z')", sku)
    return store


@pytest.fixture
def consuming(settings, stocked):
    """`async with consuming():` runs the orders consumer (as `python -m consumers orders`
    does) on this test's store and topology, stopped and drained at the end."""

    @contextlib.asynccontextmanager
    async def run() -> AsyncIterator[None]:
        stop = asyncio.Event()
        runner = Runner(consumer_spec("orders", settings), stocked, settings.broker, prefetch=10)
        task = asyncio.create_task(runner.run(stop))
        try:
            yield
        finally:
            stop.set()
            await asyncio.wait_for(task, 20)

    return run


async def post(client, settings, source: str, body: bytes, topic: str) -> tuple[int, dict]:
    """A delivery signed as the provider signs it, with a fresh delivery id."""
    headers = signed_headers(settings, source, body, topic, delivery_id=str(uuid.uuid4()))
    response = await client.post(f"/webhooks/{source}", data=body, headers=headers)
    return response.status, await response.json()


async def held(amqp, topology, source: str) -> list[tuple[str, str]]:
    """(delivery id, reason) of everything on the source's hold queue (given back)."""
    channel = await amqp.channel()
    queue = await channel.get_queue(topology.hold_queue(source))
    taken = []
    while (message := await queue.get(no_ack=False, fail=False)) is not None:
        taken.append((message.message_id, message.headers["x-held-reason"]))
    await channel.close()
    return taken


class TestCapturedBodies:
    async def test_a_captured_create_sent_as_cancelled_is_held_and_the_order_stands(
        self, settings, make_client, amqp, topology, queue_depths, stocked, consuming
    ):
        """orders/create's body, captured and re-sent with X-Shopify-Topic: orders/cancelled
        and a fresh id (the signature still holds: only the body is signed) is held as
        unproven_topic and never reaches a work queue; the order stays allocated with its
        stock. Shopify's real cancellation (cancelled_at set) still cancels it."""
        client = await make_client(settings)
        order_id = str(SHOPIFY["id"])
        created = shopify_order()
        async with consuming():
            assert (202, "accepted") == (
                (answer := await post(client, settings, "shopify", created, "orders/create"))[0],
                answer[1]["status"])
            await until(lambda: _is(stocked, order_id, ("allocated", [2, 1])))

        status, answer = await post(client, settings, "shopify", created, "orders/cancelled")
        assert (202, "held", "unproven_topic") == (status, answer["status"], answer["reason"])
        # Only the allocation's notification is queued: no event reached a work queue
        # (the audit queue, not consumed here, keeps its copy of the accepted one).
        assert {topology.queue("notifications"): 1, topology.queue("audit"): 1,
                topology.hold_queue("shopify"): 1} == {
            name: n for name, n in (await queue_depths()).items() if n}
        assert [(answer["id"], "unproven_topic")] == await held(amqp, topology, "shopify")
        assert ("allocated", [2, 1]) == await order_of(stocked, order_id)

        cancelled = shopify_order(cancelled_at="2026-11-21T09:00:00-05:00",
                                  updated_at="2026-11-21T09:00:00-05:00")
        async with consuming():
            status, answer = await post(client, settings, "shopify", cancelled,
                                        "orders/cancelled")
            assert (202, "accepted") == (status, answer["status"])
            await until(lambda: _is(stocked, order_id, ("cancelled", [0, 0])))


class TestVersions:
    async def test_a_replayed_older_update_is_stale_and_a_newer_one_applies(
        self, settings, make_client, stocked, consuming
    ):
        """Effects follow the body's own updated_at: after an update at 11:00, a replay of
        the 10:30 update under a fresh delivery id is a duplicate of what was signed (the
        ingress answers 200 and publishes nothing); another body dated 10:30 is recorded stale
        and changes nothing; an update at 12:00 applies. (Another content at 11:00 would
        apply: test_order_states.TestSameSecondVersions.)"""
        client = await make_client(settings)
        order_id = str(SHOPIFY["id"])

        def update(at: str, quantity: int) -> bytes:
            lines = [{**SHOPIFY["line_items"][0], "quantity": quantity}]
            return shopify_order(updated_at=at, line_items=lines)

        async with consuming():
            for body, topic in [(shopify_order(), "orders/create"),
                                (update("2026-11-20T10:30:00-05:00", 3), "orders/updated"),
                                (update("2026-11-20T11:00:00-05:00", 4), "orders/updated")]:
                assert 202 == (await post(client, settings, "shopify", body, topic))[0]
            await until(lambda: _is(stocked, order_id, ("allocated", [4])))

            stale = outcomes("stale")
            status, answer = await post(client, settings, "shopify",
                                        update("2026-11-20T10:30:00-05:00", 3), "orders/updated")
            assert (200, "duplicate") == (status, answer["status"])
            assert 202 == (await post(client, settings, "shopify",
                                      update("2026-11-20T10:30:00-05:00", 5),
                                      "orders/updated"))[0]
            await until(lambda: _ge(outcomes("stale"), stale + 1))
            assert ("allocated", [4]) == await order_of(stocked, order_id)

            newer = update("2026-11-20T12:00:00-05:00", 1)
            assert 202 == (await post(client, settings, "shopify", newer, "orders/updated"))[0]
            await until(lambda: _is(stocked, order_id, ("allocated", [1])))


class TestExactIds:
    async def test_ids_beyond_2_53_stay_distinct_from_ingress_to_notification(
        self, settings, make_client, amqp, topology, stocked, consuming
    ):
        """Orders 9007199254740993 and 9007199254740992 (one apart, the same as doubles)
        are two orders in the store and in the notifications; ids beyond 64 bits, which the
        JSON parser can only read as doubles, are held as unmappable rather than stored
        under a rounded id."""
        client = await make_client(settings)
        ids = [9007199254740993, 9007199254740992]
        async with consuming():
            for order_id in ids:
                body = shopify_order(id=order_id, line_items=SHOPIFY["line_items"][1:])
                assert 202 == (await post(client, settings, "shopify", body, "orders/create"))[0]

            async def both() -> bool:
                found = await rows(stocked, "SELECT order_id FROM orders")
                return len(found) == 2

            await until(both)
        stored = await rows(stocked, "SELECT order_id FROM orders ORDER BY order_id")
        assert ["9007199254740992", "9007199254740993"] == [row["order_id"] for row in stored]

        channel = await amqp.channel()
        queue = await channel.get_queue(topology.queue("notifications"))
        announced = set()
        while (message := await queue.get(no_ack=True, fail=False)) is not None:
            announced.add(orjson.loads(message.body)["data"]["order_id"])
        await channel.close()
        assert {"9007199254740993", "9007199254740992"} == announced

        answers = []
        for order_id in (2**64, 2**64 + 1):
            body = shopify_order(line_items=SHOPIFY["line_items"][1:]).replace(
                str(SHOPIFY["id"]).encode(), str(order_id).encode(), 1)
            status, answer = await post(client, settings, "shopify", body, "orders/create")
            answers.append((status, answer["status"], answer["reason"]))
        assert [(202, "held", "unmappable")] * 2 == answers


class TestQuantityBound:
    @pytest.mark.parametrize(("source", "topic", "body"), [
        ("shopify", "orders/create", lambda q: shopify_order(line_items=[
            {**SHOPIFY["line_items"][0], "quantity": q}])),
        ("woocommerce", "order.created", lambda q: orjson.dumps({**WOOCOMMERCE, "line_items": [
            {**WOOCOMMERCE["line_items"][0], "quantity": q}]})),
    ], ids=["shopify", "woocommerce"])
    async def test_a_quantity_over_a_million_is_held(
        self, settings, make_client, amqp, topology, queue_depths, source, topic, body
    ):
        """A provider order line of 1,000,001 units is held as unmappable at the line's
        quantity and nothing is published; 1,000,000 is accepted."""
        client = await make_client(settings)
        status, answer = await post(client, settings, source, body(1_000_001), topic)
        assert (202, "held", "unmappable") == (status, answer["status"], answer["reason"])
        depths = await queue_depths()
        assert 1 == depths.pop(topology.hold_queue(source))
        assert 0 == sum(depths.values())
        channel = await amqp.channel()
        message = await (await channel.get_queue(topology.hold_queue(source))).get(no_ack=True)
        await channel.close()
        assert {"path": "/lines/0/quantity", "message": "must be at most 1000000"} in (
            orjson.loads(message.headers["x-held-errors"]))
        status, answer = await post(client, settings, source, body(1_000_000), topic)
        assert (202, "accepted") == (status, answer["status"])

    async def test_the_orders_consumer_refuses_a_quantity_over_the_bound(self, stocked):
        """An event that did not come through the ingress (a replayed dead letter, another
        publisher) with a line over the bound is a Permanent failure, never a reservation."""
        event = _order("order.created", "2026-11-20T10:00:00Z", [(SKUS[0], 1_000_001)])
        with pytest.raises(Permanent, match="quantity: must be 1 to 1000000"):
            await _apply(stocked, event)
        assert (None, []) == await order_of(stocked, "o-1")


async def _is(store: Store, order_id: str, expected: tuple[str, list[int]]) -> bool:
    return await order_of(store, order_id) == expected


async def _ge(value: float, floor: float) -> bool:
    return value >= floor


# --- the orders consumer's versions, called directly on both stores ------------------------


def _event(type_: str, data: dict[str, Any], event_id: str | None = None) -> dict[str, Any]:
    return {"id": event_id or str(uuid.uuid4()), "type": type_, "source": "shopify",
            "received_at": "2026-11-28T00:00:00Z", "occurred_at": data.get("updated_at"),
            "schema": f"{type_}/v1", "data": data}


def _order(type_: str, updated_at: str, lines: list[tuple[str, int]], **more: Any) -> dict:
    return _event(type_, {
        "order_id": "o-1", "status": "received", "created_at": "2026-11-20T10:00:00Z",
        "updated_at": updated_at, "lines": [{"sku": s, "quantity": q} for s, q in lines],
        "shipping_address": {"line1": "1 Main St", "city": "Austin", "country": "US"},
        **more})


async def _apply(store: Store, event: dict[str, Any]) -> str:
    return await store.run(lambda tx: orders.handle(tx, event, policy=Policy()))


class TestOrderVersions:
    async def test_a_replayed_cancellation_of_an_older_version_is_stale(self, stocked):
        """A cancellation whose body is older than the stored version (a replay after the
        order moved on) is stale: the order keeps its stock."""
        sku = SKUS[0]
        await _apply(stocked, _order("order.created", "2026-11-20T10:00:00Z", [(sku, 1)]))
        await _apply(stocked, _order("order.updated", "2026-11-20T12:00:00Z", [(sku, 2)]))
        old = _order("order.cancelled", "2026-11-20T11:00:00Z", [(sku, 1)], status="cancelled")
        assert "stale" == await _apply(stocked, old)
        assert ("allocated", [2]) == await order_of(stocked, "o-1")
        new = _order("order.cancelled", "2026-11-20T13:00:00Z", [(sku, 2)], status="cancelled")
        assert "cancelled" == await _apply(stocked, new)

    async def test_a_refund_applies_once_per_refund_id(self, stocked):
        """The same refund re-sent under another delivery id (another event id) is stale:
        its lines leave the order once."""
        sku = SKUS[0]
        await _apply(stocked, _order("order.created", "2026-11-20T10:00:00Z", [(sku, 3)]))
        refund = {"order_id": "o-1", "refund_id": "r-1", "created_at": "2026-11-20T11:00:00Z",
                  "lines": [{"sku": sku, "quantity": 1}]}
        assert "allocated" == await _apply(stocked, _event("order.refunded", refund))
        assert "stale" == await _apply(stocked, _event("order.refunded", refund))
        assert ("allocated", [2]) == await order_of(stocked, "o-1")
        other = {**refund, "refund_id": "r-2"}
        assert "allocated" == await _apply(stocked, _event("order.refunded", other))
        assert ("allocated", [1]) == await order_of(stocked, "o-1")

    async def test_a_deleted_order_is_restored_only_by_a_newer_body(self, stocked):
        """After a deletion (which carries no version), order.restored with a body from
        before it (a replay) is stale; a restoration modified since re-creates the order."""
        sku = SKUS[0]
        await _apply(stocked, _order("order.created", "2026-11-20T10:00:00Z", [(sku, 1)]))
        deleted = _event("order.cancelled", {"order_id": "o-1"})
        assert "cancelled" == await _apply(stocked, deleted)
        replay = _order("order.restored", "2026-11-20T10:00:00Z", [(sku, 1)])
        assert "stale" == await _apply(stocked, replay)
        assert ("cancelled", [0]) == await order_of(stocked, "o-1")
        restored = _order("order.restored", "2026-11-20T14:00:00Z", [(sku, 1)])
        assert "allocated" == await _apply(stocked, restored)

    async def test_without_versions_only_an_older_update_is_stale(self, stocked):
        """An order from a source that sends no version (our portal) keeps the rule by event
        time: an older update is stale, one of the same time applies."""
        sku = SKUS[0]

        def versionless(type_: str, at: str, quantity: int) -> dict[str, Any]:
            event = _order(type_, at, [(sku, quantity)])
            del event["data"]["updated_at"]
            return {**event, "occurred_at": at}

        await _apply(stocked, versionless("order.created", "2026-11-20T10:00:00Z", 1))
        assert "stale" == await _apply(
            stocked, versionless("order.updated", "2026-11-20T09:00:00Z", 2))
        assert "allocated" == await _apply(
            stocked, versionless("order.updated", "2026-11-20T10:00:00Z", 3))
        assert ("allocated", [3]) == await order_of(stocked, "o-1")
