"""Broker topology as data, declared idempotently by whichever process starts first.

    exchange  events            topic, durable, alternate-exchange events.unrouted
    exchange  events.unrouted   fanout, durable  -> queue unrouted
    queue     orders            order.*          (quorum)
    queue     inventory         inventory.*      (quorum)
    queue     shipping          shipment.*       (quorum)
    queue     notifications     notify.#         (quorum)
    queue     audit             order.*, inventory.*, shipment.*  (quorum; every event)
    queue     labels            notify.order.ready_to_ship, label.requested  (quorum; only
                                while [labels] is enabled: OPTIONAL_QUEUES)
    per queue NAME.retry.<s>    quorum, x-message-ttl, dead-letters back to NAME
              NAME.dead         quorum; also where a message redelivered more than
                                delivery_limit times (a crash loop) ends up
    per source held.SOURCE      quorum; authentic deliveries that could not be mapped, kept
                                for an operator (sources with on_invalid = "hold")
    per subscription            deliver.NAME, its retry queues on the notifications ladder and
                                deliver.NAME.dead (declared by the notifications consumer)
All names carry the configured prefix.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import aio_pika
from aio_pika.abc import AbstractChannel, AbstractExchange

from router.settings import BrokerSettings

# queue name -> routing keys bound from the events exchange
QUEUES: dict[str, tuple[str, ...]] = {
    "orders": ("order.*",),
    "inventory": ("inventory.*",),
    "shipping": ("shipment.*",),
    "notifications": ("notify.#",),  # notify.<event type>, e.g. notify.order.allocated
}
# The audit consumer records every canonical event the consumers above get.
QUEUES["audit"] = tuple(key for name in ("orders", "inventory", "shipping")
                        for key in QUEUES[name])
# Queues of consumers that are off unless their table switches them on (BrokerSettings
# optional_queues): the labels consumer takes the orders consumer's ready_to_ship
# notification (the notifications queue gets its own copy) and an operator's `labels buy`.
# Neither key matches order.* (one word after "order."), so the orders queue never sees them.
OPTIONAL_QUEUES: dict[str, tuple[str, ...]] = {
    "labels": ("notify.order.ready_to_ship", "label.requested"),
}


def delivery_queue(subscription: str) -> str:
    """The queue (without prefix) holding an outbound subscription's deliveries."""
    return f"deliver.{subscription}"


@dataclass(frozen=True)
class QueueSpec:
    name: str
    arguments: dict[str, Any]
    bindings: tuple[str, ...] = ()


@dataclass(frozen=True)
class Topology:
    """Names and arguments of every exchange and queue, for one prefix and retry ladder."""

    prefix: str = ""
    retry_ladder: tuple[int, ...] = (5, 15, 45)
    delivery_limit: int = 20
    optional: tuple[str, ...] = ()  # the OPTIONAL_QUEUES switched on

    @classmethod
    def of(cls, broker: BrokerSettings) -> Topology:
        """The topology the `[broker]` settings describe."""
        return cls(broker.prefix, broker.retry_ladder, broker.delivery_limit,
                   broker.optional_queues)

    @property
    def exchange(self) -> str:
        return f"{self.prefix}events"

    @property
    def unrouted_exchange(self) -> str:
        return f"{self.prefix}events.unrouted"

    @property
    def unrouted_queue(self) -> str:
        return f"{self.prefix}unrouted"

    def queue(self, name: str) -> str:
        return f"{self.prefix}{name}"

    def retry_queue(self, name: str, delay: int) -> str:
        return f"{self.prefix}{name}.retry.{delay}"

    def dead_queue(self, name: str) -> str:
        return f"{self.prefix}{name}.dead"

    def hold_queue(self, source: str) -> str:
        return f"{self.prefix}held.{source}"

    def hold_queues(self, sources: Iterable[str]) -> list[QueueSpec]:
        """Where each of `sources` keeps the deliveries it could not map (router.hold)."""
        return [QueueSpec(self.hold_queue(name), {"x-queue-type": "quorum"}) for name in sources]

    def delivery_queues(
        self, subscriptions: Iterable[str], ladder: tuple[int, ...]
    ) -> list[QueueSpec]:
        """Each subscription's deliver.NAME, its retry queues on `ladder` and its dead queue."""
        return [spec for name in subscriptions
                for spec in self.work_queues(delivery_queue(name), ladder)]

    def queues(self) -> list[QueueSpec]:
        specs = [QueueSpec(self.unrouted_queue, {"x-queue-type": "quorum"})]
        for name, keys in QUEUES.items():
            specs += self.work_queues(name, self.retry_ladder, keys)
        for name in self.optional:
            specs += self.work_queues(name, self.retry_ladder, OPTIONAL_QUEUES[name])
        return specs

    def work_queues(
        self, name: str, ladder: tuple[int, ...], bindings: tuple[str, ...] = ()
    ) -> list[QueueSpec]:
        """A work queue NAME, its retry queues on `ladder` and NAME.dead."""
        main = self.queue(name)
        specs = [
            QueueSpec(
                main,
                {
                    "x-queue-type": "quorum",
                    "x-delivery-limit": self.delivery_limit,
                    "x-dead-letter-exchange": "",
                    "x-dead-letter-routing-key": self.dead_queue(name),
                },
                bindings,
            )
        ]
        for delay in ladder:
            specs.append(
                QueueSpec(
                    self.retry_queue(name, delay),
                    {
                        "x-queue-type": "quorum",
                        "x-message-ttl": delay * 1000,
                        "x-dead-letter-exchange": "",
                        "x-dead-letter-routing-key": main,
                        # Expired messages move back with the broker's own confirms:
                        # a retry is never lost on its way back to the work queue.
                        "x-dead-letter-strategy": "at-least-once",
                        "x-overflow": "reject-publish",
                    },
                )
            )
        specs.append(QueueSpec(self.dead_queue(name), {"x-queue-type": "quorum"}))
        return specs

    def names(self) -> list[str]:
        """Every queue name, for operators and for clean-up in tests."""
        return [spec.name for spec in self.queues()]

    async def declare(self, channel: AbstractChannel) -> AbstractExchange:
        """Declare everything (idempotent) and return the events exchange."""
        unrouted = await channel.declare_exchange(
            self.unrouted_exchange, aio_pika.ExchangeType.FANOUT, durable=True
        )
        events = await channel.declare_exchange(
            self.exchange,
            aio_pika.ExchangeType.TOPIC,
            durable=True,
            arguments={"alternate-exchange": self.unrouted_exchange},
        )
        for spec in self.queues():
            queue = await channel.declare_queue(spec.name, durable=True, arguments=spec.arguments)
            if spec.name == self.unrouted_queue:
                await queue.bind(unrouted, routing_key="")
            for key in spec.bindings:
                await queue.bind(events, routing_key=key)
        return events

    async def declare_queues(self, channel: AbstractChannel, specs: list[QueueSpec]) -> None:
        """Declare extra queues (idempotent), e.g. the per-subscription delivery queues."""
        for spec in specs:
            await channel.declare_queue(spec.name, durable=True, arguments=spec.arguments)

    async def delete(self, channel: AbstractChannel, holds: Iterable[str] = (),
                     deliveries: Iterable[QueueSpec] = ()) -> None:
        """Remove everything (tests and `topology --delete`): the hold queues of the sources
        `holds` names and the queues in `deliveries` (delivery_queues) too; quorum queues
        refuse if_unused. Deleting what is not there is no error."""
        names = [*self.names(), *(spec.name for spec in self.hold_queues(holds)),
                 *(spec.name for spec in deliveries)]
        for name in names:
            queue = await channel.get_queue(name, ensure=False)
            await queue.delete(if_unused=False, if_empty=False)
        for name in (self.exchange, self.unrouted_exchange):
            exchange = await channel.get_exchange(name, ensure=False)
            await exchange.delete()
