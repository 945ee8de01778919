"""What a notification is to its subscribers, and where it waits for them.

A notification is published once (`notify.<type>` on the events exchange, from a consumer's
outbox), copied by the fan-out to `deliver.<subscription>` for each subscriber that wants
its type, and POSTed from there with this body.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import orjson
from aio_pika.abc import AbstractIncomingMessage

from router.broker.topology import QueueSpec, Topology, delivery_queue
from router.settings import Settings

__all__ = ["delivery_queue", "delivery_queues", "event_type", "notification_body"]


def notification_body(
    message_id: str, kind: str, data: dict[str, Any], cause: str | None = None
) -> bytes:
    """The body subscribers receive: Standard Webhooks' {type, timestamp, data}, plus the id
    (also the webhook-id) and, when an event caused it, that event's id."""
    body: dict[str, Any] = {
        "id": message_id,
        "type": kind,
        "timestamp": datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z"),
        "data": data,
    }
    if cause is not None:
        body["cause"] = cause
    return orjson.dumps(body)


def delivery_queues(topology: Topology, settings: Settings) -> list[QueueSpec]:
    """Every subscription's queue, retry queues and dead-letter queue."""
    return topology.delivery_queues(settings.subscriptions, settings.notifications.retry_ladder)


def event_type(message: AbstractIncomingMessage) -> str:
    """`order.allocated` for a message routed as `notify.order.allocated`."""
    routing = message.type or message.routing_key or ""
    return routing.removeprefix("notify.")
