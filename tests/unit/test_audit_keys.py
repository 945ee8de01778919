"""consumers.audit.business_keys: the keys an event's data names, each once."""

from __future__ import annotations

import pytest

from consumers.audit import business_keys

CASES = [
    ({"order_id": "1042", "lines": [{"sku": "MUG-1", "quantity": 1},
                                    {"sku": "CAP-2", "quantity": 2},
                                    {"sku": "MUG-1", "quantity": 3}]},
     [("order_id", "1042"), ("sku", "MUG-1"), ("sku", "CAP-2")]),
    ({"sku": "MUG-1", "location": "default", "delta": 3}, [("sku", "MUG-1")]),
    ({"tracking_code": "EZ1", "carrier": "USPS", "order_id": "1042"},
     [("order_id", "1042"), ("tracking_code", "EZ1")]),
    ({"order_id": 1042}, [("order_id", "1042")]),
    ({"order_id": "", "sku": None, "lines": ["x", {"sku": 7}], "tracking_code": True},
     [("sku", "7")]),
    (None, []),
    (["order_id"], []),
]


class TestBusinessKeys:
    @pytest.mark.parametrize(("data", "expected"), CASES)
    def test_keys(self, data, expected):
        """Order ids, tracking codes and SKUs (its own and its lines'), in order, each once;
        empty or non-text values (but integers) are left out."""
        assert expected == business_keys(data)
