"""The storefront consumer (`python -m consumers storefront`, [storefront] in the config): the
order's own store learns that it shipped, with the tracking number, once per label.

It reads its own queue `storefront`, fed by the labels consumer's `shipment.label_created`
notification. For each (order, tracking number), outside any transaction (consumers.calling),
then in the runner's:

    1 look: the order's source, its store in [storefront] (none: nothing to tell), the
      write-back's row (`done`: told already) and whether that store is paused
    2 commit a `pending` row in `writebacks` (order id + tracking number) before the call
    3 the store's driver (consumers.storefronts) `fulfil`: it first looks for a write with
      the same tracking number on the order (an earlier attempt that died after the store's
      answer, or a redelivery) and takes it as done (`already_done`), else writes it
    4 in the runner's transaction: the row `done`, with the store's id for the write

So whatever is delivered twice or dies half-way, the store holds one fulfillment (Shopify) or
one customer note (WooCommerce) per tracking number.

Failures: the store unavailable (5xx, 429, THROTTLED, timeout) or its answer lost is Transient:
the storefront queue's own retry ladder ([storefront] retry_ladder, about a day long by
default), waiting at least as long as the store's Retry-After or Shopify's cost bucket says;
anything else the store refuses is Permanent (the dead-letter queue, with the store's
message).

Credentials the store refuses (401/403, ACCESS_DENIED) pause write-back to that store: a
`storefront_pauses` row and `webhook_storefront_paused{source}` = 1. While it is paused, its
messages are Deferred: they wait on the rung for `probe_every` and come back, as often as it
takes, never using up their attempts and never dead-lettered, while other stores' messages
flow. At most one write-back per `probe_every` seconds (across every process: the claim is a
row update) is tried against the paused store, the probe: its success lifts the pause, a
401/403 keeps it. `webhook-router storefront resume SOURCE` lifts it at once (an operator
renewed the credentials). A restart lifts nothing: with N processes, one restarting says
nothing about the credentials, and the probe finds renewed ones within `probe_every` anyway.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import structlog
from prometheus_client import Gauge

from consumers.calling import CallResults
from consumers.errors import Deferred, Permanent, Transient
from consumers.events import Event, data_of, text
from consumers.store import Store, Tx
from consumers.storefronts import (
    StoreAuthRevoked,
    Storefront,
    StoreRefused,
    StoreUnavailable,
    Tracking,
    Uncertain,
    WriteBack,
)
from router.storefront_settings import StorefrontSettings
from router.times import now_iso

log = structlog.get_logger("consumers.storefront")

# What handle() returns, for the runner to count.
OUTCOMES = ("written", "exists", "ignored")
LABEL_CREATED = "shipment.label_created"

PAUSED = Gauge("webhook_storefront_paused", "1 while write-back to the source's store is "
               "paused: the store refused our credentials (401/403); renew them, then "
               "`webhook-router storefront resume SOURCE` (or wait for the probe)", ["source"],
               multiprocess_mode="max")


@dataclass(frozen=True)
class Wanted:
    order_id: str
    tracking: Tracking


@dataclass(frozen=True)
class Written:
    order_id: str
    tracking_code: str
    source: str
    result: WriteBack


@dataclass(frozen=True)
class Skipped:
    why: str


Result = Written | Skipped | Exception


def wanted(event: Event) -> Wanted:
    """The order and tracking of a message on the storefront queue."""
    if event.get("type") != LABEL_CREATED:
        raise Permanent(f"storefront: unknown event type {event.get('type')!r}")
    data = data_of(event)
    url = data.get("tracking_url")
    try:
        tracking = Tracking(text(data, "tracking_code"), text(data, "carrier"),
                            url if isinstance(url, str) and url else None)
    except ValueError as exc:
        raise Permanent(f"storefront: {exc}") from exc
    return Wanted(text(data, "order_id"), tracking)


async def _look(tx: Tx, want: Wanted) -> tuple[str | None, dict[str, Any] | None,
                                                 dict[str, Any] | None]:
    """(the order's source, its write-back row, the source's pause row)"""
    source = await tx.fetchval("SELECT source FROM orders WHERE order_id = $1", want.order_id)
    row = await tx.fetchrow("SELECT * FROM writebacks WHERE order_id = $1 AND tracking_code = $2",
                            want.order_id, want.tracking.number)
    pause = None
    if isinstance(source, str):
        pause = await tx.fetchrow("SELECT * FROM storefront_pauses WHERE source = $1", source)
    return (source if isinstance(source, str) else None), row, pause


async def _intend(tx: Tx, want: Wanted, source: str) -> None:
    """The write-back's intent, committed before the store is called."""
    now = now_iso()
    await tx.execute(
        "INSERT INTO writebacks (order_id, tracking_code, source, state, attempts, created_at,"
        " updated_at) VALUES ($1, $2, $3, 'pending', 1, $4, $4) ON CONFLICT"
        " (order_id, tracking_code) DO UPDATE SET attempts = writebacks.attempts + 1,"
        " updated_at = $4", want.order_id, want.tracking.number, source, now)


async def _pause(tx: Tx, source: str, message: str) -> None:
    """Pause `source` (a probe refused again keeps its paused_at, with the new message)."""
    await tx.execute(
        "INSERT INTO storefront_pauses (source, message, paused_at) VALUES ($1, $2, $3)"
        " ON CONFLICT (source) DO UPDATE SET message = $2",
        source, message, now_iso())


async def _claim_probe(tx: Tx, source: str, every: float) -> bool:
    """Whether this caller may try the paused `source` now: its last probe (or the pause)
    is at least `every` seconds old. One row update decides, so of any number of processes
    one gets each probe."""
    now = datetime.fromisoformat(now_iso())
    due = (now - timedelta(seconds=every)).isoformat(timespec="microseconds")
    return bool(await tx.execute(
        "UPDATE storefront_pauses SET probed_at = $2 WHERE source = $1"
        " AND COALESCE(probed_at, paused_at) <= $3",
        source, now.isoformat(timespec="microseconds"), due))


async def lift(tx: Tx, source: str) -> bool:
    """End `source`'s pause (False: it was not paused)."""
    return bool(await tx.execute("DELETE FROM storefront_pauses WHERE source = $1", source))


class StorefrontWriter:
    """The storefront consumer's two halves: `call` (the stores, outside transactions) and
    `handle` (its result, in the runner's transaction)."""

    def __init__(self, settings: StorefrontSettings, store: Store,
                 drivers: Mapping[str, Storefront]) -> None:
        self.settings = settings
        self.store = store
        self.drivers = drivers  # source -> its store's driver
        self.results: CallResults[Written | Skipped] = CallResults()

    async def call(self, events: list[Event]) -> None:
        """Write back each (order, tracking number) the batch names, once each."""
        wanting: dict[Wanted, list[str]] = {}
        for event in events:
            try:
                want = wanted(event)
            except Permanent as exc:
                self.results[str(event["id"])] = exc
                continue
            wanting.setdefault(want, []).append(str(event["id"]))
        await asyncio.gather(*(self._settle(want, ids) for want, ids in wanting.items()))

    async def tick(self, tx: Tx, now: str) -> int:
        """The gauge as the table says (a pause lifted by `storefront resume`, or set by
        another process, shows here too); changes nothing."""
        rows = await tx.fetch("SELECT source FROM storefront_pauses")
        paused = {row["source"] for row in rows}
        for source in self.drivers:
            PAUSED.labels(source=source).set(int(source in paused))
        return 0

    def forget(self, events: list[Event]) -> None:
        self.results.forget(events)

    async def _settle(self, want: Wanted, ids: list[str]) -> None:
        result: Result
        try:
            result = await self.write_back(want)
        except Exception as exc:  # the handler raises it in the transaction: retry or dead
            result = exc
        for event_id in ids:
            self.results[event_id] = result

    async def write_back(self, want: Wanted) -> Written | Skipped:
        """Steps 1-3 of the module's docstring."""
        source, row, pause = await self.store.run(lambda tx: _look(tx, want))
        if source is None:
            return Skipped("unknown order")
        driver = self.drivers.get(source)
        if driver is None:
            return Skipped(f"no [storefront.{source}] store to tell")
        if row is not None and row["state"] == "done":
            return Written(want.order_id, want.tracking.number, source,
                           WriteBack(row["external_id"] or "", True))
        every = self.settings.probe_every
        PAUSED.labels(source=source).set(int(pause is not None))
        if pause is not None and not await self.store.run(
                lambda tx: _claim_probe(tx, source, every)):
            raise Deferred(f"write-back to {source} is paused: {pause['message']}", every)
        await self.store.run(lambda tx: _intend(tx, want, source))
        notify = self.settings.stores[source].notify_customer
        try:
            result = await driver.fulfil(want.order_id, want.tracking, notify)
        except StoreAuthRevoked as exc:
            message = str(exc)
            await self.store.run(lambda tx: _pause(tx, source, message))
            PAUSED.labels(source=source).set(1)
            raise Deferred(f"{source}: credentials refused, write-back paused: {exc}",
                           every) from exc
        except (StoreUnavailable, Uncertain) as exc:  # both Transient: the store's wait kept
            raise Transient(f"{source}: {exc}", exc.retry_after) from exc
        except StoreRefused as exc:
            raise Permanent(f"{source} refused: {exc.message}") from exc
        if pause is not None and await self.store.run(lambda tx: lift(tx, source)):
            PAUSED.labels(source=source).set(0)
            log.info("storefront_resumed", source=source, by="probe")
        return Written(want.order_id, want.tracking.number, source, result)

    async def handle(self, tx: Tx, event: Event, batch: None = None) -> str:
        """Apply what `call` found for this event; returns one of OUTCOMES."""
        result = self.results.taken(event, "storefront")
        if isinstance(result, Skipped):
            return "ignored"
        done = await tx.execute(
            "UPDATE writebacks SET state = 'done', external_id = $3, already_done = $4,"
            " updated_at = $5 WHERE order_id = $1 AND tracking_code = $2 AND state <> 'done'",
            result.order_id, result.tracking_code, result.result.external_id,
            int(result.result.already_done), now_iso())
        return "written" if done else "exists"
