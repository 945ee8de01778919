"""What the Overview page shows, gathered from the settings, the ingress's /rejections, the
broker (passive declares) and the store. Each part that cannot be read says so in place
("unavailable" with the reason) instead of failing the page."""

from __future__ import annotations

import asyncio
from typing import Any

import aiohttp

from consumers.outbound.subscriptions import states
from consumers.store import StoreError, open_store
from router.broker.counts import BrokerAway, queue_counts
from router.broker.topology import QUEUES, Topology, delivery_queue
from router.settings import Settings

INGRESS_TIMEOUT = 3.0


def sources(settings: Settings) -> list[dict[str, Any]]:
    """Per source: the path to paste into the provider and how deliveries are verified."""
    # Keys that are no PII key ("name" is one): the whole answer is masked.
    return [{"source": s.name, "path": s.path, "scheme": s.scheme, "on_invalid": s.on_invalid}
            for s in settings.sources.values()]


async def rejections(http: aiohttp.ClientSession, base: str) -> dict[str, Any]:
    """{"available": True, "counts": {source: [[reason, n], ...]}} from the ingress's /rejections,
    or {"available": False, "error": why}."""
    try:
        async with http.get(f"{base}/rejections?limit=1",
                            timeout=aiohttp.ClientTimeout(total=INGRESS_TIMEOUT)) as response:
            if response.status != 200:
                return {"available": False, "error": f"HTTP {response.status}"}
            answer = await response.json()
    except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
        return {"available": False, "error": str(exc) or type(exc).__name__}
    counts = answer.get("counts") if isinstance(answer, dict) else None
    if not isinstance(counts, dict):
        return {"available": False, "error": "not a /rejections answer"}
    # Reasons as values, not keys: a key like "missing_signature" would be masked.
    return {"available": True, "counts": {
        source: sorted([str(reason), n] for reason, n in reasons.items())
        for source, reasons in counts.items() if isinstance(reasons, dict)}}


def _queue_names(settings: Settings) -> dict[str, list[str]]:
    """Each consumer queue and subscription's delivery queue -> [main, retries..., dead]."""
    topology = Topology.of(settings.broker)
    bases = {name: settings.broker.retry_ladder for name in QUEUES}
    bases |= {delivery_queue(name): settings.notifications.retry_ladder
              for name in settings.subscriptions}
    return {base: [spec.name for spec in topology.work_queues(base, ladder)]
            for base, ladder in bases.items()}


async def queues(settings: Settings) -> dict[str, Any]:
    """{"available": True, "queues": [{name, depth, consumers, retrying, dead}]} (None where a
    queue is not declared), or {"available": False, "error": why}."""
    names = _queue_names(settings)
    try:
        counts = await queue_counts(settings.broker, [q for group in names.values()
                                                      for q in group], "webhook-router-console")
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


async def store_part(settings: Settings) -> dict[str, Any]:
    """{"available": True, "subscriptions": [...]} with each configured subscription's state,
    failure streak and last success, or {"available": False, "error": why}."""
    try:
        async with open_store(settings.consumers.store, create=False) as store:
            subscriptions = await states(settings, store)
    except (StoreError, OSError) as exc:  # no store there, or not reachable
        return {"available": False, "error": str(exc) or type(exc).__name__}
    return {"available": True, "subscriptions": subscriptions}


async def overview(settings: Settings, http: aiohttp.ClientSession, ingress: str
                   ) -> dict[str, Any]:
    """Everything the Overview page shows, the three remote parts read at once."""
    refused, broker, store = await asyncio.gather(
        rejections(http, ingress), queues(settings), store_part(settings))
    return {"sources": sources(settings), "rejections": refused, "broker": broker,
            "store": store}
