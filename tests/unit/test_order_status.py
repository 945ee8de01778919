"""Where an open order stands, derived from its allocation, address and payment (pure)."""

from __future__ import annotations

import pytest

from consumers.order_status import address_complete, derive, expires_at

FULL = {"line1": "969 Market", "city": "San Francisco", "country": "US"}


class TestDerive:
    @pytest.mark.parametrize(("allocation", "addressed", "payment", "expected"), [
        ("allocated", True, "paid", ("ready_to_ship", None)),
        ("allocated", True, "partially_refunded", ("ready_to_ship", None)),
        ("allocated", True, "pending", ("allocated", None)),
        ("allocated", True, None, ("allocated", None)),  # the source says nothing of payment
        ("partially_allocated", True, "paid", ("partially_allocated", None)),
        ("backordered", True, "paid", ("backordered", None)),
        ("allocated", False, "paid", ("on_hold", "no_address")),
        ("backordered", False, "pending", ("on_hold", "no_address")),
        (None, False, "paid", ("completed", None)),  # nothing ships: no address needed
    ])
    def test_status(self, allocation, addressed, payment, expected):
        """The address holds first, then payment gates an allocated order."""
        assert expected == derive(allocation, addressed, payment)


class TestAddress:
    @pytest.mark.parametrize(("address", "complete"), [
        (FULL, True),
        ({**FULL, "line1": "  "}, False),
        ({"name": "Jane", "city": "Austin", "country": "US"}, False),
        ({}, False),
        (None, False),
    ])
    def test_complete_needs_street_city_country(self, address, complete):
        """A parcel needs a street, a city and a country."""
        assert complete == address_complete(address)


class TestExpiry:
    def test_unpaid_expires_after_the_window(self):
        """An unpaid order's deadline is created_at plus the window, in the store's form."""
        assert "2024-05-04T09:00:00.000000+00:00" == expires_at(
            "2024-05-01T09:00:00.000000+00:00", "pending", 3 * 24 * 3600)

    @pytest.mark.parametrize(("payment", "window"), [
        ("paid", 3600), (None, 3600), ("unknown", 3600), ("pending", 0)])
    def test_no_deadline(self, payment, window):
        """Paid, not said, or expiry off: no deadline."""
        assert None is expires_at("2024-05-01T09:00:00+00:00", payment, window)
