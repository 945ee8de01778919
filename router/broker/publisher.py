"""Confirmed publishing: a message counts as accepted only once RabbitMQ has confirmed it.

The topology is declared with aio-pika (once per connection); events are published with
`router.broker.protocol.ConfirmingPublisher`, a publish-only client that costs ~10x less CPU per
message than aio-pika (bench/publish.py), which matters on the request path.

What a failed publish means is kept exact, because the ingress tells the provider:
PublishFailed when the message was never written (not connected, the broker blocking
publishers, too many unconfirmed) or the broker refused it (nack, unroutable); PublishInDoubt
when it was written and no confirm came in time (or the connection went first): the broker
may still store it, e.g. a blocked connection's frames once the alarm clears.
"""

from __future__ import annotations

import asyncio
import collections
import dataclasses
import time
from collections.abc import Sequence
from typing import Any

import structlog

from router.broker.connect import open_connection, tls_context, try_addresses, where
from router.broker.errors import (
    BROKER_ERRORS,
    ConnectionLost,
    PublishFailed,
    PublishInDoubt,
    PublishNacked,
    PublishRefused,
    PublishReturned,
    describe,
)
from router.broker.protocol import ConfirmingPublisher
from router.broker.reconnect import keep_trying
from router.broker.topology import QueueSpec, Topology
from router.settings import BrokerSettings

log = structlog.get_logger("router.publisher")

# This many confirm timeouts in a row (with no confirm between them, and the connection not
# blocked) mean the broker or the path to it is gone: the connection is dropped and made anew.
CONFIRM_TIMEOUTS_TO_RECONNECT = 3


class ConfirmDeadlines:
    """Fails confirm futures still waiting `timeout` seconds after their publish with
    TimeoutError, with one timer for all of them rather than one per publish (a timer per
    request was a few per cent of the ingress's CPU).

    Every publish has the same timeout, so deadlines come in publish order: a queue whose
    front is the earliest, and one timer armed for it.
    """

    def __init__(self, timeout: float) -> None:
        self.timeout = timeout
        self._waiting: collections.deque[tuple[float, asyncio.Future[None]]] = (
            collections.deque()
        )
        self._timer: asyncio.TimerHandle | None = None

    def watch(self, future: asyncio.Future[None]) -> None:
        waiting = self._waiting
        while waiting and waiting[0][1].done():  # confirmed meanwhile: forget them
            waiting.popleft()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.timeout
        waiting.append((deadline, future))
        if self._timer is None:
            self._timer = loop.call_at(deadline, self._expire)

    def _expire(self) -> None:
        self._timer = None
        waiting = self._waiting
        loop = asyncio.get_running_loop()
        now = loop.time()
        while waiting:
            deadline, future = waiting[0]
            if future.done():
                waiting.popleft()
            elif deadline <= now:
                waiting.popleft()
                future.set_exception(TimeoutError())
            else:
                self._timer = loop.call_at(deadline, self._expire)
                break

    def __len__(self) -> int:
        return len(self._waiting)


class Publisher:
    """A confirming connection to the events exchange that reconnects by itself."""

    def __init__(
        self,
        settings: BrokerSettings,
        *,
        connection_name: str | None = None,
        extra_queues: Sequence[QueueSpec] = (),
    ) -> None:
        """`extra_queues` are declared with the topology (the ingress's hold queues)."""
        self.settings = settings
        self.topology = Topology.of(settings)
        self._extra_queues = list(extra_queues)
        # Queues that exist without the length limits they should have (topology.declare_queue)
        self.not_limited: list[str] = []
        self._connection_name = connection_name or settings.connection_name
        self._client: ConfirmingPublisher | None = None
        self._address: str | None = None  # the one connected to, or last connected to
        self._reconnect: asyncio.Task[None] | None = None
        self._closing = asyncio.Event()
        self._timeouts_in_a_row = 0
        self._deadlines = ConfirmDeadlines(settings.confirm_timeout)

    async def _declare_topology(self, url: str) -> None:
        node = dataclasses.replace(self.settings, url=url, other_urls=())
        connection = await open_connection(
            node, f"{self._connection_name}-topology", timeout=self.settings.confirm_timeout,
        )
        async with connection:
            channel = await connection.channel()
            not_limited: list[str] = []
            await self.topology.declare(channel, not_limited)
            await self.topology.declare_queues(channel, self._extra_queues, not_limited)
            self.not_limited = not_limited

    async def _start_on(self, url: str) -> tuple[str, ConfirmingPublisher]:
        """Declare the topology on the node at `url` and connect to it."""
        await self._declare_topology(url)
        client = ConfirmingPublisher(
            url,
            connection_name=self._connection_name,
            heartbeat=self.settings.heartbeat,
            tls=tls_context(self.settings, url),
            on_lost=self._on_lost,
        )
        await client.connect(timeout=self.settings.confirm_timeout)
        return url, client

    async def start(self) -> None:
        """Declare the topology and connect; raises PublishFailed if the broker is away or
        refuses us (its message says why, e.g. an untrusted TLS certificate).  Of a cluster's
        addresses, the first that answers is taken; after a lost connection, the addresses
        after the lost one first (router.broker.connect.rotation).

        Once started, a lost connection is re-established in the background: `ready` is
        False meanwhile.
        """
        try:
            url, client = await try_addresses(self.settings, self._start_on,
                                              after=self._address)
        except BROKER_ERRORS as exc:
            raise PublishFailed(f"cannot reach the broker: {describe(exc)}") from exc
        self._address, self._client = url, client
        self._timeouts_in_a_row = 0
        log.info("broker_connected", exchange=self.topology.exchange, address=where(url))

    async def connect_until_ready(self) -> None:
        """Keep trying `start` with back-off until connected (the broker may start later),
        or until `close()`."""
        await keep_trying(self.start, self._closing)

    def connect_in_background(self) -> None:
        """Start connecting (and keep trying) without waiting; `ready` says when it is done."""
        if not self._closing.is_set() and (self._reconnect is None or self._reconnect.done()):
            self._reconnect = asyncio.get_running_loop().create_task(self.connect_until_ready())

    def _on_lost(self, error: ConnectionLost) -> None:
        log.warning("broker_connection_lost", reply_code=error.reply_code,
                    reply_text=error.reply_text,
                    address=where(self._address) if self._address else None)
        self._client = None
        self.connect_in_background()

    @property
    def address(self) -> str | None:
        """The broker address (of [broker] url or urls) connected to; None while not."""
        return self._address if self._client is not None else None

    @property
    def ready(self) -> bool:
        """True while a publish can be taken now: connected with an open confirming channel,
        and the broker not blocking publishers."""
        client = self._client
        return client is not None and client.ready and not client.blocked

    @property
    def blocked(self) -> bool:
        """The broker blocks this connection (a memory or disk alarm)."""
        client = self._client
        return client is not None and client.blocked

    def _writable(self, count: int = 1) -> ConfirmingPublisher:
        """The client, if `count` more messages may be written now; else PublishFailed
        (nothing is written, so nothing can be published later)."""
        client = self._client
        if client is None or not client.ready:
            raise PublishFailed("the broker is unavailable")
        if client.blocked:
            raise PublishFailed("the broker is blocking publishers (a resource alarm)")
        if client.pending and client.pending + count > self.settings.max_in_flight:
            raise PublishFailed("too many publishes are waiting for the broker's confirm")
        return client

    def _failure(self, exc: BaseException, client: ConfirmingPublisher, what: str) -> PublishFailed:
        """The error for a written publish that did not end in a confirm."""
        if isinstance(exc, PublishNacked | PublishReturned):
            log.warning("publish_failed", reason=type(exc).__name__)
            refused = PublishRefused if isinstance(exc, PublishNacked) else PublishFailed
            return refused(f"the broker refused {what}")
        if isinstance(exc, TimeoutError) and not client.blocked:
            self._timeouts_in_a_row += 1
            if self._timeouts_in_a_row >= CONFIRM_TIMEOUTS_TO_RECONNECT:
                self._timeouts_in_a_row = 0
                client.abandon(f"{CONFIRM_TIMEOUTS_TO_RECONNECT} confirm timeouts in a row")
        reason = "confirm_timeout" if isinstance(exc, TimeoutError) else type(exc).__name__
        log.warning("publish_in_doubt", reason=reason, blocked=client.blocked)
        return PublishInDoubt(f"the broker did not confirm {what} in time; it may still be "
                              "delivered")

    async def publish(
        self,
        body: bytes,
        *,
        routing_key: str,
        message_id: str,
        type: str,
        correlation_id: str | None,
        headers: dict[str, str | int],
        timestamp: float | None = None,
        exchange: str | None = None,
        content_type: str = "application/json",
    ) -> float:
        """Publish a persistent message to the events exchange (or `exchange`; "" is the
        default exchange, where the routing key is a queue's name) and wait for the confirm.

        Returns the seconds spent waiting.  Raises PublishFailed if the broker is away,
        blocked, has max_in_flight unconfirmed already, refuses (nack) or cannot route the
        message, and PublishInDoubt if it does not confirm within confirm_timeout.
        """
        client = self._writable()
        started = time.perf_counter()
        confirmed = client.publish(
            self.topology.exchange if exchange is None else exchange,
            routing_key,
            body,
            message_id=message_id,
            message_type=type,
            correlation_id=correlation_id,
            headers=headers,
            timestamp=int(timestamp if timestamp is not None else time.time()),
            content_type=content_type,
        )
        self._deadlines.watch(confirmed)  # TimeoutError after confirm_timeout
        try:
            await confirmed
        except (TimeoutError, ConnectionLost, PublishNacked, PublishReturned) as exc:
            raise self._failure(exc, client, "the event") from exc
        self._timeouts_in_a_row = 0
        return time.perf_counter() - started

    async def publish_all(self, messages: list[dict[str, Any]]) -> None:
        """Publish persistent messages to the events exchange, all in flight at once, and wait
        (confirm_timeout in all) until the broker confirmed every one. Each message is a dict
        of body, routing_key, message_id and optional type and headers. Raises
        PublishFailed or PublishInDoubt as `publish` does if any was not confirmed."""
        client = self._writable(len(messages))
        now = int(time.time())
        confirms = [
            client.publish(
                self.topology.exchange,
                message["routing_key"],
                message["body"],
                message_id=message["message_id"],
                message_type=message.get("type"),
                headers=message.get("headers"),
                timestamp=now,
            )
            for message in messages
        ]
        try:
            async with asyncio.timeout(self.settings.confirm_timeout):
                for confirm in confirms:
                    await confirm
        except (TimeoutError, ConnectionLost, PublishNacked, PublishReturned) as exc:
            for confirm in confirms:  # retrieve or drop the rest: nobody awaits them now
                if not confirm.done():
                    confirm.cancel()
                elif not confirm.cancelled():
                    confirm.exception()
            raise self._failure(exc, client, f"all of {len(messages)} messages") from exc
        self._timeouts_in_a_row = 0

    async def close(self) -> None:
        """Stop reconnecting and close the connection (after in-flight publishes finished)."""
        self._closing.set()
        if self._reconnect is not None:
            self._reconnect.cancel()
            await asyncio.gather(self._reconnect, return_exceptions=True)
        client, self._client = self._client, None
        if client is not None:
            await client.close()
