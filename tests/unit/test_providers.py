"""What we know of each provider: the headers it sends with a delivery besides its signature,
and the signed headers `sign` and `send-test` send as the provider would."""

from __future__ import annotations

import time

from multidict import CIMultiDict

from router.providers import PROVIDERS, signed_headers
from router.verify import SCHEMES, build_verifier

NOW = 1_700_000_000.0
DELIVERY = "delivery-9"


class TestDeliveryHeaders:
    def test_shopify(self):
        """Shopify's delivery headers carry the delivery id and the trigger time."""
        headers = PROVIDERS["shopify"].delivery_headers(NOW, DELIVERY)
        assert DELIVERY == headers["X-Shopify-Webhook-Id"]
        assert "2023-11-14T22:13:20Z" == headers["X-Shopify-Triggered-At"]

    def test_github(self):
        """GitHub's delivery headers carry X-GitHub-Delivery."""
        assert DELIVERY == PROVIDERS["github"].delivery_headers(NOW, DELIVERY)["X-GitHub-Delivery"]

    def test_every_provider_names_a_known_scheme(self):
        """Each provider's row points at a verification scheme that exists."""
        assert set() == {p.scheme for p in PROVIDERS.values()} - SCHEMES


class TestSignedHeaders:
    def test_shopify_source(self, settings):
        """For the shipped Shopify source: topic, both id headers with the same delivery id,
        the trigger time, and a signature the source's own verifier accepts."""
        body = b'{"id": 1}'
        headers = signed_headers(settings, "shopify", body, "orders/paid", delivery_id=DELIVERY)
        assert ("orders/paid", DELIVERY, DELIVERY) == (
            headers["X-Shopify-Topic"], headers["X-Shopify-Event-Id"],
            headers["X-Shopify-Webhook-Id"],
        )
        assert headers["X-Shopify-Triggered-At"].endswith("Z")
        s = settings.sources["shopify"]
        verifier = build_verifier(s.scheme, s.secrets, s.options, file="f", key="k")
        assert None is verifier.verify(body, CIMultiDict(headers), time.time())

    def test_a_fresh_delivery_id_each_time(self, settings):
        """Without a delivery id given, each call makes a new one (a new delivery)."""
        first = signed_headers(settings, "woocommerce", b"{}")
        second = signed_headers(settings, "woocommerce", b"{}")
        assert first["X-WC-Webhook-Delivery-ID"] != second["X-WC-Webhook-Delivery-ID"]
