"""PostgreSQL: an asyncpg pool (min 1, max `pool_max`), READ COMMITTED."""

from __future__ import annotations

import contextlib
import re
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from typing import Any, TypeVar

import asyncpg
import structlog

from consumers.store.contract import (
    IntegrityViolation,
    OutboxRelay,
    StoreBusy,
    StoreError,
    StoreMissing,
    StoreUnavailable,
    Tx,
    TxBase,
    redact_url,
)
from consumers.store.migrations import migrate
from router.times import now_iso

T = TypeVar("T")

log = structlog.get_logger("consumers.store")

DEFAULT_POOL_MAX = 4
# Any constant that other users of the same PostgreSQL database are unlikely to pick.
_MIGRATION_LOCK_KEY = 0x5EB400C0

# The server cannot be reached or ended the connection (refused, dropped, terminated by
# pg_terminate_backend or a shutdown, starting up, out of connection slots).
_UNREACHABLE = (OSError, TimeoutError, asyncpg.PostgresConnectionError,
                asyncpg.OperatorInterventionError, asyncpg.TooManyConnectionsError,
                asyncpg.ConnectionDoesNotExistError)

# What asyncpg raises for a statement, BEGIN, COMMIT or ROLLBACK, or the pool's reset. Its
# InternalClientError is the protocol out of step with the server (a FATAL arrived, the
# close not yet): that connection cannot be used again.
_DRIVER = (OSError, asyncpg.PostgresError, asyncpg.InterfaceError, asyncpg.InternalClientError)

# Whatever making a connection raised: the server, or this database on it, refuses us now
# (down, starting, not accepting connections, a password it does not take).
_CONNECTING = (OSError, TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError)


def _pg_error(exc: Exception, conn: asyncpg.Connection | None = None) -> StoreError:
    """Our error for asyncpg's `exc`; `conn`, the connection it came from, if one."""
    gone = conn is not None and conn.is_closed()  # e.g. "the underlying connection is closed"
    if gone or isinstance(exc, (*_UNREACHABLE, asyncpg.InternalClientError)):
        return StoreUnavailable(f"postgresql: {type(exc).__name__}: {exc}")
    if isinstance(exc, asyncpg.IntegrityConstraintViolationError):
        return IntegrityViolation(f"constraint violated: {exc}")
    if isinstance(exc, (asyncpg.DeadlockDetectedError, asyncpg.SerializationError,
                        asyncpg.LockNotAvailableError)):
        return StoreBusy(f"postgresql: {type(exc).__name__}: {exc}")
    return StoreError(f"postgresql: {type(exc).__name__}: {exc}")


def _rows_affected(status: str) -> int:
    """'INSERT 0 1' → 1, 'UPDATE 5' → 5, 'CREATE TABLE' → 0."""
    last = status.rpartition(" ")[2]
    return int(last) if last.isdigit() else 0


_CLAIM_ALL = (
    "INSERT INTO inbox (consumer, event_id, processed_at)"
    " SELECT $1, event_id, $3 FROM unnest($2::text[]) AS event_id"
    " ON CONFLICT (consumer, event_id) DO NOTHING RETURNING event_id"
)
_ADD_OUTBOX_ALL = (
    "INSERT INTO outbox (kind, routing_key, body, message_id, created_at, cause)"
    " SELECT * FROM unnest($1::text[], $2::text[], $3::bytea[], $4::text[], $5::text[],"
    " $6::text[]) ON CONFLICT (message_id) DO NOTHING RETURNING id, message_id"
)


_SAVEPOINTS = re.compile(r"\s*(SAVEPOINT|ROLLBACK|RELEASE)\b", re.IGNORECASE)


class _PostgresTx(TxBase):
    """Statements on one pooled connection, each a round trip; with write-behind, inserts
    wait to go together (TxBase)."""

    dialect = "postgresql"

    def __init__(self, conn: asyncpg.Connection) -> None:
        super().__init__()
        self._conn = conn
        # sql -> (table, rows), in the order each statement was first held
        self._held: dict[str, tuple[str, list[Sequence[Any]]]] = {}
        self._held_outbox: list[tuple[str, str, bytes, str, str, str | None]] = []

    # -- write-behind ---------------------------------------------------------------------

    async def write_later(self, table: str, sql: str, rows: Sequence[Sequence[Any]]
                          ) -> None:
        if not self.write_behind:
            await self.executemany(sql, rows)
            return
        held = self._held.get(sql)
        if held is None:
            self._held[sql] = (table, list(rows))
        else:
            held[1].extend(rows)

    async def add_outbox(self, kind: str, routing_key: str, body: bytes, message_id: str,
                         cause: str | None = None) -> None:
        if not self.write_behind:
            await super().add_outbox(kind, routing_key, body, message_id, cause)
            return
        self._held_outbox.append((kind, routing_key, bytes(body), message_id, now_iso(), cause))

    async def flush(self) -> None:
        """The held writes: one executemany per statement, in the order each was first held,
        then the outbox rows in one INSERT (their ids, in order, to self.outbox)."""
        held, self._held = self._held, {}
        outbox, self._held_outbox = self._held_outbox, []
        for sql, (_, rows) in held.items():
            await self._run(self._conn.executemany, sql, rows)
        if outbox:
            columns = [list(column) for column in zip(*outbox, strict=True)]
            added = await self._run(self._conn.fetch, _ADD_OUTBOX_ALL, *columns)
            by_id = {row["message_id"]: row["id"] for row in added}
            for _, routing_key, body, message_id, _, _ in outbox:
                row_id = by_id.pop(message_id, None)  # a repeated message_id: the first only
                if row_id is not None:
                    self.outbox.append({"id": row_id, "routing_key": routing_key, "body": body,
                                        "message_id": message_id})

    async def _before(self, sql: str) -> None:
        """Before a statement that is not held: if it names a table writes are held for,
        flush them all (so they keep their order); if it names a table with a view, drop it.
        A savepoint's statement flushes everything and drops every view: what was held or
        seen after it must be rolled back with it."""
        if _SAVEPOINTS.match(sql):
            self.views.clear()
            await self.flush()
            return
        held = {table for table, _ in self._held.values()}
        if self._held_outbox:
            held.add("outbox")
        named = {table for table in held | set(self.views)
                 if re.search(rf"\b{re.escape(table)}\b", sql)}
        for table in named & set(self.views):
            del self.views[table]
        if named & held:
            await self.flush()

    async def claim_all(self, consumer: str, event_ids: Sequence[str]) -> set[str]:
        rows = await self.fetch(_CLAIM_ALL, consumer, list(event_ids), now_iso())
        return {row["event_id"] for row in rows}

    # -- statements -----------------------------------------------------------------------

    async def _run(self, call: Callable[..., Awaitable[Any]], sql: str, *args: Any) -> Any:
        try:
            return await call(sql, *args)
        except _DRIVER as exc:
            raise _pg_error(exc, self._conn) from exc

    async def _statement(self, call: Callable[..., Awaitable[Any]], sql: str, *args: Any
                         ) -> Any:
        if self._held or self._held_outbox or self.views:
            await self._before(sql)
        return await self._run(call, sql, *args)

    async def executemany(self, sql: str, rows: Sequence[Sequence[Any]]) -> None:
        await self._statement(self._conn.executemany, sql, rows)

    async def execute(self, sql: str, *args: Any) -> int:
        return _rows_affected(await self._statement(self._conn.execute, sql, *args))

    async def fetch(self, sql: str, *args: Any) -> list[dict[str, Any]]:
        return [dict(row) for row in await self._statement(self._conn.fetch, sql, *args)]

    async def fetchrow(self, sql: str, *args: Any) -> dict[str, Any] | None:
        row = await self._statement(self._conn.fetchrow, sql, *args)
        return None if row is None else dict(row)

    async def fetchval(self, sql: str, *args: Any) -> Any:
        return await self._statement(self._conn.fetchval, sql, *args)


class PostgresStore(OutboxRelay):
    """PostgreSQL through an asyncpg pool; each transaction holds one pooled connection."""

    dialect = "postgresql"

    def __init__(self, url: str, *, pool_max: int = DEFAULT_POOL_MAX, create: bool = True
                 ) -> None:
        if pool_max < 1:
            raise ValueError("pool_max must be at least 1")
        self.url = url
        self.create = create  # False: the database and its tables must be there (StoreMissing)
        self.pool_max = pool_max
        self._pool: asyncpg.Pool | None = None

    async def __aenter__(self) -> PostgresStore:
        await self.open()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def open(self) -> None:
        """Connect and bring the schema up to date; concurrent starters wait on an advisory lock."""
        if self._pool is not None:
            return
        try:
            self._pool = await asyncpg.create_pool(self.url, min_size=1, max_size=self.pool_max)
        except asyncpg.InvalidCatalogNameError as exc:
            if not self.create:
                raise StoreMissing("no store there: the database does not exist") from exc
            # Consumers create tables, never the database: it may be created after them.
            raise StoreUnavailable(f"cannot connect to {redact_url(self.url)}: the database "
                                   "does not exist (yet)") from exc
        except _CONNECTING as exc:
            raise StoreUnavailable(
                f"cannot connect to {redact_url(self.url)}: {type(exc).__name__}"
            ) from exc
        try:
            async with self.transaction() as tx:
                await tx.fetchval("SELECT pg_advisory_xact_lock($1)", _MIGRATION_LOCK_KEY)
                await migrate(tx, self.dialect, create=self.create)
        except BaseException:
            await self.close()
            raise

    async def close(self) -> None:
        pool, self._pool = self._pool, None
        if pool is not None:
            await pool.close()

    @contextlib.asynccontextmanager
    async def transaction(self) -> AsyncIterator[Tx]:
        """A pooled connection in a READ COMMITTED transaction: commit, or rollback on error."""
        if self._pool is None:
            raise StoreError("store is not open")
        pool = self._pool
        try:
            conn = await pool.acquire()
        except _CONNECTING as exc:  # a new connection refused: the database is not there now
            raise StoreUnavailable(f"postgresql: cannot connect: {type(exc).__name__}: {exc}"
                                   ) from exc
        raised: BaseException | None = None
        try:
            async with conn.transaction(isolation="read_committed"):
                tx = _PostgresTx(conn)
                try:
                    yield tx
                except BaseException as exc:
                    raised = exc
                    raise
                await tx.flush()  # anything write-behind still holds, before COMMIT
        except _DRIVER as exc:
            if exc is raised:  # the block's own error: pass it on as it is
                raise
            # Raised by BEGIN, COMMIT or ROLLBACK.
            raise _pg_error(exc, conn) from exc
        finally:
            try:
                await pool.release(conn)
            except _DRIVER as exc:
                # The reset after the transaction failed (the server ended the session as it
                # ran): the pool has terminated the connection and opens a new one when next
                # needed. What the block did is settled: committed, or rolled back and raised.
                log.warning("store_connection_dropped", dialect=self.dialect,
                            error=type(exc).__name__)

    async def run(self, work: Callable[[Tx], Awaitable[T]]) -> T:
        """`work(tx)` in one transaction: committed when it returns, rolled back if it raises."""
        async with self.transaction() as tx:
            return await work(tx)

