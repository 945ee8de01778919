"""Storefront write-back: tell the order's own store that it shipped, with the tracking
number (the `storefront` consumer's outgoing calls). One module per store API behind one
interface (`contract.Storefront`); the registry below is the list of them.

    driver = open_storefront("shopify", session, base_url=..., access_token=...)
    result = await driver.fulfil("450789469", Tracking("9400...", "USPS", url), True)
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import aiohttp

from consumers.storefronts.contract import Storefront, Tracking, WriteBack
from consumers.storefronts.errors import (
    StoreAuthRevoked,
    StoreError,
    StoreRefused,
    StoreUnavailable,
    Uncertain,
)
from consumers.storefronts.shopify import Shopify
from consumers.storefronts.woocommerce import WooCommerce

DRIVERS: dict[str, Callable[..., Storefront]] = {
    "shopify": Shopify,
    "woocommerce": WooCommerce,
}


def open_storefront(kind: str, session: aiohttp.ClientSession, **config: Any) -> Storefront:
    """The driver for a store of `kind`, on `session`, with that driver's own settings
    (`base_url` and its credentials; see each driver's constructor)."""
    try:
        driver = DRIVERS[kind]
    except KeyError:
        raise ValueError(f"unknown storefront {kind!r} (known: {', '.join(DRIVERS)})") from None
    return driver(session, **config)


__all__ = ["DRIVERS", "StoreAuthRevoked", "StoreError", "StoreRefused", "StoreUnavailable",
           "Storefront", "Tracking", "Uncertain", "WriteBack", "open_storefront"]
