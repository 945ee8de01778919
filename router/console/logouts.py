"""Sessions ended by logging out: a copied cookie of one is no session any more.

Session cookies are signed and stateless, so logging out alone only clears the browser's
cookie. Each logout is written to the store's `console_logouts` (the session's nonce, until
the cookie would have expired anyway), which every console process on that store reads:
one indexed lookup per request with a session. This process also remembers its own logouts,
so they hold while the store is away. A store that cannot be read lets sessions through
(the console's pages stay usable in an outage, when they are needed most; its actions need
the store and are refused without it) and is tried again on the next request.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

import structlog

from consumers.store import Store, StoreError, open_store
from router.console.session import Session
from router.times import now_iso

log = structlog.get_logger("router.console.logouts")


def _iso(seconds: float) -> str:
    return datetime.fromtimestamp(seconds, UTC).isoformat(timespec="microseconds")


class Logouts:
    """The logouts of the console's store (opened when first needed, again after a failure)."""

    def __init__(self, store_url: str) -> None:
        self._url = store_url
        self._store: Store | None = None
        self._mine: dict[str, float] = {}  # nonce -> expiry, this process's logouts
        self._opening = asyncio.Lock()
        self._failing = False  # said once per outage, not once per request

    def _failed(self, event: str, exc: Exception) -> None:
        if not self._failing:
            log.warning(event, error=str(exc))
        self._failing = True

    async def _open(self) -> Store:
        async with self._opening:  # one store for the requests that arrive together
            if self._store is None:
                store = open_store(self._url, create=False, pool_max=2)  # a lookup at a time
                await store.open()
                self._store = store
            return self._store

    async def _forget_store(self) -> None:
        store, self._store = self._store, None
        if store is not None:
            try:
                await store.close()
            except (StoreError, OSError):
                pass

    async def add(self, session: Session) -> bool:
        """End `session`; True once the store has it too (False: this process only)."""
        self._mine[session.nonce] = session.expires
        try:
            store = await self._open()
            async with store.transaction() as tx:
                await tx.execute("DELETE FROM console_logouts WHERE expires < $1", now_iso())
                await tx.execute(
                    "INSERT INTO console_logouts (nonce, expires) VALUES ($1, $2)"
                    " ON CONFLICT (nonce) DO NOTHING", session.nonce, _iso(session.expires))
        except (StoreError, OSError) as exc:
            self._failed("logout_not_shared", exc)
            await self._forget_store()
            return False
        self._failing = False
        return True

    async def ended(self, session: Session, now: float) -> bool:
        """Whether `session` was logged out (here, or by any console on the store)."""
        self._mine = {nonce: at for nonce, at in self._mine.items() if at > now}
        if session.nonce in self._mine:
            return True
        try:
            store = await self._open()
            async with store.transaction() as tx:
                found = await tx.fetchval(
                    "SELECT 1 FROM console_logouts WHERE nonce = $1", session.nonce)
        except (StoreError, OSError) as exc:
            self._failed("logouts_not_read", exc)
            await self._forget_store()
            return False
        self._failing = False
        return found is not None

    async def close(self) -> None:
        await self._forget_store()
