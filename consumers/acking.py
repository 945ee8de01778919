"""The runner's acks: in delivery order, so batches finishing out of order never ack each
other's messages."""

from __future__ import annotations

import collections

import structlog
from aio_pika.abc import AbstractIncomingMessage
from aiormq.exceptions import ChannelInvalidStateError

from router.broker.errors import BROKER_ERRORS

log = structlog.get_logger("consumers.runner")


class Acker:
    """Acks in delivery order: a multiple-ack for the longest run of settled messages at the
    front, so one batch finishing early never acks another batch's messages."""

    def __init__(self) -> None:
        self._delivered: collections.deque[AbstractIncomingMessage] = collections.deque()
        self._settled: set[int] = set()

    def delivered(self, message: AbstractIncomingMessage) -> None:
        self._delivered.append(message)

    async def settle(self, messages: list[AbstractIncomingMessage], nacked: set[int]) -> None:
        """Mark `messages` done; ack every message now at the front of the settled run
        (one multiple-ack per channel). `nacked` holds id()s already nacked: never acked."""
        for message in messages:
            self._settled.add(id(message))
        last_per_channel: dict[int, AbstractIncomingMessage] = {}
        while self._delivered and id(self._delivered[0]) in self._settled:
            message = self._delivered.popleft()
            self._settled.discard(id(message))
            if id(message) in nacked:
                continue
            try:
                channel = message.channel
            except ChannelInvalidStateError:
                continue  # its channel is gone: the broker redelivers it, the inbox knows it
            last_per_channel[id(channel)] = message
        for message in last_per_channel.values():
            try:
                await message.ack(multiple=True)
            except BROKER_ERRORS as exc:
                # The channel is gone: the broker redelivers, the inbox makes it a no-op.
                log.warning("ack_failed", error=type(exc).__name__)
