"""How full the queues are: each queue's messages and consumers, by passive declares.

`queue_counts` opens a connection for one look (a command); a `QueueCounter` keeps one
connection and channel between looks (the console, asked every few seconds per open tab).
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any

from aio_pika.exceptions import ChannelNotFoundEntity

from router.broker.connect import open_connection
from router.broker.errors import BROKER_ERRORS
from router.settings import BrokerSettings

TIMEOUT = 5.0  # seconds to connect


@dataclass(frozen=True)
class QueueCount:
    messages: int
    consumers: int


class BrokerAway(Exception):
    """The broker could not be reached; `__cause__` says why."""


async def _open(broker: BrokerSettings, connection_name: str) -> Any:
    try:
        return await open_connection(broker, connection_name, timeout=TIMEOUT)
    except BROKER_ERRORS as exc:
        raise BrokerAway(str(exc) or type(exc).__name__) from exc


async def _count(connection: Any, channel: Any, names: list[str]
                 ) -> tuple[dict[str, QueueCount | None], Any]:
    """Each queue's count (None where it is not declared) and the channel left open."""
    counts: dict[str, QueueCount | None] = dict.fromkeys(names)
    for name in names:
        if channel is None or channel.is_closed:
            try:
                channel = await connection.channel()
            except RuntimeError as exc:  # aiormq's "closed", before aio-pika has noticed
                raise ConnectionError(str(exc)) from exc
        try:
            queue = await channel.declare_queue(name, passive=True)
        except ChannelNotFoundEntity:
            continue  # not declared; the broker closed the channel, the next gets a new one
        result = queue.declaration_result
        counts[name] = QueueCount(result.message_count, result.consumer_count)
    return counts, channel


async def queue_counts(broker: BrokerSettings, names: list[str],
                       connection_name: str) -> dict[str, QueueCount | None]:
    """Each queue's count, None where the queue is not there; BrokerAway if the broker is."""
    connection = await _open(broker, connection_name)
    async with connection:
        try:
            counts, _ = await _count(connection, None, names)
        except BROKER_ERRORS as exc:
            raise BrokerAway(str(exc) or type(exc).__name__) from exc
    return counts


class QueueCounter:
    """queue_counts over one connection and channel kept between calls: opened when first
    needed, again when found closed or after a failure (tried once more at once on a fresh
    connection, so a connection that died quietly costs no answer); `close` at shutdown."""

    def __init__(self, broker: BrokerSettings, connection_name: str) -> None:
        self._broker = broker
        self._name = connection_name
        self._connection: Any = None
        self._channel: Any = None
        self._lock = asyncio.Lock()  # one look at a time on the one channel

    async def counts(self, names: list[str]) -> dict[str, QueueCount | None]:
        async with self._lock:
            kept = self._connection is not None and not self._connection.is_closed
            try:
                return await self._look(names)
            except BROKER_ERRORS as exc:
                await self._drop()
                if not kept:
                    raise BrokerAway(str(exc) or type(exc).__name__) from exc
            try:  # the kept connection had died quietly: once more, on a fresh one
                return await self._look(names)
            except BROKER_ERRORS as exc:
                await self._drop()
                raise BrokerAway(str(exc) or type(exc).__name__) from exc

    async def _look(self, names: list[str]) -> dict[str, QueueCount | None]:
        if self._connection is None or self._connection.is_closed:
            await self._drop()
            self._connection = await _open(self._broker, self._name)
        counts, self._channel = await _count(self._connection, self._channel, names)
        return counts

    async def _drop(self) -> None:
        connection, self._connection, self._channel = self._connection, None, None
        if connection is not None and not connection.is_closed:
            try:
                await connection.close()
            except BROKER_ERRORS:
                pass  # already going: nothing to close

    async def close(self) -> None:
        async with self._lock:
            await self._drop()
