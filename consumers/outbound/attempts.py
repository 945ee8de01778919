"""Every delivery attempt a row in `deliveries`, committed before the message is acked."""

from __future__ import annotations

import asyncio
from typing import Any

import orjson
from aio_pika.abc import AbstractIncomingMessage

from consumers.outbound.notification import event_type
from consumers.outbound.sender import Attempt
from consumers.store import PARAMS_PER_STATEMENT, Store, Tx, chunks, placeholders
from router.times import now_iso


def attempt_row(sub: str, message: AbstractIncomingMessage, attempt: int,
                result: Attempt) -> tuple[Any, ...]:
    """The `deliveries` row of one attempt, in ATTEMPT_COLUMNS order."""
    body_cause = None
    try:
        body_cause = orjson.loads(message.body).get("cause")
    except (orjson.JSONDecodeError, AttributeError):
        pass
    return (sub, message.message_id or "", body_cause, event_type(message), attempt,
            result.status, result.error, round(result.latency * 1000, 3), now_iso())


ATTEMPT_COLUMNS = ("subscription", "message_id", "event_id", "type", "attempt", "status_code",
                   "error", "latency_ms", "at")


class AttemptLog:
    """One subscription's attempts, written in group commits: the rows that arrive while a
    write is in flight go together in the next one, so under load one transaction records
    many (and, if any of them was delivered, forgets the failures counted so far). record()
    returns once its row is committed, and raises what the store raised if the write failed."""

    def __init__(self, store: Store, name: str) -> None:
        self.store = store
        self.name = name
        self.pending: list[tuple[tuple[Any, ...], bool, asyncio.Future[None]]] = []
        self.writer: asyncio.Task[None] | None = None

    async def record(self, row: tuple[Any, ...], delivered: bool) -> None:
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.pending.append((row, delivered, future))
        if self.writer is None or self.writer.done():
            self.writer = asyncio.create_task(self._write())
        await future

    async def _write(self) -> None:
        while self.pending:
            batch, self.pending = self.pending, []
            rows = [row for row, _, _ in batch]
            reset = any(delivered for _, delivered, _ in batch)

            async def work(tx: Tx, rows: list[tuple[Any, ...]] = rows,
                           reset: bool = reset) -> None:
                width = len(ATTEMPT_COLUMNS)
                for chunk in chunks(rows, PARAMS_PER_STATEMENT // width):
                    values = ", ".join(f"({placeholders(width, first=i * width + 1)})"
                                       for i in range(len(chunk)))
                    await tx.execute(
                        f"INSERT INTO deliveries ({', '.join(ATTEMPT_COLUMNS)})"
                        f" VALUES {values}", *(value for row in chunk for value in row))
                if reset:
                    await tx.execute(
                        "UPDATE subscription_state SET failures = 0, first_failure_at = NULL"
                        " WHERE name = $1 AND failures > 0", self.name)

            try:
                await self.store.run(work)
            except Exception as exc:
                for _, _, future in batch:
                    if not future.done():
                        future.set_exception(exc)
            else:
                for _, _, future in batch:
                    if not future.done():
                        future.set_result(None)
