"""Unit tests for router.schemas.SchemaRegistry and the schemas in config/schemas/."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson
import pytest

from router.errors import ConfigError, InvalidPayload
from router.schemas import SchemaRegistry

ROOT = Path(__file__).resolve().parents[2]
SCHEMAS = ROOT / "config" / "schemas"

CUSTOMER = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "type": "object",
    "required": ["email", "lines"],
    "properties": {
        "email": {"type": "string", "pattern": "^[a-z]+@corp\\.example$"},
        "age": {"type": "integer", "minimum": 18},
        "tier": {"enum": ["gold", "silver"]},
        "joined": {"type": "string", "format": "date-time"},
        "lines": {
            "type": "array",
            "minItems": 1,
            "items": {
                "type": "object",
                "required": ["sku", "quantity"],
                "properties": {"sku": {"type": "string"}, "quantity": {"type": "integer"}},
                "additionalProperties": False,
            },
        },
    },
    "additionalProperties": False,
}


def write(directory: Path, name: str, content: Any) -> Path:
    path = directory / f"{name}.json"
    path.write_bytes(content if isinstance(content, bytes) else orjson.dumps(content))
    return path


def errors_of(registry: SchemaRegistry, name: str, instance: Any, **kwargs: Any) -> InvalidPayload:
    with pytest.raises(InvalidPayload) as info:
        registry.check(name, instance, **kwargs)
    return info.value


@pytest.fixture
def registry(tmp_path: Path) -> SchemaRegistry:
    write(tmp_path, "customer.v1", CUSTOMER)
    return SchemaRegistry.load(tmp_path)


@pytest.fixture(scope="module")
def project() -> SchemaRegistry:
    return SchemaRegistry.load(SCHEMAS)


class TestSchemaRegistryLoad:
    def test_names_are_file_stems(self, tmp_path: Path) -> None:
        """Every *.json file is loaded under its stem; other files are ignored."""
        write(tmp_path, "order.v1", {"type": "object"})
        write(tmp_path, "shopify.order.v1", True)
        (tmp_path / "README.md").write_text("not a schema")
        assert {"order.v1", "shopify.order.v1"} == SchemaRegistry.load(tmp_path).names()

    def test_project_schemas_load(self) -> None:
        """The schemas shipped in config/schemas/ all compile."""
        expected = {
            "order.v1",
            "order.refund.v1",
            "order.cancellation.v1",
            "inventory.v1",
            "tracking.v1",
            "shopify.order.v1",
            "shopify.fulfillment.v1",
            "shopify.refund.v1",
            "woocommerce.order.v1",
            "woocommerce.deleted.v1",
            "portal.order.v1",
            "inventory.stock.v1",
            "easypost.event.v1",
            "aftership.tracking.v1",
            "shopify.proof.order.v1",
            "shopify.proof.paid.v1",
            "shopify.proof.cancelled.v1",
            "shopify.proof.fulfilled.v1",
            "shopify.proof.refund.v1",
            "shopify.proof.fulfillment.v1",
            "woocommerce.proof.deleted.v1",
        }
        assert expected == SchemaRegistry.load(SCHEMAS).names()

    def test_invalid_json(self, tmp_path: Path) -> None:
        """A file that is not JSON is a ConfigError naming the file."""
        path = write(tmp_path, "bad", b'{"type": ')
        with pytest.raises(ConfigError) as info:
            SchemaRegistry.load(tmp_path)
        assert (str(path), "(json)") == (info.value.file, info.value.key)

    def test_invalid_schema(self, tmp_path: Path) -> None:
        """A schema that breaks the metaschema names the offending location."""
        write(tmp_path, "bad", {"properties": {"a": {"type": "strin"}}})
        with pytest.raises(ConfigError) as info:
            SchemaRegistry.load(tmp_path)
        assert "/properties/a/type" == info.value.key

    def test_invalid_pattern(self, tmp_path: Path) -> None:
        """A regular expression that does not compile is a ConfigError."""
        write(tmp_path, "bad", {"type": "string", "pattern": "("})
        with pytest.raises(ConfigError):
            SchemaRegistry.load(tmp_path)

    def test_other_draft(self, tmp_path: Path) -> None:
        """A schema declaring another draft is refused at key $schema."""
        write(tmp_path, "old", {"$schema": "http://json-schema.org/draft-07/schema#"})
        with pytest.raises(ConfigError) as info:
            SchemaRegistry.load(tmp_path)
        assert "$schema" == info.value.key

    def test_remote_ref_not_fetched(self, tmp_path: Path) -> None:
        """A $ref to a remote document is a ConfigError, never a network fetch."""
        write(tmp_path, "remote", {"$ref": "https://example.com/schema.json"})
        with pytest.raises(ConfigError):
            SchemaRegistry.load(tmp_path)

    def test_missing_folder(self, tmp_path: Path) -> None:
        """A missing folder is a ConfigError."""
        with pytest.raises(ConfigError):
            SchemaRegistry.load(tmp_path / "nope")


class TestSchemaRegistryCheck:
    def test_valid(self, registry: SchemaRegistry) -> None:
        """A valid instance passes silently."""
        instance = {"email": "jane@corp.example", "lines": [{"sku": "A", "quantity": 1}]}
        assert None is registry.check("customer.v1", instance)

    def test_every_failing_path(self, registry: SchemaRegistry) -> None:
        """Every failing location is listed as a JSON Pointer with a value-free message."""
        instance = {
            "email": "jane.doe@example.com",
            "age": 12,
            "tier": "bronze",
            "joined": "yesterday",
            "lines": [{"sku": "A", "quantity": "two"}, {"quantity": 1, "price": 3}],
            "ssn": "123-45-6789",
        }
        error = errors_of(registry, "customer.v1", instance)
        expected = [
            {"path": "/age", "message": "must be at least 18"},
            {"path": "/email", "message": "does not match the pattern"},
            {"path": "/joined", "message": "must be a valid date-time"},
            {"path": "/lines/0/quantity", "message": "must be of type integer"},
            {"path": "/lines/1/price", "message": "is not allowed"},
            {"path": "/lines/1/sku", "message": "is a required property"},
            {"path": "/ssn", "message": "is not allowed"},
            {"path": "/tier", "message": 'must be one of "gold", "silver"'},
        ]
        assert expected == sorted(error.errors or [], key=lambda e: e["path"])
        assert (422, "schema_violation") == (error.status, error.reason)

    def test_no_payload_values_in_body(self, registry: SchemaRegistry) -> None:
        """The 422 body never contains a value from the payload."""
        instance = {
            "email": "jane.doe@example.com",
            "age": 12345,
            "tier": "platinum-secret",
            "lines": [{"sku": 7, "quantity": "nine-nine"}],
            "phone": "555-555-0100",
        }
        body = orjson.dumps(errors_of(registry, "customer.v1", instance).body()).decode()
        for value in ("jane.doe@example.com", "12345", "platinum-secret", "nine-nine"):
            assert value not in body

    def test_root_path(self, registry: SchemaRegistry) -> None:
        """An error at the root is reported at "/"."""
        error = errors_of(registry, "customer.v1", ["not", "an", "object"])
        assert [{"path": "/", "message": "must be of type object"}] == error.errors

    def test_reason(self, registry: SchemaRegistry) -> None:
        """The caller chooses the reason, e.g. unmappable for model schemas."""
        assert "unmappable" == errors_of(registry, "customer.v1", {}, reason="unmappable").reason

    def test_capped_at_twenty(self, registry: SchemaRegistry) -> None:
        """At most 20 errors are listed."""
        instance = {"email": "x", "lines": [{"sku": 1, "quantity": "a"} for _ in range(30)]}
        assert 20 == len(errors_of(registry, "customer.v1", instance).errors or [])

    def test_pointer_escaping(self, registry: SchemaRegistry) -> None:
        """Keys holding "/" or "~" are escaped in the pointer."""
        instance = {"email": "a@corp.example", "lines": [{"sku": "A", "quantity": 1}], "a/b~c": 1}
        error = errors_of(registry, "customer.v1", instance)
        assert [{"path": "/a~1b~0c", "message": "is not allowed"}] == error.errors

    def test_unknown_name(self, registry: SchemaRegistry) -> None:
        """An unknown schema name is a KeyError (a start-up check, not a client error)."""
        with pytest.raises(KeyError):
            registry.check("nope.v1", {})


class TestModelSchemas:
    def test_order_source_optional(self, project: SchemaRegistry) -> None:
        """An order is valid with or without `source`, and without a shipping address."""
        order = {
            "order_id": "1",
            "status": "received",
            "lines": [{"sku": "A", "quantity": 1}],
            "created_at": "2026-11-20T10:15:31Z",
        }
        assert None is project.check("order.v1", order)
        assert None is project.check("order.v1", {**order, "source": "shopify"})

    def test_order_rejects_pii_and_bad_lines(self, project: SchemaRegistry) -> None:
        """Unknown fields such as customer_email and bad lines are refused."""
        order = {
            "order_id": "1",
            "status": "received",
            "lines": [{"sku": "", "quantity": 0}],
            "created_at": "2026-11-20T10:15:31",
            "customer_email": "jane@example.com",
            "shipping_address": {"name": "J", "line1": "1", "city": "A", "country": "usa"},
        }
        paths = {e["path"] for e in errors_of(project, "order.v1", order).errors or []}
        expected = {
            "/lines/0/sku",
            "/lines/0/quantity",
            "/created_at",
            "/customer_email",
            "/shipping_address/country",
        }
        assert expected == paths

    def test_inventory_exactly_one_quantity(self, project: SchemaRegistry) -> None:
        """An inventory update has exactly one of on_hand and delta."""
        base = {"sku": "A", "location": "default", "as_of": "2026-11-20T10:15:31Z"}
        assert None is project.check("inventory.v1", {**base, "on_hand": 3})
        assert None is project.check("inventory.v1", {**base, "delta": -2})
        errors_of(project, "inventory.v1", base)
        errors_of(project, "inventory.v1", {**base, "on_hand": 3, "delta": 1})
        errors_of(project, "inventory.v1", {**base, "on_hand": -1})

    def test_tracking_status_vocabulary(self, project: SchemaRegistry) -> None:
        """A tracking status outside the vocabulary is refused."""
        update = {
            "tracking_code": "1Z",
            "carrier": "ups",
            "status": "delivered",
            "occurred_at": "2026-11-20T10:15:31Z",
        }
        assert None is project.check("tracking.v1", update)
        error = errors_of(project, "tracking.v1", {**update, "status": "lost"})
        assert ["/status"] == [e["path"] for e in error.errors or []]
