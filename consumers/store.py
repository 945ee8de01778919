"""The consumers' transactional store: the same behaviour on SQLite and PostgreSQL.

    store = open_store("sqlite:///data/consumers.sqlite3")   # or "postgresql://user@host:5432/db"
    await store.open()                                       # connect, migrate idempotently
    async with store.transaction() as tx:                    # commit on exit, rollback on error
        if await tx.claim("orders", event.id):               # inbox: once per (consumer, event)
            await tx.execute("INSERT INTO orders ... VALUES ($1, $2)", a, b)
            await tx.add_outbox("notify", "notify.order.created", body, message_id)
    await store.close()

SQL is written once, PostgreSQL style (`$1, $2`), in the subset both engines share
(`ON CONFLICT ... DO NOTHING/DO UPDATE`, `RETURNING`). Times are ISO-8601 strings (TEXT)
on both engines, so comparisons and round trips behave the same.

    StoreError                    anything the database refused or could not do
    └── IntegrityViolation        a constraint (PRIMARY KEY, UNIQUE, CHECK, FOREIGN KEY, NOT NULL)

SQLite: stdlib `sqlite3` on one dedicated worker thread, WAL, synchronous=FULL (an ack sent
after a commit survives power loss), busy_timeout=5000, foreign keys on, BEGIN IMMEDIATE, one
transaction at a time per process; several processes may share the file.
PostgreSQL: an asyncpg pool (min 1, max `pool_max`), READ COMMITTED.

After a StoreError inside a transaction, let it propagate (rollback) or roll back to a
SAVEPOINT taken before the statement: PostgreSQL refuses further statements in the
transaction, SQLite does not, and only those two ways behave alike on both.
Messages never contain a password.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import functools
import re
import sqlite3
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol, TypeVar
from urllib.parse import urlsplit

import asyncpg

T = TypeVar("T")

DEFAULT_POOL_MAX = 4
SQLITE_OPEN_TIMEOUT = 60.0  # seconds a starting process waits for the write lock
SQLITE_BUSY_TIMEOUT_MS = 5000

# Any constant that other users of the same PostgreSQL database are unlikely to pick.
_MIGRATION_LOCK_KEY = 0x5EB400C0


class StoreError(Exception):
    """The store refused or failed an operation; the original error is the `__cause__`."""


class IntegrityViolation(StoreError):
    """A constraint refused the change (PRIMARY KEY, UNIQUE, CHECK, FOREIGN KEY, NOT NULL)."""


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
    async def add_outbox(
        self, kind: str, routing_key: str, body: bytes, message_id: str
    ) -> None: ...
    # The outbox rows this transaction added (id, routing_key, body, message_id), in order.
    outbox: list[dict[str, Any]]
    facts: dict[str, Any]
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


def open_store(url: str, *, pool_max: int = DEFAULT_POOL_MAX) -> Store:
    """The store for `url` (not yet opened): `sqlite:///path` (`sqlite:////abs/path`,
    `sqlite:///:memory:`) or `postgresql://user@host:port/db`. Anything else is a ValueError."""
    scheme, sep, _ = url.partition("://")
    scheme = scheme.lower()
    if sep and scheme == "sqlite":
        return SqliteStore(url[len("sqlite:///") :] if url.startswith("sqlite:///") else "")
    if sep and scheme in ("postgresql", "postgres"):
        return PostgresStore(url, pool_max=pool_max)
    shown = scheme if sep else "(none)"
    raise ValueError(f"unsupported store URL scheme {shown!r}: expected 'sqlite' or 'postgresql'")


def now_iso() -> str:
    """The current UTC time as the ISO string the store keeps."""
    return datetime.now(UTC).isoformat(timespec="microseconds")


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


# --- schema ----------------------------------------------------------------------------------

# Numbered, applied in order, each recorded in schema_migrations. Never edit one that shipped:
# append. `{serial_pk}` and `{blob}` are filled per engine.
MIGRATIONS: list[tuple[int, list[str]]] = [
    (
        1,
        [
            """CREATE TABLE inbox (
                consumer TEXT NOT NULL,
                event_id TEXT NOT NULL,
                processed_at TEXT NOT NULL,
                PRIMARY KEY (consumer, event_id))""",
            """CREATE TABLE orders (
                order_id TEXT PRIMARY KEY,
                source TEXT,
                status TEXT,
                shipping_address TEXT,
                note TEXT,
                created_at TEXT,
                updated_at TEXT,
                version INTEGER NOT NULL DEFAULT 0)""",
            """CREATE TABLE order_lines (
                order_id TEXT NOT NULL REFERENCES orders (order_id),
                line_no INTEGER NOT NULL,
                sku TEXT NOT NULL,
                quantity INTEGER NOT NULL,
                reserved INTEGER NOT NULL DEFAULT 0,
                PRIMARY KEY (order_id, line_no))""",
            """CREATE TABLE stock (
                sku TEXT NOT NULL,
                location TEXT NOT NULL,
                on_hand INTEGER NOT NULL CHECK (on_hand >= 0),
                reserved INTEGER NOT NULL DEFAULT 0 CHECK (reserved >= 0 AND reserved <= on_hand),
                as_of TEXT,
                PRIMARY KEY (sku, location))""",
            """CREATE TABLE shipments (
                tracking_code TEXT NOT NULL,
                carrier TEXT NOT NULL,
                order_id TEXT,
                status TEXT,
                rank INTEGER,
                occurred_at TEXT,
                PRIMARY KEY (tracking_code, carrier))""",
            """CREATE TABLE shipment_events (
                id {serial_pk},
                tracking_code TEXT NOT NULL,
                carrier TEXT NOT NULL,
                status TEXT,
                occurred_at TEXT,
                detail TEXT,
                event_id TEXT)""",
            "CREATE INDEX shipment_events_by_shipment"
            " ON shipment_events (tracking_code, carrier, occurred_at)",
            """CREATE TABLE outbox (
                id {serial_pk},
                kind TEXT NOT NULL,
                routing_key TEXT NOT NULL,
                body {blob} NOT NULL,
                message_id TEXT NOT NULL UNIQUE,
                created_at TEXT NOT NULL,
                sent_at TEXT)""",
            "CREATE INDEX outbox_unsent ON outbox (id) WHERE sent_at IS NULL",
        ],
    ),
    (
        # Reservations at any location: each line records where it holds stock. Lines
        # reserved before this were reserved at the one location then used, "default".
        2,
        [
            "ALTER TABLE order_lines ADD COLUMN location TEXT",
            "UPDATE order_lines SET location = 'default' WHERE reserved > 0",
            "CREATE INDEX order_lines_by_sku ON order_lines (sku, order_id)",
            "CREATE INDEX orders_waiting ON orders (status, created_at)",
        ],
    ),
    (
        # Outbound webhooks: each subscription's state, and every delivery attempt.
        3,
        [
            """CREATE TABLE subscription_state (
                name TEXT PRIMARY KEY,
                state TEXT NOT NULL,
                reason TEXT,
                failures INTEGER NOT NULL DEFAULT 0,
                first_failure_at TEXT,
                updated_at TEXT NOT NULL)""",
            """CREATE TABLE deliveries (
                id {serial_pk},
                subscription TEXT NOT NULL,
                message_id TEXT NOT NULL,
                event_id TEXT,
                type TEXT,
                attempt INTEGER NOT NULL,
                status_code INTEGER,
                error TEXT,
                latency_ms REAL,
                at TEXT NOT NULL)""",
            "CREATE INDEX deliveries_by_message ON deliveries (message_id)",
            "CREATE INDEX deliveries_by_event ON deliveries (event_id)",
            "CREATE INDEX outbox_by_time ON outbox (created_at)",
        ],
    ),
    (
        # Shipping looks orders up by their shipments, and shipments by their order.
        4,
        ["CREATE INDEX shipments_by_order ON shipments (order_id)"],
    ),
]

_DIALECT = {
    "sqlite": {"serial_pk": "INTEGER PRIMARY KEY", "blob": "BLOB"},
    "postgresql": {"serial_pk": "BIGSERIAL PRIMARY KEY", "blob": "BYTEA"},
}

_CREATE_MIGRATIONS = (
    "CREATE TABLE IF NOT EXISTS schema_migrations ("
    " version INTEGER PRIMARY KEY, applied_at TEXT NOT NULL)"
)

_CLAIM = (
    "INSERT INTO inbox (consumer, event_id, processed_at) VALUES ($1, $2, $3)"
    " ON CONFLICT (consumer, event_id) DO NOTHING"
)
_ADD_OUTBOX = (
    "INSERT INTO outbox (kind, routing_key, body, message_id, created_at)"
    " VALUES ($1, $2, $3, $4, $5) ON CONFLICT (message_id) DO NOTHING RETURNING id"
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


class _TxBase:
    """What both engines' transactions share, written on top of execute/fetch."""

    def __init__(self) -> None:
        self.outbox: list[dict[str, Any]] = []
        # What a batch's prepare learned for its handlers (one query per batch instead of
        # one per message); it lives and dies with this transaction.
        self.facts: dict[str, Any] = {}

    async def execute(self, sql: str, *args: Any) -> int:
        raise NotImplementedError

    async def fetchval(self, sql: str, *args: Any) -> Any:
        raise NotImplementedError

    async def claim(self, consumer: str, event_id: str) -> bool:
        """Record (consumer, event_id) in the inbox; True if this transaction claimed it first.
        Call it in the same transaction as the effect."""
        return await self.execute(_CLAIM, consumer, event_id, now_iso()) == 1

    async def add_outbox(self, kind: str, routing_key: str, body: bytes, message_id: str) -> None:
        """Queue a message for publishing after commit; a repeated message_id is ignored.
        The row is also appended to `self.outbox`, so the committer can publish it at once."""
        body = bytes(body)
        row_id = await self.fetchval(_ADD_OUTBOX, kind, routing_key, body, message_id, now_iso())
        if row_id is not None:
            self.outbox.append(
                {"id": row_id, "routing_key": routing_key, "body": body, "message_id": message_id}
            )


class _OutboxMixin:
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


async def mark_sent(tx: Any, ids: Sequence[int]) -> None:
    """Mark outbox rows sent inside `tx`, one UPDATE per chunk of ids rather than one per row."""
    sent_at = now_iso()
    for chunk in chunks(ids, PARAMS_PER_STATEMENT - 1):
        await tx.execute(
            "UPDATE outbox SET sent_at = $1 WHERE sent_at IS NULL"
            f" AND id IN ({placeholders(len(chunk), first=2)})",
            sent_at, *chunk,
        )


async def _migrate(tx: Any, dialect: str) -> list[int]:
    """Apply the missing migrations inside `tx` (the caller serialises); the versions applied."""
    await tx.execute(_CREATE_MIGRATIONS)
    done = {row["version"] for row in await tx.fetch("SELECT version FROM schema_migrations")}
    applied = []
    for version, statements in MIGRATIONS:
        if version in done:
            continue
        for statement in statements:
            await tx.execute(statement.format(**_DIALECT[dialect]))
        await tx.execute(
            "INSERT INTO schema_migrations (version, applied_at) VALUES ($1, $2)",
            version,
            now_iso(),
        )
        applied.append(version)
    return applied


# --- SQLite ----------------------------------------------------------------------------------

_PLACEHOLDER = re.compile(r"'(?:[^']|'')*'|\"(?:[^\"]|\"\")*\"|\$(\d+)")


@functools.lru_cache(maxsize=1024)
def to_sqlite_sql(sql: str) -> str:
    """`$1` → `?1` (SQLite's numbered parameters, so reuse and order are kept), outside quotes."""
    return _PLACEHOLDER.sub(lambda m: f"?{m.group(1)}" if m.group(1) else m.group(0), sql)


def _dict_row(cursor: sqlite3.Cursor, row: tuple[Any, ...]) -> dict[str, Any]:
    return {column[0]: value for column, value in zip(cursor.description, row, strict=True)}


_SQLITE_BUSY, _SQLITE_LOCKED = 5, 6


def _sqlite_busy(exc: sqlite3.Error) -> bool:
    """SQLITE_BUSY or SQLITE_LOCKED, extended codes included (by code, not by message)."""
    code = getattr(exc, "sqlite_errorcode", None)
    return code is not None and code & 0xFF in (_SQLITE_BUSY, _SQLITE_LOCKED)


def _sqlite_error(exc: sqlite3.Error) -> StoreError:
    if isinstance(exc, sqlite3.IntegrityError):
        return IntegrityViolation(f"constraint violated: {exc}")
    if _sqlite_busy(exc):
        return StoreBusy(f"sqlite: {exc}")
    return StoreError(f"sqlite: {exc}")


class _SqliteTx(_TxBase):
    """Each statement is one hop to the store's thread (for `async with store.transaction()`)."""

    dialect = "sqlite"

    def __init__(self, store: SqliteStore) -> None:
        super().__init__()
        self._store = store

    def _run(self, sql: str, args: tuple[Any, ...], mode: str) -> Any:
        conn = self._store._require_conn()
        try:
            cursor = conn.execute(to_sqlite_sql(sql), args)
            if mode == "execute":
                if cursor.description is not None:  # RETURNING or SELECT: count the rows
                    return len(cursor.fetchall())
                return max(cursor.rowcount, 0)
            if mode == "fetch":
                return cursor.fetchall()
            row = cursor.fetchone()
            cursor.close()
            if mode == "fetchrow":
                return row
            return None if row is None else next(iter(row.values()), None)
        except sqlite3.Error as exc:
            raise _sqlite_error(exc) from exc

    async def execute(self, sql: str, *args: Any) -> int:
        return await self._store._call(self._run, sql, args, "execute")

    async def fetch(self, sql: str, *args: Any) -> list[dict[str, Any]]:
        return await self._store._call(self._run, sql, args, "fetch")

    async def fetchrow(self, sql: str, *args: Any) -> dict[str, Any] | None:
        return await self._store._call(self._run, sql, args, "fetchrow")

    async def fetchval(self, sql: str, *args: Any) -> Any:
        return await self._store._call(self._run, sql, args, "fetchval")

    def _run_many(self, sql: str, rows: Sequence[Sequence[Any]]) -> None:
        try:
            self._store._require_conn().executemany(to_sqlite_sql(sql), rows)
        except sqlite3.Error as exc:
            raise _sqlite_error(exc) from exc

    async def executemany(self, sql: str, rows: Sequence[Sequence[Any]]) -> None:
        await self._store._call(self._run_many, sql, rows)


class _SqliteDirectTx(_SqliteTx):
    """Statements run at once on the calling thread, which must be the store's thread: for
    `store.run(work)`, where the whole of `work` runs there in one hop. Its coroutines never
    suspend."""

    async def execute(self, sql: str, *args: Any) -> int:
        return self._run(sql, args, "execute")

    async def fetch(self, sql: str, *args: Any) -> list[dict[str, Any]]:
        return self._run(sql, args, "fetch")

    async def fetchrow(self, sql: str, *args: Any) -> dict[str, Any] | None:
        return self._run(sql, args, "fetchrow")

    async def fetchval(self, sql: str, *args: Any) -> Any:
        return self._run(sql, args, "fetchval")

    async def executemany(self, sql: str, rows: Sequence[Sequence[Any]]) -> None:
        self._run_many(sql, rows)


def _drive(coroutine: Coroutine[Any, Any, T]) -> T:
    """Run a coroutine that never suspends to its end, synchronously."""
    try:
        coroutine.send(None)
    except StopIteration as done:
        return done.value
    coroutine.close()
    raise RuntimeError(
        "a SQLite store.run() function awaited something other than its transaction"
    )


class SqliteStore(_OutboxMixin):
    """SQLite on one worker thread; one transaction at a time in this process."""

    dialect = "sqlite"

    def __init__(self, path: str, *, busy_timeout_ms: int = SQLITE_BUSY_TIMEOUT_MS) -> None:
        if not path:
            raise ValueError("sqlite store URL needs a path: sqlite:///path or sqlite:///:memory:")
        self.path = path
        self.busy_timeout_ms = busy_timeout_ms
        self._executor: concurrent.futures.ThreadPoolExecutor | None = None
        self._conn: sqlite3.Connection | None = None
        self._lock = asyncio.Lock()

    async def __aenter__(self) -> SqliteStore:
        await self.open()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    def _require_conn(self) -> sqlite3.Connection:
        if self._conn is None:
            raise StoreError("store is not open")
        return self._conn

    async def _call(self, fn: Callable[..., T], *args: Any) -> T:
        if self._executor is None:
            raise StoreError("store is not open")
        # Submitted at once, run in submission order on the one thread, even if the awaiting
        # task is cancelled: a rollback queued after a statement runs after it.
        future = asyncio.get_running_loop().run_in_executor(self._executor, fn, *args)
        return await asyncio.shield(future)

    def _connect(self) -> None:
        if self.path != ":memory:":
            Path(self.path).parent.mkdir(parents=True, exist_ok=True)
        conn: sqlite3.Connection | None = None
        try:
            conn = sqlite3.connect(self.path, isolation_level=None, cached_statements=256)
            conn.row_factory = _dict_row
            conn.execute(f"PRAGMA busy_timeout = {int(self.busy_timeout_ms)}")
            self._set_wal(conn)
            conn.execute("PRAGMA synchronous = FULL")
            conn.execute("PRAGMA foreign_keys = ON")
        except sqlite3.Error as exc:
            if conn is not None:
                conn.close()
            raise _sqlite_error(exc) from exc
        self._conn = conn

    def _set_wal(self, conn: sqlite3.Connection) -> None:
        """Switch to WAL. The switch can answer "database is locked" at once, without the busy
        handler, while another process opens the same new file: retry until busy_timeout."""
        deadline = time.monotonic() + self.busy_timeout_ms / 1000
        pause = 0.005
        while True:
            try:
                conn.execute("PRAGMA journal_mode = WAL")
                return
            except sqlite3.OperationalError as exc:
                if not _sqlite_busy(exc) or time.monotonic() + pause > deadline:
                    raise
            time.sleep(pause)  # on the store's worker thread, not the event loop
            pause = min(pause * 2, 0.1)

    def _disconnect(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def _begin(self) -> None:
        try:
            self._require_conn().execute("BEGIN IMMEDIATE")
        except sqlite3.Error as exc:
            raise _sqlite_error(exc) from exc

    def _end(self, commit: bool) -> None:
        conn = self._require_conn()
        if not conn.in_transaction:
            return
        try:
            conn.execute("COMMIT" if commit else "ROLLBACK")
        except sqlite3.Error as exc:
            if commit and conn.in_transaction:
                with contextlib.suppress(sqlite3.Error):
                    conn.execute("ROLLBACK")
            raise _sqlite_error(exc) from exc

    async def open(self) -> None:
        """Connect and bring the schema up to date; safe when several processes start at once."""
        if self._executor is not None:
            return
        self._executor = concurrent.futures.ThreadPoolExecutor(
            max_workers=1, thread_name_prefix="sqlite-store"
        )
        try:
            await self._call(self._connect)
            # A process (re)starting beside busy ones may wait longer than busy_timeout for
            # the write lock (SQLite's busy handler is not fair): keep trying for a minute.
            deadline = time.monotonic() + SQLITE_OPEN_TIMEOUT
            pause = 0.05
            while True:
                try:
                    async with self.transaction() as tx:
                        await _migrate(tx, self.dialect)
                    break
                except StoreBusy:
                    if time.monotonic() + pause > deadline:
                        raise
                await asyncio.sleep(pause)
                pause = min(pause * 2, 1.0)
        except BaseException:
            await self.close()
            raise

    async def close(self) -> None:
        if self._executor is None:
            return
        async with self._lock:
            executor, self._executor = self._executor, None
            if executor is None:
                return
            future = asyncio.get_running_loop().run_in_executor(executor, self._disconnect)
            await asyncio.shield(future)
        executor.shutdown(wait=False)

    @contextlib.asynccontextmanager
    async def transaction(self) -> AsyncIterator[Tx]:
        """BEGIN IMMEDIATE … COMMIT, or ROLLBACK when the block raises."""
        async with self._lock:
            try:
                # Inside the try: a task cancelled while BEGIN runs (it runs all the same, on
                # the store's thread) must still roll back, or the next BEGIN finds it open.
                await self._call(self._begin)
                yield _SqliteTx(self)
            except BaseException:
                await self._call(self._end, False)
                raise
            await self._call(self._end, True)

    async def run(self, work: Callable[[Tx], Awaitable[T]]) -> T:
        """`work(tx)` in one transaction: committed when it returns, rolled back if it raises.
        The whole function runs on the store's thread in one hop (not one per statement), so
        it may await only `tx`'s methods; a function that awaits anything else is refused."""
        async with self._lock:
            return await self._call(self._run_work, work)

    def _run_work(self, work: Callable[[Tx], Awaitable[T]]) -> T:
        self._begin()
        try:
            result = _drive(work(_SqliteDirectTx(self)))  # type: ignore[arg-type]
        except BaseException:
            self._end(False)
            raise
        self._end(True)
        return result



# --- PostgreSQL ------------------------------------------------------------------------------


def _pg_error(exc: Exception) -> StoreError:
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


class _PostgresTx(_TxBase):
    dialect = "postgresql"

    def __init__(self, conn: asyncpg.Connection) -> None:
        super().__init__()
        self._conn = conn

    async def executemany(self, sql: str, rows: Sequence[Sequence[Any]]) -> None:
        try:
            await self._conn.executemany(sql, rows)
        except (asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
            raise _pg_error(exc) from exc

    async def execute(self, sql: str, *args: Any) -> int:
        try:
            return _rows_affected(await self._conn.execute(sql, *args))
        except (asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
            raise _pg_error(exc) from exc

    async def fetch(self, sql: str, *args: Any) -> list[dict[str, Any]]:
        try:
            return [dict(row) for row in await self._conn.fetch(sql, *args)]
        except (asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
            raise _pg_error(exc) from exc

    async def fetchrow(self, sql: str, *args: Any) -> dict[str, Any] | None:
        try:
            row = await self._conn.fetchrow(sql, *args)
        except (asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
            raise _pg_error(exc) from exc
        return None if row is None else dict(row)

    async def fetchval(self, sql: str, *args: Any) -> Any:
        try:
            return await self._conn.fetchval(sql, *args)
        except (asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
            raise _pg_error(exc) from exc


class PostgresStore(_OutboxMixin):
    """PostgreSQL through an asyncpg pool; each transaction holds one pooled connection."""

    dialect = "postgresql"

    def __init__(self, url: str, *, pool_max: int = DEFAULT_POOL_MAX) -> None:
        if pool_max < 1:
            raise ValueError("pool_max must be at least 1")
        self.url = url
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
        except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
            raise StoreError(
                f"cannot connect to {redact_url(self.url)}: {type(exc).__name__}"
            ) from exc
        try:
            async with self.transaction() as tx:
                await tx.fetchval("SELECT pg_advisory_xact_lock($1)", _MIGRATION_LOCK_KEY)
                await _migrate(tx, self.dialect)
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
        raised: BaseException | None = None
        try:
            async with self._pool.acquire() as conn:
                async with conn.transaction(isolation="read_committed"):
                    try:
                        yield _PostgresTx(conn)
                    except BaseException as exc:
                        raised = exc
                        raise
        except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
            if exc is raised:  # the block's own error: pass it on as it is
                raise
            # Raised by acquire, BEGIN, COMMIT or ROLLBACK.
            raise _pg_error(exc) from exc

    async def run(self, work: Callable[[Tx], Awaitable[T]]) -> T:
        """`work(tx)` in one transaction: committed when it returns, rolled back if it raises."""
        async with self.transaction() as tx:
            return await work(tx)

