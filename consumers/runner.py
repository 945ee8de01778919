"""One runner for every consumer: take messages, apply them in the store, then ack.

For each batch of messages in hand:

    BEGIN
      per message: SAVEPOINT; inbox claim; handler effect; RELEASE
                   (a failing message rolls back to its savepoint and only it is retried)
    COMMIT
    failed messages -> NAME.retry.<delay> or NAME.dead, with the broker's confirm
    ack (only now: the effects are committed)
    outbox rows written by the batch -> events exchange as notify.*, then marked sent

A message is acked only after its effect is committed or it is safely on a retry or dead
queue; anything else (a crash, a lost connection) leaves it unacked and the broker
redelivers it, where the inbox turns the repeat into a no-op.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import aio_pika
import orjson
import structlog
from aio_pika.abc import AbstractIncomingMessage
from prometheus_client import Counter, Histogram

from router.messages import (
    DEAD_AT,
    DEAD_CONSUMER,
    DEAD_REASON,
    attempt_of,
    copy_message,
    now_iso,
)
from router.settings import BrokerSettings
from router.topology import Topology

log = structlog.get_logger("consumers.runner")

MESSAGES = Counter(
    "consumer_messages", "Messages handled, by consumer and outcome "
    "(processed, duplicate, retry, dead, or a handler's own word such as stale)",
    ["consumer", "outcome"],
)
HANDLER_LATENCY = Histogram(
    "consumer_handler_latency_seconds", "From taking a message to its ack", ["consumer"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0),
)


class Transient(Exception):
    """The effect could not be applied now (store busy, downstream timeout): retry later."""


class Permanent(Exception):
    """The event can never be applied (bad payload, unknown order): dead-letter it."""


# A handler applies one event inside the runner's transaction.  It may return a word for
# the log and metrics (e.g. "stale" for an update older than what is stored).
Handler = Callable[[Any, dict[str, Any]], Awaitable[str | None]]


@dataclass(frozen=True)
class ConsumerSpec:
    """A consumer: the queue it reads (without prefix) and its handler."""

    name: str
    handler: Handler


@dataclass
class Outcome:
    message: AbstractIncomingMessage
    event_id: str = "-"
    type: str = "-"
    result: str = "processed"  # processed | duplicate | retry | dead
    reason: str = ""
    started: float = field(default_factory=time.perf_counter)


class Runner:
    """Consumes one queue with competing-consumer semantics; safe to run N processes."""

    def __init__(
        self,
        spec: ConsumerSpec,
        store: Any,
        broker: BrokerSettings,
        *,
        prefetch: int = 100,
    ) -> None:
        self.spec = spec
        self.store = store
        self.broker = broker
        self.prefetch = prefetch
        self.topology = Topology(broker.prefix, broker.retry_ladder, broker.delivery_limit)
        self.queue_name = self.topology.queue(spec.name)
        self._inbox: asyncio.Queue[AbstractIncomingMessage] = asyncio.Queue()
        self._connection: aio_pika.abc.AbstractRobustConnection | None = None
        self._channel: aio_pika.abc.AbstractChannel | None = None

    async def _connect(self) -> aio_pika.abc.AbstractQueue:
        self._connection = await aio_pika.connect_robust(
            self.broker.url,
            client_properties={"connection_name": f"consumer-{self.spec.name}"},
        )
        self._channel = await self._connection.channel(publisher_confirms=True)
        await self.topology.declare(self._channel)
        await self._channel.set_qos(prefetch_count=self.prefetch)
        return await self._channel.get_queue(self.queue_name)

    async def run(self, stop: asyncio.Event) -> None:
        """Consume until `stop` is set, then finish and ack what is in hand and return."""
        queue = await self._connect()
        await self.relay_outbox()
        tag = await queue.consume(self._inbox.put)
        log.info("consumer_started", consumer=self.spec.name, queue=self.queue_name,
                 prefetch=self.prefetch)
        stopping = asyncio.create_task(stop.wait())
        try:
            while True:
                getting = asyncio.create_task(self._inbox.get())
                done, _ = await asyncio.wait({getting, stopping},
                                             return_when=asyncio.FIRST_COMPLETED)
                if getting not in done:
                    getting.cancel()
                    break
                batch = [getting.result()]
                while not self._inbox.empty() and len(batch) < self.prefetch:
                    batch.append(self._inbox.get_nowait())
                await self._process(batch)
            # Stop taking messages, then finish the ones already delivered to us.
            await queue.cancel(tag)
            leftover = []
            while not self._inbox.empty():
                leftover.append(self._inbox.get_nowait())
            if leftover:
                await self._process(leftover)
        finally:
            stopping.cancel()
            if self._connection is not None:
                await self._connection.close()
        log.info("consumer_stopped", consumer=self.spec.name)

    async def _process(self, batch: list[AbstractIncomingMessage]) -> None:
        outcomes = [Outcome(message) for message in batch]
        try:
            async with self.store.transaction() as tx:
                for outcome in outcomes:
                    await self._apply(tx, outcome)
        except Exception as exc:  # the commit itself failed: nothing was applied
            log.warning("batch_commit_failed", consumer=self.spec.name,
                        error=type(exc).__name__, size=len(batch))
            for outcome in outcomes:
                if outcome.result not in ("retry", "dead"):
                    outcome.result, outcome.reason = "retry", f"commit failed: {type(exc).__name__}"
        for outcome in outcomes:
            if outcome.result in ("retry", "dead"):
                await self._reroute(outcome)
        await batch[-1].ack(multiple=True)
        for outcome in outcomes:
            latency = time.perf_counter() - outcome.started
            MESSAGES.labels(self.spec.name, outcome.result).inc()
            HANDLER_LATENCY.labels(self.spec.name).observe(latency)
            log.info("message", consumer=self.spec.name, event_id=outcome.event_id,
                     type=outcome.type, attempt=attempt_of(outcome.message),
                     outcome=outcome.result, reason=outcome.reason or None,
                     latency_ms=round(latency * 1000, 3))
        await self.relay_outbox()

    async def relay_outbox(self) -> int:
        """Publish committed outbox rows to the events exchange (confirmed), then mark them
        sent.  Runs after every batch and at start-up, so rows left by a crash go out too.
        Several processes may send the same row: receivers deduplicate by its message id."""
        assert self._channel is not None
        exchange = await self._channel.get_exchange(self.topology.exchange, ensure=False)
        sent = 0
        while rows := await self.store.pending_outbox(500):
            # All in flight at once, then wait for every confirm: one round trip, not N.
            await asyncio.gather(*(
                exchange.publish(
                    aio_pika.Message(
                        row["body"],
                        content_type="application/json",
                        delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
                        message_id=row["message_id"],
                        type=row["routing_key"],
                        headers={"attempt": 0, "source": self.spec.name},
                    ),
                    routing_key=row["routing_key"],
                )
                for row in rows
            ))
            await self.store.mark_sent([row["id"] for row in rows])
            sent += len(rows)
        return sent

    async def _apply(self, tx: Any, outcome: Outcome) -> None:
        try:
            event = orjson.loads(outcome.message.body)
            outcome.event_id = str(event["id"])
            outcome.type = str(event["type"])
        except (orjson.JSONDecodeError, KeyError, TypeError):
            outcome.result, outcome.reason = "dead", "not an event envelope"
            return
        await tx.execute("SAVEPOINT message")
        try:
            if not await tx.claim(self.spec.name, outcome.event_id):
                outcome.result = "duplicate"
            else:
                outcome.result = await self.spec.handler(tx, event) or "processed"
        except Permanent as exc:
            await tx.execute("ROLLBACK TO SAVEPOINT message")
            outcome.result, outcome.reason = "dead", str(exc) or type(exc).__name__
        except Exception as exc:
            await tx.execute("ROLLBACK TO SAVEPOINT message")
            attempts = attempt_of(outcome.message) + 1
            exhausted = attempts > len(self.topology.retry_ladder)
            outcome.result = "dead" if exhausted else "retry"
            outcome.reason = f"{type(exc).__name__}: {exc}"[:200]
        await tx.execute("RELEASE SAVEPOINT message")

    async def _reroute(self, outcome: Outcome) -> None:
        """Republish a failed message (with confirm) to its retry or dead queue."""
        message = outcome.message
        attempt = attempt_of(message)
        if outcome.result == "retry":
            delay = self.topology.retry_ladder[attempt]
            routing_key = self.topology.retry_queue(self.spec.name, delay)
            copy = copy_message(message, attempt=attempt + 1)
        else:
            routing_key = self.topology.dead_queue(self.spec.name)
            copy = copy_message(message, attempt=attempt, **{
                DEAD_REASON: outcome.reason, DEAD_CONSUMER: self.spec.name, DEAD_AT: now_iso(),
            })
        assert self._channel is not None
        await self._channel.default_exchange.publish(copy, routing_key=routing_key)
