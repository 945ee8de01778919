"""Each subscription's state in the store (subscription_state), shared by every
notifications process and the `subscriptions` commands: enabled, paused (after too many
failures in a row) or disabled (by an operator, or a 410 Gone)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from consumers.store import Store
from router.settings import NotificationSettings
from router.times import now_iso


async def subscription_state(store: Store, name: str) -> dict[str, Any] | None:
    async with store.transaction() as tx:
        return await tx.fetchrow(
            "SELECT name, state, reason, failures, first_failure_at, updated_at"
            " FROM subscription_state WHERE name = $1",
            name,
        )


async def set_state(store: Store, name: str, state: str, reason: str | None = None) -> None:
    """enabled | paused | disabled; enabling also forgets the failures counted so far."""
    async with store.transaction() as tx:
        await tx.execute(
            "INSERT INTO subscription_state (name, state, reason, failures, updated_at)"
            " VALUES ($1, $2, $3, 0, $4) ON CONFLICT (name) DO UPDATE SET state = $2,"
            " reason = $3, updated_at = $4,"
            " failures = CASE WHEN $2 = 'enabled' THEN 0 ELSE subscription_state.failures END,"
            " first_failure_at = CASE WHEN $2 = 'enabled' THEN NULL"
            " ELSE subscription_state.first_failure_at END",
            name, state, reason, now_iso(),
        )


async def count_failure(store: Store, name: str, settings: NotificationSettings) -> bool:
    """Count one more consecutive failure; True if that pauses the subscription."""
    now = now_iso()
    async with store.transaction() as tx:
        row = await tx.fetchrow(
            "INSERT INTO subscription_state (name, state, failures, first_failure_at,"
            " updated_at) VALUES ($1, 'enabled', 1, $2, $2) ON CONFLICT (name) DO UPDATE SET"
            " failures = subscription_state.failures + 1, first_failure_at ="
            " COALESCE(subscription_state.first_failure_at, $2), updated_at = $2"
            " RETURNING state, failures, first_failure_at",
            name, now,
        )
        assert row is not None
        span = (datetime.fromisoformat(now)
                - datetime.fromisoformat(row["first_failure_at"])).total_seconds()
        if (row["state"] == "enabled" and row["failures"] >= settings.pause_after
                and span >= settings.pause_window):
            await tx.execute(
                "UPDATE subscription_state SET state = 'paused', reason = $2 WHERE name = $1",
                name, f"{row['failures']} consecutive failures over {int(span)} s",
            )
            return True
    return False
