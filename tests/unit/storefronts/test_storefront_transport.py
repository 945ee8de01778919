"""The shared pieces: where credentials may go, Retry-After, the registry."""

from __future__ import annotations

import aiohttp
import pytest

from consumers.storefronts import DRIVERS, open_storefront
from consumers.storefronts.contract import Tracking
from consumers.storefronts.errors import StoreError
from consumers.storefronts.transport import check_base_url, retry_after


@pytest.mark.parametrize("url", [
    "https://shop.myshopify.com", "https://shop.example/", "http://127.0.0.1:8801",
    "http://localhost:8802", "http://[::1]:8801"])
def test_base_url_accepted(url):
    """HTTPS anywhere; plain HTTP only to this machine (an emulator)."""
    assert url.rstrip("/") == check_base_url(url)


@pytest.mark.parametrize("url", [
    "http://shop.example", "http://10.0.0.5", "ftp://shop.example", "shop.example", ""])
def test_base_url_refused(url):
    """Credentials never travel in clear to another machine."""
    with pytest.raises(ValueError):
        check_base_url(url)


@pytest.mark.parametrize(("value", "seconds"), [
    ("2.0", 2.0), ("30", 30.0), ("", None), ("soon", None), ("-1", None), ("inf", None)])
def test_retry_after(value, seconds):
    """Delta-seconds, with decimals (Shopify sends "2.0"); anything else is no hint."""
    assert seconds == retry_after({"retry-after": value})


async def test_registry():
    """Both stores are registered; an unknown kind is refused naming the known ones; a
    driver's repr never shows its credentials."""
    assert {"shopify", "woocommerce"} == set(DRIVERS)
    async with aiohttp.ClientSession() as session:
        with pytest.raises(ValueError, match="shopify, woocommerce"):
            open_storefront("magento", session)
        shop = open_storefront("shopify", session, base_url="https://s.myshopify.com",
                               access_token="shpat_secret")
        woo = open_storefront("woocommerce", session, base_url="https://w.example",
                              consumer_key="ck_secret", consumer_secret="cs_secret")
        assert "secret" not in repr(shop) + repr(woo)


def test_errors_steer_the_runner():
    """Unavailable and uncertain retry (Transient), refused dead-letters (Permanent),
    revoked is neither: the caller pauses the store."""
    from consumers.errors import Permanent, Transient
    from consumers.storefronts import (
        StoreAuthRevoked,
        StoreRefused,
        StoreUnavailable,
        Uncertain,
    )
    assert issubclass(StoreUnavailable, Transient) and issubclass(Uncertain, Transient)
    assert issubclass(StoreRefused, Permanent)
    assert not issubclass(StoreAuthRevoked, Transient | Permanent)
    assert all(issubclass(e, StoreError) for e in
               (StoreUnavailable, Uncertain, StoreRefused, StoreAuthRevoked))


def test_empty_tracking_number_is_refused():
    with pytest.raises(ValueError):
        Tracking("  ", "UPS")
