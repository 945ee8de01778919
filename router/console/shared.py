"""The store connection a console process keeps for its reads (the Overview, every few
seconds per open tab): opened when first needed, again after a failure, closed at shutdown,
rather than a new connection on every render."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

from consumers.store import Store, StoreError, open_store

POOL_MAX = 2  # connections at most: the Overview's few reads, one after another


class SharedStore:
    def __init__(self, store_url: str) -> None:
        self._url = store_url
        self._store: Store | None = None
        self._opening = asyncio.Lock()  # one store for the requests that arrive together

    @contextlib.asynccontextmanager
    async def use(self) -> AsyncIterator[Store]:
        """The open store; StoreError/OSError if it cannot be opened, or raised inside, after
        which it is closed and the next use opens it again. create=False: where there is no
        store, nothing is created."""
        async with self._opening:
            if self._store is None:
                store = open_store(self._url, create=False, pool_max=POOL_MAX)
                await store.open()
                self._store = store
            store = self._store
        try:
            yield store
        except (StoreError, OSError):
            await self._forget(store)
            raise

    async def _forget(self, store: Store) -> None:
        if self._store is store:  # not one opened since by another request
            self._store = None
        try:
            await store.close()
        except (StoreError, OSError):
            pass  # already gone

    async def close(self) -> None:
        if self._store is not None:
            await self._forget(self._store)
