"""Shopify: the Admin GraphQL API. The order's fulfillment orders and fulfillments in one
query; when no fulfillment carries the tracking number yet, `fulfillmentCreate` for the open
fulfillment orders with the tracking and `notifyCustomer`. Rate limits are Shopify's
calculated query cost (https://shopify.dev/docs/api/usage/rate-limits): a THROTTLED answer's
`extensions.cost` says how long the bucket needs to refill. A short wait (up to
`max_throttle_wait` seconds) is waited out here and the request sent again, as Shopify's own
API clients retry a throttled request; a longer one is raised (Throttled, with the wait as
`retry_after`) for the retry ladder, so a consumer never sleeps for minutes holding a batch.
Such answers are rare: the driver paces itself on the bucket every answer reports
(consumers.storefronts.pacing), at most `max_in_flight` requests at a time. That pacing does
hold a batch while the bucket refills, as long as the batch's cost needs: about two minutes for
a hundred write-backs of ~127 points at a standard shop's 100 points a second."""

from __future__ import annotations

import asyncio
import math
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import aiohttp
import orjson

from consumers.storefronts.contract import Tracking, WriteBack
from consumers.storefronts.errors import (
    StoreAuthRevoked,
    StoreRefused,
    StoreUnavailable,
    Throttled,
)
from consumers.storefronts.pacing import MAX_IN_FLIGHT, CostBucket
from consumers.storefronts.transport import Request, Response, check_base_url, retry_after, send

T = TypeVar("T")
API_VERSION = "2024-10"
# Fulfillment orders that can take a fulfillment now; CLOSED, CANCELLED and INCOMPLETE are
# finished, ON_HOLD and SCHEDULED wait for the merchant (FulfillmentOrderStatus).
FULFILLABLE = frozenset({"OPEN", "IN_PROGRESS"})
# Fulfillments that do not stand: one of these with our number is no write-back done.
GONE = frozenset({"CANCELLED", "ERROR", "FAILURE"})
PAGE = 50  # fulfillment orders and fulfillments read per order; Shopify allows up to 250
# THROTTLED with a refill this short (seconds) is waited out in the driver, at most
# THROTTLE_TRIES times per request; longer waits go to the retry ladder.
MAX_THROTTLE_WAIT = 5.0
THROTTLE_TRIES = 3

ORDER_QUERY = f"""query StorefrontOrder($id: ID!) {{
  order(id: $id) {{
    id
    fulfillmentOrders(first: {PAGE}) {{ nodes {{ id status }} }}
    fulfillments(first: {PAGE}) {{ id status trackingInfo(first: 10) {{ number company url }} }}
  }}
}}"""

# What each operation is taken to cost until Shopify has answered it once (its
# requestedQueryCost; shopify.dev/docs/api/usage/rate-limits): the order query the most any
# one query may cost (1,000 points), the mutation its 10 plus its payload's fields well
# rounded up. The first order query is sent alone anyway: its answer tells the bucket.
FIRST_COSTS = {"StorefrontOrder": 1000.0, "StorefrontFulfil": 50.0}

FULFILLMENT_CREATE = """mutation StorefrontFulfil($fulfillment: FulfillmentInput!) {
  fulfillmentCreate(fulfillment: $fulfillment) {
    fulfillment { id status trackingInfo(first: 10) { number company url } }
    userErrors { field message }
  }
}"""


@dataclass(frozen=True)
class OrderState:
    """What the order query read: fulfillment orders (id, status) and the tracking numbers
    of each fulfillment that is not cancelled (id, numbers)."""

    fulfillment_orders: tuple[tuple[str, str], ...]
    fulfillments: tuple[tuple[str, tuple[str, ...]], ...]


def order_gid(order_ref: str) -> str:
    """The order's global id: `gid://shopify/Order/<id>` from the id an order webhook
    carries, or the gid itself."""
    ref = order_ref.strip()
    if re.fullmatch(r"gid://shopify/Order/\d+", ref):
        return ref
    if not re.fullmatch(r"\d+", ref):
        raise StoreRefused(f"not a Shopify order id: {order_ref!r}")
    return f"gid://shopify/Order/{ref}"


def _graphql(version: str, token: str, query: str, variables: dict[str, Any],
             operation: str, writes: bool) -> Request:
    body = {"query": query, "variables": variables, "operationName": operation}
    return Request(
        "POST", f"/admin/api/{version}/graphql.json",
        headers={"X-Shopify-Access-Token": token, "Content-Type": "application/json",
                 "Accept": "application/json"},
        body=orjson.dumps(body), writes=writes,
    )


def build_order_query(order_ref: str, version: str, token: str) -> Request:
    """The query reading the order's fulfillment orders and fulfillments."""
    return _graphql(version, token, ORDER_QUERY, {"id": order_gid(order_ref)},
                    "StorefrontOrder", writes=False)


def build_fulfillment_create(fulfillment_order_ids: list[str], tracking: Tracking,
                             notify_customer: bool, version: str, token: str) -> Request:
    """`fulfillmentCreate` for every line of `fulfillment_order_ids` (no line items given
    means all of them) with the tracking number, company and URL."""
    info: dict[str, str] = {"number": tracking.number, "company": tracking.company}
    if tracking.url:
        info["url"] = tracking.url
    fulfillment = {
        "lineItemsByFulfillmentOrder": [{"fulfillmentOrderId": fo}
                                        for fo in fulfillment_order_ids],
        "trackingInfo": info,
        "notifyCustomer": notify_customer,
    }
    return _graphql(version, token, FULFILLMENT_CREATE, {"fulfillment": fulfillment},
                    "StorefrontFulfil", writes=True)


def throttle_wait(cost: dict[str, Any]) -> float | None:
    """Seconds until the bucket holds the request's cost again, from `extensions.cost`:
    (requestedQueryCost - currentlyAvailable) / restoreRate; None if it does not say."""
    try:
        requested = float(cost["requestedQueryCost"])
        status = cost["throttleStatus"]
        available = float(status["currentlyAvailable"])
        rate = float(status["restoreRate"])
    except (KeyError, TypeError, ValueError):
        return None
    if rate <= 0 or not math.isfinite(requested - available):
        return None
    return max(1.0, math.ceil((requested - available) / rate))


def answer_cost(response: Response) -> Any:
    """The answer's `extensions.cost` (on data and THROTTLED answers alike), None without."""
    try:
        body = orjson.loads(response.body)
    except orjson.JSONDecodeError:
        return None
    extensions = body.get("extensions") if isinstance(body, dict) else None
    return extensions.get("cost") if isinstance(extensions, dict) else None


def read_data(response: Response, root: str) -> dict[str, Any]:
    """`data[root]` of a GraphQL answer, or the error the answer is: HTTP 401/403 and
    ACCESS_DENIED revoke, 429, 5xx and THROTTLED are unavailable, any other error refuses."""
    status = response.status
    if status in (401, 403):
        raise StoreAuthRevoked(f"Shopify answered HTTP {status}: {_text(response)}", status)
    if status == 429 or status >= 500:
        raise StoreUnavailable(f"Shopify answered HTTP {status}", retry_after(response.headers))
    try:
        body = orjson.loads(response.body)
    except orjson.JSONDecodeError:
        body = None
    if not isinstance(body, dict):
        if status >= 400:
            raise StoreRefused(f"Shopify answered HTTP {status}: {_text(response)}", status)
        raise StoreUnavailable(f"Shopify answered HTTP {status} without a GraphQL body")
    errors = body.get("errors")
    if status >= 400 or errors:
        _raise_errors(status, errors, body.get("extensions"))
    data = body.get("data")
    if not isinstance(data, dict) or root not in data:
        raise StoreUnavailable(f"Shopify's answer has no data.{root}")
    value = data[root]
    if value is None:
        raise StoreRefused(f"Shopify has no {root} for this id", status)
    if not isinstance(value, dict):
        raise StoreUnavailable(f"Shopify's data.{root} is not an object")
    return value


def _raise_errors(status: int, errors: Any, extensions: Any) -> None:
    # Shopify sends a list of GraphQL errors, or for some HTTP errors one string.
    listed: list[dict[str, Any]] = [
        e if isinstance(e, dict) else {"message": str(e)}
        for e in (errors if isinstance(errors, list) else [errors or f"HTTP {status}"])]
    codes = {str((e.get("extensions") or {}).get("code", "")) for e in listed}
    message = "; ".join(str(e.get("message", "")) for e in listed)
    if "THROTTLED" in codes:
        cost = extensions.get("cost") if isinstance(extensions, dict) else None
        wait = throttle_wait(cost) if isinstance(cost, dict) else None
        raise Throttled(f"Shopify throttled the request: {message}", wait)
    if "ACCESS_DENIED" in codes:
        raise StoreAuthRevoked(f"Shopify denied access: {message}", status)
    if "INTERNAL_SERVER_ERROR" in codes:
        raise StoreUnavailable(f"Shopify failed: {message}")
    raise StoreRefused(f"Shopify refused the request: {message}", status)


def parse_order(response: Response) -> OrderState:
    """The order's fulfillment orders and the tracking numbers already on it (of fulfillments
    that stand: not CANCELLED, ERROR or FAILURE)."""
    order = read_data(response, "order")
    try:
        nodes = (order.get("fulfillmentOrders") or {}).get("nodes") or []
        fulfillment_orders = tuple((str(n["id"]), str(n.get("status", ""))) for n in nodes)
        fulfillments = tuple(
            (str(f["id"]), tuple(str(t["number"]) for t in f.get("trackingInfo") or []
                                 if t.get("number")))
            for f in order.get("fulfillments") or []
            if f.get("status") not in GONE
        )
    except (AttributeError, KeyError, TypeError) as exc:
        raise StoreUnavailable(f"Shopify's order answer is not as documented: {exc!r}") from exc
    return OrderState(fulfillment_orders, fulfillments)


def existing_fulfillment(state: OrderState, number: str) -> str | None:
    """The id of a fulfillment that already carries tracking `number`."""
    return next((fid for fid, numbers in state.fulfillments if number in numbers), None)


def fulfillable(state: OrderState) -> list[str]:
    """The fulfillment orders a fulfillment can be created for now; refuses when none can
    (every one closed, cancelled, on hold or scheduled: the store decides, not a retry)."""
    ids = [fid for fid, status in state.fulfillment_orders if status in FULFILLABLE]
    if not ids:
        seen = ", ".join(f"{fid} {status}" for fid, status in state.fulfillment_orders)
        raise StoreRefused(f"no open fulfillment order on the order ({seen or 'none'})")
    return ids


def parse_fulfillment_create(response: Response) -> str:
    """The created fulfillment's id; userErrors refuse with the store's messages."""
    payload = read_data(response, "fulfillmentCreate")
    user_errors = payload.get("userErrors") or []
    if user_errors:
        message = "; ".join(
            f"{'.'.join(map(str, e.get('field') or []))}: {e.get('message')}".lstrip(": ")
            for e in user_errors)
        raise StoreRefused(message, response.status)
    fulfillment = payload.get("fulfillment")
    if not isinstance(fulfillment, dict) or not fulfillment.get("id"):
        raise StoreUnavailable("fulfillmentCreate answered neither a fulfillment nor errors")
    return str(fulfillment["id"])


def _text(response: Response) -> str:
    return response.body[:200].decode("utf-8", "replace")


class Shopify:
    """One shop's Admin GraphQL API, at `base_url` (https://<shop>.myshopify.com)."""

    kind = "shopify"

    def __init__(self, session: aiohttp.ClientSession, base_url: str, access_token: str,
                 api_version: str = API_VERSION, timeout: float = 10.0,
                 max_throttle_wait: float = MAX_THROTTLE_WAIT,
                 max_in_flight: int = MAX_IN_FLIGHT) -> None:
        if not access_token:
            raise ValueError("Shopify access token is empty")
        if not re.fullmatch(r"\d{4}-\d{2}|unstable", api_version):
            raise ValueError(f"Shopify API version {api_version!r} is not YYYY-MM")
        self.session = session
        self.base_url = check_base_url(base_url)
        self.access_token = access_token
        self.api_version = api_version
        self.timeout = timeout
        self.max_throttle_wait = max_throttle_wait
        self.bucket = CostBucket(FIRST_COSTS, max_in_flight)  # this shop's, for this app

    def __repr__(self) -> str:  # never the token
        return f"Shopify({self.base_url!r}, api_version={self.api_version!r})"

    async def fulfil(self, order_ref: str, tracking: Tracking,
                     notify_customer: bool) -> WriteBack:
        query = build_order_query(order_ref, self.api_version, self.access_token)
        state = await self._ask(query, "StorefrontOrder", parse_order)
        if (found := existing_fulfillment(state, tracking.number)) is not None:
            return WriteBack(found, already_done=True)
        create = build_fulfillment_create(fulfillable(state), tracking, notify_customer,
                                          self.api_version, self.access_token)
        created = await self._ask(create, "StorefrontFulfil", parse_fulfillment_create)
        return WriteBack(created, already_done=False)

    async def _ask(self, request: Request, operation: str,
                   parse: Callable[[Response], T]) -> T:
        """Send `request` when the bucket has room for `operation`, and parse its answer; a
        THROTTLED answer whose refill is short is waited out and sent again (THROTTLED ran
        nothing, so a mutation is safe to repeat)."""
        tries = 1
        while True:
            async with self.bucket.turn(operation) as ticket:
                response = await send(self.session, self.base_url, request, self.timeout)
                self.bucket.observe(operation, answer_cost(response), ticket)
            try:
                return parse(response)
            except Throttled as exc:
                wait = exc.retry_after
                if tries >= THROTTLE_TRIES or wait is None or wait > self.max_throttle_wait:
                    raise
            tries += 1
            await asyncio.sleep(wait)
