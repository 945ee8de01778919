"""What the Overview page shows, gathered from the settings, the ingress's /rejections, the
broker (passive declares) and the store, over the console's one broker connection and one
store connection. Each part that cannot be read says so in place ("unavailable" with the
reason) instead of failing the page."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from typing import Any

import aiohttp

from consumers.outbound.subscriptions import states
from consumers.store import StoreError
from router.broker.counts import BrokerAway, QueueCounter
from router.broker.topology import Topology, delivery_queue
from router.console.shared import SharedStore
from router.rejections import RejectionsUnavailable, fetch
from router.settings import Settings

WINDOW = 3600  # seconds: "the last hour" of accepted and rejected counts


def sources(settings: Settings) -> list[dict[str, Any]]:
    """Per source: the path to paste into the provider and how deliveries are verified."""
    # Keys that are no PII key ("name" is one): the whole answer is masked.
    return [{"source": s.name, "path": s.path, "scheme": s.scheme, "on_invalid": s.on_invalid}
            for s in settings.sources.values()]


async def rejections(http: aiohttp.ClientSession, base: str, since: str) -> dict[str, Any]:
    """From the ingress's /rejections: {"available": True, "counts": {source: [[reason, n]]}}
    (since the ingress started) and "recent": {source: {"reasons": [[reason, n]], "at_least":
    bool}} (refused at or after `since`, an ISO time; at_least where the kept rejections do
    not reach back that far, so there may have been more), or {"available": False, "error"}."""
    try:
        answer = await fetch(http, base)
    except RejectionsUnavailable as exc:
        return {"available": False, "error": str(exc)}
    counts, kept = answer["counts"], answer["rejections"]
    # Reasons as values, not keys: a key like "missing_signature" would be masked.
    totals = {source: sorted([str(reason), n] for reason, n in reasons.items())
              for source, reasons in counts.items() if isinstance(reasons, dict)}
    return {"available": True, "counts": totals, "recent": _since(kept, totals, since)}


def _since(kept: list[Any], totals: dict[str, list[list[Any]]], since: str
           ) -> dict[str, dict[str, Any]]:
    """Per source, the kept rejections at or after `since`, counted by reason; `at_least`
    where fewer are kept than were counted and even the oldest kept one is that recent."""
    recent: dict[str, dict[str, int]] = {}
    oldest: dict[str, str] = {}
    held: dict[str, int] = {}
    for entry in kept:
        if not isinstance(entry, dict) or not isinstance(entry.get("at"), str):
            continue
        source, at = str(entry.get("source")), entry["at"]
        held[source] = held.get(source, 0) + 1
        oldest[source] = min(oldest.get(source, at), at)
        if at >= since:
            reasons = recent.setdefault(source, {})
            reason = str(entry.get("reason"))
            reasons[reason] = reasons.get(reason, 0) + 1
    return {source: {
        "reasons": sorted([reason, n] for reason, n in recent.get(source, {}).items()),
        "at_least": held.get(source, 0) < sum(n for _, n in totals.get(source, []))
        and oldest.get(source, since) >= since,
    } for source in set(totals) | set(recent)}


def _queue_names(settings: Settings) -> dict[str, list[str]]:
    """Each consumer queue and subscription's delivery queue -> [main, retries..., dead]."""
    topology = Topology.of(settings.broker)
    bases = {name: topology.ladder(name) for name in topology.work_queue_bases()}
    bases |= {delivery_queue(name): settings.notifications.retry_ladder
              for name in settings.subscriptions}
    return {base: [spec.name for spec in topology.work_queues(base, ladder)]
            for base, ladder in bases.items()}


async def queues(settings: Settings, counter: QueueCounter) -> dict[str, Any]:
    """{"available": True, "queues": [{name, depth, consumers, retrying, dead}]} (None where a
    queue is not declared), or {"available": False, "error": why}."""
    names = _queue_names(settings)
    try:
        counts = await counter.counts([q for group in names.values() for q in group])
    except BrokerAway as exc:
        return {"available": False, "error": str(exc)}
    rows = []
    for base, (main, *retries, dead) in names.items():
        work, dead_count = counts[main], counts[dead]
        retrying = [counts[q] for q in retries]
        rows.append({
            "queue": base,
            "depth": None if work is None else work.messages,
            "consumers": None if work is None else work.consumers,
            "retrying": sum(c.messages for c in retrying if c is not None),
            "dead": None if dead_count is None else dead_count.messages,
        })
    return {"available": True, "queues": rows}


async def store_part(settings: Settings, shared: SharedStore, since: str) -> dict[str, Any]:
    """{"available": True, "subscriptions": [...], "sources": {...}} with each configured
    subscription's state, failure streak and last success, and per source the events the
    audit consumer recorded as received at or after `since` and the last one's time; or
    {"available": False, "error": why}."""
    try:
        async with shared.use() as store:
            async with store.transaction() as tx:
                received = {}
                for name in settings.sources:  # each through audit_events_by_source
                    received[name] = {
                        "accepted": await tx.fetchval(
                            "SELECT COUNT(*) FROM audit_events WHERE source = $1"
                            " AND received_at >= $2", name, since),
                        "last_seen": await tx.fetchval(
                            "SELECT MAX(received_at) FROM audit_events WHERE source = $1",
                            name)}
            subscriptions = await states(settings, store)
    except (StoreError, OSError) as exc:  # no store there, or not reachable
        return {"available": False, "error": str(exc) or type(exc).__name__}
    return {"available": True, "subscriptions": subscriptions, "sources": received}


async def overview(settings: Settings, http: aiohttp.ClientSession, ingress: str,
                   counter: QueueCounter, shared: SharedStore) -> dict[str, Any]:
    """Everything the Overview page shows, the three remote parts read at once."""
    since = (datetime.now(UTC) - timedelta(seconds=WINDOW)).isoformat(timespec="milliseconds")
    refused, broker, store = await asyncio.gather(
        rejections(http, ingress, since), queues(settings, counter),
        store_part(settings, shared, since))
    return {"sources": sources(settings), "since": since, "rejections": refused,
            "broker": broker, "store": store}
