"""Copies of delivered messages, for the retry, dead-letter and replay paths.

The consumer runner, the outbound deliverers and `router dlq` all move a message to another
queue with changed headers; they share this so a copy always keeps the same properties and
never carries the broker's per-delivery headers along, and a message is acked only once its
copy is confirmed.
"""

from __future__ import annotations

from collections.abc import Awaitable
from typing import Any

import aio_pika
import structlog
from aio_pika.abc import AbstractChannel, AbstractIncomingMessage

from router.times import now_iso

log = structlog.get_logger("router.broker")

# Written by the runner when it dead-letters a message.
DEAD_REASON = "x-dead-reason"
DEAD_CONSUMER = "x-dead-consumer"
DEAD_AT = "x-dead-at"
DEAD_HEADERS = (DEAD_REASON, DEAD_CONSUMER, DEAD_AT)
# Written by `dlq replay` on the copy it puts back on the work queue.
REPLAYED_AT = "x-replayed-at"
# Written by the ingress when it holds a delivery it cannot map (router.hold).
HELD_REASON = "x-held-reason"
HELD_ERRORS = "x-held-errors"
HELD_HEADERS = "x-held-headers"
HELD_AT = "x-held-at"
HELD_RELEASES = "x-held-releases"
# Written by the ingress on the event of a console's Send test payload: the operator's name
# (router.testmark).
CONSOLE_TEST = "x-console-test"
# Set by the broker on a (quorum queue) redelivery or dead-lettering; never copied.
BROKER_HEADERS = ("x-delivery-count", "x-death", "x-first-death-exchange",
                  "x-first-death-queue", "x-first-death-reason")


def attempt_of(message: AbstractIncomingMessage) -> int:
    """The consumer attempt count carried in the `attempt` header (0 when absent)."""
    value = (message.headers or {}).get("attempt", 0)
    return value if isinstance(value, int) and not isinstance(value, bool) else 0


def copy_message(
    message: AbstractIncomingMessage, *, drop: tuple[str, ...] = (), **headers: Any
) -> aio_pika.Message:
    """A persistent copy of `message` with the same body and properties; the broker's
    delivery headers and the `drop` headers removed, `headers` set."""
    merged = {k: v for k, v in (message.headers or {}).items()
              if k not in BROKER_HEADERS and k not in drop}
    merged.update(headers)
    return aio_pika.Message(
        message.body,
        headers=merged,
        content_type=message.content_type,
        content_encoding=message.content_encoding,
        delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
        priority=message.priority,
        correlation_id=message.correlation_id,
        message_id=message.message_id,
        timestamp=message.timestamp,
        type=message.type,
        user_id=message.user_id,
        app_id=message.app_id,
    )


def retry_copy(message: AbstractIncomingMessage) -> aio_pika.Message:
    """The copy for the next retry rung: the attempt count one up."""
    return copy_message(message, attempt=attempt_of(message) + 1)


def dead_copy(
    message: AbstractIncomingMessage, *, attempt: int, reason: str, consumer: str
) -> aio_pika.Message:
    """The copy for a dead-letter queue, saying why, who gave up on it, and when."""
    headers: dict[str, Any] = {
        DEAD_REASON: reason, DEAD_CONSUMER: consumer, DEAD_AT: now_iso("seconds"),
    }
    return copy_message(message, attempt=attempt, **headers)


async def reroute(
    channel: AbstractChannel,
    message: AbstractIncomingMessage,
    copy: aio_pika.Message,
    routing_key: str,
    *,
    timeout: float,
) -> bool:
    """Publish `copy` to queue `routing_key` and wait for the broker's confirm (the channel
    is in confirm mode). True: the caller may ack `message` now. False: it was not
    confirmed, so `message` is nacked back onto its queue: it is never acked unless its copy
    is safe."""
    try:
        await channel.default_exchange.publish(copy, routing_key=routing_key, timeout=timeout)
        return True
    except Exception as exc:  # whatever it was, the copy is not safe
        log.warning("reroute_failed", message_id=message.message_id, routing_key=routing_key,
                    error=type(exc).__name__)
    await quietly(message.nack(requeue=True))
    return False


async def quietly(call: Awaitable[Any]) -> None:
    """Await a broker call (ack, nack, cancel, close) whose failure only means the channel
    is gone: the broker then redelivers whatever was not acked."""
    try:
        await call
    except Exception as exc:
        log.debug("broker_call_failed", error=type(exc).__name__)
