"""The one back-off loop for (re)connecting to the broker: the ingress's publisher and every
consumer wait the same way while RabbitMQ is away (and a consumer for its store, with the
store's failures and log line: consumers.runner.wait_for_store)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import structlog

from router.broker.errors import BROKER_ERRORS, PublishFailed, describe

T = TypeVar("T")
log = structlog.get_logger("router.broker")

# What makes a try fail for the broker's sake (anything else is a bug, and propagates).
_BROKER_FAILURES: tuple[type[BaseException], ...] = (*BROKER_ERRORS, PublishFailed)
FIRST_DELAY = 0.5
LONGEST_DELAY = 10.0


async def keep_trying(
    connect: Callable[[], Awaitable[T]],
    stop: asyncio.Event,
    *,
    after_failure: Callable[[], Awaitable[None]] | None = None,
    failures: tuple[type[BaseException], ...] = _BROKER_FAILURES,
    event: str = "broker_unavailable",
    explain: Callable[[BaseException], str] = describe,
    **log_fields: Any,
) -> T | None:
    """`await connect()` until it returns, and return what it returned; None once `stop` is
    set. A failure (by default the broker's) is logged (`event`, with `explain(exc)` and
    `log_fields`), then `after_failure` is awaited (to drop what the attempt left half open)
    and the next try waits 0.5 s, doubling up to 10 s. Anything else `connect` raises
    propagates."""
    delay = FIRST_DELAY
    while not stop.is_set():
        try:
            return await connect()
        except failures as exc:
            log.warning(event, error=explain(exc), retry_in=delay, **log_fields)
            if after_failure is not None:
                await after_failure()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), delay)
        delay = min(delay * 2, LONGEST_DELAY)
    return None
