"""SQLite: stdlib `sqlite3` on one dedicated worker thread, WAL, synchronous=FULL (an ack sent
after a commit survives power loss), busy_timeout=5000, foreign keys on, BEGIN IMMEDIATE, one
transaction at a time per process; several processes may share the file."""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import functools
import re
import sqlite3
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine, Sequence
from pathlib import Path
from typing import Any, TypeVar, cast

from consumers.store.contract import (
    IntegrityViolation,
    OutboxRelay,
    StoreBusy,
    StoreError,
    StoreMissing,
    Tx,
    TxBase,
)
from consumers.store.migrations import migrate

T = TypeVar("T")

SQLITE_OPEN_TIMEOUT = 60.0  # seconds a starting process waits for the write lock
SQLITE_BUSY_TIMEOUT_MS = 5000

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


class _SqliteTx(TxBase):
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


def _drive(awaitable: Awaitable[T]) -> T:
    """Run a coroutine that never suspends to its end, synchronously."""
    coroutine = cast(Coroutine[Any, Any, T], awaitable)
    try:
        coroutine.send(None)
    except StopIteration as done:
        return done.value
    coroutine.close()
    raise RuntimeError(
        "a SQLite store.run() function awaited something other than its transaction"
    )


class SqliteStore(OutboxRelay):
    """SQLite on one worker thread; one transaction at a time in this process."""

    dialect = "sqlite"

    def __init__(self, path: str, *, busy_timeout_ms: int = SQLITE_BUSY_TIMEOUT_MS,
                 create: bool = True, open_timeout: float = SQLITE_OPEN_TIMEOUT) -> None:
        if not path:
            raise ValueError("sqlite store URL needs a path: sqlite:///path or sqlite:///:memory:")
        self.path = path
        self.create = create  # False: the file and its tables must be there (StoreMissing)
        self.busy_timeout_ms = busy_timeout_ms
        self.open_timeout = open_timeout  # seconds open() keeps trying for the write lock
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
        target, uri = self.path, False
        if not self.create:
            if self.path == ":memory:" or not Path(self.path).is_file():
                raise StoreMissing(f"no store there: {self.path} does not exist")
            # mode=rw: never create the file, even if it goes away after the check above
            target, uri = f"{Path(self.path).resolve().as_uri()}?mode=rw", True
        elif self.path != ":memory:":
            Path(self.path).parent.mkdir(parents=True, exist_ok=True)
        conn: sqlite3.Connection | None = None
        try:
            conn = sqlite3.connect(target, isolation_level=None, cached_statements=256, uri=uri)
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
            # the write lock (SQLite's busy handler is not fair): keep trying (a minute, unless
            # the caller retries itself).
            deadline = time.monotonic() + self.open_timeout
            pause = 0.05
            while True:
                try:
                    async with self.transaction() as tx:
                        await migrate(tx, self.dialect, create=self.create)
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
            result = _drive(work(_SqliteDirectTx(self)))
        except BaseException:
            self._end(False)
            raise
        self._end(True)
        return result


