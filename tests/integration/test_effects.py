"""The orders, inventory and shipping effects, called directly in store transactions, on
both stores (no broker)."""

from __future__ import annotations

import asyncio
import itertools
from typing import Any

import orjson
import pytest
from conftest import TIMEOUT
from test_store import wait_until_blocked

from consumers import inventory, orders, shipping
from consumers.errors import Permanent
from consumers.outbox import notify
from consumers.stock import Policy
from consumers.store import IntegrityViolation, Store, open_store

_ids = itertools.count(1)
LOCATION = "default"


def _event(
    type_: str,
    data: dict[str, Any],
    occurred_at: str = "2024-05-01T10:00:00Z",
    id_: str | None = None,
) -> dict[str, Any]:
    return {
        "id": id_ or f"evt-{next(_ids)}",
        "type": type_,
        "source": "test",
        "received_at": "2024-05-01T10:00:01Z",
        "occurred_at": occurred_at,
        "schema": f"{type_}/v1",
        "data": data,
    }


ADDRESS = {"name": "Jane Doe", "line1": "1 Main St", "city": "Austin", "country": "US"}


def _order(
    type_: str,
    order_id: str,
    lines: list[tuple[str, int]],
    *,
    created_at: str = "2024-05-01T09:00:00Z",
    status: str = "received",
    occurred_at: str = "2024-05-01T10:00:00Z",
    address: dict[str, str] | None = ADDRESS,
    **more: Any,
) -> dict[str, Any]:
    data: dict[str, Any] = {
        "order_id": order_id,
        "status": status,
        "lines": [{"sku": sku, "quantity": quantity} for sku, quantity in lines],
        "created_at": created_at,
        **more,
    }
    if address is not None:
        data["shipping_address"] = address
    return _event(type_, data, occurred_at)


def _stock(
    sku: str,
    *,
    on_hand: int | None = None,
    delta: int | None = None,
    as_of: str = "2024-05-01T08:00:00Z",
    location: str = LOCATION,
) -> dict:
    data: dict[str, Any] = {"sku": sku, "location": location, "as_of": as_of}
    if on_hand is not None:
        data["on_hand"] = on_hand
    if delta is not None:
        data["delta"] = delta
    return _event("inventory.updated", data)


def _tracking(code: str, status: str, occurred_at: str, order_id: str | None = None) -> dict:
    data = {"tracking_code": code, "carrier": "fedex", "status": status, "occurred_at": occurred_at}
    if order_id:
        data["order_id"] = order_id
    return _event("shipment.updated", data)


async def _apply(
    store: Store, module: Any, event: dict[str, Any], policy: Policy | None = None
) -> str | None:
    """Apply one event as the runner does: the whole handler in one store.run transaction."""
    return await store.run(lambda tx: module.handle(tx, event, policy=policy or Policy()))


async def _rows(store: Store, sql: str, *args: Any) -> list[dict[str, Any]]:
    async with store.transaction() as tx:
        return await tx.fetch(sql, *args)


async def _stock_of(store: Store, sku: str) -> tuple[int, int]:
    rows = await _rows(
        store,
        "SELECT on_hand, reserved FROM stock WHERE sku = $1 AND location = $2",
        sku,
        LOCATION,
    )
    return rows[0]["on_hand"], rows[0]["reserved"]


async def _status(store: Store, order_id: str) -> str:
    rows = await _rows(store, "SELECT status FROM orders WHERE order_id = $1", order_id)
    return rows[0]["status"]


async def _reserved(store: Store, order_id: str) -> list[int]:
    rows = await _rows(
        store, "SELECT reserved FROM order_lines WHERE order_id = $1 ORDER BY line_no", order_id
    )
    return [row["reserved"] for row in rows]


async def _outbox(store: Store) -> list[tuple[str, str]]:
    rows = await _rows(store, "SELECT kind, body FROM outbox ORDER BY id")
    return [
        (
            row["kind"],
            orjson.loads(bytes(row["body"]))["data"].get("order_id")
            or orjson.loads(bytes(row["body"]))["data"].get("sku"),
        )
        for row in rows
    ]


async def test_order_with_enough_stock_is_allocated(store: Store) -> None:
    """An order whose lines are all in stock is allocated and reserves every line."""
    await _apply(store, inventory, _stock("A", on_hand=5))
    await _apply(store, inventory, _stock("B", on_hand=1))
    created = _order("order.created", "o-1", [("A", 2), ("B", 1)])
    assert await _apply(store, orders, created) == "allocated"
    assert await _status(store, "o-1") == "allocated"
    assert await _reserved(store, "o-1") == [2, 1]
    assert (await _stock_of(store, "A"), await _stock_of(store, "B")) == ((5, 2), (1, 1))
    rows = await _rows(
        store,
        "SELECT kind, routing_key, message_id, body FROM outbox WHERE kind = 'order.allocated'",
    )
    body = orjson.loads(bytes(rows[0]["body"]))
    expected = (
        "notify.order.allocated",
        f"{created['id']}:order.allocated:o-1",
        "order.allocated",
        created["id"],
        "allocated",
    )
    assert expected == (
        rows[0]["routing_key"],
        rows[0]["message_id"],
        body["type"],
        body["cause"],
        body["data"]["status"],
    )


async def test_order_without_enough_stock_is_backordered_with_nothing_reserved(
    store: Store,
) -> None:
    """A short line backorders the whole order and no line keeps a partial reservation."""
    await _apply(store, inventory, _stock("A", on_hand=5))
    await _apply(store, inventory, _stock("B", on_hand=1))
    assert (
        await _apply(store, orders, _order("order.created", "o-1", [("A", 2), ("B", 3), ("C", 1)]))
        == "backordered"
    )
    assert await _status(store, "o-1") == "backordered"
    assert await _reserved(store, "o-1") == [0, 0, 0]
    assert (await _stock_of(store, "A"), await _stock_of(store, "B")) == ((5, 0), (1, 0))
    assert ("order.backordered", "o-1") in await _outbox(store)


async def test_created_again_has_no_second_effect(store: Store) -> None:
    """An order id seen again in another created event is left alone."""
    await _apply(store, inventory, _stock("A", on_hand=5))
    assert await _apply(store, orders, _order("order.created", "o-1", [("A", 2)])) == "allocated"
    assert await _apply(store, orders, _order("order.created", "o-1", [("A", 3)])) == "exists"
    assert await _stock_of(store, "A") == (5, 2)
    assert [kind for kind, _ in await _outbox(store)] == ["stock.changed", "order.allocated"]


async def test_stock_never_goes_negative_or_below_reserved(store: Store) -> None:
    """Deltas and counts that would take stock below zero or below reservations are refused."""
    await _apply(store, inventory, _stock("A", on_hand=3))
    await _apply(store, orders, _order("order.created", "o-1", [("A", 2)]))
    with pytest.raises(Permanent, match="below"):
        await _apply(store, inventory, _stock("A", delta=-5, as_of="2024-05-01T11:00:00Z"))
    with pytest.raises(Permanent, match="reserved"):
        await _apply(store, inventory, _stock("A", on_hand=1, as_of="2024-05-01T11:00:00Z"))
    with pytest.raises(Permanent, match="below 0"):
        await _apply(store, inventory, _stock("Z", delta=-1))
    assert await _stock_of(store, "A") == (3, 2)
    assert (
        await _apply(store, inventory, _stock("A", delta=-1, as_of="2024-05-01T11:00:00Z"))
        == "applied"
    )
    assert await _stock_of(store, "A") == (2, 2)


async def test_concurrent_orders_race_for_the_last_unit(store: Store, store_url: str) -> None:
    """Two stores committing orders for the last unit at once allocate exactly one."""
    await _apply(store, inventory, _stock("A", on_hand=1))
    first, second = open_store(store_url), open_store(store_url)
    async with first, second:
        async with asyncio.timeout(TIMEOUT):
            outcomes = await asyncio.gather(
                _apply(first, orders, _order("order.created", "o-1", [("A", 1)])),
                _apply(second, orders, _order("order.created", "o-2", [("A", 1)])),
            )
    assert sorted(outcomes) == ["allocated", "backordered"]
    statuses = sorted([await _status(store, "o-1"), await _status(store, "o-2")])
    assert statuses == ["allocated", "backordered"]
    assert await _stock_of(store, "A") == (1, 1)


async def test_cancel_releases_reservations(store: Store) -> None:
    """order.cancelled gives the reserved stock back and a second cancel changes nothing."""
    await _apply(store, inventory, _stock("A", on_hand=5))
    await _apply(store, orders, _order("order.created", "o-1", [("A", 2)]))
    cancel = _order(
        "order.cancelled", "o-1", [("A", 2)], status="cancelled", occurred_at="2024-05-01T11:00:00Z"
    )
    assert await _apply(store, orders, cancel) == "cancelled"
    assert await _apply(store, orders, _order("order.cancelled", "o-1", [("A", 2)])) == "ignored"
    assert (await _status(store, "o-1"), await _reserved(store, "o-1")) == ("cancelled", [0])
    assert await _stock_of(store, "A") == (5, 0)
    assert ("order.cancelled", "o-1") in await _outbox(store)


async def test_update_re_reserves(store: Store) -> None:
    """order.updated releases the old lines' stock and reserves the new lines."""
    await _apply(store, inventory, _stock("A", on_hand=5))
    await _apply(store, inventory, _stock("B", on_hand=2))
    await _apply(store, orders, _order("order.created", "o-1", [("A", 2)]))
    update = _order(
        "order.updated", "o-1", [("A", 1), ("B", 2)], occurred_at="2024-05-01T11:00:00Z"
    )
    assert await _apply(store, orders, update) == "allocated"
    assert (await _stock_of(store, "A"), await _stock_of(store, "B")) == ((5, 1), (2, 2))
    too_many = _order("order.updated", "o-1", [("A", 6)], occurred_at="2024-05-01T12:00:00Z")
    assert await _apply(store, orders, too_many) == "backordered"
    assert (await _stock_of(store, "A"), await _stock_of(store, "B")) == ((5, 0), (2, 0))
    older = _order("order.updated", "o-1", [("A", 1)], occurred_at="2024-05-01T10:30:00Z")
    assert await _apply(store, orders, older) == "stale"
    assert await _reserved(store, "o-1") == [0]


async def test_stale_absolute_update_is_ignored(store: Store) -> None:
    """An absolute count older than the one applied changes nothing and says so."""
    assert (
        await _apply(store, inventory, _stock("A", on_hand=10, as_of="2024-05-01T12:00:00Z"))
        == "applied"
    )
    stale = _stock("A", on_hand=3, as_of="2024-05-01T13:00:00+01:00")  # 12:00 UTC
    assert await _apply(store, inventory, stale) == "stale"
    assert (
        await _apply(store, inventory, _stock("A", on_hand=4, as_of="2024-05-01T11:59:59Z"))
        == "stale"
    )
    assert await _stock_of(store, "A") == (10, 0)
    assert [kind for kind, _ in await _outbox(store)] == ["stock.changed"]


async def test_delta_arrival_allocates_backorders_oldest_first(store: Store) -> None:
    """A received batch allocates the oldest backordered order first, all lines or none."""
    await _apply(store, inventory, _stock("A", on_hand=0))
    await _apply(
        store,
        orders,
        _order("order.created", "newer", [("A", 1)], created_at="2024-05-01T09:30:00Z"),
    )
    await _apply(
        store,
        orders,
        _order("order.created", "older", [("A", 1)], created_at="2024-05-01T09:00:00Z"),
    )
    await _apply(
        store,
        orders,
        _order("order.created", "needs-b", [("A", 1), ("B", 1)], created_at="2024-05-01T08:00:00Z"),
    )
    arrival = _stock("A", delta=1, as_of="2024-05-01T10:00:00Z")
    assert await _apply(store, inventory, arrival) == "applied"
    statuses = [await _status(store, o) for o in ("needs-b", "older", "newer")]
    assert statuses == ["backordered", "allocated", "backordered"]
    assert await _stock_of(store, "A") == (1, 1)
    assert await _reserved(store, "needs-b") == [0, 0]
    rows = await _rows(store, "SELECT message_id FROM outbox WHERE kind = 'order.allocated'")
    assert [row["message_id"] for row in rows] == [f"{arrival['id']}:order.allocated:older"]


async def test_tracking_out_of_order_keeps_furthest_status(store: Store) -> None:
    """delivered then a late in_transit ends delivered with both in history and stock consumed."""
    await _apply(store, inventory, _stock("A", on_hand=5))
    await _apply(store, orders, _order("order.created", "o-1", [("A", 2)]))
    delivered = _tracking("T1", "delivered", "2024-05-03T10:00:00Z", "o-1")
    late = _tracking("T1", "in_transit", "2024-05-02T10:00:00Z", "o-1")
    assert await _apply(store, shipping, delivered) == "advanced"
    assert await _apply(store, shipping, late) == "kept"
    rows = await _rows(store, "SELECT status, order_id, rank FROM shipments")
    assert rows == [{"status": "delivered", "order_id": "o-1", "rank": 4}]
    history = await _rows(store, "SELECT status, event_id FROM shipment_events ORDER BY id")
    assert history == [
        {"status": "delivered", "event_id": delivered["id"]},
        {"status": "in_transit", "event_id": late["id"]},
    ]
    assert (await _status(store, "o-1"), await _stock_of(store, "A")) == ("delivered", (3, 0))
    assert [kind for kind, _ in await _outbox(store)].count("shipment.updated") == 1


async def test_tracking_moves_order_to_shipped_then_exception(store: Store) -> None:
    """in_transit ships the order and a later failure puts it in exception."""
    await _apply(store, orders, _order("order.created", "o-1", [("A", 1)]))
    assert (
        await _apply(store, shipping, _tracking("T1", "pre_transit", "2024-05-02T08:00:00Z", "o-1"))
        == "advanced"
    )
    assert await _status(store, "o-1") == "backordered"
    await _apply(store, shipping, _tracking("T1", "in_transit", "2024-05-02T09:00:00Z"))
    assert await _status(store, "o-1") == "shipped"
    await _apply(store, shipping, _tracking("T1", "failure", "2024-05-03T09:00:00Z"))
    assert await _status(store, "o-1") == "exception"


async def test_outbox_rows_are_not_duplicated_on_replay(store: Store) -> None:
    """Applying the same events again adds no outbox row, and one message id is one row."""
    events = [
        (inventory, _stock("A", on_hand=2)),
        (orders, _order("order.created", "o-1", [("A", 1)])),
        (orders, _order("order.created", "o-2", [("A", 5)])),
        (shipping, _tracking("T1", "in_transit", "2024-05-02T10:00:00Z", "o-1")),
    ]
    for module, event in events:
        await _apply(store, module, event)
    first = await _rows(store, "SELECT kind, message_id FROM outbox ORDER BY id")
    for module, event in events:
        await _apply(store, module, event)
    async with store.transaction() as tx:
        await notify(tx, events[0][1], "stock.changed", "A@default", {"again": True})
    assert first == await _rows(store, "SELECT kind, message_id FROM outbox ORDER BY id")
    expected = ["stock.changed", "order.allocated", "order.backordered", "shipment.updated"]
    assert expected == [row["kind"] for row in first]


async def test_unknown_types_and_bad_payloads_are_permanent(store: Store) -> None:
    """Events a consumer can never apply raise Permanent and leave no effect."""
    for module, event in [
        (orders, _event("order.archived", {})),
        (orders, _event("order.created", {"order_id": "o-1", "lines": []})),
        (
            inventory,
            _event(
                "inventory.updated", {"sku": "A", "location": "x", "as_of": "2024-05-01T00:00:00Z"}
            ),
        ),
        (shipping, _event("shipment.updated", {"carrier": "ups"})),
    ]:
        with pytest.raises(Permanent):
            await _apply(store, module, event)
    assert await _rows(store, "SELECT kind FROM outbox") == []


async def _lines(store: Store, order_id: str) -> list[tuple[str, int, str | None]]:
    rows = await _rows(
        store,
        "SELECT sku, reserved, location FROM order_lines WHERE order_id = $1 ORDER BY line_no",
        order_id,
    )
    return [(row["sku"], row["reserved"], row["location"]) for row in rows]


async def test_partial_allocation_reserves_what_fits_then_completes(store: Store) -> None:
    """With partial allocation the lines in stock are reserved, the order waits for the rest,
    and the arrival of the rest allocates it."""
    partial = Policy(partial_allocation=True)
    await _apply(store, inventory, _stock("A", on_hand=5))
    created = _order("order.created", "o-1", [("A", 2), ("B", 3)])
    assert await _apply(store, orders, created, partial) == "partially_allocated"
    assert await _lines(store, "o-1") == [("A", 2, LOCATION), ("B", 0, None)]
    assert await _stock_of(store, "A") == (5, 2)
    arrival = _stock("B", delta=3, as_of="2024-05-01T10:00:00Z")
    assert await _apply(store, inventory, arrival, partial) == "applied"
    assert await _status(store, "o-1") == "allocated"
    assert await _lines(store, "o-1") == [("A", 2, LOCATION), ("B", 3, LOCATION)]
    kinds = [kind for kind, order_id in await _outbox(store) if order_id == "o-1"]
    assert kinds == ["order.partially_allocated", "order.allocated"]


async def test_lines_reserve_at_the_location_with_most_available(store: Store) -> None:
    """A line is reserved whole at the location with the most units available; its location
    is recorded, and cancelling gives the units back there."""
    await _apply(store, inventory, _stock("A", on_hand=1, location="east"))
    await _apply(store, inventory, _stock("A", on_hand=3, location="west"))
    assert await _apply(store, orders, _order("order.created", "o-1", [("A", 2)])) == "allocated"
    assert await _lines(store, "o-1") == [("A", 2, "west")]
    assert await _apply(store, orders, _order("order.created", "o-2", [("A", 2)])) == "backordered"
    assert await _apply(store, orders, _order("order.created", "o-3", [("A", 1)])) == "allocated"
    stock = await _rows(store, "SELECT location, on_hand, reserved FROM stock ORDER BY location")
    assert [(r["location"], r["on_hand"], r["reserved"]) for r in stock] == [
        ("east", 1, 1), ("west", 3, 2)]
    assert await _lines(store, "o-3") == [("A", 1, "east")]  # a tie: the first by name
    cancel = _order("order.cancelled", "o-1", [("A", 2)], occurred_at="2024-05-01T11:00:00Z")
    assert await _apply(store, orders, cancel) == "cancelled"
    # The two units o-1 gave back at west go to the waiting o-2.
    assert (await _status(store, "o-2"), await _lines(store, "o-2")) == (
        "allocated", [("A", 2, "west")])


async def _apply_batch(store: Store, events: list[dict[str, Any]]) -> list[str]:
    """Apply order events in one transaction as the runner's first pass does: on PostgreSQL
    write-behind on (the batch's locked stock rows and unstored order ids in view), prepare,
    the claims in one statement, each handler, then flush."""
    async def work(tx: Any) -> list[str]:
        tx.write_behind = tx.dialect == "postgresql"
        batch = await orders.prepare(tx, events)
        claimed = await tx.claim_all("orders", [event["id"] for event in events])
        assert claimed == {event["id"] for event in events}
        outcomes = [await orders.handle(tx, event, batch) for event in events]
        await tx.flush()
        return outcomes
    return await store.run(work)


async def test_a_batch_reserves_as_one_order_at_a_time_does(store: Store) -> None:
    """Five orders for one SKU at two locations in one batch: each line goes whole to the
    location with the most left after the lines before it (a tie: the first by name), a line
    that fits nowhere is backordered, and the stock holds exactly what the lines reserve, as
    when each order is applied alone (on PostgreSQL the batch decides from the rows it
    locked and writes them behind)."""
    await _apply(store, inventory, _stock("A", on_hand=5, location="main"))
    await _apply(store, inventory, _stock("A", on_hand=3, location="east"))
    events = [_order("order.created", f"o-{n}", [("A", quantity)])
              for n, quantity in enumerate([2, 2, 3, 2, 1], start=1)]
    assert await _apply_batch(store, events) == [
        "allocated", "allocated", "allocated", "backordered", "allocated"]
    assert [await _lines(store, f"o-{n}") for n in range(1, 6)] == [
        [("A", 2, "main")], [("A", 2, "east")], [("A", 3, "main")], [("A", 0, None)],
        [("A", 1, "east")]]
    stock = await _rows(store, "SELECT location, on_hand, reserved FROM stock ORDER BY location")
    assert [(r["location"], r["on_hand"], r["reserved"]) for r in stock] == [
        ("east", 3, 3), ("main", 5, 5)]
    assert [kind for kind, _ in await _outbox(store)].count("order.allocated") == 4


async def test_a_batch_with_a_stored_order_and_a_new_one(store: Store) -> None:
    """A batch holding an order stored before (created again, under another delivery) and a
    new one: the first is "exists" and gives back what it took, the second is stored, with
    nothing failing at the end of the batch."""
    await _apply(store, inventory, _stock("A", on_hand=5))
    assert await _apply(store, orders, _order("order.created", "o-1", [("A", 2)])) == "allocated"
    again = [_order("order.created", "o-1", [("A", 2)]),
             _order("order.created", "o-2", [("A", 1)])]
    assert await _apply_batch(store, again) == ["exists", "allocated"]
    assert await _stock_of(store, "A") == (5, 3)


async def test_an_order_stored_behind_a_batch_fails_its_held_insert(
    store: Store, store_url: str,
) -> None:
    """PostgreSQL: prepare found o-1 not stored, so the batch holds its INSERT back without
    ON CONFLICT; stored meanwhile by a writer that takes no lock, the held INSERT fails at
    flush (the runner then runs the batch carefully, where it is "exists")."""
    if not store_url.startswith("postgresql"):
        pytest.skip("write-behind is PostgreSQL's")
    await _apply(store, inventory, _stock("A", on_hand=5))
    created = _order("order.created", "o-1", [("A", 1)])
    async with open_store(store_url) as other:
        with pytest.raises(IntegrityViolation):
            async with store.transaction() as tx:
                tx.write_behind = True
                batch = await orders.prepare(tx, [created])
                async with other.transaction() as elsewhere:
                    await elsewhere.execute("INSERT INTO orders (order_id, source, status)"
                                            " VALUES ('o-1', 'test', 'open')")
                assert await orders.handle(tx, created, batch) == "allocated"
                await tx.flush()
    assert await _apply(store, orders, created) == "exists"
    assert await _stock_of(store, "A") == (5, 0)


async def test_cancelling_gives_stock_to_the_oldest_backorder(store: Store) -> None:
    """Stock released by a cancellation or a smaller update allocates waiting orders."""
    await _apply(store, inventory, _stock("A", on_hand=2))
    await _apply(store, orders, _order("order.created", "first", [("A", 2)]))
    await _apply(store, orders, _order("order.created", "waiting", [("A", 1)],
                                       created_at="2024-05-01T09:10:00Z"))
    await _apply(store, orders, _order("order.created", "later", [("A", 1)],
                                       created_at="2024-05-01T09:20:00Z"))
    assert await _status(store, "waiting") == "backordered"
    smaller = _order("order.updated", "first", [("A", 1)], occurred_at="2024-05-01T11:00:00Z")
    assert await _apply(store, orders, smaller) == "allocated"
    assert [await _status(store, o) for o in ("waiting", "later")] == ["allocated", "backordered"]
    cancel = _order("order.cancelled", "first", [("A", 1)], occurred_at="2024-05-01T12:00:00Z")
    assert await _apply(store, orders, cancel) == "cancelled"
    assert await _status(store, "later") == "allocated"
    assert await _stock_of(store, "A") == (2, 2)


def _carrier_update(code: str, carrier: str, status: str, occurred_at: str,
                    order_id: str | None = None) -> dict:
    event = _tracking(code, status, occurred_at, order_id)
    event["data"]["carrier"] = carrier
    return event


@pytest.mark.parametrize("fulfillment_first", [True, False])
async def test_carrier_updates_follow_the_storefronts_fulfillment(
    store: Store, fulfillment_first: bool
) -> None:
    """A fulfillment links a tracking code to its order; a carrier's update for the same code
    without an order id (and its own carrier name) moves that order, in either order."""
    await _apply(store, inventory, _stock("A", on_hand=5))
    await _apply(store, orders, _order("order.created", "o-1", [("A", 2)]))
    fulfillment = _carrier_update("T9", "dhl express", "pre_transit", "2024-05-02T08:00:00Z",
                                  "o-1")
    delivered = _carrier_update("T9", "dhlexpress", "delivered", "2024-05-03T10:00:00Z")
    first, second = (fulfillment, delivered) if fulfillment_first else (delivered, fulfillment)
    await _apply(store, shipping, first)
    await _apply(store, shipping, second)
    assert await _status(store, "o-1") == "delivered"
    assert await _stock_of(store, "A") == (3, 0)
    rows = await _rows(store, "SELECT carrier, order_id FROM shipments ORDER BY carrier")
    assert [(r["carrier"], r["order_id"]) for r in rows] == [
        ("dhl express", "o-1"), ("dhlexpress", "o-1")]


async def test_an_order_stored_after_its_shipment_moved_follows_it(store: Store) -> None:
    """A fulfillment and its delivery overtake the order (a provider's retry after an
    outage): when the order is stored it is moved on to delivered and its stock consumed."""
    await _apply(store, inventory, _stock("A", on_hand=5))
    await _apply(store, shipping, _carrier_update("T7", "fedex", "pre_transit",
                                                  "2024-05-02T08:00:00Z", "o-late"))
    await _apply(store, shipping, _carrier_update("T7", "fedex", "delivered",
                                                  "2024-05-03T10:00:00Z"))
    assert await _rows(store, "SELECT order_id FROM orders") == []
    assert await _apply(store, orders, _order("order.created", "o-late", [("A", 2)])) == \
        "allocated"
    assert await _status(store, "o-late") == "delivered"
    assert await _reserved(store, "o-late") == [0]
    assert await _stock_of(store, "A") == (3, 0)
    # A repeat of the created event changes nothing.
    assert await _apply(store, orders, _order("order.created", "o-late", [("A", 2)])) == "exists"
    assert await _stock_of(store, "A") == (3, 0)


async def _prepared(store: Store, module: Any, event: dict[str, Any]) -> str:
    """Apply one event as the runner does a batch of one: prepare (the locks), then handle."""

    async def work(tx: Any) -> str:
        batch = await module.prepare(tx, [event])
        return await module.handle(tx, event, batch, policy=Policy())

    return await store.run(work)


async def test_a_batch_looks_up_overtaken_orders_once_and_follows_only_those(
    store: Store,
) -> None:
    """Through prepare (as the runner applies a batch): the order whose fulfillment came
    first follows it to delivered, the other in the same batch stays allocated; the lookup
    is one query for the batch, noted for the handlers."""
    await _apply(store, inventory, _stock("A", on_hand=5))
    await _apply(store, shipping, _carrier_update("T8", "fedex", "pre_transit",
                                                  "2024-05-02T08:00:00Z", "o-overtaken"))
    await _apply(store, shipping, _carrier_update("T8", "fedex", "delivered",
                                                  "2024-05-03T10:00:00Z"))
    batch = [_order("order.created", "o-overtaken", [("A", 2)]),
             _order("order.created", "o-plain", [("A", 1)])]

    async def work(tx: Any) -> tuple[list[str], Any]:
        prepared = await orders.prepare(tx, batch)
        noted = set(prepared.shipped)
        return [await orders.handle(tx, event, prepared, policy=Policy()) for event in batch], noted

    outcomes, noted = await store.run(work)
    assert outcomes == ["allocated", "allocated"]
    assert noted == {"o-overtaken"}
    assert await _status(store, "o-overtaken") == "delivered"
    assert await _status(store, "o-plain") == "allocated"
    assert await _stock_of(store, "A") == (3, 1)


async def test_order_and_its_shipment_applied_at_once_meet(store_url: str) -> None:
    """On PostgreSQL, the orders and shipping consumers apply an order and a delivery naming it
    at the same moment: the second waits for the first (a lock on the order id), so the order
    ends delivered whichever commits first; without it each would miss the other."""
    if not store_url.startswith("postgresql"):
        pytest.skip("SQLite has one writer at a time: the two cannot overlap")
    async with open_store(store_url) as store, open_store(store_url) as other:
        await _apply(store, inventory, _stock("A", on_hand=5))
        created = _order("order.created", "o-race", [("A", 2)])
        delivered = _carrier_update("T8", "fedex", "delivered", "2024-05-03T10:00:00Z", "o-race")
        async with asyncio.timeout(TIMEOUT):
            async with store.transaction() as tx:
                prepared = await orders.prepare(tx, [created])
                assert await orders.handle(tx, created, prepared, policy=Policy()) == "allocated"
                # The delivery starts while the order is not committed: it must wait for it.
                shipping_task = asyncio.create_task(_prepared(other, shipping, delivered))
                await wait_until_blocked(tx, shipping_task)
            assert await shipping_task == "advanced"
    async with open_store(store_url) as store:
        assert await _status(store, "o-race") == "delivered"
        assert await _stock_of(store, "A") == (3, 0)
