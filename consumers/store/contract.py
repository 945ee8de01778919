"""The contract both engines keep: the errors, the Tx and Store protocols, and the SQL
they share (inbox claims, the outbox) written once on top of execute/fetch.

    StoreError                    anything the database refused or could not do
    ├── IntegrityViolation        a constraint (PRIMARY KEY, UNIQUE, CHECK, FOREIGN KEY, NOT NULL)
    ├── StoreBusy                 another connection held what this one needed: try again
    ├── StoreUnavailable          the store cannot be reached (yet): try again later
    └── StoreMissing              opened with create=False, and there is no store there

Messages never contain a password.
"""

from __future__ import annotations

import contextlib
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, Protocol, TypeVar
from urllib.parse import urlsplit

from router.times import now_iso

T = TypeVar("T")

class StoreError(Exception):
    """The store refused or failed an operation; the original error is the `__cause__`."""


class IntegrityViolation(StoreError):
    """A constraint refused the change (PRIMARY KEY, UNIQUE, CHECK, FOREIGN KEY, NOT NULL)."""


class StoreMissing(StoreError):
    """Opened with create=False (the operators' commands) where no store is: no SQLite file,
    or a database without our tables. Nothing was created."""


class StoreUnavailable(StoreError):
    """The store could not be reached: a connection refused, dropped or ended by the server,
    a server starting up or shutting down, or (create=True) a database not created yet.
    Nothing was applied; it may come back."""


class StoreBusy(StoreError):
    """Another connection held what this one needed (SQLite busy or locked; PostgreSQL
    deadlock, serialization failure, lock not available): nothing was applied, and the same
    work may succeed if tried again."""


class Tx(Protocol):
    """One open transaction. SQL uses `$1, $2` placeholders."""

    async def execute(self, sql: str, *args: Any) -> int: ...
    async def fetch(self, sql: str, *args: Any) -> list[dict[str, Any]]: ...
    async def fetchrow(self, sql: str, *args: Any) -> dict[str, Any] | None: ...
    async def fetchval(self, sql: str, *args: Any) -> Any: ...
    async def executemany(self, sql: str, rows: Sequence[Sequence[Any]]) -> None: ...
    async def claim(self, consumer: str, event_id: str) -> bool: ...
    async def claim_all(self, consumer: str, event_ids: Sequence[str]) -> set[str]: ...
    async def write_later(self, table: str, sql: str, rows: Sequence[Sequence[Any]]
                           ) -> None: ...
    async def flush(self) -> None: ...
    # While True, write_later and add_outbox may hold their rows back (see TxBase).
    write_behind: bool
    views: dict[str, Any]
    async def add_outbox(
        self, kind: str, routing_key: str, body: bytes, message_id: str,
        cause: str | None = None,
    ) -> None: ...
    # The outbox rows this transaction added (id, routing_key, body, message_id), in order.
    outbox: list[dict[str, Any]]
    dialect: str  # "sqlite" or "postgresql"


class Store(Protocol):
    async def __aenter__(self) -> Store: ...
    async def __aexit__(self, *exc: object) -> None: ...
    async def open(self) -> None: ...
    async def close(self) -> None: ...
    def transaction(self) -> contextlib.AbstractAsyncContextManager[Tx]: ...
    async def run(self, work: Callable[[Tx], Awaitable[T]]) -> T: ...
    async def pending_outbox(self, limit: int) -> list[dict[str, Any]]: ...
    async def mark_sent(self, ids: Sequence[int]) -> None: ...



def redact_url(url: str) -> str:
    """`url` without its password, for messages."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return "<unparseable url>"
    if parts.password is None:
        return url
    netloc = parts.netloc.rpartition("@")[2]
    user = parts.username or ""
    return parts._replace(netloc=f"{user}:***@{netloc}").geturl()



_CLAIM = (
    "INSERT INTO inbox (consumer, event_id, processed_at) VALUES ($1, $2, $3)"
    " ON CONFLICT (consumer, event_id) DO NOTHING"
)
_ADD_OUTBOX = (
    "INSERT INTO outbox (kind, routing_key, body, message_id, created_at, cause)"
    " VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (message_id) DO NOTHING RETURNING id"
)
_PENDING = (
    "SELECT id, kind, routing_key, body, message_id, created_at FROM outbox"
    " WHERE sent_at IS NULL ORDER BY id LIMIT $1"
)
PARAMS_PER_STATEMENT = 900  # bound parameters per statement: under SQLite's old 999 bound


def placeholders(count: int, first: int = 1) -> str:
    """`$first, $first+1, …` for `count` parameters (an IN list, a VALUES row)."""
    return ", ".join(f"${i}" for i in range(first, first + count))


def chunks(values: Sequence[Any], size: int) -> list[Sequence[Any]]:
    """`values` in slices of at most `size`, for statements with a bounded parameter count."""
    return [values[start:start + size] for start in range(0, len(values), size)]


class TxBase:
    """What both engines' transactions share, written on top of execute/fetch.

    Write-behind: while `write_behind` is set, an engine may hold back the rows of
    `write_later` and `add_outbox` and send them together (one round trip per statement
    instead of one per call), grouped by statement in the order each was first used, before
    the next statement whose SQL names one of their tables, and at `flush()` (the engine's
    transaction() flushes before COMMIT too). Held rows are not checked until then: a
    constraint they break raises from that statement or from flush(). So write_later suits
    inserts into tables whose foreign keys point only to tables written before them, and
    updates whose rows are locked already.

    `views`, by table: what a module read of a table under lock for this batch (the stock
    rows it locked, the order ids not stored), for it to decide without asking again. A
    statement that names the table and is not held drops its view: from then on the module
    asks the database. Here (SQLite, in-process) every call runs at once and no view is
    kept."""

    write_behind = False

    def __init__(self) -> None:
        self.outbox: list[dict[str, Any]] = []
        self.views: dict[str, Any] = {}

    async def execute(self, sql: str, *args: Any) -> int:
        raise NotImplementedError

    async def fetchval(self, sql: str, *args: Any) -> Any:
        raise NotImplementedError

    async def claim(self, consumer: str, event_id: str) -> bool:
        """Record (consumer, event_id) in the inbox; True if this transaction claimed it first.
        Call it in the same transaction as the effect."""
        return await self.execute(_CLAIM, consumer, event_id, now_iso()) == 1

    async def claim_all(self, consumer: str, event_ids: Sequence[str]) -> set[str]:
        """claim() each of `event_ids`; the ones this transaction claimed first."""
        return {event_id for event_id in event_ids if await self.claim(consumer, event_id)}

    async def executemany(self, sql: str, rows: Sequence[Sequence[Any]]) -> None:
        raise NotImplementedError

    async def write_later(self, table: str, sql: str, rows: Sequence[Sequence[Any]]
                           ) -> None:
        """executemany(sql, rows), a write to `table`, now or (write-behind) later."""
        await self.executemany(sql, rows)

    async def flush(self) -> None:
        """Send whatever write-behind holds back."""

    async def add_outbox(self, kind: str, routing_key: str, body: bytes, message_id: str,
                         cause: str | None = None) -> None:
        """Queue a message for publishing after commit; a repeated message_id is ignored.
        `cause` is the id of the event it comes from, if one. The row is also appended to
        `self.outbox`, so the committer can publish it at once."""
        body = bytes(body)
        row_id = await self.fetchval(_ADD_OUTBOX, kind, routing_key, body, message_id, now_iso(),
                                     cause)
        if row_id is not None:
            self.outbox.append(
                {"id": row_id, "routing_key": routing_key, "body": body, "message_id": message_id}
            )


class OutboxRelay:
    """The outbox relay's side of the store, the same SQL on both engines."""

    def transaction(self) -> contextlib.AbstractAsyncContextManager[Tx]:
        raise NotImplementedError

    async def pending_outbox(self, limit: int) -> list[dict[str, Any]]:
        """Unsent outbox rows, oldest first: id, kind, routing_key, body, message_id, created_at."""
        async with self.transaction() as tx:
            return await tx.fetch(_PENDING, limit)

    async def mark_sent(self, ids: Sequence[int]) -> None:
        """Mark rows sent, in a transaction of their own."""
        if ids:
            async with self.transaction() as tx:
                await mark_sent(tx, ids)


async def mark_sent(tx: Tx, ids: Sequence[int]) -> None:
    """Mark outbox rows sent inside `tx`, one UPDATE per chunk of ids rather than one per row."""
    sent_at = now_iso()
    for chunk in chunks(ids, PARAMS_PER_STATEMENT - 1):
        await tx.execute(
            "UPDATE outbox SET sent_at = $1 WHERE sent_at IS NULL"
            f" AND id IN ({placeholders(len(chunk), first=2)})",
            sent_at, *chunk,
        )

