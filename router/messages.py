"""Copies of delivered messages, for the retry, dead-letter and replay paths.

The runner and `router dlq` both move a message to another queue with changed headers;
they share this so a copy always keeps the same properties and never carries the
broker's per-delivery headers along.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import aio_pika
from aio_pika.abc import AbstractIncomingMessage

# Written by the runner when it dead-letters a message.
DEAD_REASON = "x-dead-reason"
DEAD_CONSUMER = "x-dead-consumer"
DEAD_AT = "x-dead-at"
DEAD_HEADERS = (DEAD_REASON, DEAD_CONSUMER, DEAD_AT)
# Set by the broker on a (quorum queue) redelivery or dead-lettering; never copied.
BROKER_HEADERS = ("x-delivery-count", "x-death", "x-first-death-exchange",
                  "x-first-death-queue", "x-first-death-reason")


def attempt_of(message: AbstractIncomingMessage) -> int:
    """The consumer attempt count carried in the `attempt` header (0 when absent)."""
    value = (message.headers or {}).get("attempt", 0)
    return value if isinstance(value, int) and not isinstance(value, bool) else 0


def now_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


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
