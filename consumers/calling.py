"""The runner for a consumer that calls an outside API (a carrier, a store's API). Such a
call cannot run inside the batch's transaction: SQLite runs that transaction on the store's
thread, awaiting nothing but the store, and a call that spends money must be recorded
*before* it is made, in a transaction already committed. So the consumer's `call(events)`
runs first for each batch, outside any transaction (it makes its own short ones), and keeps
what it learned for the spec's handler, which applies it in the runner's transaction as any
handler does (inbox claim, effect, outbox, then ack; Transient and Permanent steer retries).
`forget(events)` drops what was kept once the batch is settled.
"""

from __future__ import annotations

from typing import Any, Generic, Protocol, TypeVar

import orjson
from aio_pika.abc import AbstractIncomingMessage

from consumers.errors import Transient
from consumers.events import Event
from consumers.runner import ConsumerSpec, Runner
from consumers.store import Store
from router.broker.messages import quietly
from router.settings import BrokerSettings

V = TypeVar("V")


class CallResults(dict[str, "V | Exception"], Generic[V]):
    """What a caller's `call` learned, by event id, for its handler: a value, or the exception
    the handler raises in the transaction (Transient: retry; Permanent: dead letter)."""

    def taken(self, event: Event, what: str) -> V:
        """`event`'s result; raises the exception kept for it, or Transient if none was kept."""
        result = self.get(str(event["id"]))
        if result is None:  # not called for (cannot happen under CallingRunner): again later
            raise Transient(f"{what}: no call was made for this message")
        if isinstance(result, Exception):
            raise result
        return result

    def forget(self, events: list[Event]) -> None:
        for event in events:
            self.pop(str(event["id"]), None)


class Caller(Protocol):
    async def call(self, events: list[Event]) -> None:
        """Make the batch's calls; never raises (a failure is kept for the handler)."""
        ...

    def forget(self, events: list[Event]) -> None: ...


class CallingRunner(Runner):
    """A Runner that awaits `caller.call(events)` before each batch's transaction."""

    def __init__(self, spec: ConsumerSpec[Any], store: Store, broker: BrokerSettings, *,
                 caller: Caller, **options: Any) -> None:
        super().__init__(spec, store, broker, **options)
        self.caller = caller

    async def _process(self, batch: list[AbstractIncomingMessage]) -> None:
        events = []
        for message in batch:
            try:
                event = orjson.loads(message.body)
            except orjson.JSONDecodeError:
                continue  # the runner dead-letters it
            if isinstance(event, dict) and "id" in event:
                events.append(event)
        await self.caller.call(events)
        try:
            await super()._process(batch)
        finally:
            self.caller.forget(events)

    async def _finish_inbox(self) -> None:
        """Stopping: the messages in hand whose calls have not begun go back onto the queue
        (nacked), uncalled for: each call takes as long as the outside API is slow, and a
        stop must not wait for all of them. Another process, or this one restarted, takes
        them; the batch whose calls had begun was finished first."""
        while not self._inbox.empty():
            await quietly(self._inbox.get_nowait().nack(requeue=True))
