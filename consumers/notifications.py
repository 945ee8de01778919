"""The notifications consumer: `notify.*` events become signed webhooks to subscribers.

Two stages, both in this process:

    fan-out    queue `notifications` (notify.#) -> one copy per subscription that wants the
               type (and is enabled in the config) on its own queue `deliver.<name>`,
               confirmed by the broker, then ack.
    delivery   per subscription, its own channel and HTTP connection pool, so one slow or
               dead endpoint never delays the others: consume `deliver.<name>`, POST the body
               signed with Standard Webhooks (webhook-id = the message id, the same on every
               attempt; one `v1,` signature per secret), record the attempt, then:

        2xx                         delivered: ack
        410 Gone                    the subscription is disabled; the message is kept
        anything else, a timeout,   retried through `deliver.<name>.retry.<s>` (the ladder in
        a connection error, 3xx     [notifications]; Retry-After on 429/502/503/504 picks the
        (redirects are not          first rung at least that long), then `deliver.<name>.dead`
        followed)                   with the reason; ack once the copy is confirmed

After `pause_after` consecutive failures spanning at least `pause_window` seconds the
subscription is paused: its consumer stops and its messages wait (parked) in its queue.
`python -m router subscriptions enable NAME` turns it back on and they flow again. The state
lives in the store (subscription_state), so the CLI and every notifications process see it.
Every attempt is a row in `deliveries` (`python -m router deliveries EVENT_ID`), committed
before the ack; attempts that finish while a write is in flight share the next commit
(AttemptLog). The state is read once a second, not per message.

Addresses are checked at start-up (a URL that resolves to a private, loopback or link-local
address is refused unless the subscription says allow_private) and again at every connect
(router.egress.GuardedResolver), so DNS that changes later cannot reach them either.
Response bodies are read up to max_response_bytes.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import aio_pika
import aiohttp
import orjson
import structlog
from aio_pika.abc import AbstractIncomingMessage
from prometheus_client import Counter, Histogram

from consumers.store import PARAMS_PER_STATEMENT, StoreError, chunks, now_iso, placeholders
from router.egress import (
    Unresolvable,
    UnsafeURL,
    check_resolved,
    check_url,
    guarded_connector,
)
from router.messages import DEAD_AT, DEAD_CONSUMER, DEAD_REASON, attempt_of, copy_message
from router.messages import now_iso as header_time
from router.ratelimit import TokenBuckets
from router.settings import NotificationSettings, Settings, SubscriptionSettings
from router.topology import QueueSpec, Topology
from router.verify import build_verifier

log = structlog.get_logger("consumers.notifications")

DELIVERIES = Counter(
    "notification_deliveries", "Delivery attempts by subscription and outcome "
    "(delivered, failed, retried, dead, parked)", ["subscription", "outcome"],
)
PAUSES = Counter(
    "notification_subscription_pauses", "Subscriptions paused or disabled", ["subscription"],
)
LATENCY = Histogram(
    "notification_delivery_latency_seconds", "HTTP round trip of a delivery attempt",
    ["subscription"],
    buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 15.0, 30.0),
)

QUEUE = "notifications"
STATE_POLL_SECONDS = 1.0
RETRY_AFTER_STATUSES = frozenset({429, 502, 503, 504})
USER_AGENT = "webhook-router"


def delivery_queue(name: str) -> str:
    """The queue (without prefix) holding `name`'s deliveries."""
    return f"deliver.{name}"


def delivery_queues(topology: Topology, settings: Settings) -> list[QueueSpec]:
    """Every subscription's queue, retry queues and dead-letter queue."""
    specs: list[QueueSpec] = []
    for name in settings.subscriptions:
        specs += topology.work_queues(delivery_queue(name), settings.notifications.retry_ladder)
    return specs


def event_type(message: AbstractIncomingMessage) -> str:
    """`order.allocated` for a message routed as `notify.order.allocated`."""
    routing = message.type or message.routing_key or ""
    return routing.removeprefix("notify.")


async def check_addresses(settings: Settings) -> None:
    """Refuse to start with a subscription whose host resolves to an address it may not
    reach; a host that does not resolve yet is only logged (it is checked at every
    connect). Raises UnsafeURL naming the subscription."""
    for sub in settings.subscriptions.values():
        if not sub.enabled:
            continue
        try:
            await check_resolved(sub.url, allow_private=sub.allow_private)
        except Unresolvable as exc:
            log.warning("subscription_unresolvable", subscription=sub.name, error=str(exc))
        except UnsafeURL as exc:
            raise UnsafeURL(f"subscriptions.{sub.name}.url: {exc}") from exc


def rung_for(ladder: tuple[int, ...], attempt: int, retry_after: float | None) -> int:
    """The retry delay for `attempt` (0-based): its rung, or with a Retry-After the first
    rung at least that long (the last rung if none is)."""
    delay = ladder[min(attempt, len(ladder) - 1)]
    if retry_after is None or retry_after <= delay:
        return delay
    return next((rung for rung in ladder if rung >= retry_after), ladder[-1])


def parse_retry_after(value: str | None) -> float | None:
    """Retry-After in seconds (delta-seconds or an HTTP date), None if absent or unreadable."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    from email.utils import parsedate_to_datetime

    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


@dataclass
class Attempt:
    status: int | None = None
    error: str | None = None
    retry_after: float | None = None
    latency: float = 0.0

    @property
    def delivered(self) -> bool:
        return self.status is not None and 200 <= self.status < 300

    def describe(self) -> str:
        return f"HTTP {self.status}" if self.status is not None else (self.error or "error")


# --- the store's side ------------------------------------------------------------------------


async def subscription_state(store: Any, name: str) -> dict[str, Any] | None:
    async with store.transaction() as tx:
        return await tx.fetchrow(
            "SELECT name, state, reason, failures, first_failure_at, updated_at"
            " FROM subscription_state WHERE name = $1",
            name,
        )


async def set_state(store: Any, name: str, state: str, reason: str | None = None) -> None:
    """enabled | paused | disabled; enabling also forgets the failures counted so far."""
    async with store.transaction() as tx:
        await tx.execute(
            "INSERT INTO subscription_state (name, state, reason, failures, updated_at)"
            " VALUES ($1, $2, $3, 0, $4) ON CONFLICT (name) DO UPDATE SET state = $2,"
            " reason = $3, updated_at = $4,"
            " failures = CASE WHEN $2 = 'enabled' THEN 0 ELSE subscription_state.failures END,"
            " first_failure_at = CASE WHEN $2 = 'enabled' THEN NULL"
            " ELSE subscription_state.first_failure_at END",
            name, state, reason, now_iso(),
        )


def attempt_row(sub: str, message: AbstractIncomingMessage, attempt: int,
                result: Attempt) -> tuple[Any, ...]:
    """The `deliveries` row of one attempt, in ATTEMPT_COLUMNS order."""
    body_cause = None
    try:
        body_cause = orjson.loads(message.body).get("cause")
    except (orjson.JSONDecodeError, AttributeError):
        pass
    return (sub, message.message_id or "", body_cause, event_type(message), attempt,
            result.status, result.error, round(result.latency * 1000, 3), now_iso())


ATTEMPT_COLUMNS = ("subscription", "message_id", "event_id", "type", "attempt", "status_code",
                   "error", "latency_ms", "at")


class AttemptLog:
    """One subscription's attempts, written in group commits: the rows that arrive while a
    write is in flight go together in the next one, so under load one transaction records
    many (and, if any of them was delivered, forgets the failures counted so far). record()
    returns once its row is committed, and raises what the store raised if the write failed."""

    def __init__(self, store: Any, name: str) -> None:
        self.store = store
        self.name = name
        self.pending: list[tuple[tuple[Any, ...], bool, asyncio.Future[None]]] = []
        self.writer: asyncio.Task[None] | None = None

    async def record(self, row: tuple[Any, ...], delivered: bool) -> None:
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.pending.append((row, delivered, future))
        if self.writer is None or self.writer.done():
            self.writer = asyncio.create_task(self._write())
        await future

    async def _write(self) -> None:
        while self.pending:
            batch, self.pending = self.pending, []
            rows = [row for row, _, _ in batch]
            reset = any(delivered for _, delivered, _ in batch)

            async def work(tx: Any, rows: list[tuple[Any, ...]] = rows,
                           reset: bool = reset) -> None:
                width = len(ATTEMPT_COLUMNS)
                for chunk in chunks(rows, PARAMS_PER_STATEMENT // width):
                    values = ", ".join(f"({placeholders(width, first=i * width + 1)})"
                                       for i in range(len(chunk)))
                    await tx.execute(
                        f"INSERT INTO deliveries ({', '.join(ATTEMPT_COLUMNS)})"
                        f" VALUES {values}", *(value for row in chunk for value in row))
                if reset:
                    await tx.execute(
                        "UPDATE subscription_state SET failures = 0, first_failure_at = NULL"
                        " WHERE name = $1 AND failures > 0", self.name)

            try:
                await self.store.run(work)
            except Exception as exc:
                for _, _, future in batch:
                    if not future.done():
                        future.set_exception(exc)
            else:
                for _, _, future in batch:
                    if not future.done():
                        future.set_result(None)


async def count_failure(store: Any, name: str, settings: NotificationSettings) -> bool:
    """Count one more consecutive failure; True if that pauses the subscription."""
    now = now_iso()
    async with store.transaction() as tx:
        row = await tx.fetchrow(
            "INSERT INTO subscription_state (name, state, failures, first_failure_at,"
            " updated_at) VALUES ($1, 'enabled', 1, $2, $2) ON CONFLICT (name) DO UPDATE SET"
            " failures = subscription_state.failures + 1, first_failure_at ="
            " COALESCE(subscription_state.first_failure_at, $2), updated_at = $2"
            " RETURNING state, failures, first_failure_at",
            name, now,
        )
        assert row is not None
        span = (datetime.fromisoformat(now)
                - datetime.fromisoformat(row["first_failure_at"])).total_seconds()
        if (row["state"] == "enabled" and row["failures"] >= settings.pause_after
                and span >= settings.pause_window):
            await tx.execute(
                "UPDATE subscription_state SET state = 'paused', reason = $2 WHERE name = $1",
                name, f"{row['failures']} consecutive failures over {int(span)} s",
            )
            return True
    return False


# --- HTTP ------------------------------------------------------------------------------------


class Sender:
    """Signs and POSTs one subscription's deliveries."""

    def __init__(self, sub: SubscriptionSettings, settings: NotificationSettings) -> None:
        self.sub = sub
        self.settings = settings
        self.signer = build_verifier("standard-webhooks", sub.secrets, {},
                                     file="config", key=f"subscriptions.{sub.name}")
        self.buckets = (TokenBuckets(sub.rate_limit.rate, sub.rate_limit.burst)
                        if sub.rate_limit else None)
        self.session: aiohttp.ClientSession | None = None

    async def open(self) -> None:
        # Already checked when the settings were read; again here, as the session's contract.
        check_url(self.sub.url, mode=self.settings.mode, allow_private=self.sub.allow_private)
        self.session = aiohttp.ClientSession(
            connector=guarded_connector(allow_private=self.sub.allow_private,
                                        limit=self.settings.concurrency),
            headers={"User-Agent": USER_AGENT},
        )

    async def close(self) -> None:
        if self.session is not None:
            await self.session.close()

    async def _take_token(self) -> None:
        while self.buckets is not None:
            wait = self.buckets.take("", time.monotonic())
            if not wait:
                return
            await asyncio.sleep(wait)

    async def send(self, message_id: str, body: bytes) -> Attempt:
        """One attempt: POST, never following redirects, reading at most max_response_bytes."""
        assert self.session is not None
        await self._take_token()
        headers = {**self.sub.headers, "Content-Type": "application/json",
                   **self.signer.sign(body, time.time(), message_id)}
        started = time.perf_counter()
        result = Attempt()
        try:
            async with self.session.post(
                self.sub.url, data=body, headers=headers, allow_redirects=False,
                timeout=aiohttp.ClientTimeout(total=self.sub.timeout),
            ) as response:
                await response.content.read(self.settings.max_response_bytes)
                result.status = response.status
                if response.status in RETRY_AFTER_STATUSES:
                    result.retry_after = parse_retry_after(response.headers.get("Retry-After"))
        except TimeoutError:
            result.error = f"timeout after {self.sub.timeout:g} s"
        except (aiohttp.ClientError, OSError) as exc:
            result.error = f"{type(exc).__name__}: {exc}"[:300]
        result.latency = time.perf_counter() - started
        LATENCY.labels(self.sub.name).observe(result.latency)
        return result


# --- the two stages --------------------------------------------------------------------------


class Notifications:
    """The fan-out and one deliverer per subscription, on one robust connection."""

    def __init__(self, settings: Settings, store: Any) -> None:
        self.settings = settings
        self.store = store
        broker = settings.broker
        self.topology = Topology(broker.prefix, broker.retry_ladder, broker.delivery_limit)
        self.connection: aio_pika.abc.AbstractRobustConnection | None = None

    async def run(self, stop: asyncio.Event) -> None:
        await check_addresses(self.settings)
        self.connection = await aio_pika.connect_robust(
            self.settings.broker.url,
            client_properties={"connection_name": "consumer-notifications"},
        )
        try:
            channel = await self.connection.channel()
            await self.topology.declare(channel)
            await self.topology.declare_queues(channel, delivery_queues(self.topology,
                                                                        self.settings))
            await channel.close()
            subs = [s for s in self.settings.subscriptions.values() if s.enabled]
            tasks = [asyncio.create_task(self._fan_out(stop))]
            tasks += [asyncio.create_task(Deliverer(self, sub).run(stop)) for sub in subs]
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
                await _quietly(message.nack(requeue=True))
                return
            await _quietly(message.ack())

        tag = await queue.consume(on_message)
        await stop.wait()
        await _quietly(queue.cancel(tag))
        await channel.close()


class Deliverer:
    """Delivers one subscription's queue; pauses and resumes with the stored state."""

    def __init__(self, owner: Notifications, sub: SubscriptionSettings) -> None:
        self.owner = owner
        self.sub = sub
        self.settings = owner.settings.notifications
        self.store = owner.store
        self.topology = owner.topology
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
        assert self.owner.connection is not None
        await self.sender.open()
        channel = await self.owner.connection.channel(publisher_confirms=True)
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
            await _quietly(channel.close())

    async def park(self, why: str) -> None:
        """Stop consuming (at once, before any message in hand is put back, so the broker
        does not hand it straight back): the queue keeps what is left."""
        tag, self.tag = self.tag, None
        if tag is not None:
            await _quietly(self.queue.cancel(tag))
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
            await _quietly(message.nack(requeue=True))
            return
        attempt = attempt_of(message)
        message_id = message.message_id or ""
        result = await self.sender.send(message_id, message.body)
        await self._bookkeep("record_attempt", self.attempts.record(
            attempt_row(name, message, attempt + 1, result), result.delivered))
        log.info("delivery", subscription=name, message_id=message_id, attempt=attempt + 1,
                 status=result.status, error=result.error,
                 latency_ms=round(result.latency * 1000, 3))
        if result.delivered:
            DELIVERIES.labels(name, "delivered").inc()
            await _quietly(message.ack())
            return
        DELIVERIES.labels(name, "failed").inc()
        if result.status == 410:
            await self._bookkeep("set_state", set_state(
                self.store, name, "disabled", "the receiver answered 410 Gone"))
            self.known_state = "disabled"
            PAUSES.labels(name).inc()
            log.warning("subscription_disabled", subscription=name, reason="410 Gone")
            await self.park("disabled")
            await _quietly(message.nack(requeue=True))  # kept for when it is enabled again
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
            copy = copy_message(message, attempt=attempt + 1, **{
                DEAD_REASON: result.describe()[:200], DEAD_CONSUMER: "notifications",
                DEAD_AT: header_time(),
            })
        else:
            outcome = "retried"
            delay = rung_for(ladder, attempt, result.retry_after)
            routing_key = self.topology.retry_queue(base, delay)
            copy = copy_message(message, attempt=attempt + 1)
        try:
            await self.channel.default_exchange.publish(
                copy, routing_key=routing_key, timeout=self.owner.settings.broker.confirm_timeout)
        except Exception as exc:
            log.warning("delivery_reroute_failed", subscription=self.sub.name,
                        error=type(exc).__name__)
            await _quietly(message.nack(requeue=True))
            return
        DELIVERIES.labels(self.sub.name, outcome).inc()
        await _quietly(message.ack())


async def _quietly(awaitable: Any) -> None:
    """Await a broker call whose failure only means the channel is gone (the broker then
    redelivers what was not acked)."""
    try:
        await awaitable
    except Exception as exc:
        log.debug("broker_call_failed", error=type(exc).__name__)
