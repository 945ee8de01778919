"""An emulator of Shopify's Admin GraphQL API, as much as the write-back uses: the `order`
query (its fulfillment orders and fulfillments) and the `fulfillmentCreate` mutation, at
POST /admin/api/<version>/graphql.json with the X-Shopify-Access-Token header. Variables are
checked against the documented input types; answers carry `extensions.cost` from a leaky
bucket, and a request the bucket cannot pay for is THROTTLED as Shopify does.

    python -m emulators shopify --port 12012 --token shpat_test

Control (no credentials; loopback): POST /_emulator/seed {"orders": [{"id": 1001,
"fulfillment_orders": ["OPEN"], "fulfillments": [{"number": "1Z..", "company": "UPS"}]}],
"bucket": {"available": 0, "restore_rate": 1}, "token": "shpat_new"} (the token accepted
from now on: the old one is revoked, as when the app is uninstalled or its token rotated);
POST /_emulator/faults {"status": 503 | 429 |
401 | "user_error", "message": "...", "retry_after": 2, "drop": false, "reset": false,
"delay": 0, "count": 1, "operation": "fulfillmentCreate" | "order"}; GET /_emulator/counters
(orders, their fulfillments, fulfillments created, the bucket, requests per operation, and
THROTTLED: the answers that were). The bucket is a standard plan's unless told otherwise.
"""

from __future__ import annotations

import itertools
import math
import re
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import orjson
from aiohttp import web

from emulators.control import CONTROL, Fault, add_control, arguments, cut, same_secret, serve
from emulators.graphql import (
    SCALARS,
    GraphQLError,
    Operation,
    Var,
    check_selection,
    parse,
    project,
    requested_cost,
    resolve,
)

# Output types, as much of them as is emulated (Shopify Admin GraphQL reference).
SCHEMA: dict[str, dict[str, str]] = {
    "QueryRoot": {"order": "Order"},
    "Mutation": {"fulfillmentCreate": "FulfillmentCreatePayload"},
    "Order": {"id": "ID", "name": "String", "displayFulfillmentStatus": "String",
              "fulfillmentOrders": "FulfillmentOrderConnection", "fulfillments": "[Fulfillment]"},
    "FulfillmentOrderConnection": {"nodes": "[FulfillmentOrder]",
                                   "edges": "[FulfillmentOrderEdge]"},
    "FulfillmentOrderEdge": {"node": "FulfillmentOrder", "cursor": "String"},
    "FulfillmentOrder": {"id": "ID", "status": "String", "requestStatus": "String"},
    "Fulfillment": {"id": "ID", "name": "String", "status": "String", "createdAt": "DateTime",
                    "trackingInfo": "[FulfillmentTrackingInfo]"},
    "FulfillmentTrackingInfo": {"number": "String", "company": "String", "url": "URL"},
    "FulfillmentCreatePayload": {"fulfillment": "Fulfillment", "userErrors": "[UserError]"},
    "UserError": {"field": "[String]", "message": "String"},
}
# Root fields' arguments, and the input types (FulfillmentInput and what it holds).
ARGUMENTS = {"order": {"id": "ID!"},
             "fulfillmentCreate": {"fulfillment": "FulfillmentInput!", "message": "String"}}
INPUTS: dict[str, dict[str, str]] = {
    "FulfillmentInput": {
        "lineItemsByFulfillmentOrder": "[FulfillmentOrderLineItemsInput!]!",
        "notifyCustomer": "Boolean", "originAddress": "FulfillmentOriginAddressInput",
        "trackingInfo": "FulfillmentTrackingInput"},
    "FulfillmentOrderLineItemsInput": {
        "fulfillmentOrderId": "ID!",
        "fulfillmentOrderLineItems": "[FulfillmentOrderLineItemInput!]"},
    "FulfillmentOrderLineItemInput": {"id": "ID!", "quantity": "Int!"},
    "FulfillmentTrackingInput": {"company": "String", "number": "String",
                                 "numbers": "[String!]", "url": "URL", "urls": "[URL!]"},
    "FulfillmentOriginAddressInput": {"address1": "String", "address2": "String",
                                      "city": "String", "countryCode": "String!",
                                      "provinceCode": "String", "zip": "String"},
}
UNAUTHORIZED = {"errors": "[API] Invalid API key or access token "
                          "(unrecognized login or wrong password)"}
FAULT_BODIES: dict[int, dict[str, Any]] = {
    401: UNAUTHORIZED,
    429: {"errors": "Exceeded 2 calls per second for api client. "
                    "Reduce request rates to resume uninterrupted service."},
}


def coerce(value: Any, type_ref: str, path: list[str]) -> list[dict[str, Any]]:
    """The problems with `value` as an input of `type_ref` (GraphQL input coercion: a single
    value where a list is wanted is a list of one)."""
    if type_ref.endswith("!"):
        if value is None:
            return [{"path": path, "explanation": "Expected value to not be null"}]
        type_ref = type_ref[:-1]
    if value is None:
        return []
    if type_ref.startswith("["):
        items = value if isinstance(value, list) else [value]
        return [p for i, item in enumerate(items)
                for p in coerce(item, type_ref[1:-1], [*path, str(i)])]
    if type_ref in SCALARS:
        ok = {"ID": lambda v: isinstance(v, str) or (isinstance(v, int)
                                                     and not isinstance(v, bool)),
              "Boolean": lambda v: isinstance(v, bool),
              "Int": lambda v: isinstance(v, int) and not isinstance(v, bool)}
        if not ok.get(type_ref, lambda v: isinstance(v, str))(value):
            return [{"path": path, "explanation": f"Could not coerce value "
                     f"{orjson.dumps(value).decode()} to {type_ref}"}]
        return []
    if not isinstance(value, dict):
        return [{"path": path, "explanation": f"Expected an object of type {type_ref}"}]
    fields = INPUTS[type_ref]
    problems = [{"path": [*path, key], "explanation": f"Field is not defined on {type_ref}"}
                for key in value if key not in fields]
    for key, inner in fields.items():
        problems += coerce(value.get(key), inner, [*path, key])
    return problems


# A standard plan's GraphQL Admin bucket: 100 points restored a second
# (https://shopify.dev/docs/api/usage/rate-limits; Advanced 200, Plus 1,000), holding 2,000.
STANDARD_BUCKET = 2000.0
STANDARD_RESTORE_RATE = 100.0


@dataclass
class Bucket:
    """The calculated-cost leaky bucket of one app on one shop."""

    maximum: float = STANDARD_BUCKET
    restore_rate: float = STANDARD_RESTORE_RATE
    available: float = STANDARD_BUCKET
    updated: float = field(default_factory=time.monotonic)

    def refill(self) -> None:
        now = time.monotonic()
        self.available = min(self.maximum,
                             self.available + (now - self.updated) * self.restore_rate)
        self.updated = now

    def cost(self, requested: int, actual: int | None) -> dict[str, Any]:
        return {"requestedQueryCost": requested, "actualQueryCost": actual,
                "throttleStatus": {"maximumAvailable": self.maximum,
                                   "currentlyAvailable": math.floor(self.available),
                                   "restoreRate": self.restore_rate}}


@dataclass
class Shop:
    """The orders, their fulfillment orders and fulfillments; what was asked of it."""

    auto_orders: bool = True
    orders: dict[str, dict[str, Any]] = field(default_factory=dict)
    owner: dict[str, str] = field(default_factory=dict)  # fulfillment order gid -> order id
    ids: itertools.count[int] = field(default_factory=lambda: itertools.count(1_000_001))
    fulfillments_created: int = 0

    def add_order(self, order_id: str, statuses: Sequence[str] = ("OPEN",),
                  fulfillments: Sequence[dict[str, Any]] = ()) -> dict[str, Any]:
        order: dict[str, Any] = {"id": f"gid://shopify/Order/{order_id}",
                                 "name": f"#{order_id}", "fulfillmentOrders": [],
                                 "fulfillments": []}
        for status in statuses:
            fo = f"gid://shopify/FulfillmentOrder/{next(self.ids)}"
            order["fulfillmentOrders"].append({"id": fo, "status": status,
                                               "requestStatus": "UNSUBMITTED"})
            self.owner[fo] = order_id
        for tracking in fulfillments:
            order["fulfillments"].append(self._fulfillment(tracking, False))
        self.orders[order_id] = order
        return order

    def _fulfillment(self, tracking: dict[str, Any], notify: bool) -> dict[str, Any]:
        numbers = tracking.get("numbers") or ([tracking["number"]] if tracking.get("number")
                                              else [])
        return {"id": f"gid://shopify/Fulfillment/{next(self.ids)}", "status": "SUCCESS",
                "name": "", "createdAt": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                "notifyCustomer": notify,
                "trackingInfo": [{"number": n, "company": tracking.get("company"),
                                  "url": tracking.get("url")} for n in numbers]}

    def order(self, gid: str) -> dict[str, Any] | None:
        match = re.fullmatch(r"gid://shopify/Order/(\d+)", str(gid))
        if match is None:
            raise GraphQLError(f"Invalid global id '{gid}'", "argumentLiteralsIncompatible")
        order = self.orders.get(match[1])
        if order is None and self.auto_orders:
            order = self.add_order(match[1])
        if order is None:
            return None
        fos = order["fulfillmentOrders"]
        return {**order, "fulfillmentOrders": {
            "nodes": fos, "edges": [{"node": fo, "cursor": fo["id"]} for fo in fos]}}

    def fulfillment_create(self, fulfillment: dict[str, Any]) -> dict[str, Any]:
        groups = fulfillment["lineItemsByFulfillmentOrder"]
        groups = groups if isinstance(groups, list) else [groups]
        fo_ids = [str(g["fulfillmentOrderId"]) for g in groups]
        errors = [f"Fulfillment order {fo} does not exist." for fo in fo_ids
                  if fo not in self.owner]
        owners = {self.owner[fo] for fo in fo_ids if fo in self.owner}
        if not errors and len(owners) > 1:
            errors.append("Fulfillment orders must belong to the same order.")
        if not errors:
            order = self.orders[owners.pop()]
            by_id = {fo["id"]: fo for fo in order["fulfillmentOrders"]}
            errors = [f"Fulfillment order {fo} has an unfulfillable status= "
                      f"{by_id[fo]['status'].lower()}." for fo in fo_ids
                      if by_id[fo]["status"] not in ("OPEN", "IN_PROGRESS")]
        if errors:
            return {"fulfillment": None,
                    "userErrors": [{"field": ["fulfillment"], "message": m} for m in errors]}
        created = self._fulfillment(fulfillment.get("trackingInfo") or {},
                                    bool(fulfillment.get("notifyCustomer")))
        order["fulfillments"].append(created)
        for group in groups:
            partial = bool(group.get("fulfillmentOrderLineItems"))
            by_id[str(group["fulfillmentOrderId"])]["status"] = (
                "IN_PROGRESS" if partial else "CLOSED")
        self.fulfillments_created += 1
        return {"fulfillment": created, "userErrors": []}

    def state(self) -> dict[str, Any]:
        return {"fulfillments_created": self.fulfillments_created,
                "orders": {oid: {"fulfillment_orders": o["fulfillmentOrders"],
                                 "fulfillments": o["fulfillments"]}
                           for oid, o in self.orders.items()}}

    def seed(self, body: dict[str, Any]) -> None:
        for order in body.get("orders", []):
            self.add_order(str(order["id"]), order.get("fulfillment_orders", ("OPEN",)),
                           order.get("fulfillments", ()))


SHOP = web.AppKey("shop", Shop)
BUCKET = web.AppKey("bucket", Bucket)
TOKEN = web.AppKey("token", list[str])  # [the accepted token]; seed {"token"} replaces it


def check_arguments(operation: Operation, variables: dict[str, Any]) -> None:
    """Root fields' arguments: known, required ones present, variables declared with the
    argument's type, and values that coerce to it."""
    root = SCHEMA["Mutation" if operation.kind == "mutation" else "QueryRoot"]
    for f in operation.selections:
        if f.name not in root:
            continue  # check_selection names it
        expected = ARGUMENTS[f.name]
        for name in f.arguments:
            if name not in expected:
                raise GraphQLError(f"Field '{f.name}' doesn't accept argument '{name}'",
                                   "argumentNotAccepted", name=f.name, argumentName=name)
        missing = [a for a, t in expected.items() if t.endswith("!") and a not in f.arguments]
        if missing:
            raise GraphQLError(f"Field '{f.name}' is missing required arguments: "
                               f"{', '.join(missing)}", "missingRequiredArguments")
        for name, value in f.arguments.items():
            if isinstance(value, Var):
                declared = operation.variables.get(value.name)
                if declared is None:
                    raise GraphQLError(f"Variable ${value.name} is used by {operation.name} "
                                       "but not declared", "variableNotDefined")
                if declared != expected[name]:
                    raise GraphQLError(
                        f"Type mismatch on variable ${value.name} and argument {name} "
                        f"({declared} / {expected[name]})", "variableMismatch")
                problems = coerce(variables.get(value.name), declared, [])
                if problems:
                    first = problems[0]
                    where = ".".join(first["path"])
                    raise GraphQLError(
                        f"Variable ${value.name} of type {declared} was provided invalid "
                        f"value{' for ' + where if where else ''} ({first['explanation']})",
                        "INVALID_VARIABLE", value=variables.get(value.name), problems=problems)
            elif problems := coerce(resolve(value, {}), expected[name], [name]):
                raise GraphQLError(f"Argument '{name}' on Field '{f.name}' has an invalid "
                                   f"value ({problems[0]['explanation']})",
                                   "argumentLiteralsIncompatible")


def fault_response(request: web.Request, fault: Fault) -> web.StreamResponse:
    if fault.drop or fault.reset:
        return cut(request)
    status = fault.status if isinstance(fault.status, int) else 500  # a name it lacks
    body = FAULT_BODIES.get(status, {"errors": "Internal Server Error"})
    # 429 always says when (Shopify 2.0 s, WooCommerce's rate limiters their window); a 503
    # when the test asks, as a store behind a maintenance page or a proxy does.
    after = 2.0 if fault.retry_after is None else fault.retry_after
    headers = ({"Retry-After": str(after)}
               if status == 429 or fault.retry_after is not None else {})
    return web.json_response(body, status=status, headers=headers)


async def graphql(request: web.Request) -> web.StreamResponse:
    app = request.app
    control, shop, bucket = app[CONTROL], app[SHOP], app[BUCKET]
    control.requests["graphql"] += 1
    if not re.fullmatch(r"\d{4}-(01|04|07|10)|unstable", request.match_info["version"]):
        return web.json_response({"errors": "Not Found"}, status=404)
    token = request.headers.get("X-Shopify-Access-Token", "")
    if not same_secret(token, app[TOKEN][0]):
        return web.json_response(UNAUTHORIZED, status=401)
    try:
        body = orjson.loads(await request.read())
        if not isinstance(body, dict) or not isinstance(body.get("query"), str) \
                or not isinstance(body.get("variables") or {}, dict):
            raise ValueError
    except ValueError:
        return web.json_response({"errors": {"query": "Required parameter missing or invalid"}},
                                 status=400)
    variables = body.get("variables") or {}
    try:
        operation = parse(body["query"], body.get("operationName"))
        root_type = "Mutation" if operation.kind == "mutation" else "QueryRoot"
        check_selection(operation.selections, root_type, SCHEMA, [])
        check_arguments(operation, variables)
    except GraphQLError as exc:
        return web.json_response({"errors": [exc.body]})
    name = operation.selections[0].name
    control.requests[name] += 1
    fault = await control.take(name, after_work=False)
    if fault is not None and fault.status != "user_error":
        return fault_response(request, fault)
    requested = requested_cost(operation)
    bucket.refill()
    if requested > bucket.available:
        control.requests["THROTTLED"] += 1
        return web.json_response({
            "errors": [{"message": "Throttled", "extensions": {
                "code": "THROTTLED", "documentation": "https://shopify.dev/api/usage/rate-limits"}}],
            "extensions": {"cost": bucket.cost(requested, None)}})
    bucket.available -= requested
    data: dict[str, Any] = {}
    try:
        for f in operation.selections:
            args = {k: resolve(v, variables) for k, v in f.arguments.items()}
            if fault is not None and f.name == "fulfillmentCreate":  # a "user_error" fault
                value: Any = {"fulfillment": None, "userErrors": [
                    {"field": ["fulfillment"], "message": fault.message}]}
            elif f.name == "order":
                value = shop.order(args["id"])
            else:
                value = shop.fulfillment_create(args["fulfillment"])
            data[f.alias] = project(value, f.selections, SCHEMA[root_type][f.name], SCHEMA)
    except GraphQLError as exc:
        return web.json_response({"errors": [exc.body], "data": None})
    if (fault := await control.take(name, after_work=True)) is not None:
        return fault_response(request, fault)
    return web.json_response({"data": data, "extensions": {"cost": bucket.cost(requested,
                                                                                 requested)}})


def create_app(token: str, auto_orders: bool = True, bucket_size: float = STANDARD_BUCKET,
               restore_rate: float = STANDARD_RESTORE_RATE) -> web.Application:
    """The emulator's app: one shop whose Admin API token is `token`."""
    if not token:
        raise ValueError("the emulator needs an access token to enforce")
    app = web.Application()
    app[TOKEN] = accepted = [token]
    app[SHOP] = shop = Shop(auto_orders=auto_orders)
    app[BUCKET] = bucket = Bucket(bucket_size, restore_rate, bucket_size)

    def seed(body: dict[str, Any]) -> None:
        shop.seed(body)
        if body.get("token"):
            accepted[0] = str(body["token"])
        if "bucket" in body:
            bucket.refill()
            bucket.available = float(body["bucket"].get("available", bucket.available))
            bucket.restore_rate = float(body["bucket"].get("restore_rate", bucket.restore_rate))

    add_control(app, lambda: {**shop.state(), "bucket": bucket.cost(0, 0)["throttleStatus"]},
                seed)
    app.router.add_post("/admin/api/{version}/graphql.json", graphql)
    return app


def main(argv: list[str]) -> int:
    parser = arguments("Shopify Admin GraphQL API emulator (orders, fulfillmentCreate)")
    parser.add_argument("--token", required=True, help="the access token to accept")
    parser.add_argument("--bucket", type=float, default=STANDARD_BUCKET,
                        help="maximumAvailable (default: a standard plan's)")
    parser.add_argument("--restore-rate", type=float, default=STANDARD_RESTORE_RATE,
                        help="points restored a second (default: a standard plan's)")
    parser.add_argument("--no-auto-orders", action="store_true",
                        help="unknown order ids are not found (default: created, one open "
                             "fulfillment order)")
    args = parser.parse_args(argv)
    return serve(create_app(args.token, not args.no_auto_orders, args.bucket,
                            args.restore_rate), args)
