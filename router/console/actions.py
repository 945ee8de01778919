"""The operator actions log (table operator_actions): who did what, when, on which ids.

An action is done with the store open: where the store cannot be opened the action is
refused, so nothing an operator does goes unrecorded.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, TypeVar

import orjson

from consumers.store import Store, StoreError, open_store
from router.console.errors import ConsoleError, StoreUnavailable
from router.console.settings import ConsoleUser
from router.times import now_iso

AUDIT_LIMIT = 200
T = TypeVar("T")


@contextlib.asynccontextmanager
async def action_log(store_url: str) -> AsyncIterator[Store]:
    """The store, open for an action and its record (StoreUnavailable if it cannot be)."""
    try:
        store = open_store(store_url, create=False)
        await store.open()
    except (StoreError, OSError) as exc:
        raise StoreUnavailable(f"the store cannot be opened, so the action would go "
                               f"unrecorded: nothing was done ({exc})") from exc
    try:
        yield store
    finally:
        await store.close()


async def record(store: Store, user: ConsoleUser, action: str, target: str,
                 ids: list[str], outcome: str, detail: dict[str, str] | None = None) -> None:
    """One action, with what it was done with besides its ids (`detail`, kept as JSON)."""
    async with store.transaction() as tx:
        await tx.execute(
            "INSERT INTO operator_actions (at, actor, role, action, target, ids, outcome,"
            " detail) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
            now_iso(), user.name, user.role, action, target, orjson.dumps(ids).decode(),
            outcome, None if detail is None else orjson.dumps(detail).decode())


async def act(store_url: str, user: ConsoleUser, action: str, target: str, ids: list[str],
              work: Callable[[Store], Awaitable[T]], outcome: Callable[[T], str]) -> T:
    """Do `work` (given the open store) and record it: `outcome` of its result, or
    `failed: why` when it raises a ConsoleError (raised on). Nothing is done if the store
    cannot be opened."""
    async with action_log(store_url) as store:
        try:
            try:
                result = await work(store)
            except ConsoleError as exc:
                await record(store, user, action, target, ids, f"failed: {exc}")
                raise
            await record(store, user, action, target, ids, outcome(result))
        except (StoreError, OSError) as exc:  # the store went away in the middle
            raise StoreUnavailable(f"the store failed during the action, which may or may "
                                   f"not have been done and was not recorded: {exc}") from exc
    return result


async def recent(store_url: str, limit: int = AUDIT_LIMIT) -> list[dict[str, Any]]:
    """The newest `limit` actions, newest first."""
    try:
        async with open_store(store_url, create=False) as store, store.transaction() as tx:
            rows = await tx.fetch(
                "SELECT at, actor, role, action, target, ids, outcome, detail"
                " FROM operator_actions"
                " ORDER BY id DESC LIMIT $1", limit)
    except (StoreError, OSError) as exc:
        raise StoreUnavailable(f"the store cannot be read: {exc}") from exc
    return [{**row, "ids": orjson.loads(row["ids"]),
             "detail": orjson.loads(row["detail"]) if row["detail"] else {}} for row in rows]
