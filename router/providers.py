"""Everything we know about each provider, one row each: the verification scheme it signs
with, where it puts the topic, its delivery id and its event time, what to do with an
authentic delivery we cannot use, and the headers it sends with a delivery besides the
signature (what `sign` and `send-test` send, as the provider would).  A source names its
provider with `scheme = "<name>"`; any of these can be overridden per source.

A third-party provider's deliveries are held when they cannot be used (`on_invalid =
"hold"`): they treat every non-2xx as a failure and disable a webhook that keeps failing
(WooCommerce after 5, Shopify after 8 retries over 4 hours), so one odd order must not cut a
store off. A source without a provider row is one of our own feeds (generic hmac, bearer,
basic, jwt), whose sender can fix a request: it is told why with a 422 (`"reject"`).
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from router.verify import build_verifier

if TYPE_CHECKING:
    from router.settings import Settings

# (now, delivery id) -> the delivery headers a provider sends besides topic, id and signature
DeliveryHeaders = Callable[[float, str], dict[str, str]]


@dataclass(frozen=True)
class Provider:
    name: str
    scheme: str  # its verification scheme (router.verify)
    topic_header: str | None = None
    topic_field: str | None = None  # where the topic is when it is in the body
    id_headers: tuple[str, ...] = ()  # the first one present is the delivery id
    id_field: str | None = None  # the delivery id when it is in the body
    occurred_at_header: str | None = None
    delivery_headers: DeliveryHeaders | None = None
    on_invalid: str = "hold"  # an authentic delivery we cannot map: "hold" or "reject" (422)


def _iso_utc(now: float) -> str:
    return datetime.fromtimestamp(now, UTC).isoformat().replace("+00:00", "Z")


PROVIDERS: dict[str, Provider] = {
    provider.name: provider
    for provider in (
        Provider(
            "shopify", "shopify",
            topic_header="X-Shopify-Topic",
            id_headers=("X-Shopify-Event-Id", "X-Shopify-Webhook-Id"),
            occurred_at_header="X-Shopify-Triggered-At",
            delivery_headers=lambda now, delivery_id: {
                "X-Shopify-Webhook-Id": delivery_id, "X-Shopify-Triggered-At": _iso_utc(now)
            },
        ),
        Provider(
            "woocommerce", "woocommerce",
            topic_header="X-WC-Webhook-Topic",
            id_headers=("X-WC-Webhook-Delivery-ID",),
            delivery_headers=lambda now, delivery_id: {"X-WC-Webhook-Delivery-ID": delivery_id},
        ),
        Provider(
            "github", "github",
            topic_header="X-GitHub-Event",
            id_headers=("X-GitHub-Delivery",),
            delivery_headers=lambda now, delivery_id: {"X-GitHub-Delivery": delivery_id},
        ),
        Provider("stripe", "stripe", topic_field="type", id_field="id"),
        Provider("standard-webhooks", "standard-webhooks", topic_field="type",
                 id_headers=("webhook-id", "svix-id")),
        Provider("easypost", "easypost", topic_field="description", id_field="id"),
        Provider("aftership", "aftership", topic_field="event", id_field="event_id"),
    )
}


def signed_headers(
    settings: Settings, source_name: str, body: bytes, topic: str | None = None,
    delivery_id: str | None = None,
) -> dict[str, str]:
    """The headers a provider would send with `body` to `source_name` (signature included);
    a fresh delivery id unless one is given (a provider's retry keeps its id)."""
    s = settings.sources[source_name]
    verifier = build_verifier(s.scheme, s.secrets, s.options, file=str(settings.file),
                              key=f"sources.{source_name}")
    delivery_id = delivery_id or str(uuid.uuid4())
    now = time.time()
    headers = {"Content-Type": s.content_types[0] if s.content_types else "application/json"}
    if s.topic_header:
        headers[s.topic_header] = topic or next(iter(s.events), "")
    if s.id_headers:
        headers[s.id_headers[0]] = delivery_id
    headers.update(verifier.sign(body, now, delivery_id))
    provider = PROVIDERS.get(s.scheme)
    if provider is not None and provider.delivery_headers is not None:
        headers.update(provider.delivery_headers(now, delivery_id))
    return headers
