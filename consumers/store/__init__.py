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

    contract.py     the errors (StoreError, IntegrityViolation, StoreBusy, StoreUnavailable),
                    Tx and Store, the SQL both engines share (inbox claim, outbox)
    migrations.py   the schema
    sqlite.py       SqliteStore
    postgresql.py   PostgresStore

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

from consumers.store.contract import (
    PARAMS_PER_STATEMENT,
    IntegrityViolation,
    Store,
    StoreBusy,
    StoreError,
    StoreMissing,
    StoreUnavailable,
    Tx,
    chunks,
    mark_sent,
    placeholders,
    redact_url,
)
from consumers.store.migrations import MIGRATIONS
from consumers.store.postgresql import DEFAULT_POOL_MAX, PostgresStore
from consumers.store.sqlite import SQLITE_OPEN_TIMEOUT, SqliteStore, to_sqlite_sql

__all__ = [
    "DEFAULT_POOL_MAX",
    "MIGRATIONS",
    "PARAMS_PER_STATEMENT",
    "IntegrityViolation",
    "PostgresStore",
    "SqliteStore",
    "Store",
    "StoreBusy",
    "StoreError",
    "StoreMissing",
    "StoreUnavailable",
    "Tx",
    "chunks",
    "mark_sent",
    "open_store",
    "placeholders",
    "redact_url",
    "to_sqlite_sql",
]


def open_store(url: str, *, pool_max: int = DEFAULT_POOL_MAX, create: bool = True,
               lock_wait: float = SQLITE_OPEN_TIMEOUT) -> Store:
    """The store for `url` (not yet opened): `sqlite:///path` (`sqlite:////abs/path`,
    `sqlite:///:memory:`) or `postgresql://user@host:port/db`. Anything else is a ValueError.
    With create=False (operators' commands), opening where no store is raises StoreMissing
    and creates nothing: no file, no tables. SQLite: `open()` tries for the write lock (to
    migrate) for up to `lock_wait` seconds, then raises StoreBusy (a consumer passes 0 and
    retries itself, saying so in its log)."""
    scheme, sep, _ = url.partition("://")
    scheme = scheme.lower()
    if sep and scheme == "sqlite":
        path = url[len("sqlite:///") :] if url.startswith("sqlite:///") else ""
        return SqliteStore(path, create=create, open_timeout=lock_wait)
    if sep and scheme in ("postgresql", "postgres"):
        return PostgresStore(url, pool_max=pool_max, create=create)
    shown = scheme if sep else "(none)"
    raise ValueError(f"unsupported store URL scheme {shown!r}: expected 'sqlite' or 'postgresql'")
