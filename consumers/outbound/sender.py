"""Sending one delivery: sign it (Standard Webhooks), POST it, and say what the receiver
answered; and when to try again if it did not take it."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from datetime import UTC
from email.utils import parsedate_to_datetime

import aiohttp
from prometheus_client import Histogram

from consumers.outbound.guard import guarded_connector
from router.egress import check_url
from router.ratelimit import TokenBuckets
from router.settings import NotificationSettings, SubscriptionSettings
from router.verify.standard_webhooks import signer

LATENCY = Histogram(
    "notification_delivery_latency_seconds", "HTTP round trip of a delivery attempt",
    ["subscription"],
    buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 15.0, 30.0),
)
RETRY_AFTER_STATUSES = frozenset({429, 502, 503, 504})
USER_AGENT = "webhook-router"


def rung_for(ladder: tuple[int, ...], attempt: int, retry_after: float | None) -> int:
    """The retry delay for `attempt` (0-based): its rung, or with a Retry-After the first
    rung at least that long (the last rung if none is)."""
    delay = ladder[min(attempt, len(ladder) - 1)]
    if retry_after is None or retry_after <= delay:
        return delay
    return next((rung for rung in ladder if rung >= retry_after), ladder[-1])


def parse_retry_after(value: str | None) -> float | None:
    """Retry-After in seconds (ASCII delta-seconds or an HTTP date), None if absent or
    unreadable. Whatever a receiver sends (`²`, `-5`, a date in year 99999, a thousand
    digits) gives a number or None, never an exception: it is a hint, not a command."""
    if not value:
        return None
    value = value.strip()
    if value.isascii() and value.isdigit():  # str.isdigit alone takes "²" and "٣"
        return float(value)  # a thousand digits is inf, not an error: the last rung
    try:
        when = parsedate_to_datetime(value)
        if when.tzinfo is None:  # "-0000": UTC, not this machine's zone
            when = when.replace(tzinfo=UTC)
        return max(0.0, when.timestamp() - time.time())
    except (TypeError, ValueError, OverflowError, IndexError):
        return None


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


class Sender:
    """Signs and POSTs one subscription's deliveries."""

    def __init__(self, sub: SubscriptionSettings, settings: NotificationSettings) -> None:
        self.sub = sub
        self.settings = settings
        self.signer = signer(sub.secrets, file="config", key=f"subscriptions.{sub.name}")
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

