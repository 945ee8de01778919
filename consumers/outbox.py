"""Notifications from a consumer's effect: a row in the outbox, in the effect's own
transaction, published to the events exchange (notify.<kind>) once committed (the runner)."""

from __future__ import annotations

import hashlib
from typing import Any

from consumers.events import Event
from consumers.outbound.notification import notification_body
from consumers.store import Tx

MAX_MESSAGE_ID = 200


async def notify(tx: Tx, event: Event, kind: str, key: str, data: dict[str, Any]) -> str:
    """Write the outbox row for `kind`; its message id comes from the cause, so a retried or
    replayed event adds no second row. Returns the message id (an AMQP short string: one over
    MAX_MESSAGE_ID bytes is replaced by its SHA-256, as stable)."""
    message_id = f"{event['id']}:{kind}:{key}"
    if len(message_id.encode()) > MAX_MESSAGE_ID:
        message_id = "sha256:" + hashlib.sha256(message_id.encode()).hexdigest()
    body = notification_body(message_id, kind, data, cause=event["id"])
    await tx.add_outbox(kind, f"notify.{kind}", body, message_id, cause=str(event["id"]))
    return message_id
