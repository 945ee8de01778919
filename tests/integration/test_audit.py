"""The audit consumer against the real RabbitMQ and both stores: every event type the other
consumers get is recorded once, with its business keys, however often it is delivered."""

from __future__ import annotations

import asyncio

import aio_pika
import orjson
import pytest
from test_runner import wait_for

from consumers.cli import consumer_spec
from consumers.runner import Runner

pytestmark = pytest.mark.integration

ORDER = {"id": "shopify-delivery-1", "type": "order.created", "source": "shopify",
         "received_at": "2026-11-29T10:00:00.000Z", "occurred_at": "2026-11-29T09:59:58Z",
         "schema": "order.created/v1",
         "data": {"order_id": "1042", "lines": [{"sku": "MUG-1", "quantity": 1},
                                                {"sku": "CAP-2", "quantity": 2}]}}
STOCK = {"id": "stock-1", "type": "inventory.updated", "source": "inventory",
         "received_at": "2026-11-29T10:00:01.000Z", "occurred_at": None,
         "schema": "inventory.updated/v1",
         "data": {"sku": "MUG-1", "location": "default", "delta": 3,
                  "as_of": "2026-11-29T10:00:00Z"}}
TRACKING = {"id": "ep-1", "type": "shipment.updated", "source": "easypost",
            "received_at": "2026-11-29T10:00:02.000Z", "occurred_at": "2026-11-29T10:00:00Z",
            "schema": "shipment.updated/v1",
            "data": {"tracking_code": "EZ1000", "carrier": "USPS", "order_id": "1042",
                     "status": "in_transit"}}


async def publish_events(amqp, topology, events: list[dict]) -> None:
    channel = await amqp.channel(publisher_confirms=True)
    exchange = await channel.get_exchange(topology.exchange)
    for event in events:
        await exchange.publish(
            aio_pika.Message(orjson.dumps(event), delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
                             message_id=event["id"], type=event["type"],
                             headers={"attempt": 0}),
            routing_key=event["type"],
        )
    await channel.close()


async def test_every_event_is_recorded_once_with_its_keys(amqp, topology, store, settings,
                                                         queue_depths):
    """An order (delivered twice), a stock update and a tracking update each leave one
    audit_events row and their keys; the repeat is a duplicate; the audit queue drains."""
    await publish_events(amqp, topology, [ORDER, ORDER, STOCK, TRACKING])
    stop = asyncio.Event()
    task = asyncio.create_task(Runner(consumer_spec("audit", settings), store,
                                      settings.broker, prefetch=10).run(stop))
    try:
        async def drained() -> bool:
            async with store.transaction() as tx:
                claimed = await tx.fetchval("SELECT COUNT(*) FROM inbox")
            return claimed == 3 and 0 == (await queue_depths())[topology.queue("audit")]

        await wait_for(drained)
    finally:
        stop.set()
        await asyncio.wait_for(task, 10)
    async with store.transaction() as tx:
        events = await tx.fetch(
            "SELECT event_id, source, type, schema, received_at, occurred_at FROM audit_events"
            " ORDER BY event_id")
        keys = await tx.fetch("SELECT event_id, kind, value FROM event_keys"
                              " ORDER BY event_id, kind, value")
        recorded = await tx.fetchval("SELECT COUNT(*) FROM audit_events"
                                     " WHERE recorded_at IS NOT NULL")
    assert [
        {"event_id": "ep-1", "source": "easypost", "type": "shipment.updated",
         "schema": "shipment.updated/v1", "received_at": "2026-11-29T10:00:02.000Z",
         "occurred_at": "2026-11-29T10:00:00Z"},
        {"event_id": "shopify-delivery-1", "source": "shopify", "type": "order.created",
         "schema": "order.created/v1", "received_at": "2026-11-29T10:00:00.000Z",
         "occurred_at": "2026-11-29T09:59:58Z"},
        {"event_id": "stock-1", "source": "inventory", "type": "inventory.updated",
         "schema": "inventory.updated/v1", "received_at": "2026-11-29T10:00:01.000Z",
         "occurred_at": None},
    ] == events
    assert 3 == recorded
    assert [
        ("ep-1", "order_id", "1042"), ("ep-1", "tracking_code", "EZ1000"),
        ("shopify-delivery-1", "order_id", "1042"), ("shopify-delivery-1", "sku", "CAP-2"),
        ("shopify-delivery-1", "sku", "MUG-1"), ("stock-1", "sku", "MUG-1"),
    ] == [(row["event_id"], row["kind"], row["value"]) for row in keys]
    assert 0 == (await queue_depths())[topology.dead_queue("audit")]
