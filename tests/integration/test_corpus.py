"""Real payloads, as the providers' own documentation and libraries show them, and the
variants real stores send (tests/fixtures/providers/): each is signed, verified, parsed and
mapped as the ingress does it, applied by the consumers on both stores, and ends in the state
its scenario expects (corpus.toml). None ends in a 4xx or is held; the real ingress accepts
every one of them."""

from __future__ import annotations

import time
import tomllib
from pathlib import Path
from typing import Any

import orjson
import pytest
from multidict import CIMultiDict

from consumers import inventory, orders, shipping
from consumers.stock import Policy
from consumers.store import Store
from router.envelope import build_event, parse_delivery
from router.providers import signed_headers
from router.schemas import SchemaRegistry
from router.settings import Settings
from router.sources import build_sources

pytestmark = pytest.mark.integration

CORPUS = Path(__file__).resolve().parents[1] / "fixtures" / "providers"
SCENARIOS = tomllib.loads((CORPUS / "corpus.toml").read_text())["scenario"]
CONSUMERS = {"order": orders, "inventory": inventory, "shipment": shipping}


def _pipeline(settings: Settings) -> tuple[dict[str, Any], SchemaRegistry]:
    registry = SchemaRegistry.load(settings.server.schemas)
    return build_sources(settings, registry), registry


def as_sent(settings: Settings, step: dict[str, str]) -> tuple[bytes, CIMultiDict[str]]:
    """The fixture's bytes and the headers its provider would sign them with."""
    body = (CORPUS / step["file"]).read_bytes()
    return body, CIMultiDict(signed_headers(settings, step["source"], body, step["topic"]))


def to_events(settings: Settings, steps: list[dict[str, str]]) -> list[dict[str, Any]]:
    """Verify, parse and map each delivery exactly as the ingress does; the envelopes."""
    sources, registry = _pipeline(settings)  # compiled once, as the ingress does at start
    return [to_event(settings, sources, registry, step) for step in steps]


def to_event(settings: Settings, sources: dict[str, Any], registry: SchemaRegistry,
             step: dict[str, str]) -> dict[str, Any]:
    body = (CORPUS / step["file"]).read_bytes()
    return event_of(settings, sources, registry, step["source"], body, step["topic"])


def event_of(settings: Settings, sources: dict[str, Any], registry: SchemaRegistry,
             name: str, body: bytes, topic: str) -> dict[str, Any]:
    """`body` signed as source `name` signs it, verified, parsed and mapped as the ingress
    does; the envelope."""
    source = sources[name]
    headers = CIMultiDict(signed_headers(settings, name, body, topic))
    now = time.time()
    source.verifier.verify(body, headers, now)
    delivery = parse_delivery(source, body, headers, "application/json", now,
                              max_depth=settings.server.max_depth)
    return orjson.loads(build_event(source, registry, delivery).body)


async def apply(store: Store, event: dict[str, Any]) -> str | None:
    module = CONSUMERS[event["type"].partition(".")[0]]
    return await store.run(lambda tx: module.handle(tx, event, policy=Policy()))


async def seed(store: Store, scenario: dict[str, Any], events: list[dict[str, Any]]) -> None:
    stock = dict(scenario.get("stock", {}))
    if "fill_stock" in scenario:
        for event in events:
            for line in event["data"].get("lines", []):
                stock[line["sku"]] = scenario["fill_stock"]
    for n, (sku, on_hand) in enumerate(sorted(stock.items())):
        await apply(store, {
            "id": f"seed-{n}", "type": "inventory.updated", "source": "test",
            "occurred_at": "2000-01-01T00:00:00Z",
            "data": {"sku": sku, "location": "default", "on_hand": on_hand,
                     "as_of": "2000-01-01T00:00:00Z"},
        })


async def fetch(store: Store, sql: str, *args: Any) -> list[dict[str, Any]]:
    async with store.transaction() as tx:
        return await tx.fetch(sql, *args)


@pytest.mark.parametrize("scenario", SCENARIOS, ids=[s["name"] for s in SCENARIOS])
async def test_each_payload_ends_in_its_state(settings, store, scenario):
    """Through verify -> map -> consumer, on SQLite and PostgreSQL, each scenario's
    deliveries end in the state it expects."""
    events = to_events(settings, scenario["step"])
    await seed(store, scenario, events)
    for event in events:
        await apply(store, event)
    expect = scenario["expect"]
    if "shipment" in expect:
        rows = await fetch(store, "SELECT status FROM shipments WHERE tracking_code = $1",
                           expect["shipment"])
        assert [expect["status"]] == [row["status"] for row in rows]
        return
    [order] = await fetch(
        store, "SELECT status, hold_reason, payment_status FROM orders WHERE order_id = $1",
        expect["order"])
    assert (expect["status"], expect.get("hold_reason")) == (order["status"],
                                                            order["hold_reason"])
    if "payment" in expect:
        assert expect["payment"] == order["payment_status"]
    lines = await fetch(store, "SELECT sku, reserved, ships FROM order_lines"
                               " WHERE order_id = $1", expect["order"])
    reserved: dict[str, int] = {}
    for line in lines:
        reserved[line["sku"]] = reserved.get(line["sku"], 0) + line["reserved"]
    wanted = expect.get("reserved", {})
    assert wanted == {sku: reserved.get(sku, 0) for sku in wanted}  # a refunded line is gone
    for row in await fetch(store, "SELECT sku, SUM(reserved) AS held FROM stock GROUP BY sku"):
        assert reserved.get(row["sku"], 0) == row["held"], row["sku"]  # the stock agrees
    if "not_shipping" in expect:
        assert expect["not_shipping"] == sum(1 for line in lines if not line["ships"])
    if "lines" in expect:
        assert expect["lines"] == len(lines)
    for sku, on_hand in expect.get("on_hand", {}).items():
        rows = await fetch(store, "SELECT on_hand FROM stock WHERE sku = $1", sku)
        assert [on_hand] == [row["on_hand"] for row in rows], sku


async def test_the_ingress_accepts_every_payload(settings, make_client, queue_depths, topology):
    """Posted to the real ingress, signed as its provider signs, every payload of the corpus
    is accepted (202, not held) and lands on its queue; one that several scenarios share is
    the same signed content again, a duplicate (the providers sign the body alone)."""
    client = await make_client(settings)
    answers, expected, sent = [], [], set()
    steps = [step for scenario in SCENARIOS for step in scenario["step"]]
    for step in steps:
        body, headers = as_sent(settings, step)
        response = await client.post(f"/webhooks/{step['source']}", data=body, headers=headers)
        answers.append((step["file"], response.status, (await response.json())["status"]))
        again = (step["source"], step["topic"], body) in sent
        sent.add((step["source"], step["topic"], body))
        expected.append((step["file"], *((200, "duplicate") if again else (202, "accepted"))))
    assert expected == answers
    depths = await queue_depths()
    queued = depths[topology.queue("orders")] + depths[topology.queue("shipping")]
    assert len(sent) == queued
