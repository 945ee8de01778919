"""The webhook pipeline: from an HTTP request on a source's path to a confirmed event.

    size, content type -> 413 / 415     address allowlist -> 403     rate limit -> 429
    body (within max_body decompressed, and body_timeout) -> 413 / 408
    WooCommerce's unsigned ping -> 200     verify -> 401     parse -> 400
    duplicate, or a copy of a delivery being published now -> 200 once that one is (or 503)
    validate, map -> 422, or with on_invalid = "hold": held (router.hold), 202
    publish and wait for the broker's confirm -> 202 (503 if the broker did not take it,
    504 if it was sent and not confirmed in time)
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import orjson
from aiohttp import web

from router.body import content_coding, read_body, refuse_over
from router.broker.errors import PublishFailed, PublishInDoubt, PublishRefused
from router.broker.messages import CONSOLE_TEST
from router.broker.publisher import Publisher
from router.dedup import InFlight, RecentIds, signed_content_key
from router.envelope import Delivery, build_event, parse_delivery
from router.errors import (
    BrokerUnavailable,
    BrokerUnconfirmed,
    Forbidden,
    HoldQueueFull,
    InvalidPayload,
    RateLimited,
    Unauthorized,
    UnsupportedMediaType,
)
from router.hold import held_type, hold_headers
from router.metrics import DUPLICATES, HELD, VERIFICATION_FAILURES
from router.network import ClientAddress, rate_limit_key
from router.ratelimit import retry_after_seconds
from router.schemas import SchemaRegistry
from router.settings import ServerSettings
from router.sources import Source
from router.testmark import USER_HEADER, marked_by

FORM = "application/x-www-form-urlencoded"


@dataclass
class RequestInfo:
    """What the access log line reports about a request, filled in as the pipeline goes."""

    request_id: str
    source: str = "-"
    event_id: str | None = None
    type: str | None = None
    client: str | None = None  # the address behind trusted proxies, once resolved
    # Until the delivery is parsed: the source whose id headers name it (router.app reads
    # them for a refused request's line only, so an accepted one never pays for it).
    id_source: Source | None = None


REQUEST_INFO = web.RequestKey("request_info", RequestInfo)


def _json(status: int, body: dict[str, str]) -> web.Response:
    return web.Response(body=orjson.dumps(body), status=status, content_type="application/json")


class Ingress:
    """Runs the pipeline for every source; holds what the sources share."""

    def __init__(
        self,
        server: ServerSettings,
        sources: dict[str, Source],
        registry: SchemaRegistry,
        publisher: Publisher,
        *,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.server = server
        self.sources = sources
        self.registry = registry
        self.publisher = publisher
        self.clock = clock
        self.client_address = ClientAddress(server.trusted_proxies)
        self.recent = RecentIds(server.dedup_window, server.dedup_capacity)
        self.in_flight = InFlight()

    async def handle(self, source: Source, request: web.Request) -> web.Response:
        info = request[REQUEST_INFO]
        info.source = source.name
        settings = source.settings
        headers = request.headers
        info.id_source = source
        now = self.clock()
        forwarded = headers.getall("X-Forwarded-For", None)
        client_ip = info.client = self.client_address.resolve(
            request.remote, ",".join(forwarded) if forwarded else None
        )

        media_type = request.content_type
        # WooCommerce pings a new webhook with an unsigned form body and wants a 200; it is
        # told apart by its body, so it is read (after the address and rate checks) first.
        ping = media_type == FORM and media_type not in source.content_types
        if media_type not in source.content_types and not ping:
            raise UnsupportedMediaType(f"content type {media_type!r} is not accepted here")
        # Before the address and rate checks, from the declared length alone.
        refuse_over(request.content_length, settings.max_body)
        coding = content_coding(request)

        if source.allowlist is not None and not source.allowlist.allows(client_ip):
            raise Forbidden("this address may not post to this source")
        if source.buckets is not None:
            wait = source.buckets.take(rate_limit_key(client_ip), now)
            if wait:
                raise RateLimited(
                    "too many requests; retry later", retry_after=retry_after_seconds(wait)
                )

        body = await read_body(
            request, limit=settings.max_body, timeout=settings.body_timeout, coding=coding
        )
        if ping:
            if source.verifier.is_ping(body, headers):
                return _json(200, {"status": "ping"})
            raise UnsupportedMediaType(f"content type {media_type!r} is not accepted here")
        try:
            source.verifier.verify(body, headers, now)
        except Unauthorized as exc:
            VERIFICATION_FAILURES.labels(source.name, exc.reason).inc()
            raise

        delivery = parse_delivery(
            source, body, headers, media_type, now, max_depth=self.server.max_depth
        )
        info.event_id = delivery.id
        keys = self._dedup_keys(source, delivery)
        while not any(self.recent.seen(key, now) for key in keys):
            busy = next((key for key in keys if key in self.in_flight), None)
            if busy is None:  # the usual case, without an await
                with self.in_flight.lead(keys):
                    return await self._accept(source, delivery, media_type, info, keys, now)
            # A copy of this delivery being published by another request: its outcome is ours.
            _, failure = await self.in_flight.wait(busy)
            if failure is not None:  # not confirmed: answer as the first copy was answered
                raise type(failure)(failure.message, retry_after=failure.retry_after)
        DUPLICATES.labels(source.name).inc()
        return _json(200, {"status": "duplicate", "id": delivery.id})

    @staticmethod
    def _dedup_keys(source: Source, delivery: Delivery) -> tuple[str, ...]:
        """Its id, and where the id and topic are not signed, the signed content too."""
        by_id = f"{source.name}\0{delivery.id}"
        if not source.verifier.signs_only_body:
            return (by_id,)
        topic = source.topic(delivery.headers, delivery.payload)
        known = topic if topic is not None and topic in source.settings.events else ""
        return by_id, signed_content_key(source.name, known, delivery.body)

    async def _accept(
        self, source: Source, delivery: Delivery, media_type: str, info: RequestInfo,
        keys: tuple[str, ...], now: float,
    ) -> web.Response:
        """Publish the event (or hold the delivery) and remember its id once confirmed."""
        try:
            event = build_event(source, self.registry, delivery)
        except InvalidPayload as exc:
            if source.settings.on_invalid != "hold":
                raise
            return await self._hold(source, delivery, media_type, exc, info, keys, now)
        info.type = event.type
        headers: dict[str, str | int] = {"source": source.name, "schema": event.schema,
                                         "attempt": 0}
        if USER_HEADER in delivery.headers:  # the console's test, if its mark verifies
            tester = marked_by(source.settings.secrets, delivery.headers, delivery.body)
            if tester is not None:
                headers[CONSOLE_TEST] = tester

        waited = await self._publish(
            event.body,
            routing_key=event.type,
            message_id=event.id,
            type=event.type,
            correlation_id=info.request_id,
            headers=headers,
            timestamp=now,
        )
        source.publish_latency.observe(waited)
        self._remember(keys, now)
        return _json(202, {"status": "accepted", "id": event.id})

    def _remember(self, keys: tuple[str, ...], now: float) -> None:
        for key in keys:
            self.recent.add(key, now)

    async def _publish(self, body: bytes, refused: BrokerUnavailable | None = None,
                       **message: Any) -> float:
        """Publish and wait for the confirm; `refused` is the error for a nack (a bounded
        queue at its limit), if not the usual one."""
        try:
            return await self.publisher.publish(body, **message)
        except PublishRefused as exc:
            if refused is None:
                raise BrokerUnavailable(
                    exc.message, retry_after=self.publisher.settings.retry_after) from exc
            raise refused from exc
        except PublishInDoubt as exc:  # never "not taken": the broker may still deliver it
            raise BrokerUnconfirmed(
                exc.message, retry_after=self.publisher.settings.retry_after
            ) from exc
        except PublishFailed as exc:  # the provider is told to retry
            raise BrokerUnavailable(
                exc.message, retry_after=self.publisher.settings.retry_after
            ) from exc

    async def _hold(
        self, source: Source, delivery: Delivery, media_type: str, error: InvalidPayload,
        info: RequestInfo, keys: tuple[str, ...], now: float,
    ) -> web.Response:
        """Keep an authentic delivery we cannot map for an operator (router.hold) and answer
        2xx once the broker has it: the provider would only retry and then give up on us."""
        info.type = "held"
        queue = self.publisher.topology.hold_queue(source.name)
        full = HoldQueueFull(f"the hold queue of {source.name} is full (or the broker refused "
                             "the delivery): it was not taken; retry later",
                             retry_after=self.publisher.settings.retry_after)
        await self._publish(
            delivery.body,
            refused=full,
            exchange="",
            routing_key=queue,
            message_id=delivery.id,
            type=held_type(source, delivery),
            correlation_id=info.request_id,
            headers=hold_headers(source, delivery, error),
            timestamp=now,
            content_type=media_type,
        )
        HELD.labels(source.name, error.reason).inc()
        self._remember(keys, now)
        return _json(202, {"status": "held", "id": delivery.id, "reason": error.reason})
