"""Unit tests for router.mapping and the mapping files in config/mappings/."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson
import pytest

from router.errors import ConfigError, InvalidPayload
from router.mapping import EventMapping, load_mappings, sanitize_text
from router.parsing import parse_body
from router.schemas import SchemaRegistry

ROOT = Path(__file__).resolve().parents[2]
CONFIG = ROOT / "config"

HEADER = """
[thing]
types = ["thing.updated"]
payload_schema = "thing.payload.v1"
model_schema = "thing.v1"
"""

# provider -> (sample file, the model its mapping produces)
SAMPLES = {
    "shopify": ("shopify-orders-create.json", "order"),
    "shopify/fulfillment": ("shopify-fulfillments-create.json", "fulfillment"),
    "woocommerce": ("woocommerce-order-created.json", "order"),
    "portal": ("portal-order-created.json", "order"),
    "inventory": ("inventory-stock-updated.json", "inventory"),
    "easypost": ("easypost-tracker-updated.json", "tracking"),
    "aftership": ("aftership-tracking-update.json", "tracking"),
}


def compile_fields(tmp_path: Path, fields: str, extra: str = "") -> EventMapping:
    """One mapping built from a [thing.fields] body (TOML) and optional extra model keys."""
    path = tmp_path / "thing.toml"
    path.write_text(HEADER + extra + "\n[thing.fields]\n" + fields)
    return load_mappings(path)["thing.updated"]


def config_error(tmp_path: Path, text: str) -> ConfigError:
    path = tmp_path / "bad.toml"
    path.write_text(text)
    with pytest.raises(ConfigError) as info:
        load_mappings(path)
    assert str(path) == info.value.file
    return info.value


def unmappable(mapping: EventMapping, payload: Any) -> list[dict[str, Any]]:
    with pytest.raises(InvalidPayload) as info:
        mapping.apply(payload)
    assert (422, "unmappable") == (info.value.status, info.value.reason)
    return info.value.errors or []


def sample(name: str) -> Any:
    return parse_body((CONFIG / "samples" / name).read_bytes(), "application/json")


@pytest.fixture(scope="module")
def registry() -> SchemaRegistry:
    return SchemaRegistry.load(CONFIG / "schemas")


def provider(name: str, registry: SchemaRegistry) -> dict[str, EventMapping]:
    return load_mappings(CONFIG / "mappings" / f"{name}.toml", schema_names=registry.names())


class TestProviderMappings:
    @pytest.mark.parametrize("name", sorted(SAMPLES))
    def test_sample_maps_to_valid_model(self, name: str, registry: SchemaRegistry) -> None:
        """Each provider sample passes its payload schema, maps, and passes the model schema."""
        file, model = SAMPLES[name]
        payload = sample(file)
        mappings = [m for m in provider(name.split("/")[0], registry).values()
                    if m.model == model]
        assert mappings
        for mapping in mappings:
            registry.check(mapping.payload_schema, payload)
            registry.check(mapping.model_schema, mapping.apply(payload), reason="unmappable")
            assert mapping.occurred_at(payload) is not None

    def test_shopify_exact(self, registry: SchemaRegistry) -> None:
        """The Shopify sample maps to exactly this order, the 64-bit id intact."""
        expected = {
            "source": "shopify",
            "order_id": "5820982911946154508",
            "status": "received",
            "note": "Leave at the side door",
            "created_at": "2026-11-20T10:15:31-05:00",
            "updated_at": "2026-11-20T10:15:31-05:00",  # never updated: as created
            "lines": [
                {"sku": "PEP-BPC157-5MG", "quantity": 2, "ships": True},
                {"sku": "BAC-WATER-10ML", "quantity": 1, "ships": True},
            ],
            "shipping_address": {
                "name": "Jane Doe",
                "line1": "123 Main Street",
                "line2": "Suite 4",
                "city": "Austin",
                "region": "TX",
                "postal_code": "78701",
                "country": "US",
            },
        }
        mapping = provider("shopify", registry)["order.created"]
        payload = sample("shopify-orders-create.json")
        assert expected == mapping.apply(payload)
        assert "2026-11-20T10:15:31-05:00" == mapping.occurred_at(payload)

    def test_shopify_fulfillment_links_tracking_to_order(self, registry: SchemaRegistry) -> None:
        """A fulfillment maps to a tracking update naming the order; without a tracking
        number it is keyed by the fulfillment's id, and a status Shopify has not set yet is
        pre_transit."""
        mapping = provider("shopify", registry)["shipment.updated"]
        payload = sample("shopify-fulfillments-create.json")
        assert {
            "source": "shopify", "order_id": "5820982911946154508", "tracking_code": "1",
            "carrier": "fedex", "status": "pre_transit", "occurred_at": "2026-11-20T16:40:00-05:00",
        } == mapping.apply(payload)
        payload.update(tracking_number=None, tracking_company=None, shipment_status="delivered")
        mapped = mapping.apply(payload)
        assert ("255858046", "unknown", "delivered") == (
            mapped["tracking_code"], mapped["carrier"], mapped["status"])

    def test_shopify_keeps_no_pii(self, registry: SchemaRegistry) -> None:
        """Neither the customer's email nor phone reaches the canonical order."""
        data = provider("shopify", registry)["order.created"].apply(
            sample("shopify-orders-create.json")
        )
        text = orjson.dumps(data).decode()
        assert ("jane.doe@example.com" in text, "555-555-0100" in text) == (False, False)

    def test_shopify_digital_order(self, registry: SchemaRegistry) -> None:
        """Without a shipping address (and note) the order still maps and validates."""
        payload = sample("shopify-orders-create.json")
        payload["shipping_address"] = None
        payload["note"] = None
        mapping = provider("shopify", registry)["order.created"]
        data = mapping.apply(payload)
        registry.check(mapping.model_schema, data)
        assert ("shipping_address" in data, data["note"]) == (False, "")

    def test_woocommerce_exact(self, registry: SchemaRegistry) -> None:
        """The WooCommerce sample maps with UTC time, joined name and the empty line2 left out."""
        expected = {
            "source": "woocommerce",
            "order_id": "727",
            "note": "Call before delivery",
            "created_at": "2026-11-20T16:15:31Z",
            "updated_at": "2026-11-20T16:15:31Z",
            "status": "received",
            "payment_status": "paid",
            "lines": [
                {"sku": "PEP-TB500-2MG", "quantity": 1},
                {"sku": "BAC-WATER-10ML", "quantity": 1},
            ],
            "shipping_address": {
                "name": "John Smith",
                "line1": "969 Market",
                "city": "San Francisco",
                "region": "CA",
                "postal_code": "94103",
                "country": "US",
            },
        }
        mapping = provider("woocommerce", registry)["order.created"]
        assert expected == mapping.apply(sample("woocommerce-order-created.json"))

    def test_woocommerce_status_map(self, registry: SchemaRegistry) -> None:
        """WooCommerce statuses map to ours; an unknown one falls back to received."""
        mapping = provider("woocommerce", registry)["order.updated"]
        payload = sample("woocommerce-order-created.json")
        actual = [mapping.apply({**payload, "status": s})["status"] for s in ("on-hold", "x")]
        assert ["on_hold", "received"] == actual

    def test_portal_cancelled(self, registry: SchemaRegistry) -> None:
        """A portal order.cancelled event carries status cancelled."""
        mapping = provider("portal", registry)["order.cancelled"]
        payload = {**sample("portal-order-created.json"), "event": "order.cancelled"}
        assert "cancelled" == mapping.apply(payload)["status"]

    def test_inventory_exact(self, registry: SchemaRegistry) -> None:
        """The inventory sample maps as is; a delta without location gets the default."""
        mapping = provider("inventory", registry)["inventory.updated"]
        expected = {
            "sku": "BAC-WATER-10ML",
            "location": "austin-1",
            "on_hand": 42,
            "as_of": "2026-11-20T16:20:00Z",
        }
        assert expected == mapping.apply(sample("inventory-stock-updated.json"))
        delta = {"event_id": "e", "sku": "A", "delta": -3, "as_of": "2026-11-20T16:20:00+00:00"}
        expected = {"sku": "A", "location": "default", "delta": -3, "as_of": "2026-11-20T16:20:00Z"}
        assert expected == mapping.apply(delta)

    def test_easypost_exact(self, registry: SchemaRegistry) -> None:
        """The EasyPost tracker maps from its latest checkpoint."""
        expected = {
            "tracking_code": "1",
            "carrier": "fedex",
            "detail": "Arrived at FedEx location",
            "estimated_delivery": "2024-08-05T00:00:00Z",
            "occurred_at": "2024-08-02T18:50:00Z",
            "status": "in_transit",
        }
        mapping = provider("easypost", registry)["shipment.updated"]
        payload = sample("easypost-tracker-updated.json")
        assert expected == mapping.apply(payload)
        assert "2024-08-02T18:50:00Z" == mapping.occurred_at(payload)

    def test_easypost_unknown_status(self, registry: SchemaRegistry) -> None:
        """An EasyPost status we do not know becomes unknown."""
        mapping = provider("easypost", registry)["shipment.updated"]
        payload = sample("easypost-tracker-updated.json")
        payload["result"]["status"] = "teleported"
        assert "unknown" == mapping.apply(payload)["status"]

    def test_aftership_exact(self, registry: SchemaRegistry) -> None:
        """The AfterShip sample maps with its tag in our vocabulary."""
        expected = {
            "tracking_code": "1Z9999W99999999999",
            "carrier": "ups",
            "order_id": "#1042",
            "detail": "Out For Delivery Today",
            "occurred_at": "2026-11-20T16:15:31Z",
            "status": "out_for_delivery",
        }
        mapping = provider("aftership", registry)["shipment.updated"]
        assert expected == mapping.apply(sample("aftership-tracking-update.json"))

    @pytest.mark.parametrize(
        ("tag", "status"),
        [
            ("Pending", "pre_transit"),
            ("InfoReceived", "pre_transit"),
            ("InTransit", "in_transit"),
            ("OutForDelivery", "out_for_delivery"),
            ("AttemptFail", "failure"),
            ("Delivered", "delivered"),
            ("AvailableForPickup", "available_for_pickup"),
            ("Exception", "failure"),
            ("Expired", "unknown"),
            ("SomethingNew", "unknown"),
        ],
    )
    def test_aftership_tags(self, tag: str, status: str, registry: SchemaRegistry) -> None:
        """Every AfterShip tag maps to our vocabulary."""
        mapping = provider("aftership", registry)["shipment.updated"]
        payload = sample("aftership-tracking-update.json")
        payload["msg"]["tag"] = tag
        assert status == mapping.apply(payload)["status"]

    def test_missing_line_quantity(self, registry: SchemaRegistry) -> None:
        """A line whose quantity is missing fails the model schema at that line."""
        mapping = provider("shopify", registry)["order.created"]
        payload = sample("shopify-orders-create.json")
        del payload["line_items"][1]["quantity"]
        with pytest.raises(InvalidPayload) as info:
            registry.check(mapping.model_schema, mapping.apply(payload), reason="unmappable")
        expected = [{"path": "/lines/1/quantity", "message": "is a required property"}]
        assert ("unmappable", expected) == (info.value.reason, info.value.errors)

    def test_samples_copied_byte_exact(self) -> None:
        """The provider samples in config/samples/ are the shared ones, byte for byte."""
        shared = ROOT.parent / "shared" / "samples"
        if not shared.is_dir():
            pytest.skip("shared samples not present")
        for file, _ in SAMPLES.values():
            if (shared / file).exists():
                assert (shared / file).read_bytes() == (CONFIG / "samples" / file).read_bytes()


class TestExpressions:
    def test_paths(self, tmp_path: Path) -> None:
        """Dotted paths, indexes (negative too) and alternatives read the payload."""
        mapping = compile_fields(
            tmp_path,
            """
            a = "x.y"
            b = "items[0].sku"
            c = "items[-1].sku"
            d = { path = ["missing", "x.nothing", "x.y"] }
            e = "items[9].sku"
            f = "x.y.z"
            """,
        )
        payload = {"x": {"y": "Y"}, "items": [{"sku": "S0"}, {"sku": "S1"}]}
        assert {"a": "Y", "b": "S0", "c": "S1", "d": "Y"} == mapping.apply(payload)

    def test_null_is_absent(self, tmp_path: Path) -> None:
        """A null value counts as absent: omitted, or the next alternative is used."""
        mapping = compile_fields(tmp_path, 'a = "a"\nb = { path = ["a", "b"] }')
        assert {"b": 2} == mapping.apply({"a": None, "b": 2})

    def test_const_default_required(self, tmp_path: Path) -> None:
        """const is fixed, default fills an absent value, required reports its path."""
        mapping = compile_fields(
            tmp_path,
            """
            kind = { const = "received" }
            note = { path = "note", default = "" }
            id = { path = "order.id", required = true }
            """,
        )
        assert {"kind": "received", "note": "", "id": 7} == mapping.apply({"order": {"id": 7}})
        assert [{"path": "/order/id", "message": "is required"}] == unmappable(mapping, {})

    def test_all_errors_listed(self, tmp_path: Path) -> None:
        """Every failing field is reported, not just the first."""
        mapping = compile_fields(
            tmp_path,
            """
            a = { path = "a", required = true }
            b = { path = "b", as = "int" }
            [thing.fields.lines]
            each = "items[*]"
            fields = { q = { path = "q", as = "int", required = true } }
            """,
        )
        payload = {"b": "many", "items": [{"q": 1}, {}, {"q": "lots"}]}
        expected = [
            {"path": "/a", "message": "is required"},
            {"path": "/b", "message": "must be an integer"},
            {"path": "/items/1/q", "message": "is required"},
            {"path": "/items/2/q", "message": "must be an integer"},
        ]
        assert expected == unmappable(mapping, payload)

    def test_errors_hold_no_values(self, tmp_path: Path) -> None:
        """Unmappable messages never echo the payload value."""
        mapping = compile_fields(tmp_path, 'a = { path = "email", as = "int" }')
        errors = unmappable(mapping, {"email": "jane.doe@example.com"})
        assert "jane" not in orjson.dumps(errors).decode()

    def test_each_fields(self, tmp_path: Path) -> None:
        """each+fields builds one object per item, paths relative to the item."""
        mapping = compile_fields(
            tmp_path,
            'lines = { each = "order.items[*]", fields = { sku = "sku", n = "qty" } }',
        )
        payload = {"order": {"items": [{"sku": "A", "qty": 1}, {"sku": "B"}, "odd"]}}
        expected = {"lines": [{"sku": "A", "n": 1}, {"sku": "B"}, {}]}
        assert expected == mapping.apply(payload)

    def test_each_value(self, tmp_path: Path) -> None:
        """each+value builds a list of scalars, skipping absent ones; "." is the item."""
        mapping = compile_fields(
            tmp_path,
            """
            skus = { each = "items[*]", value = { path = "sku", as = "upper" } }
            tags = { each = "tags[*]", value = "." }
            none = { each = "nothing[*]", value = ".", default = [] }
            """,
        )
        payload = {"items": [{"sku": "a"}, {}, {"sku": "b"}], "tags": ["x", "y"]}
        assert {"skus": ["A", "B"], "tags": ["x", "y"], "none": []} == mapping.apply(payload)

    def test_each_not_a_list(self, tmp_path: Path) -> None:
        """each over something that is not a list is unmappable at its path."""
        mapping = compile_fields(tmp_path, 'lines = { each = "items[*]", value = "." }')
        assert [{"path": "/items", "message": "must be a list"}] == unmappable(
            mapping, {"items": {"a": 1}}
        )

    def test_join(self, tmp_path: Path) -> None:
        """join skips absent and blank parts and uses sep."""
        mapping = compile_fields(
            tmp_path,
            """
            name = { join = ["first", "middle", "last"] }
            code = { join = ["a", { const = "X" }, "n"], sep = "-" }
            empty = { join = ["nothing", "blank"] }
            """,
        )
        payload = {"first": "Jane", "middle": " ", "last": "Doe", "a": "p", "n": 7, "blank": ""}
        assert {"name": "Jane Doe", "code": "p-X-7"} == mapping.apply(payload)

    def test_first_present_and_not_blank(self, tmp_path: Path) -> None:
        """first takes the first expression whose value is present and not blank: a line's
        identity falls back from an empty SKU to its variant, then its product, then itself;
        `absent` drops a provider's "none" value (0) and `prefix` tells the ids apart."""
        mapping = compile_fields(
            tmp_path,
            """
            id = { required = true, first = [
                "sku",
                { path = "variation_id", absent = [0], prefix = "variation:" },
                { path = "product_id", absent = [0], prefix = "product:" },
                { path = "id", prefix = "line:" },
            ] }
            """,
        )
        assert {"id": "Bar3"} == mapping.apply({"sku": "Bar3", "variation_id": 23})
        assert {"id": "variation:23"} == mapping.apply(
            {"sku": "", "variation_id": 23, "product_id": 22})
        assert {"id": "product:93"} == mapping.apply(
            {"sku": "  ", "variation_id": 0, "product_id": 93, "id": 315})
        assert {"id": "line:315"} == mapping.apply(
            {"sku": None, "variation_id": 0, "product_id": 0, "id": 315})
        assert [{"path": "/sku", "message": "is required"}] == unmappable(mapping, {})

    def test_absent_compares_types(self, tmp_path: Path) -> None:
        """absent = [0] makes 0 absent, not false; a default still applies."""
        mapping = compile_fields(
            tmp_path, 'n = { path = "n", absent = [0], default = "none" }\n')
        assert [{"n": "none"}, {"n": False}, {"n": 7}] == [
            mapping.apply({"n": value}) for value in (0, False, 7)]

    def test_prefix_after_as_and_map(self, tmp_path: Path) -> None:
        """prefix goes before the finished value, as text; never before an absent one."""
        mapping = compile_fields(
            tmp_path,
            'v = { path = "v", as = "lower", map = { a = "x" }, map_default = "y", '
            'prefix = "k:" }\n'
            'n = { path = "n", prefix = "id:" }\n',
        )
        assert {"v": "k:x", "n": "id:18446744073709551616"} == mapping.apply(
            {"v": " A ", "n": 18446744073709551616})
        assert {} == mapping.apply({})

    def test_nested_object(self, tmp_path: Path) -> None:
        """A plain nested table is an object, omitted when none of its fields is present."""
        mapping = compile_fields(
            tmp_path,
            """
            [thing.fields.address]
            city = "addr.city"
            zip = { path = "addr.zip", as = "str" }
            """,
        )
        assert {"address": {"city": "Austin", "zip": "78701"}} == mapping.apply(
            {"addr": {"city": "Austin", "zip": 78701}}
        )
        assert {} == mapping.apply({"addr": None})

    def test_map(self, tmp_path: Path) -> None:
        """map translates values (after `as`), map_default catches the rest."""
        mapping = compile_fields(
            tmp_path,
            """
            f = { path = "f", map = { "true" = "yes", "1" = "one" } }
            [thing.fields.s]
            path = "s"
            as = "lower"
            map = { shipped = "in_transit" }
            map_default = "unknown"
            """,
        )
        assert {"f": "yes", "s": "in_transit"} == mapping.apply({"s": "SHIPPED", "f": True})
        assert {"f": "one", "s": "unknown"} == mapping.apply({"s": "lost", "f": 1})
        assert [{"path": "/f", "message": "has no mapping for this value"}] == unmappable(
            mapping, {"f": "other"}
        )

    def test_occurred_at(self, tmp_path: Path) -> None:
        """occurred_at reads a time as RFC 3339, and is None when absent or unreadable."""
        mapping = compile_fields(
            tmp_path, "a = { const = 1 }", extra='occurred_at = { path = ["updated_at", "ts"] }'
        )
        expected = ["2026-11-20T16:15:31Z", "2023-11-14T22:13:20Z", None, None]
        actual = [
            mapping.occurred_at({"updated_at": "2026-11-20T16:15:31"}),
            mapping.occurred_at({"ts": 1700000000}),
            mapping.occurred_at({}),
            mapping.occurred_at({"updated_at": "soon"}),
        ]
        assert expected == actual

    def test_no_occurred_at(self, tmp_path: Path) -> None:
        """Without occurred_at configured the time is None."""
        assert None is compile_fields(tmp_path, "a = { const = 1 }").occurred_at({"x": 1})

    def test_present(self, tmp_path: Path) -> None:
        """present gives its value whenever the path has one (what a field's presence means);
        absent or null, the default or the next `first` option applies."""
        mapping = compile_fields(tmp_path, """
            [thing.fields.status]
            first = [{ path = "cancelled_at", present = "cancelled" }, "state"]
            default = "open"
            """)
        assert [{"status": "cancelled"}, {"status": "cancelled"}, {"status": "paid"},
                {"status": "open"}] == [
            mapping.apply({"cancelled_at": "2024-04-02T09:03:37-05:00", "state": "paid"}),
            mapping.apply({"cancelled_at": 0}),
            mapping.apply({"cancelled_at": None, "state": "paid"}),
            mapping.apply({}),
        ]

    @pytest.mark.parametrize("spec", ['{ path = "a", present = ["x"] }',
                                      '{ path = "a", as = "str", present = "x" }',
                                      '{ path = "a", map = { b = "c" }, present = "x" }'])
    def test_present_is_a_scalar_without_as_or_map(self, tmp_path: Path, spec: str) -> None:
        """present takes a string, number or boolean, and no conversion to go with it."""
        error = config_error(tmp_path, HEADER + f"[thing.fields]\nf = {spec}\n")
        assert ("thing.fields.f.present", "without as or map") == (
            error.key, error.problem[-len("without as or map"):])


INEXACT = "is a number too large to be exact (an integer of at most 64 bits or a string is)"


INEXACT = "is a number too large to be exact (an integer of at most 64 bits or a string is)"


class TestConversions:
    def mapping(self, tmp_path: Path, kind: str) -> EventMapping:
        return compile_fields(tmp_path, f'out = {{ path = "v", as = "{kind}" }}')

    @pytest.mark.parametrize(
        ("kind", "value", "expected"),
        [
            ("str", 5820982911946154508, "5820982911946154508"),
            ("str", 9007199254740993, "9007199254740993"),
            ("str", 18446744073709551615, "18446744073709551615"),
            ("str", 9007199254740991.0, "9007199254740991.0"),
            ("str", 1.5, "1.5"),
            ("str", True, "true"),
            ("int", "42", 42),
            ("int", " -3 ", -3),
            ("int", 2.0, 2),
            ("float", "2.5", 2.5),
            ("float", 3, 3.0),
            ("bool", "Yes", True),
            ("bool", 0, False),
            ("lower", " FedEx ", "fedex"),
            ("upper", "us", "US"),
            ("datetime", "2026-11-20T10:15:31-05:00", "2026-11-20T10:15:31-05:00"),
            ("datetime", "2024-08-02T19:26:52.000Z", "2024-08-02T19:26:52Z"),
            ("datetime", "2026-11-20T16:15:31", "2026-11-20T16:15:31Z"),
            ("datetime", 1700000000, "2023-11-14T22:13:20Z"),
        ],
    )
    def test_converts(self, tmp_path: Path, kind: str, value: Any, expected: Any) -> None:
        """Each `as` converts what it accepts."""
        assert {"out": expected} == self.mapping(tmp_path, kind).apply({"v": value})

    @pytest.mark.parametrize(
        ("kind", "value", "message"),
        [
            ("str", {"a": 1}, "must be a string, a number or a boolean"),
            # From 2^53 on a float may stand for its neighbour: 2^53 + 1 parses as 2^53.
            ("str", 9007199254740993.0, INEXACT),
            ("str", 2.0**53, INEXACT),
            ("str", 18446744073709551616.0, INEXACT),
            ("int", 9007199254740994.0, INEXACT),
            ("int", "2.5", "must be an integer"),
            ("int", "1_000", "must be an integer"),
            ("int", True, "must be an integer"),
            ("int", 2.5, "must be an integer"),
            ("float", "nan", "must be a finite number"),
            ("float", False, "must be a number"),
            ("bool", "maybe", "must be a boolean"),
            ("upper", ["us"], "must be a string, a number or a boolean"),
            ("datetime", "20th of November", "must be an ISO 8601 date-time"),
        ],
    )
    def test_refuses(self, tmp_path: Path, kind: str, value: Any, message: str) -> None:
        """A value `as` cannot convert is unmappable at its path, without the value."""
        expected = [{"path": "/v", "message": message}]
        assert expected == unmappable(self.mapping(tmp_path, kind), {"v": value})

    def test_text_blank_is_absent(self, tmp_path: Path) -> None:
        """Blank text counts as absent, so the default applies."""
        mapping = compile_fields(tmp_path, 'note = { path = "n", as = "text", default = "-" }')
        assert {"note": "-"} == mapping.apply({"n": " \u200b<br> \n "})


class TestSanitizeText:
    @pytest.mark.parametrize(
        ("raw", "expected"),
        [
            ("  Leave   at\tthe door  ", "Leave at the door"),
            ("<b>Gift</b> wrap<br/>please", "Gift wrap please"),
            ("<script>alert(1)</script>hi", "alert(1) hi"),
            ("a < b and c > d", "a < b and c > d"),
            ("line one\r\n\r\n\n  line two ", "line one\nline two"),
            ("nul\x00bell\x07esc\x1b[31m", "nulbellesc[31m"),
            ("zero\u200bwidth \u202eevil", "zerowidth evil"),
            ("unclosed <b tag", "unclosed <b tag"),
            ("", ""),
        ],
    )
    def test_cleans(self, raw: str, expected: str) -> None:
        """Tags, control and invisible characters go; whitespace collapses; lines are kept."""
        assert expected == sanitize_text(raw)

    def test_cap(self) -> None:
        """Text is cut to 1000 characters."""
        assert 1000 == len(sanitize_text("x" * 5000))


class TestLoadMappingsErrors:
    @pytest.mark.parametrize(
        ("fields", "key"),
        [
            ('a = { path = "x", as = "money" }', "thing.fields.a.as"),
            ('a = { path = "x", colour = "red" }', "thing.fields.a.colour"),
            ('a = { path = "x", default = "d", required = true }', "thing.fields.a.required"),
            ('a = { path = "x", map_default = "d" }', "thing.fields.a.map_default"),
            ('a = { path = "x", map = { b = [1] } }', "thing.fields.a.map.b"),
            ("a = { const = [1, 2] }", "thing.fields.a.const"),
            ('a = { const = 1, as = "str" }', "thing.fields.a.as"),
            ('a = { path = "x", const = 1 }', "thing.fields.a"),
            ('a = { as = "str" }', "thing.fields.a"),
            ('a = "items[*].sku"', "thing.fields.a"),
            ('a = "x..y"', "thing.fields.a"),
            ('a = "x[one]"', "thing.fields.a"),
            ('a = "x[0"', "thing.fields.a"),
            ('a = { path = ["x", 3] }', "thing.fields.a.path[1]"),
            ('a = { each = "items", value = "." }', "thing.fields.a.each"),
            ('a = { each = "items[*]" }', "thing.fields.a"),
            ('a = { each = "items[*]", fields = { s = "s" }, as = "str" }', "thing.fields.a.as"),
            ("a = { join = [] }", "thing.fields.a.join"),
            ("a = { first = [] }", "thing.fields.a.first"),
            ('a = { first = ["x"], sep = "-" }', "thing.fields.a.sep"),
            ('a = { first = ["x", 3] }', "thing.fields.a.first[1]"),
            ('a = { path = "x", absent = 0 }', "thing.fields.a.absent"),
            ('a = { path = "x", prefix = 1 }', "thing.fields.a.prefix"),
            ('a = { join = ["x"], prefix = "p" }', "thing.fields.a.prefix"),
            ('a = { join = ["x"], sep = 1 }', "thing.fields.a.sep"),
            (
                'a = { each = "i[*]", value = { each = "j[*]", value = "." } }',
                "thing.fields.a.value",
            ),
            ("a = 3", "thing.fields.a"),
            ("a = {}", "thing.fields.a"),
        ],
    )
    def test_bad_field(self, tmp_path: Path, fields: str, key: str) -> None:
        """A bad expression is a ConfigError naming its key."""
        assert key == config_error(tmp_path, HEADER + "[thing.fields]\n" + fields + "\n").key

    def test_type_listed_twice_across_tables(self, tmp_path: Path) -> None:
        """An event type served by two tables is a ConfigError at the second one's types."""
        other = HEADER.replace("[thing]", "[other]")
        text = HEADER + '[thing.fields]\na = "a"\n' + other + '[other.fields]\na = "a"\n'
        assert "other.types" == config_error(tmp_path, text).key

    def test_type_listed_twice_in_table(self, tmp_path: Path) -> None:
        """An event type listed twice in one table is a ConfigError."""
        text = HEADER.replace('["thing.updated"]', '["thing.updated", "thing.updated"]')
        assert "thing.types" == config_error(tmp_path, text + '[thing.fields]\na = "a"\n').key

    @pytest.mark.parametrize(
        ("text", "key"),
        [
            (
                '[thing]\npayload_schema = "p"\nmodel_schema = "m"\n[thing.fields]\na = "a"\n',
                "thing.types",
            ),
            (
                '[thing]\ntypes = ["t"]\nmodel_schema = "m"\n[thing.fields]\na = "a"\n',
                "thing.payload_schema",
            ),
            (HEADER, "thing.fields"),
            (HEADER + 'colour = "red"\n[thing.fields]\na = "a"\n', "thing.colour"),
            (
                HEADER + 'occurred_at = { each = "x[*]", value = "." }\n[thing.fields]\na = "a"\n',
                "thing.occurred_at",
            ),
            ('thing = "x"\n', "thing"),
            ("", "(file)"),
            ("[thing\n", "(toml)"),
        ],
    )
    def test_bad_model_table(self, tmp_path: Path, text: str, key: str) -> None:
        """A bad model table or file is a ConfigError naming the key."""
        assert key == config_error(tmp_path, text).key

    def test_unknown_schema(self, tmp_path: Path) -> None:
        """With schema_names, a schema that does not exist is a ConfigError."""
        path = tmp_path / "thing.toml"
        path.write_text(HEADER + '[thing.fields]\na = "a"\n')
        with pytest.raises(ConfigError) as info:
            load_mappings(path, schema_names={"thing.v1"})
        assert "thing.payload_schema" == info.value.key

    def test_missing_file(self, tmp_path: Path) -> None:
        """A missing file is a ConfigError."""
        with pytest.raises(ConfigError) as info:
            load_mappings(tmp_path / "nope.toml")
        assert "(file)" == info.value.key
