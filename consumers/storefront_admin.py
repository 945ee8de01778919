"""`webhook-router storefront show|resume [SOURCE]`: write-back pauses (consumers.storefront),
for operators. The store is opened without creating it.

    show     the paused stores: since when, the store's words, the last probe
    resume   lift SOURCE's pause once its credentials were renewed: its waiting write-backs
             are tried again as they come back from the retry queue (within the rung for
             [storefront] probe_every); recorded in operator_actions (actor: the user
             running the command, role `cli`), as `labels void|buy` are
"""

from __future__ import annotations

import sys
from typing import Any, TextIO

from consumers.label_admin import record_cli_action
from consumers.order_admin import Usage
from consumers.runner import rung
from consumers.store import Tx, open_store
from consumers.storefront import lift
from router.settings import Settings

ACTIONS = ("show", "resume")


async def storefront_command(settings: Settings, action: str, source: str | None, *,
                             out: TextIO = sys.stdout) -> int:
    """Run `storefront show|resume [SOURCE]` against the consumers' store; the exit code."""
    if action == "resume" and not source:
        raise Usage("storefront resume needs a SOURCE (a [storefront.SOURCE] table)")
    async with open_store(settings.consumers.store, create=False) as store:
        if action == "show":
            async with store.transaction() as tx:
                rows = await tx.fetch("SELECT * FROM storefront_pauses ORDER BY source")
            _show([r for r in rows if source in (None, r["source"])], out)
            return 0
        assert source is not None
        async with store.transaction() as tx:
            pause = await _resume(tx, source)
    if pause is None:
        print(f"{source}: write-back is not paused; nothing to do", file=out)
        return 0
    s = settings.storefront
    wait = rung(s.retry_ladder, 0, s.probe_every, deferred=True)
    print(f"{source}: write-back resumed (paused since {pause['paused_at']}: "
          f"{pause['message']}); its waiting write-backs are tried again within {wait} s, "
          "as they come back from the retry queue", file=out)
    return 0


async def _resume(tx: Tx, source: str) -> dict[str, Any] | None:
    """Lift the pause (None if there was none) and record the action either way."""
    pause = await tx.fetchrow("SELECT * FROM storefront_pauses WHERE source = $1", source)
    if pause is not None:
        await lift(tx, source)
    await record_cli_action(tx, "storefront resume", source,
                            "resumed" if pause is not None else "not paused")
    return pause


def _show(rows: list[dict[str, Any]], out: TextIO) -> None:
    if not rows:
        print("no store is paused", file=out)
    for row in rows:
        print(f"{row['source']}: paused since {row['paused_at']} (last probe "
              f"{row['probed_at'] or '-'}): {row['message']}", file=out)
