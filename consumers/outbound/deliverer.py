"""One subscription's deliveries: its own channel and HTTP connection pool, so one slow or
dead endpoint never delays the others; paused and resumed with the subscription's state."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from typing import Any

import structlog
from aio_pika.abc import AbstractIncomingMessage, AbstractRobustConnection
from prometheus_client import Counter

from consumers.outbound.attempts import AttemptLog, attempt_row
from consumers.outbound.notification import delivery_queue
from consumers.outbound.sender import Attempt, Sender, rung_for
from consumers.outbound.state import count_failure, set_state, subscription_state
from consumers.store import Store, StoreError
from router.broker.messages import attempt_of, dead_copy, quietly, reroute, retry_copy
from router.broker.topology import Topology
from router.settings import Settings, SubscriptionSettings

log = structlog.get_logger("consumers.notifications")

DELIVERIES = Counter(
    "notification_deliveries", "Delivery attempts by subscription and outcome "
    "(delivered, failed, retried, dead, parked)", ["subscription", "outcome"],
)
PAUSES = Counter(
    "notification_subscription_pauses", "Subscriptions paused or disabled", ["subscription"],
)
STATE_POLL_SECONDS = 1.0


class Deliverer:
    """Delivers one subscription's queue; pauses and resumes with the stored state."""

    def __init__(self, connection: AbstractRobustConnection, settings: Settings, store: Store,
                 sub: SubscriptionSettings) -> None:
        self.connection = connection
        self.sub = sub
        self.settings = settings.notifications
        self.confirm_timeout = settings.broker.confirm_timeout
        self.store = store
        self.topology = Topology.of(settings.broker)
        self.queue_name = self.topology.queue(delivery_queue(sub.name))
        self.sender = Sender(sub, self.settings)
        self.in_hand: set[asyncio.Task[None]] = set()
        self.tag: str | None = None
        self.known_state = "enabled"
        self.attempts = AttemptLog(self.store, sub.name)

    async def _state(self) -> str:
        """The stored state, read once a second by run() (a pause or an enable by the CLI or
        another process is seen within that); while the store cannot answer, the last one
        it gave (deliveries go on through a store outage)."""
        try:
            row = await subscription_state(self.store, self.sub.name)
        except StoreError as exc:
            log.warning("subscription_state_unavailable", subscription=self.sub.name,
                        error=type(exc).__name__, assumed=self.known_state)
            return self.known_state
        self.known_state = row["state"] if row else "enabled"
        return self.known_state

    async def _bookkeep(self, what: str, work: Awaitable[Any]) -> Any:
        """A bookkeeping write (attempt record, failure count): if the store fails, log it
        and go on; the delivery's own outcome (ack, retry, dead) does not depend on it."""
        try:
            return await work
        except StoreError as exc:
            log.warning("delivery_bookkeeping_failed", subscription=self.sub.name, what=what,
                        error=type(exc).__name__)
            return None

    async def run(self, stop: asyncio.Event) -> None:
        await self.sender.open()
        channel = await self.connection.channel(publisher_confirms=True)
        await channel.set_qos(prefetch_count=self.settings.concurrency)
        self.channel = channel
        self.queue = await channel.get_queue(self.queue_name)
        try:
            while not stop.is_set():
                state = await self._state()
                if state == "enabled" and self.tag is None:
                    self.tag = await self.queue.consume(self._on_message)
                    log.info("subscription_consuming", subscription=self.sub.name)
                elif state != "enabled" and self.tag is not None:
                    await self.park(state)
                try:
                    await asyncio.wait_for(stop.wait(), STATE_POLL_SECONDS)
                except TimeoutError:
                    pass
        finally:
            await self.park("stopping")
            if self.in_hand:
                await asyncio.gather(*self.in_hand, return_exceptions=True)
            await self.sender.close()
            await quietly(channel.close())

    async def park(self, why: str) -> None:
        """Stop consuming (at once, before any message in hand is put back, so the broker
        does not hand it straight back): the queue keeps what is left."""
        tag, self.tag = self.tag, None
        if tag is not None:
            await quietly(self.queue.cancel(tag))
            if why != "stopping":
                log.warning("subscription_parked", subscription=self.sub.name, why=why)

    async def _on_message(self, message: AbstractIncomingMessage) -> None:
        task = asyncio.current_task()
        assert task is not None
        self.in_hand.add(task)
        try:
            await self._deliver(message)
        except Exception as exc:  # a bug, not the receiver: retry it later, never hold it
            log.error("delivery_crashed", subscription=self.sub.name,
                      message_id=message.message_id, error=type(exc).__name__)
            await self._reroute(message, attempt_of(message),
                                Attempt(error=f"internal error: {type(exc).__name__}"))
        finally:
            self.in_hand.discard(task)

    async def _deliver(self, message: AbstractIncomingMessage) -> None:
        name = self.sub.name
        state = self.known_state
        if state != "enabled":  # paused since it was delivered to us: park it
            await self.park(state)
            DELIVERIES.labels(name, "parked").inc()
            await quietly(message.nack(requeue=True))
            return
        attempt = attempt_of(message)
        message_id = message.message_id or ""
        try:
            result = await self.sender.send(message_id, message.body)
        except Exception as exc:  # our bug, not the receiver's: still an attempt that failed
            log.error("delivery_crashed", subscription=name, message_id=message_id,
                      error=type(exc).__name__)
            result = Attempt(error=f"internal error: {type(exc).__name__}")
        await self._bookkeep("record_attempt", self.attempts.record(
            attempt_row(name, message, attempt + 1, result), result.delivered))
        (log.info if result.delivered else log.warning)(
            "delivery", subscription=name, message_id=message_id, attempt=attempt + 1,
            status=result.status, error=result.error, latency_ms=round(result.latency * 1000, 3))
        if result.delivered:
            DELIVERIES.labels(name, "delivered").inc()
            await quietly(message.ack())
            return
        DELIVERIES.labels(name, "failed").inc()
        if result.status == 410:
            await self._bookkeep("set_state", set_state(
                self.store, name, "disabled", "the receiver answered 410 Gone"))
            self.known_state = "disabled"
            PAUSES.labels(name).inc()
            log.warning("subscription_disabled", subscription=name, reason="410 Gone")
            await self.park("disabled")
            await quietly(message.nack(requeue=True))  # kept for when it is enabled again
            return
        if await self._bookkeep("count_failure", count_failure(self.store, name, self.settings)):
            PAUSES.labels(name).inc()
            log.warning("subscription_paused", subscription=name)
            self.known_state = "paused"
            await self.park("paused")
        await self._reroute(message, attempt, result)

    async def _reroute(self, message: AbstractIncomingMessage, attempt: int,
                       result: Attempt) -> None:
        ladder = self.settings.retry_ladder
        base = delivery_queue(self.sub.name)
        if attempt + 1 > len(ladder):
            outcome, routing_key = "dead", self.topology.dead_queue(base)
            copy = dead_copy(message, attempt=attempt + 1, reason=result.describe()[:200],
                             consumer="notifications")
        else:
            outcome = "retried"
            delay = rung_for(ladder, attempt, result.retry_after)
            routing_key = self.topology.retry_queue(base, delay)
            copy = retry_copy(message)
        if not await reroute(self.channel, message, copy, routing_key,
                             timeout=self.confirm_timeout):
            return
        if outcome == "dead":
            log.warning("delivery_dead", subscription=self.sub.name,
                        message_id=message.message_id, attempts=attempt + 1,
                        reason=result.describe()[:200], queue=routing_key)
        DELIVERIES.labels(self.sub.name, outcome).inc()
        await quietly(message.ack())
