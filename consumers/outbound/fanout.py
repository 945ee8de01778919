"""The notifications consumer (`python -m consumers notifications`): the fan-out, and one
deliverer per enabled subscription, on one robust connection.

    fan-out    queue `notifications` (notify.#) -> one copy per subscription that wants the
               type (and is enabled in the config) on its own queue `deliver.<name>`,
               confirmed by the broker, then ack.
"""

from __future__ import annotations

import asyncio

import aio_pika
import structlog
from aio_pika.abc import AbstractIncomingMessage

from consumers.outbound.deliverer import Deliverer
from consumers.outbound.guard import check_addresses
from consumers.outbound.notification import delivery_queue, delivery_queues, event_type
from consumers.store import Store
from router.broker.connect import open_connection
from router.broker.messages import copy_message, quietly
from router.broker.reconnect import keep_trying
from router.broker.topology import Topology
from router.settings import Settings

log = structlog.get_logger("consumers.notifications")

QUEUE = "notifications"


class Notifications:
    """The fan-out and one deliverer per subscription, on one robust connection."""

    def __init__(self, settings: Settings, store: Store) -> None:
        self.settings = settings
        self.store = store
        self.topology = Topology.of(settings.broker)
        self.connection: aio_pika.abc.AbstractRobustConnection | None = None

    async def run(self, stop: asyncio.Event) -> None:
        await check_addresses(self.settings)
        # While the broker is away at start, wait for it as every consumer does.
        connection = await keep_trying(lambda: open_connection(
            self.settings.broker, "consumer-notifications", robust=True
        ), stop, consumer="notifications")
        if connection is None:  # stopped before the broker came
            return
        self.connection = connection
        try:
            channel = await self.connection.channel()
            await self.topology.declare(channel)
            await self.topology.declare_queues(channel, delivery_queues(self.topology,
                                                                        self.settings))
            await channel.close()
            subs = [s for s in self.settings.subscriptions.values() if s.enabled]
            tasks = [asyncio.create_task(self._fan_out(stop))]
            tasks += [
                asyncio.create_task(
                    Deliverer(self.connection, self.settings, self.store, sub).run(stop))
                for sub in subs
            ]
            log.info("notifications_started", subscriptions=[s.name for s in subs])
            await asyncio.gather(*tasks)
        finally:
            await self.connection.close()
        log.info("notifications_stopped")

    async def _fan_out(self, stop: asyncio.Event) -> None:
        assert self.connection is not None
        channel = await self.connection.channel(publisher_confirms=True)
        await channel.set_qos(prefetch_count=100)
        queue = await channel.get_queue(self.topology.queue(QUEUE))
        subs = [s for s in self.settings.subscriptions.values() if s.enabled]

        async def on_message(message: AbstractIncomingMessage) -> None:
            kind = event_type(message)
            wanting = [sub for sub in subs if sub.wants(kind)]
            try:
                await asyncio.gather(*(
                    channel.default_exchange.publish(
                        copy_message(message, attempt=0, subscription=sub.name),
                        routing_key=self.topology.queue(delivery_queue(sub.name)),
                        timeout=self.settings.broker.confirm_timeout,
                    )
                    for sub in wanting
                ))
            except Exception as exc:  # not confirmed: it comes back, copies may repeat
                log.warning("fan_out_failed", type=kind, error=type(exc).__name__)
                await quietly(message.nack(requeue=True))
                return
            await quietly(message.ack())

        tag = await queue.consume(on_message)
        await stop.wait()
        await quietly(queue.cancel(tag))
        await channel.close()

