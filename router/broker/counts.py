"""How full the queues are: each queue's messages and consumers, by passive declares."""

from __future__ import annotations

from dataclasses import dataclass

from router.broker.connect import open_connection
from router.broker.errors import BROKER_ERRORS
from router.settings import BrokerSettings


@dataclass(frozen=True)
class QueueCount:
    messages: int
    consumers: int


class BrokerAway(Exception):
    """The broker could not be reached; `__cause__` says why."""


async def queue_counts(broker: BrokerSettings, names: list[str],
                       connection_name: str) -> dict[str, QueueCount | None]:
    """Each queue's count, None where the queue is not there; BrokerAway if the broker is."""
    counts: dict[str, QueueCount | None] = dict.fromkeys(names)
    try:
        connection = await open_connection(broker, connection_name, timeout=5)
    except BROKER_ERRORS as exc:
        raise BrokerAway(str(exc) or type(exc).__name__) from exc
    async with connection:
        for name in names:
            # A passive declare of a missing queue closes its channel: one channel each.
            channel = await connection.channel()
            try:
                queue = await channel.declare_queue(name, passive=True)
                result = queue.declaration_result
                counts[name] = QueueCount(result.message_count, result.consumer_count)
                await channel.close()
            except BROKER_ERRORS:
                pass
    return counts
