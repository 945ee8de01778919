"""[storefront] checked at start-up naming the file and the key; its queue declared only when
switched on, fed by the labels consumer's notification; credentials read only when asked."""

from __future__ import annotations

from pathlib import Path

import pytest

from router.broker.topology import Topology
from router.errors import ConfigError
from router.settings import load_settings

ON = """
[storefront]
enabled = true
[storefront.shopify]
base_url = "https://example.myshopify.com"
access_token = "env:SHOPIFY_ADMIN_TOKEN"
notify_customer = false
[storefront.woocommerce]
base_url = "https://shop.example.com"
max_in_flight = 2
consumer_key = "env:WOO_KEY"
consumer_secret = "env:WOO_SECRET"
"""
ENV = {"SHOPIFY_ADMIN_TOKEN": "shpat_x", "WOO_KEY": "ck_x", "WOO_SECRET": "cs_x"}


def load(tmp_path: Path, text: str, **options):
    path = tmp_path / "router.toml"
    path.write_text(text)
    return load_settings(path, environ=ENV, **options)


class TestStorefrontSettings:
    def test_off_by_default_and_no_queue(self, tmp_path):
        settings = load(tmp_path, "")
        assert not settings.storefront.enabled
        assert "storefront" not in " ".join(Topology.of(settings.broker).names())

    def test_on_declares_its_queue_and_reads_the_credentials_only_when_asked(self, tmp_path):
        settings = load(tmp_path, ON)
        assert {} == settings.storefront.stores["shopify"].credentials
        names = Topology.of(settings.broker).names()
        assert {"storefront", "storefront.dead"} <= set(names)
        resolved = load(tmp_path, ON, resolve_store_secrets=True).storefront
        assert {"access_token": "shpat_x"} == resolved.stores["shopify"].credentials
        assert not resolved.stores["shopify"].notify_customer
        assert {"consumer_key": "ck_x", "consumer_secret": "cs_x"} == \
            resolved.stores["woocommerce"].credentials
        assert resolved.stores["woocommerce"].complete_order

    def test_max_in_flight_per_store_reaches_its_driver(self, tmp_path):
        stores = load(tmp_path, ON).storefront.stores
        assert 4 == stores["shopify"].driver_config(10.0)["max_in_flight"]  # the default
        assert 2 == stores["woocommerce"].driver_config(10.0)["max_in_flight"]

    @pytest.mark.parametrize(("text", "key"), [
        (ON.replace('"env:SHOPIFY_ADMIN_TOKEN"', '"shpat_inline"'),
         "storefront.shopify.access_token"),
        (ON.replace('base_url = "https://shop.example.com"', 'base_url = "ftp://x"'),
         "storefront.woocommerce.base_url"),
        (ON.replace('consumer_secret = "env:WOO_SECRET"\n', ""),
         "storefront.woocommerce.consumer_secret"),
        ("[storefront]\nenabled = true\n", "storefront.enabled"),
        (ON + "[storefront.portal]\nbase_url = \"https://p.example\"\n", "storefront.portal.kind"),
        (ON.replace("notify_customer = false", "notify_customr = false"),
         "storefront.shopify.notify_customr"),
        (ON.replace("max_in_flight = 2", "max_in_flight = 0"),
         "storefront.woocommerce.max_in_flight"),
    ])
    def test_mistakes_name_the_key(self, tmp_path, text, key):
        with pytest.raises(ConfigError) as caught:
            load(tmp_path, text)
        assert key in str(caught.value)
