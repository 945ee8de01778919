"""From a verified request to the event envelope we publish (pure: no I/O).

Envelope (one JSON object): id, type, source, received_at, occurred_at, schema, data[, raw].
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import orjson

from router.errors import InvalidPayload, MalformedPayload
from router.parsing import parse_body
from router.schemas import SchemaRegistry
from router.sources import Source

MAX_ID_BYTES = 200


@dataclass(frozen=True, slots=True)
class Event:
    """A canonical event ready to publish."""

    id: str
    type: str
    source: str
    schema: str
    body: bytes  # the envelope, serialised


def event_id(source: Source, headers: Mapping[str, str], payload: Any, body: bytes) -> str:
    """The provider's delivery/event id, else a hash of source and raw body (stable on retry)."""
    provided = source.delivery_id(headers, payload)
    if provided is not None:
        # It becomes the AMQP message_id, a short string of at most 255 bytes.
        if len(provided.encode()) > MAX_ID_BYTES:
            raise MalformedPayload(
                f"the delivery id is longer than {MAX_ID_BYTES} bytes", reason="invalid_event_id"
            )
        return provided
    digest = hashlib.sha256(source.name.encode() + b"\0" + body).hexdigest()
    return f"sha256:{digest}"


def iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).isoformat(timespec="milliseconds")


def build_event(
    source: Source,
    registry: SchemaRegistry,
    body: bytes,
    headers: Mapping[str, str],
    media_type: str,
    now: float,
    *,
    max_depth: int,
) -> Event:
    """Parse, validate, map and wrap a verified delivery.

    Raises MalformedPayload (400) or InvalidPayload (422); nothing else for any input.
    """
    payload = parse_body(body, media_type, max_depth=max_depth)
    type_ = source.event_type(headers, payload)
    if type_ is None:
        raise InvalidPayload(
            "the delivery's topic is not mapped to an event type for this source",
            reason="unknown_event",
        )
    mapping = source.mappings[type_]
    registry.check(mapping.payload_schema, payload)
    data = mapping.apply(payload)
    registry.check(mapping.model_schema, data, reason="unmappable")
    occurred_at = mapping.occurred_at(payload)
    if occurred_at is None and source.settings.occurred_at_header:
        occurred_at = headers.get(source.settings.occurred_at_header)
    id_ = event_id(source, headers, payload, body)
    version = mapping.model_schema.rpartition(".")[2]
    schema = f"{type_}/{version}"
    envelope: dict[str, Any] = {
        "id": id_,
        "type": type_,
        "source": source.name,
        "received_at": iso(now),
        "occurred_at": occurred_at,
        "schema": schema,
        "data": data,
    }
    if source.settings.include_raw:
        envelope["raw"] = payload
    return Event(id=id_, type=type_, source=source.name, schema=schema, body=orjson.dumps(envelope))
