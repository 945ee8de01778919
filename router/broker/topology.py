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
    queue     storefront        notify.shipment.label_created  (quorum; only while
                                [storefront] is enabled)
    per queue NAME.retry.<s>    quorum, x-message-ttl, dead-letters back to NAME; one per
                                rung of the queue's ladder: [broker] retry_ladder, or the
                                consumer's own (labels, storefront: hours long, so an outage
                                of the carrier or the store never dead-letters; `ladder`)
              NAME.dead         quorum; also where a message redelivered more than
                                delivery_limit times (a crash loop) ends up
    per source held.SOURCE      quorum; authentic deliveries that could not be mapped, kept
                                for an operator (sources with on_invalid = "hold")
    per subscription            deliver.NAME, its retry queues on the notifications ladder and
                                deliver.NAME.dead (declared by the notifications consumer)
All names carry the configured prefix.

held.* and audit are bounded (x-max-length, x-max-length-bytes from [broker]) with
x-overflow reject-publish: once full, the broker nacks a publish to them, so the ingress
answers 503 and the provider retries later, instead of the disk filling up until an alarm
blocks every publisher. A queue declared before these limits existed keeps working without
them (RabbitMQ cannot change a queue's arguments): see LIMITS_NOT_APPLIED.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import aio_pika
import structlog
from aio_pika.abc import AbstractChannel, AbstractExchange, AbstractQueue
from aiormq.exceptions import ChannelPreconditionFailed

from router.settings import BrokerSettings

log = structlog.get_logger("router.topology")

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
    # the storefront consumer: the labels consumer's notification that a label was bought
    "storefront": ("notify.shipment.label_created",),
}


def delivery_queue(subscription: str) -> str:
    """The queue (without prefix) holding an outbound subscription's deliveries."""
    return f"deliver.{subscription}"


@dataclass(frozen=True)
class QueueLimit:
    """At most `max_length` messages and `max_bytes` of bodies; past either, publishes are
    refused (nacked), never older messages dropped."""

    max_length: int
    max_bytes: int

    def arguments(self) -> dict[str, Any]:
        return {"x-max-length": self.max_length, "x-max-length-bytes": self.max_bytes,
                "x-overflow": "reject-publish"}


LIMIT_ARGUMENTS = frozenset(QueueLimit(0, 0).arguments())
# What to do about a queue that exists without its limits, for the log and the README.
LIMITS_NOT_APPLIED = (
    "the queue was declared before length limits existed and RabbitMQ cannot change its "
    "arguments; it works unbounded. Apply them with a policy (rabbitmqctl set_policy NAME "
    "'^QUEUE$' '{\"max-length\":N,\"max-length-bytes\":B,\"overflow\":\"reject-publish\"}' "
    "--apply-to queues), or empty and delete it (dlq release/purge, then "
    "`topology` declares it again with them)"
)


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
    held_limit: QueueLimit = QueueLimit(BrokerSettings.held_max_length,
                                        BrokerSettings.held_max_bytes)
    audit_limit: QueueLimit = QueueLimit(BrokerSettings.audit_max_length,
                                         BrokerSettings.audit_max_bytes)
    optional: tuple[str, ...] = ()  # the OPTIONAL_QUEUES switched on
    ladders: tuple[tuple[str, tuple[int, ...]], ...] = ()  # queue -> its own ladder

    @classmethod
    def of(cls, broker: BrokerSettings) -> Topology:
        """The topology the `[broker]` settings describe."""
        return cls(broker.prefix, broker.retry_ladder, broker.delivery_limit,
                   QueueLimit(broker.held_max_length, broker.held_max_bytes),
                   QueueLimit(broker.audit_max_length, broker.audit_max_bytes),
                   broker.optional_queues, broker.ladders)

    def ladder(self, name: str) -> tuple[int, ...]:
        """The retry ladder of work queue `name` (no prefix): its own if it has one
        ([labels] and [storefront] retry_ladder), else [broker] retry_ladder."""
        return dict(self.ladders).get(name, self.retry_ladder)

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
        return [QueueSpec(self.hold_queue(name),
                          {"x-queue-type": "quorum", **self.held_limit.arguments()})
                for name in sources]

    def bounded(self, holds: Iterable[str]) -> list[tuple[str, QueueLimit]]:
        """The bounded queues and their limits: the hold queues of `holds`, and audit."""
        return [*((self.hold_queue(name), self.held_limit) for name in holds),
                (self.queue("audit"), self.audit_limit)]

    def delivery_queues(
        self, subscriptions: Iterable[str], ladder: tuple[int, ...]
    ) -> list[QueueSpec]:
        """Each subscription's deliver.NAME, its retry queues on `ladder` and its dead queue."""
        return [spec for name in subscriptions
                for spec in self.work_queues(delivery_queue(name), ladder)]

    def queues(self) -> list[QueueSpec]:
        specs = [QueueSpec(self.unrouted_queue, {"x-queue-type": "quorum"})]
        for name, keys in QUEUES.items():
            # Nobody may be consuming the audit trail for a while: bound it.
            limit = self.audit_limit if name == "audit" else None
            specs += self.work_queues(name, self.retry_ladder, keys, limit)
        for name in self.optional:
            specs += self.work_queues(name, self.ladder(name), OPTIONAL_QUEUES[name])
        return specs

    def work_queues(
        self, name: str, ladder: tuple[int, ...], bindings: tuple[str, ...] = (),
        limit: QueueLimit | None = None,
    ) -> list[QueueSpec]:
        """A work queue NAME (bounded by `limit` if given), its retry queues on `ladder` and
        NAME.dead."""
        main = self.queue(name)
        specs = [
            QueueSpec(
                main,
                {
                    "x-queue-type": "quorum",
                    "x-delivery-limit": self.delivery_limit,
                    "x-dead-letter-exchange": "",
                    "x-dead-letter-routing-key": self.dead_queue(name),
                    **(limit.arguments() if limit is not None else {}),
                },
                bindings,
            )
        ]
        for delay in dict.fromkeys(ladder):  # one queue per distinct rung
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

    def work_queue_bases(self) -> list[str]:
        """The consumers' work queues this topology declares, by base name (no prefix): the
        fixed QUEUES and the optional ones switched on. Each has NAME.retry.* and NAME.dead
        (work_queues); operators' tools list these, never a list of their own."""
        return [*QUEUES, *self.optional]

    def names(self) -> list[str]:
        """Every queue name, for operators and for clean-up in tests."""
        return [spec.name for spec in self.queues()]

    async def declare(self, channel: AbstractChannel,
                      not_limited: list[str] | None = None) -> AbstractExchange:
        """Declare everything (idempotent) and return the events exchange; the queues that
        exist without their limits are added to `not_limited` (see declare_queue)."""
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
            queue = await declare_queue(channel, spec, not_limited)
            if spec.name == self.unrouted_queue:
                await queue.bind(unrouted, routing_key="")
            for key in spec.bindings:
                await queue.bind(events, routing_key=key)
        return events

    async def declare_queues(self, channel: AbstractChannel, specs: list[QueueSpec],
                             not_limited: list[str] | None = None) -> None:
        """Declare extra queues (idempotent), e.g. the hold queues or the per-subscription
        delivery queues; as `declare` for `not_limited`."""
        for spec in specs:
            await declare_queue(channel, spec, not_limited)

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


async def declare_queue(channel: AbstractChannel, spec: QueueSpec,
                        not_limited: list[str] | None = None) -> AbstractQueue:
    """Declare `spec`. A queue that exists without the length limits `spec` now has
    (declared by an older release: RabbitMQ refuses other arguments with PRECONDITION_FAILED
    and closes the channel) is declared as it was, on the channel reopened, and logged with
    what to do (LIMITS_NOT_APPLIED); its name is added to `not_limited`. Any other mismatch
    is raised as it is."""
    try:
        return await channel.declare_queue(spec.name, durable=True, arguments=spec.arguments)
    except ChannelPreconditionFailed:
        unlimited = {k: v for k, v in spec.arguments.items() if k not in LIMIT_ARGUMENTS}
        if unlimited == spec.arguments:
            raise
        await channel.reopen()
    queue = await channel.declare_queue(spec.name, durable=True, arguments=unlimited)
    log.warning("queue_limits_not_applied", queue=spec.name,
                wanted={k: spec.arguments[k] for k in sorted(LIMIT_ARGUMENTS)},
                remedy=LIMITS_NOT_APPLIED.replace("QUEUE", spec.name))
    if not_limited is not None:
        not_limited.append(spec.name)
    return queue
