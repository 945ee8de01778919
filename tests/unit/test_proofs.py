"""Meaning comes from what is signed: a topic header routes a delivery but never changes what
its body means (router.envelope.prove_topic, router.mapping.proofs, the [proofs] tables of
config/mappings/). Each case is a body as signed and the topic it is sent under."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import orjson
import pytest

from router.envelope import Delivery, build_event
from router.errors import ConfigError, InvalidPayload
from router.mapping import load_proofs
from router.schemas import SchemaRegistry
from router.settings import Settings
from router.sources import Source, build_sources

ROOT = Path(__file__).resolve().parents[2]
CORPUS = ROOT / "tests" / "fixtures" / "providers"
SAMPLES = ROOT / "config" / "samples"


def body(path: Path, **changes: Any) -> bytes:
    return orjson.dumps({**orjson.loads(path.read_bytes()), **changes})


ORDER = body(SAMPLES / "shopify-orders-create.json")
PENDING = body(CORPUS / "shopify" / "2024-04-order-pending.json")
CANCELLED = body(CORPUS / "shopify" / "variant-cancelled.json")
FULFILLED = body(CORPUS / "shopify" / "2024-04-order-fulfilled.json")
PAID = body(CORPUS / "shopify" / "variant-partially-paid-then-paid.json")
REFUND = body(CORPUS / "shopify" / "2024-04-refund-509562969.json")
FULFILLMENT = body(SAMPLES / "shopify-fulfillments-create.json")
WOO_ORDER = body(CORPUS / "woocommerce" / "order-727.json")
WOO_DELETED = body(CORPUS / "woocommerce" / "deleted-727.json")

UNPROVEN = [
    # (case, source, body, topic, a path the errors name)
    ("an order's creation as its cancellation", "shopify", ORDER, "orders/cancelled",
     "/cancelled_at"),
    ("a pending order as paid", "shopify", PENDING, "orders/paid", "/financial_status"),
    ("an open order as fulfilled", "shopify", ORDER, "orders/fulfilled", "/fulfillment_status"),
    ("a fulfillment as an order", "shopify", FULFILLMENT, "orders/create", "/"),
    ("a fulfillment as an order's update", "shopify", FULFILLMENT, "orders/updated", "/"),
    ("a fulfillment as a refund", "shopify", FULFILLMENT, "refunds/create",
     "/refund_line_items"),
    ("a refund as a fulfillment", "shopify", REFUND, "fulfillments/create", "/status"),
    ("a refund as a fulfillment's update", "shopify", REFUND, "fulfillments/update", "/status"),
    ("a WooCommerce order as its deletion", "woocommerce", WOO_ORDER, "order.deleted", None),
]

PROVEN = [
    # (case, source, body, topic, canonical type)
    ("an order", "shopify", ORDER, "orders/create", "order.created"),
    ("a cancelled order", "shopify", CANCELLED, "orders/cancelled", "order.cancelled"),
    ("a cancelled order's update", "shopify", CANCELLED, "orders/updated", "order.updated"),
    ("a paid order", "shopify", PAID, "orders/paid", "order.updated"),
    ("a fulfilled order", "shopify", FULFILLED, "orders/fulfilled", "order.fulfilled"),
    ("a refund", "shopify", REFUND, "refunds/create", "order.refunded"),
    ("a fulfillment", "shopify", FULFILLMENT, "fulfillments/create", "shipment.updated"),
    ("a WooCommerce deletion", "woocommerce", WOO_DELETED, "order.deleted", "order.cancelled"),
    ("a WooCommerce order", "woocommerce", WOO_ORDER, "order.updated", "order.updated"),
]


@pytest.fixture
def pipeline(settings: Settings) -> tuple[dict[str, Source], SchemaRegistry]:
    registry = SchemaRegistry.load(settings.server.schemas)
    return build_sources(settings, registry), registry


def deliver(source: Source, payload: bytes, headers: dict[str, str]) -> Delivery:
    return Delivery("d-1", payload, orjson.loads(payload), headers, 0.0)


def topic_headers(source: Source, topic: str) -> dict[str, str]:
    assert source.settings.topic_header is not None
    return {source.settings.topic_header: topic}


class TestTopicProofs:
    @pytest.mark.parametrize(("source_name", "payload", "topic", "path"),
                             [row[1:] for row in UNPROVEN], ids=[row[0] for row in UNPROVEN])
    def test_a_body_that_does_not_prove_its_topic_is_unusable(
        self, pipeline, source_name, payload, topic, path
    ):
        """Signed, but sent under a topic its body does not show: unproven_topic, with the
        failing paths and no values."""
        sources, registry = pipeline
        source = sources[source_name]
        with pytest.raises(InvalidPayload) as info:
            build_event(source, registry, deliver(source, payload, topic_headers(source, topic)))
        assert "unproven_topic" == info.value.reason
        paths = [error["path"] for error in info.value.errors or []]
        assert paths
        if path is not None:
            assert path in paths

    @pytest.mark.parametrize(("source_name", "payload", "topic", "type_"),
                             [row[1:] for row in PROVEN], ids=[row[0] for row in PROVEN])
    def test_a_body_that_proves_its_topic_is_its_event(
        self, pipeline, source_name, payload, topic, type_
    ):
        """The providers' own payloads pass the proof of their topic."""
        sources, registry = pipeline
        source = sources[source_name]
        event = build_event(source, registry,
                            deliver(source, payload, topic_headers(source, topic)))
        assert type_ == event.type

    def test_every_header_routed_shipped_topic_has_a_proof(self, pipeline):
        """Every topic a shipped provider source takes from an unsigned header has a proof,
        except WooCommerce's order topics, whose payload schema already says "an order"."""
        sources, _ = pipeline
        unproven = {
            (name, topic) for name, source in sources.items()
            if source.settings.topic_header and source.settings.on_invalid == "hold"
            for topic in source.settings.events if topic not in source.proofs
        }
        assert {("woocommerce", "order.created"), ("woocommerce", "order.updated"),
                ("woocommerce", "order.restored")} == unproven

    def test_the_shopify_status_comes_from_the_body(self, pipeline):
        """Whatever the topic, a body with cancelled_at is a cancelled order and a fulfilled
        one is sent (completed); an open order is received."""
        sources, registry = pipeline
        shopify = sources["shopify"]

        def status(payload: bytes, topic: str) -> str:
            event = build_event(shopify, registry,
                                deliver(shopify, payload, topic_headers(shopify, topic)))
            return orjson.loads(event.body)["data"]["status"]

        assert ["cancelled", "completed", "received"] == [
            status(CANCELLED, "orders/updated"), status(FULFILLED, "orders/updated"),
            status(ORDER, "orders/updated")]


class TestNamedEvent:
    def test_a_topic_header_must_agree_with_the_event_the_body_names(self, settings):
        """A source that reads a topic header and whose body names its event too (EasyPost's
        description) takes the delivery only when the two agree."""
        easypost = dataclasses.replace(settings.sources["easypost"],
                                       topic_header="X-EasyPost-Event")
        changed = dataclasses.replace(settings, sources={**settings.sources,
                                                         "easypost": easypost})
        registry = SchemaRegistry.load(settings.server.schemas)
        source = build_sources(changed, registry)["easypost"]
        payload = body(CORPUS / "easypost" / "tracker-updated.json")
        agreed = deliver(source, payload, {"X-EasyPost-Event": "tracker.updated"})
        assert "shipment.updated" == build_event(source, registry, agreed).type
        with pytest.raises(InvalidPayload) as info:
            build_event(source, registry,
                        deliver(source, payload, {"X-EasyPost-Event": "tracker.created"}))
        assert ("unproven_topic", [{"path": "/description",
                                    "message": "differs from the topic header"}]) == (
            info.value.reason, info.value.errors)


class TestLoadProofs:
    def test_the_shipped_proofs_name_shipped_schemas(self, settings):
        """config/mappings/shopify.toml's proofs load against config/schemas/."""
        names = SchemaRegistry.load(settings.server.schemas).names()
        proofs = load_proofs(ROOT / "config" / "mappings" / "shopify.toml", schema_names=names)
        assert "shopify.proof.cancelled.v1" == proofs["orders/cancelled"]

    @pytest.mark.parametrize(("text", "key", "problem"), [
        ('[proofs]\n"orders/paid" = "nope.v1"\n', 'proofs."orders/paid"', "not in the schemas"),
        ('[proofs]\n"orders/paid" = 1\n', 'proofs."orders/paid"', "must be a schema name"),
        ('proofs = 1\n', "proofs", "must be a table"),
    ])
    def test_a_bad_proof_is_a_config_error(self, tmp_path, text, key, problem):
        """A proof naming no known schema, or not a name, stops start-up naming the key."""
        path = tmp_path / "m.toml"
        path.write_text(text)
        with pytest.raises(ConfigError) as info:
            load_proofs(path, schema_names={"shopify.order.v1"})
        assert (str(path), key) == (info.value.file, info.value.key)
        assert problem in info.value.problem
