"""The `[storefront]` settings: the storefront consumer (consumers.storefront) tells the order's
own store that it shipped, with the tracking number of the label the labels consumer bought.
Off unless `enabled = true`; checked at start-up like every table (ConfigError naming the
file and the key). One sub-table per source whose orders get the write-back, named as the
source in [sources] (the kind defaults to that name):

    [storefront]
    enabled = true
    timeout = 10.0                                 # seconds per store request
    retry_ladder = [5, 30, 120, 600, 1800, 3600]   # seconds; default: OUTAGE_LADDER
    probe_every = 300.0                            # a paused store: one try per this often
    [storefront.shopify]
    base_url = "https://example.myshopify.com"     # tests and the walkthrough: the emulator
    access_token = "env:SHOPIFY_ADMIN_TOKEN"       # a secret reference, never the token
    notify_customer = true                         # Shopify e-mails the tracking number
    max_in_flight = 4                              # requests to this store at a time
    [storefront.woocommerce]
    base_url = "https://shop.example.com"
    consumer_key = "env:WOO_CONSUMER_KEY"
    consumer_secret = "env:WOO_CONSUMER_SECRET"
    complete_order = true                          # status `completed` once shipped
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from urllib.parse import urlsplit

from router.config_table import Table, retry_ladder
from router.label_settings import OUTAGE_LADDER
from router.secrets import resolve_secret

# The drivers of consumers/storefronts/ (DRIVERS there) and the secrets each one needs.
CREDENTIALS: Mapping[str, tuple[str, ...]] = MappingProxyType({
    "shopify": ("access_token",),
    "woocommerce": ("consumer_key", "consumer_secret"),
})


@dataclass(frozen=True)
class StoreTarget:
    """One source's store: its driver, where it is, its resolved credentials (empty unless
    asked to resolve) and the driver's own option."""

    kind: str
    base_url: str
    credentials: Mapping[str, str] = field(default_factory=dict)
    notify_customer: bool = True  # Shopify
    complete_order: bool = True  # WooCommerce
    # Requests to the store at a time, per process (the drivers' own default is the same).
    max_in_flight: int = 4

    def driver_config(self, timeout: float) -> dict[str, object]:
        """The keyword arguments of consumers.storefronts.open_storefront."""
        config: dict[str, object] = {"base_url": self.base_url, "timeout": timeout,
                                     "max_in_flight": self.max_in_flight, **self.credentials}
        if self.kind == "woocommerce":
            config["complete_order"] = self.complete_order
        return config


@dataclass(frozen=True)
class StorefrontSettings:
    enabled: bool = False
    timeout: float = 10.0  # seconds per store request
    retry_ladder: tuple[int, ...] = OUTAGE_LADDER  # the storefront queue's own (topology)
    # While a store is paused (credentials refused), at most one write-back per this many
    # seconds is tried against it: its success lifts the pause (consumers.storefront).
    probe_every: float = 300.0
    stores: Mapping[str, StoreTarget] = field(default_factory=dict)  # source -> its store


def read_storefront(t: Table, base: Path, env: Mapping[str, str],
                    resolve: bool) -> StorefrontSettings:
    """The [storefront] table; with `resolve`, the credentials of an enabled one are read."""
    d = StorefrontSettings()
    enabled = t.get("enabled", bool, d.enabled)
    timeout = t.positive("timeout", float, d.timeout)
    stores = {}
    for source in [name for name, value in t.data.items() if isinstance(value, Mapping)]:
        stores[source] = _target(t.table(source), base, env, enabled, resolve, source)
    if enabled and not stores:
        raise t.error("enabled", "name at least one store: a [storefront.SOURCE] table")
    s = StorefrontSettings(enabled=enabled, timeout=timeout,
                           retry_ladder=retry_ladder(t, d.retry_ladder),
                           probe_every=t.positive("probe_every", float, d.probe_every),
                           stores=stores)
    t.done()
    return s


def _target(t: Table, base: Path, env: Mapping[str, str], enabled: bool, resolve: bool,
            source: str) -> StoreTarget:
    kind = t.get("kind", str, source)
    if kind not in CREDENTIALS:
        raise t.error("kind", f"unknown storefront {kind!r}; known: {', '.join(CREDENTIALS)}")
    base_url = t.get("base_url", str, None)
    if base_url is None:
        raise t.error("base_url", "is required: the store's address")
    parts = urlsplit(base_url)
    if parts.scheme not in ("https", "http") or not parts.hostname:
        raise t.error("base_url", "must be an https:// URL (http:// only for an emulator)")
    credentials = {}
    for name in CREDENTIALS[kind]:
        ref = t.get(name, str, None)
        if ref is None:
            raise t.error(name, f"is required: a reference like 'env:{source.upper()}_"
                                f"{name.upper()}'")
        if enabled and resolve:
            credentials[name] = resolve_secret(ref, file=t.file, key=f"{t.key}.{name}",
                                               base=base, environ=env).decode()
        elif not ref.startswith(("env:", "file:")):
            raise t.error(name, "secrets are references: 'env:NAME' or 'file:PATH', never "
                                "inline values")
    target = StoreTarget(kind=kind, base_url=base_url, credentials=credentials,
                         notify_customer=t.get("notify_customer", bool, True),
                         complete_order=t.get("complete_order", bool, True),
                         max_in_flight=t.positive("max_in_flight", int, StoreTarget.max_in_flight))
    t.done()
    return target
