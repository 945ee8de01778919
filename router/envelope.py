"""From a verified request to the event envelope we publish (pure: no I/O).

    delivery = parse_delivery(source, body, headers, media_type, now, max_depth=32)  # 400
    event = build_event(source, registry, delivery)                                # 422

Envelope (one JSON object): id, type, source, received_at, occurred_at, schema, data[, raw].
A delivery that parses but cannot be mapped keeps its id, so a source that holds such
deliveries (router.hold) files them under the id the provider's retries carry too.
"""

from __future__ import annotations

import hashlib
import math
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
class Delivery:
    """A verified, parsed delivery: the raw body, what it parsed to, and the headers the
    mapping reads (topic, delivery id, event time)."""

    id: str
    body: bytes
    payload: Any
    headers: Mapping[str, str]
    received_at: float


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
        if not is_text(provided):  # made valid, two different ids could become one
            raise MalformedPayload("the delivery id is not UTF-8 text", reason="invalid_event_id")
        # It becomes the AMQP message_id, a short string of at most 255 bytes.
        if len(provided.encode()) > MAX_ID_BYTES:
            raise MalformedPayload(
                f"the delivery id is longer than {MAX_ID_BYTES} bytes", reason="invalid_event_id"
            )
        return provided
    digest = hashlib.sha256(source.name.encode() + b"\0" + body).hexdigest()
    return f"sha256:{digest}"


def is_text(value: str) -> bool:
    """False for a header value that was not UTF-8 (aiohttp keeps such bytes as lone
    surrogates, which JSON and AMQP cannot carry)."""
    try:
        value.encode()
    except UnicodeEncodeError:
        return False
    return True


def log_delivery_id(source: Source, headers: Mapping[str, str]) -> str | None:
    """The delivery id a request's headers name, as the access log may show it before the
    request is verified or parsed: valid text (U+FFFD for what was not UTF-8), at most
    MAX_ID_BYTES characters."""
    for name in source.settings.id_headers:
        value = headers.get(name)
        if value:
            if not is_text(value):
                value = value.encode("utf-8", "surrogateescape").decode("utf-8", "replace")
            return value[:MAX_ID_BYTES]
    return None


_second: tuple[int, str] = (-1, "")  # the last second iso() wrote, and its text


def iso(ts: float) -> str:
    """`datetime.fromtimestamp(ts, UTC).isoformat(timespec="milliseconds")`, the date and
    time of day written once per second rather than once per request."""
    global _second
    fraction, whole = math.modf(ts)
    seconds, micros = int(whole), round(fraction * 1_000_000)  # as fromtimestamp rounds
    if micros >= 1_000_000:
        seconds, micros = seconds + 1, micros - 1_000_000
    elif micros < 0:
        seconds, micros = seconds - 1, micros + 1_000_000
    if _second[0] != seconds:
        _second = (seconds, datetime.fromtimestamp(seconds, UTC).strftime("%Y-%m-%dT%H:%M:%S"))
    return f"{_second[1]}.{micros // 1000:03d}+00:00"


def parse_delivery(
    source: Source,
    body: bytes,
    headers: Mapping[str, str],
    media_type: str,
    now: float,
    *,
    max_depth: int,
) -> Delivery:
    """Parse a verified delivery and find its id; MalformedPayload (400) if it cannot be
    read, nothing else for any input."""
    payload = parse_body(body, media_type, max_depth=max_depth)
    return Delivery(event_id(source, headers, payload, body), body, payload, headers, now)


def prove_topic(
    source: Source, registry: SchemaRegistry, headers: Mapping[str, str], payload: Any
) -> None:
    """The topic header is not signed, the body is: a topic may route a delivery but never
    change what its body means. Where the body names its event too (`topic_field`), the two
    must agree; a topic with a proof (router.mapping.proofs) must have a body that passes it.
    InvalidPayload "unproven_topic" otherwise."""
    s = source.settings
    if s.topic_header and s.topic_field and isinstance(payload, dict):
        named, sent = payload.get(s.topic_field), headers.get(s.topic_header)
        if named is not None and sent is not None and named != sent:
            raise InvalidPayload(
                "the topic header does not agree with the event the body names",
                reason="unproven_topic",
                errors=[{"path": f"/{s.topic_field}", "message": "differs from the topic header"}],
            )
    proof = source.proofs.get(source.topic(headers, payload) or "")
    if proof is None:
        return
    try:
        registry.check(proof, payload, reason="unproven_topic")
    except InvalidPayload as exc:
        raise InvalidPayload(
            "the body does not show what its topic says (the topic header is not signed)",
            reason="unproven_topic", errors=exc.errors,
        ) from None


def build_event(source: Source, registry: SchemaRegistry, delivery: Delivery) -> Event:
    """Validate, map and wrap a parsed delivery; InvalidPayload (422) if it cannot be: its
    topic is not mapped (unknown_event), the payload breaks its schema (schema_violation),
    the body does not prove its topic (unproven_topic, see prove_topic), or the mapped data
    breaks the model's (unmappable)."""
    payload, headers = delivery.payload, delivery.headers
    type_ = source.event_type(headers, payload)
    if type_ is None:
        raise InvalidPayload(
            "the delivery's topic is not mapped to an event type for this source",
            reason="unknown_event",
        )
    mapping = source.mappings[type_]
    registry.check(mapping.payload_schema, payload)
    prove_topic(source, registry, headers, payload)
    data = mapping.apply(payload)
    registry.check(mapping.model_schema, data, reason="unmappable")
    occurred_at = mapping.occurred_at(payload)
    if occurred_at is None and source.settings.occurred_at_header:
        occurred_at = headers.get(source.settings.occurred_at_header)
        if occurred_at is not None and not is_text(occurred_at):
            occurred_at = None  # unreadable: as if the provider had not sent it
    version = mapping.model_schema.rpartition(".")[2]
    schema = f"{type_}/{version}"
    envelope: dict[str, Any] = {
        "id": delivery.id,
        "type": type_,
        "source": source.name,
        "received_at": iso(delivery.received_at),
        "occurred_at": occurred_at,
        "schema": schema,
        "data": data,
    }
    if source.settings.include_raw:
        envelope["raw"] = payload
    return Event(
        id=delivery.id, type=type_, source=source.name, schema=schema,
        body=orjson.dumps(envelope),
    )
