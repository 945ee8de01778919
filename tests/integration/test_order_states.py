"""Orders as fulfillment sees them, on both stores: what does not ship, what waits for an
address or a payment, what expires, and what refunds, deletions and restorations do."""

from __future__ import annotations

from typing import Any

import orjson
import pytest
from test_corpus import CORPUS, _pipeline, event_of
from test_effects import (
    ADDRESS,
    _apply,
    _event,
    _order,
    _outbox,
    _reserved,
    _rows,
    _status,
    _stock,
    _stock_of,
)

from consumers import inventory, orders
from consumers.stock import Policy
from consumers.store import Store


def _lines_with(order: dict[str, Any], **ships: bool) -> dict[str, Any]:
    for line in order["data"]["lines"]:
        if line["sku"] in ships:
            line["ships"] = ships[line["sku"]]
    return order


async def _state(store: Store, order_id: str) -> tuple[str, str | None, str | None]:
    [row] = await _rows(store, "SELECT status, hold_reason, allocation FROM orders"
                               " WHERE order_id = $1", order_id)
    return row["status"], row["hold_reason"], row["allocation"]


class TestWhatShips:
    async def test_a_line_that_does_not_ship_reserves_nothing(self, store: Store) -> None:
        """A gift card beside a parcel: the parcel is reserved, the card is kept on the order
        and reserves nothing, even with no stock of its own."""
        await _apply(store, inventory, _stock("A", on_hand=1))
        order = _lines_with(_order("order.created", "o-1", [("A", 1), ("GIFT", 1)]), GIFT=False)
        assert "allocated" == await _apply(store, orders, order)
        assert [1, 0] == await _reserved(store, "o-1")

    async def test_nothing_to_ship_completes_without_a_reservation(self, store: Store) -> None:
        """An order of downloads only, with no address, is completed; no stock is touched."""
        await _apply(store, inventory, _stock("E", on_hand=1))
        order = _lines_with(_order("order.created", "o-2", [("E", 1)], address=None), E=False)
        assert "completed" == await _apply(store, orders, order)
        assert (1, 0) == await _stock_of(store, "E")


class TestAddress:
    async def test_no_address_holds_with_stock_reserved_until_it_comes(
        self, store: Store
    ) -> None:
        """Without a usable shipping address the order is on_hold (no_address) with its stock
        reserved and an order.on_hold notification; an update bringing the address releases
        it. An incomplete address (no street) holds it too."""
        await _apply(store, inventory, _stock("A", on_hand=3))
        created = _order("order.created", "o-3", [("A", 2)], address=None)
        assert "on_hold" == await _apply(store, orders, created)
        assert ("on_hold", "no_address", "allocated") == await _state(store, "o-3")
        assert (3, 2) == await _stock_of(store, "A")
        assert ("order.on_hold", "o-3") in await _outbox(store)

        partial = _order("order.updated", "o-3", [("A", 2)], occurred_at="2024-05-01T11:00:00Z",
                         address={"name": "Jane", "city": "Austin", "country": "US"})
        assert "on_hold" == await _apply(store, orders, partial)
        updated = _order("order.updated", "o-3", [("A", 2)], occurred_at="2024-05-01T12:00:00Z",
                         address=ADDRESS)
        assert "allocated" == await _apply(store, orders, updated)
        assert ("allocated", None, "allocated") == await _state(store, "o-3")
        assert (3, 2) == await _stock_of(store, "A")


class TestPayment:
    async def test_paid_order_is_ready_to_ship_and_unpaid_waits(self, store: Store) -> None:
        """An allocated order waits for payment; the update that says paid (Shopify's
        orders/paid) makes it ready_to_ship with a notification."""
        await _apply(store, inventory, _stock("A", on_hand=3))
        created = _order("order.created", "o-4", [("A", 1)], payment_status="pending")
        assert "allocated" == await _apply(store, orders, created)
        paid = _order("order.updated", "o-4", [("A", 1)], payment_status="paid",
                      occurred_at="2024-05-01T11:00:00Z")
        assert "ready_to_ship" == await _apply(store, orders, paid)
        assert ("order.ready_to_ship", "o-4") in await _outbox(store)

    async def test_unpaid_order_expires_and_gives_its_stock_to_a_waiting_one(
        self, store: Store
    ) -> None:
        """An unpaid order keeps its stock for unpaid_expiry after it was made; the tick then
        expires it (order.expired) and a backordered order gets the stock. The tick before
        the deadline, and a second one after, change nothing. Paying later re-reserves."""
        policy = Policy(unpaid_expiry=3600)
        await _apply(store, inventory, _stock("A", on_hand=1))
        unpaid = _order("order.created", "o-5", [("A", 1)], payment_status="pending",
                        created_at="2024-05-01T09:00:00Z")
        waiting = _order("order.created", "o-6", [("A", 1)], payment_status="paid",
                         created_at="2024-05-01T09:30:00Z")
        assert "allocated" == await _apply(store, orders, unpaid, policy)
        assert "backordered" == await _apply(store, orders, waiting, policy)

        async def tick(now: str) -> int:
            return await store.run(lambda tx: orders.tick(tx, now, policy=policy))

        assert 0 == await tick("2024-05-01T09:59:59.000000+00:00")
        assert 1 == await tick("2024-05-01T10:00:00.000000+00:00")
        assert 0 == await tick("2024-05-01T10:00:01.000000+00:00")
        assert ("expired", None, None) == await _state(store, "o-5")
        assert ("ready_to_ship", None, "allocated") == await _state(store, "o-6")
        assert ("order.expired", "o-5") in await _outbox(store)

        await _apply(store, inventory, _stock("A", delta=1))
        paid_late = _order("order.updated", "o-5", [("A", 1)], payment_status="paid",
                           occurred_at="2024-05-02T09:00:00Z")
        assert "ready_to_ship" == await _apply(store, orders, paid_late, policy)
        still_unpaid = _order("order.updated", "o-5", [("A", 1)], payment_status="pending",
                              occurred_at="2024-05-02T10:00:00Z")
        assert "allocated" == await _apply(store, orders, still_unpaid, policy)

    async def test_an_expired_order_updated_but_still_unpaid_stays_expired(
        self, store: Store
    ) -> None:
        """Past its time to pay, an update that is still unpaid reserves nothing."""
        policy = Policy(unpaid_expiry=60)
        await _apply(store, inventory, _stock("A", on_hand=1))
        created = _order("order.created", "o-7", [("A", 1)], payment_status="pending")
        await _apply(store, orders, created, policy)
        await store.run(lambda tx: orders.tick(tx, "2030-01-01T00:00:00+00:00", policy=policy))
        note = _order("order.updated", "o-7", [("A", 1)], payment_status="pending",
                      occurred_at="2024-05-01T12:00:00Z")
        assert "expired" == await _apply(store, orders, note, policy)
        assert (1, 0) == await _stock_of(store, "A")


class TestRefundsAndDeletions:
    async def test_refunded_lines_leave_and_all_refunded_is_refunded(self, store: Store) -> None:
        """A refund of one line gives its stock back and keeps the rest; refunding the rest
        makes the order refunded, with nothing reserved."""
        await _apply(store, inventory, _stock("A", on_hand=5))
        await _apply(store, inventory, _stock("B", on_hand=5))
        await _apply(store, orders, _order("order.created", "o-8", [("A", 2), ("B", 1)],
                                           payment_status="paid"))

        def refund(lines: list[tuple[str, int]]) -> dict[str, Any]:
            return _event("order.refunded", {
                "order_id": "o-8", "created_at": "2024-05-02T00:00:00Z",
                "lines": [{"sku": sku, "quantity": n} for sku, n in lines]})

        assert "ready_to_ship" == await _apply(store, orders, refund([("A", 1)]))
        assert ((5, 1), (5, 1)) == (await _stock_of(store, "A"), await _stock_of(store, "B"))
        assert "ignored" == await _apply(store, orders, refund([]))  # money only
        assert "refunded" == await _apply(store, orders, refund([("A", 1), ("B", 1)]))
        assert ((5, 0), (5, 0)) == (await _stock_of(store, "A"), await _stock_of(store, "B"))

    async def test_deleted_then_restored_starts_again(self, store: Store) -> None:
        """A deletion naming only the order cancels it and gives the stock back; restored, it
        is made anew and reserves again."""
        await _apply(store, inventory, _stock("A", on_hand=2))
        created = _order("order.created", "o-9", [("A", 2)], payment_status="paid")
        await _apply(store, orders, created)
        deleted = _event("order.cancelled", {"order_id": "o-9"})
        assert "cancelled" == await _apply(store, orders, deleted)
        assert (2, 0) == await _stock_of(store, "A")
        restored = _order("order.restored", "o-9", [("A", 2)], payment_status="paid",
                          occurred_at="2024-05-03T00:00:00Z")
        assert "ready_to_ship" == await _apply(store, orders, restored)
        assert (2, 2) == await _stock_of(store, "A")

    async def test_a_deletion_before_the_order_keeps_it_from_allocating(
        self, store: Store
    ) -> None:
        """A deletion for an order never seen stores it cancelled; its created event, when
        it comes, does not take stock."""
        await _apply(store, inventory, _stock("A", on_hand=1))
        assert "cancelled" == await _apply(store, orders,
                                           _event("order.cancelled", {"order_id": "o-10"}))
        assert "exists" == await _apply(store, orders, _order("order.created", "o-10", [("A", 1)]))
        assert ((1, 0), "cancelled") == (await _stock_of(store, "A"),
                                          await _status(store, "o-10"))


SHOPIFY_ORDER = orjson.loads(
    (CORPUS / "shopify" / "2024-04-order-450789469.json").read_bytes())  # Shopify's docs
SAME_SECOND = "2008-01-10T12:30:00-05:00"  # two changes made within it share updated_at


def _shopify(settings: Any, deliveries: list[tuple[dict[str, Any], str]]) -> list[dict[str, Any]]:
    """Each (body, topic) delivered as Shopify sends it (a fresh delivery id each), verified
    and mapped as the ingress does it."""
    sources, registry = _pipeline(settings)
    return [event_of(settings, sources, registry, "shopify", orjson.dumps(body), topic)
            for body, topic in deliveries]


async def _content(store: Store, order_id: str) -> tuple[str | None, list[int]]:
    [row] = await _rows(store, "SELECT note FROM orders WHERE order_id = $1", order_id)
    lines = await _rows(store, "SELECT quantity FROM order_lines WHERE order_id = $1"
                               " ORDER BY line_no", order_id)
    return row["note"], [line["quantity"] for line in lines]


class TestSameSecondVersions:
    @pytest.mark.parametrize("arrival", ["in_order", "reversed"])
    async def test_equal_updated_at_with_other_content_applies_and_a_repeat_is_stale(
        self, store: Store, settings: Any, arrival: str
    ) -> None:
        """Two Shopify changes within one second (a note, then a quantity too) carry the
        same updated_at: whichever arrives second is applied, not dropped as stale, since
        its content differs (the signed body cannot tell which is newer: the later arrival
        wins); the same content again, under a new delivery id, is stale, and so is the
        first one replayed."""
        lines = SHOPIFY_ORDER["line_items"]
        for line in lines:
            await _apply(store, inventory, _stock(line["sku"], on_hand=10))
        noted = {**SHOPIFY_ORDER, "updated_at": SAME_SECOND, "note": "Leave at the back door"}
        more = {**noted, "line_items": [{**lines[0], "quantity": 3}, *lines[1:]]}
        first, second = (noted, more) if arrival == "in_order" else (more, noted)
        created, *updates = _shopify(settings, [(SHOPIFY_ORDER, "orders/create")] + [
            (body, "orders/updated") for body in (first, second, second, first)])
        order_id = str(SHOPIFY_ORDER["id"])
        await _apply(store, orders, created)
        outcomes = [await _apply(store, orders, event) for event in updates]
        assert "stale" not in outcomes[:2]
        expected = ("Leave at the back door", [line["quantity"] for line in second["line_items"]])
        assert expected == await _content(store, order_id)
        assert ["stale", "stale"] == outcomes[2:]
