"""Shopify's pure pieces: the requests built (path, token header, GraphQL document and
variables) and the answers read (trimmed from Shopify's documented shapes,
tests/fixtures/providers/shopify/admin-graphql/) into values or the errors tree."""

from __future__ import annotations

from pathlib import Path

import orjson
import pytest

from consumers.storefronts.contract import Tracking
from consumers.storefronts.errors import (
    StoreAuthRevoked,
    StoreRefused,
    StoreUnavailable,
)
from consumers.storefronts.shopify import (
    OrderState,
    build_fulfillment_create,
    build_order_query,
    existing_fulfillment,
    fulfillable,
    order_gid,
    parse_fulfillment_create,
    parse_order,
    throttle_wait,
)
from consumers.storefronts.transport import Response

FIXTURES = Path(__file__).resolve().parents[2] / "fixtures" / "providers" / "shopify" / \
    "admin-graphql"
TRACKING = Tracking("1Z1234512345123456", "UPS", "https://www.ups.com/track?tracknum=1Z12")


def answer(name: str, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    return Response(status, headers or {}, (FIXTURES / name).read_bytes())


class TestBuild:
    def test_order_query(self):
        """The order query goes to the version's endpoint with the token header, asks for
        the order by its gid, and reads fulfillment orders and fulfillments' tracking."""
        request = build_order_query("450789469", "2024-10", "shpat_x")
        body = orjson.loads(request.body)
        assert ("POST", "/admin/api/2024-10/graphql.json") == (request.method, request.path)
        assert "shpat_x" == request.headers["X-Shopify-Access-Token"]
        assert {"id": "gid://shopify/Order/450789469"} == body["variables"]
        assert "StorefrontOrder" == body["operationName"]
        for field in ("fulfillmentOrders(first:", "nodes { id status }", "fulfillments(first:",
                      "trackingInfo(first: 10) { number company url }"):
            assert field in body["query"]
        assert not request.writes

    def test_fulfillment_create(self):
        """fulfillmentCreate takes one FulfillmentInput: the fulfillment orders, the tracking
        number, company and URL, and notifyCustomer; it is the request that writes."""
        request = build_fulfillment_create(["gid://shopify/FulfillmentOrder/940656279"],
                                           TRACKING, True, "2024-10", "shpat_x")
        body = orjson.loads(request.body)
        assert {"fulfillment": {
            "lineItemsByFulfillmentOrder": [
                {"fulfillmentOrderId": "gid://shopify/FulfillmentOrder/940656279"}],
            "trackingInfo": {"number": TRACKING.number, "company": "UPS", "url": TRACKING.url},
            "notifyCustomer": True}} == body["variables"]
        assert "fulfillmentCreate(fulfillment: $fulfillment)" in body["query"]
        assert "$fulfillment: FulfillmentInput!" in body["query"]
        assert "userErrors { field message }" in body["query"]
        assert request.writes

    def test_no_url_is_left_out(self):
        """A tracking without a link sends no `url` (null is not an empty link)."""
        request = build_fulfillment_create(["gid://shopify/FulfillmentOrder/1"],
                                           Tracking("940011", "USPS"), False, "2024-10", "t")
        info = orjson.loads(request.body)["variables"]["fulfillment"]["trackingInfo"]
        assert {"number": "940011", "company": "USPS"} == info

    @pytest.mark.parametrize(("ref", "gid"), [
        ("450789469", "gid://shopify/Order/450789469"),
        (" 450789469 ", "gid://shopify/Order/450789469"),
        ("gid://shopify/Order/450789469", "gid://shopify/Order/450789469"),
    ])
    def test_order_gid(self, ref, gid):
        """An order webhook's numeric id, or the gid itself."""
        assert gid == order_gid(ref)

    @pytest.mark.parametrize("ref", ["", "#1001", "gid://shopify/Product/1", "12 34"])
    def test_not_an_order_id(self, ref):
        """Anything else is refused before any request (it could never succeed)."""
        with pytest.raises(StoreRefused):
            order_gid(ref)


class TestParseOrder:
    def test_open_order(self):
        """Fulfillment orders with their status; no fulfillment yet."""
        state = parse_order(answer("order-open.json"))
        assert (("gid://shopify/FulfillmentOrder/940656279", "OPEN"),
                ("gid://shopify/FulfillmentOrder/1046000829", "CLOSED")) == \
            state.fulfillment_orders
        assert ["gid://shopify/FulfillmentOrder/940656279"] == fulfillable(state)
        assert existing_fulfillment(state, TRACKING.number) is None

    def test_already_fulfilled_with_that_number(self):
        """A fulfillment carrying the tracking number is found: the write-back is done."""
        state = parse_order(answer("order-fulfilled.json"))
        assert "gid://shopify/Fulfillment/1069019873" == \
            existing_fulfillment(state, "1Z1234512345123456")

    def test_a_cancelled_fulfillment_does_not_count(self):
        """A cancelled fulfillment with the number is not the write-back done."""
        state = parse_order(answer("order-fulfilled.json"))
        assert existing_fulfillment(state, "1Z2345") is None

    def test_an_answer_not_as_documented(self):
        """A fulfillment without an id, nodes that are not objects: unavailable (try again),
        never an exception outside the tree."""
        for order in ({"fulfillments": [{"status": "SUCCESS"}]},
                      {"fulfillmentOrders": {"nodes": ["x"]}}):
            body = orjson.dumps({"data": {"order": order}})
            with pytest.raises(StoreUnavailable, match="not as documented"):
                parse_order(Response(200, {}, body))

    def test_no_open_fulfillment_order_refuses(self):
        """Every fulfillment order closed and no fulfillment with our number: refused with
        what was seen, not retried."""
        state = parse_order(answer("order-fulfilled.json"))
        with pytest.raises(StoreRefused, match="no open fulfillment order.*CLOSED"):
            fulfillable(state)

    @pytest.mark.parametrize(("status", "expected"), [
        ("OPEN", True), ("IN_PROGRESS", True), ("CLOSED", False), ("CANCELLED", False),
        ("INCOMPLETE", False), ("ON_HOLD", False), ("SCHEDULED", False)])
    def test_which_fulfillment_orders_take_a_fulfillment(self, status, expected):
        """Only open and in-progress fulfillment orders are sent."""
        state = OrderState((("fo", status),), ())
        if expected:
            assert ["fo"] == fulfillable(state)
        else:
            with pytest.raises(StoreRefused):
                fulfillable(state)

    def test_order_not_found(self):
        """`data.order` null: the shop has no such order, refused."""
        with pytest.raises(StoreRefused, match="no order"):
            parse_order(answer("order-not-found.json"))


class TestParseFulfillmentCreate:
    def test_created(self):
        """The created fulfillment's gid is the external id."""
        assert "gid://shopify/Fulfillment/1069019873" == \
            parse_fulfillment_create(answer("fulfillment-create.json"))

    def test_user_errors_refuse_with_the_message(self):
        """userErrors: refused, with the store's message and the field."""
        with pytest.raises(StoreRefused) as caught:
            parse_fulfillment_create(answer("fulfillment-create-user-errors.json"))
        assert "fulfillment: Fulfillment order 940656279 has an unfulfillable status= " \
            "closed." == caught.value.message


class TestErrors:
    def test_throttled(self):
        """THROTTLED: unavailable, retry when the bucket holds the cost again,
        (752 - 666) / 50 = 1.72 s, rounded up."""
        with pytest.raises(StoreUnavailable) as caught:
            parse_order(answer("throttled.json"))
        assert 2.0 == caught.value.retry_after

    @pytest.mark.parametrize(("cost", "wait"), [
        ({"requestedQueryCost": 10, "throttleStatus": {"currentlyAvailable": 0,
                                                       "restoreRate": 50.0}}, 1.0),
        ({"requestedQueryCost": 1000, "throttleStatus": {"currentlyAvailable": 0,
                                                         "restoreRate": 50.0}}, 20.0),
        ({"requestedQueryCost": 10, "throttleStatus": {"currentlyAvailable": 0,
                                                       "restoreRate": 0}}, None),
        ({"requestedQueryCost": "x"}, None),
        ({}, None),
    ])
    def test_throttle_wait(self, cost, wait):
        """At least a second; None when the cost does not say (never an exception)."""
        assert wait == throttle_wait(cost)

    @pytest.mark.parametrize("status", [401, 403])
    def test_token_refused(self, status):
        """HTTP 401/403: the token is revoked (the caller pauses this store)."""
        with pytest.raises(StoreAuthRevoked, match="Invalid API key or access token"):
            parse_order(answer("unauthorized.json", status))

    def test_access_denied(self):
        """ACCESS_DENIED (the token lost a scope): revoked too, not retried."""
        with pytest.raises(StoreAuthRevoked, match="Access denied"):
            parse_fulfillment_create(answer("access-denied.json"))

    @pytest.mark.parametrize(("status", "headers", "retry_after"), [
        (429, {"retry-after": "2.0"}, 2.0), (500, {}, None), (502, {}, None),
        (503, {"retry-after": "30"}, 30.0)])
    def test_unavailable(self, status, headers, retry_after):
        """429 and 5xx: unavailable, with the Retry-After it gave."""
        with pytest.raises(StoreUnavailable) as caught:
            parse_order(Response(status, headers, b"<html>busy</html>"))
        assert retry_after == caught.value.retry_after

    def test_other_graphql_errors_refuse(self):
        """A GraphQL error other than throttling or access: refused with its message."""
        body = orjson.dumps({"errors": [{"message": "Field 'x' doesn't exist on type 'Order'",
                                         "extensions": {"code": "undefinedField"}}]})
        with pytest.raises(StoreRefused, match="Field 'x' doesn't exist"):
            parse_order(Response(200, {}, body))

    def test_not_json(self):
        """A 200 that is not GraphQL (a proxy's page): unavailable, try again."""
        with pytest.raises(StoreUnavailable):
            parse_order(Response(200, {}, b"<html>maintenance</html>"))
