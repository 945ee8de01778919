"""Authentic deliveries we cannot use, held for an operator instead of refused.

A source with `on_invalid = "hold"` (every third-party provider by default) answers a
verified delivery that fails its schema or its mapping, whose body does not prove its topic
(router.envelope.prove_topic), or whose topic is not mapped, with 202 `{"status": "held"}`
once the broker has confirmed it on the queue `held.<source>`: providers disable a webhook
that keeps failing, and a 4xx would not make the delivery any better. The held message is
the raw body as received, with

    message_id           the delivery id (the one the provider's retries carry)
    type                 the event type its topic maps to, or "unknown"
    content_type         the request's media type
    correlation_id       the request id
    x-held-reason        unknown_event, schema_violation, unproven_topic or unmappable
    x-held-errors        the failing paths and what is wrong there, as JSON (never values)
    x-held-headers       the request headers the mapping reads (topic, delivery id, time)
    x-held-at            when (ISO-8601)

Headers are not signed, so what is kept of them is bounded: each kept header value and each
error's path and message at most MAX_KEPT bytes (a longer one is cut, with a marker saying
how much), and at most MAX_KEPT_ERRORS errors, so a held message's headers stay within
about 12 KiB whatever the request carried.

`webhook-router dlq list|show|purge held.SOURCE` look at them; `dlq release held.SOURCE
[--id ID]` runs them through the current schemas and mappings: what maps now is published
as the event it would have been (the consumers' inbox makes a repeat harmless), what still
fails is held again with its new reasons. A held message is acknowledged only after the
broker confirmed what replaced it.
"""

from __future__ import annotations

import sys
from collections import Counter
from collections.abc import Mapping
from typing import Any, TextIO

import aio_pika
import orjson
from aio_pika.abc import AbstractChannel, AbstractIncomingMessage
from multidict import CIMultiDict

from router.broker.connect import open_connection
from router.broker.dlq import CONNECT_TIMEOUT, queue_depth
from router.broker.errors import BROKER_ERRORS, describe
from router.broker.messages import HELD_AT, HELD_ERRORS, HELD_HEADERS, HELD_REASON, HELD_RELEASES
from router.broker.topology import QueueSpec, Topology
from router.envelope import Delivery, build_event
from router.errors import InvalidPayload, MalformedPayload
from router.parsing import parse_body
from router.schemas import SchemaRegistry
from router.settings import Settings
from router.sources import Source, build_sources
from router.times import now_iso


def holding_sources(settings: Settings) -> list[str]:
    """The sources that hold what they cannot map."""
    return [name for name, source in settings.sources.items() if source.on_invalid == "hold"]


def hold_queues(settings: Settings) -> list[QueueSpec]:
    """The hold queue of every source that holds what it cannot map."""
    return Topology.of(settings.broker).hold_queues(holding_sources(settings))


MAX_KEPT = 256  # bytes of one kept header value, error path or error message
MAX_KEPT_ERRORS = 20  # as many as schemas and mappings report


def mapping_headers(source: Source, headers: Mapping[str, str]) -> dict[str, str]:
    """The request headers `source`'s mapping reads: topic, delivery id, event time. Never
    a signature or a credential. Bytes that are not UTF-8 (aiohttp keeps them as lone
    surrogates, which JSON and AMQP cannot carry) become U+FFFD; values are capped."""
    s = source.settings
    names = [n for n in (s.topic_header, s.occurred_at_header, *s.id_headers) if n]
    return {name: capped(_text_of(headers[name])) for name in names if name in headers}


def _text_of(value: str) -> str:
    return value.encode("utf-8", "surrogateescape").decode("utf-8", "replace")


def capped(text: str, limit: int = MAX_KEPT) -> str:
    """`text`, or its first `limit` bytes (whole characters) and a marker of what was cut.
    No provider's topic, id or time comes near it: only a made-up one is cut."""
    data = text.encode()
    if len(data) <= limit:
        return text
    kept = data[:limit].decode("utf-8", "ignore")
    return f"{kept}...[{len(data) - len(kept.encode())} bytes cut]"


def hold_headers(
    source: Source, delivery: Delivery, error: InvalidPayload, releases: int = 0
) -> dict[str, str | int]:
    """The AMQP headers of a held delivery."""
    return {
        "source": source.name,
        HELD_REASON: error.reason,
        HELD_ERRORS: orjson.dumps([
            {key: capped(value) if isinstance(value, str) else value for key, value in e.items()}
            for e in (error.errors or [])[:MAX_KEPT_ERRORS]]).decode(),
        HELD_HEADERS: orjson.dumps(mapping_headers(source, delivery.headers)).decode(),
        HELD_AT: now_iso("seconds"),
        HELD_RELEASES: releases,
    }


def held_type(source: Source, delivery: Delivery) -> str:
    """The event type the delivery's topic maps to, or "unknown"."""
    return source.event_type(delivery.headers, delivery.payload) or "unknown"


def _text(value: Any) -> str:
    if isinstance(value, bytes | bytearray):
        return bytes(value).decode("utf-8", "replace")
    return "" if value is None else str(value)


def held_delivery(message: AbstractIncomingMessage, *, max_depth: int) -> Delivery:
    """The delivery a held message keeps, parsed again (MalformedPayload if it no longer
    parses, which a held message never should)."""
    headers = message.headers or {}
    try:
        kept = orjson.loads(_text(headers.get(HELD_HEADERS)) or "{}")
    except orjson.JSONDecodeError:
        kept = {}
    body = bytes(message.body)
    payload = parse_body(body, message.content_type or "application/json", max_depth=max_depth)
    received = message.timestamp.timestamp() if message.timestamp else 0.0
    return Delivery(
        id=message.message_id or "", body=body, payload=payload,
        headers=CIMultiDict(kept if isinstance(kept, dict) else {}), received_at=received,
    )


async def _release_one(
    channel: AbstractChannel, queue: str, exchange: str, source: Source,
    registry: SchemaRegistry, message: AbstractIncomingMessage, max_depth: int,
) -> str:
    """Map one held message again and publish what replaces it; "released" or the reason it
    is still held. Acked only once the replacement is confirmed."""
    delivery = held_delivery(message, max_depth=max_depth)
    try:
        event = build_event(source, registry, delivery)
    except InvalidPayload as exc:
        releases = (message.headers or {}).get(HELD_RELEASES, 0)
        releases = releases if isinstance(releases, int) else 0
        await channel.default_exchange.publish(
            aio_pika.Message(
                delivery.body, content_type=message.content_type,
                delivery_mode=aio_pika.DeliveryMode.PERSISTENT, message_id=delivery.id,
                type=held_type(source, delivery), correlation_id=message.correlation_id,
                timestamp=message.timestamp,
                headers=dict(hold_headers(source, delivery, exc, releases + 1)),
            ),
            routing_key=queue, mandatory=True,
        )
        await message.ack()
        return exc.reason
    events = await channel.get_exchange(exchange, ensure=False)
    await events.publish(
        aio_pika.Message(
            event.body, content_type="application/json",
            delivery_mode=aio_pika.DeliveryMode.PERSISTENT, message_id=event.id,
            type=event.type, correlation_id=message.correlation_id,
            timestamp=message.timestamp,
            headers={"source": source.name, "schema": event.schema, "attempt": 0},
        ),
        routing_key=event.type, mandatory=True,
    )
    await message.ack()
    return "released"


async def release_command(
    settings: Settings, source_name: str, *, message_id: str | None = None,
    out: TextIO = sys.stdout,
) -> int:
    """`dlq release held.SOURCE`: map the held deliveries again (all, or the one with
    `message_id`); the exit code."""
    if source_name not in settings.sources:
        known = ", ".join(sorted(settings.sources)) or "none"
        print(f"unknown source {source_name!r} (configured: {known})", file=sys.stderr)
        return 2
    registry = SchemaRegistry.load(settings.server.schemas)
    source = build_sources(settings, registry)[source_name]
    topology = Topology.of(settings.broker)
    queue = topology.hold_queue(source_name)
    max_depth = settings.server.max_depth
    try:
        connection = await open_connection(
            settings.broker, f"{settings.broker.connection_name}-release",
            timeout=CONNECT_TIMEOUT,
        )
    except BROKER_ERRORS as exc:
        print(f"cannot reach the broker: {describe(exc)}", file=sys.stderr)
        return 1
    outcomes: Counter[str] = Counter()
    try:
        async with connection:
            channel = await connection.channel(publisher_confirms=True)
            total = await queue_depth(channel, queue)
            if total is None:
                print(f"queue {queue} does not exist (nothing was ever held)", file=sys.stderr)
                return 1
            held = await channel.get_queue(queue, ensure=False)
            # At most the messages there when we started: one held again is not read twice.
            for _ in range(total):
                message = await held.get(no_ack=False, fail=False)
                if message is None:
                    break
                if message_id is not None and message.message_id != message_id:
                    continue  # unacknowledged: back on the queue when the channel closes
                try:
                    outcome = await _release_one(channel, queue, topology.exchange, source,
                                                 registry, message, max_depth)
                except MalformedPayload:
                    outcome = "unreadable"  # left held, as it was
                outcomes[outcome] += 1
                if message_id is not None:
                    break
    except BrokenPipeError:
        raise  # our reader went away; not the broker's doing
    except BROKER_ERRORS as exc:
        # Whatever was not acknowledged is back on the hold queue: nothing is lost.
        print(f"broker error after {sum(outcomes.values())} message(s): "
              f"{exc or type(exc).__name__}; the rest stay held", file=sys.stderr)
        return 1
    if message_id is not None and not outcomes:
        print(f"no message {message_id} in {queue}", file=sys.stderr)
        return 1
    released = outcomes.pop("released", 0)
    still = ", ".join(f"{reason} {count}" for reason, count in sorted(outcomes.items()))
    print(f"released {released} of {released + sum(outcomes.values())} from {queue}"
          + (f"; still held: {still}" if still else ""), file=out)
    return 0
