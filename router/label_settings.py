"""The `[labels]` settings: the labels consumer (consumers.labels) buys a shipping label from a
carrier for each order that becomes ready_to_ship. Off unless `enabled = true`; checked at
start-up like every table (ConfigError naming the file and the key).

    [labels]
    enabled = true
    carrier = "easypost"
    api_key = "env:EASYPOST_API_KEY"          # a secret reference, never the key itself
    base_url = "https://api.easypost.com/v2"  # tests and the walkthrough: the emulator
    currency = "USD"
    allowed = ["USPS", "UPS:Ground"]          # cheapest among these (CARRIER or CARRIER:SERVICE)
    retry_ladder = [5, 30, 120, 600, 1800, 3600]  # seconds; default: OUTAGE_LADDER
    [labels.by_country]                       # or a fixed service per destination country
    CA = "UPS:Standard"
    [labels.from_address]                     # the warehouse
    name = "…"  line1 = "…"  city = "…"  region = "NV"  postal_code = "…"  country = "US"
    [labels.default_parcel]                   # ounces and inches
    weight_oz = 16.0
    [labels.parcels."SKU-1"]                  # per SKU: its weight (and box, when shipped alone)
    weight_oz = 8.0  length_in = 6.0  width_in = 4.0  height_in = 2.0
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

from router.config_table import Table, retry_ladder
from router.secrets import resolve_secret

# The drivers of consumers/carriers/ (CARRIERS there; a unit test keeps the two alike).
KNOWN_CARRIERS = ("easypost",)
EASYPOST_URL = "https://api.easypost.com/v2"
ADDRESS_REQUIRED = ("name", "line1", "city", "postal_code", "country")
ADDRESS_OPTIONAL = ("line2", "region", "company", "phone", "email")
# The labels and storefront consumers' default retry ladder (seconds): quick at first (a
# blip, a deploy), then every 10 and 30 minutes, then hourly until a day has passed (~24.7 h
# in all, as Svix's own schedule spans ~27 h): a carrier or store down for a minute or an
# hour never dead-letters the label or the write-back, and once it is back the message waits
# at most an hour. Retry-After and a rate limit's refill time pick a rung from these.
OUTAGE_LADDER = (5, 30, 120, 600, 1800, *(3600,) * 24)


@dataclass(frozen=True)
class ParcelSize:
    """Weight in ounces; dimensions in inches, all three or none."""

    weight_oz: float
    length_in: float | None = None
    width_in: float | None = None
    height_in: float | None = None


@dataclass(frozen=True)
class ServiceChoice:
    """A carrier and one of its services (None: any)."""

    carrier: str
    service: str | None = None


@dataclass(frozen=True)
class LabelSettings:
    enabled: bool = False
    carrier: str = "easypost"
    api_key: bytes = b""  # resolved; empty when off or not asked to resolve
    base_url: str = EASYPOST_URL
    timeout: float = 30.0  # seconds per carrier request
    from_address: Mapping[str, str] = field(default_factory=dict)
    currency: str = "USD"
    allowed: tuple[ServiceChoice, ...] = ()  # empty: any rate in `currency`
    by_country: Mapping[str, ServiceChoice] = field(default_factory=dict)
    default_parcel: ParcelSize = ParcelSize(16.0)
    parcels: Mapping[str, ParcelSize] = field(default_factory=dict)  # SKU -> its parcel
    verify_address: bool = True  # ask the carrier to refuse an undeliverable address
    retry_ladder: tuple[int, ...] = OUTAGE_LADDER  # the labels queue's own (topology)


def read_labels(t: Table, base: Path, env: Mapping[str, str], resolve: bool) -> LabelSettings:
    """The [labels] table; with `resolve`, the API key of an enabled one is read."""
    d = LabelSettings()
    enabled = t.get("enabled", bool, d.enabled)
    carrier = t.get("carrier", str, d.carrier)
    if carrier not in KNOWN_CARRIERS:
        raise t.error("carrier", f"unknown carrier {carrier!r}; known: "
                                 f"{', '.join(KNOWN_CARRIERS)}")
    base_url = t.get("base_url", str, d.base_url)
    parts = urlsplit(base_url)
    if parts.scheme not in ("https", "http") or not parts.hostname:
        raise t.error("base_url", "must be an https:// URL (http:// only for an emulator)")
    ref = t.get("api_key", str, None)
    if enabled and ref is None:
        raise t.error("api_key", "is required: a reference like 'env:EASYPOST_API_KEY'")
    api_key = b""
    if ref is not None and enabled and resolve:
        api_key = resolve_secret(ref, file=t.file, key=f"{t.key}.api_key", base=base,
                                 environ=env)
    elif ref is not None and not ref.startswith(("env:", "file:")):
        raise t.error("api_key", "secrets are references: 'env:NAME' or 'file:PATH', never "
                                 "inline values")
    currency = t.get("currency", str, d.currency)
    if not re.fullmatch(r"[A-Za-z]{3}", currency):
        raise t.error("currency", "must be an ISO 4217 code such as USD")
    allowed = tuple(_service(t, "allowed", text) for text in t.strings("allowed"))
    countries = t.table("by_country")
    by_country = {}
    for country in countries.data:
        if not re.fullmatch(r"[A-Za-z]{2}", country):
            raise countries.error(country, "must be an ISO 3166-1 alpha-2 country code")
        by_country[country.upper()] = _service(countries, country,
                                               countries.get(country, str))
    countries.done()
    from_address = _address(t.table("from_address"), enabled)
    default_parcel = _parcel(t.table("default_parcel"), d.default_parcel)
    parcels_table = t.table("parcels")
    parcels = {sku: _parcel(parcels_table.table(sku), None) for sku in parcels_table.data}
    parcels_table.done()
    s = LabelSettings(
        enabled=enabled, carrier=carrier, api_key=api_key, base_url=base_url,
        timeout=t.positive("timeout", float, d.timeout), from_address=from_address,
        currency=currency.upper(), allowed=allowed, by_country=by_country,
        default_parcel=default_parcel, parcels=parcels,
        verify_address=t.get("verify_address", bool, d.verify_address),
        retry_ladder=retry_ladder(t, d.retry_ladder),
    )
    t.done()
    return s


def _service(t: Table, key: str, text: str) -> ServiceChoice:
    carrier, _, service = text.partition(":")
    if not carrier.strip() or (_ and not service.strip()):
        raise t.error(key, f"{text!r}: expected CARRIER or CARRIER:SERVICE, e.g. 'UPS:Ground'")
    return ServiceChoice(carrier.strip(), service.strip() or None)


def _address(t: Table, required: bool) -> dict[str, str]:
    address = {}
    for name in (*ADDRESS_REQUIRED, *ADDRESS_OPTIONAL):
        value = t.get(name, str, None)
        if value is not None and value.strip():
            address[name] = value.strip()
        elif required and name in ADDRESS_REQUIRED:
            raise t.error(name, "is required: the warehouse's address labels are sent from")
    if "country" in address and not re.fullmatch(r"[A-Za-z]{2}", address["country"]):
        raise t.error("country", "must be an ISO 3166-1 alpha-2 country code")
    t.done()
    return address


def _parcel(t: Table, default: ParcelSize | None) -> ParcelSize:
    weight = t.positive("weight_oz", float, None if default is None else default.weight_oz)
    if weight is None:
        raise t.error("weight_oz", "is required (ounces)")
    sizes = [t.positive(name, float, None) for name in ("length_in", "width_in", "height_in")]
    if any(size is None for size in sizes) and any(size is not None for size in sizes):
        raise t.error("length_in", "give length_in, width_in and height_in together, or none")
    t.done()
    return ParcelSize(weight, *sizes)
