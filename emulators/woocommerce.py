"""An emulator of WooCommerce's REST API v3, as much as the write-back uses: an order
(GET, PUT its status) and its notes (list, create, read one), under /wp-json/wc/v3, with the
REST API consumer key and secret as HTTP Basic or as the `consumer_key`/`consumer_secret`
query parameters. Errors are WordPress's `{"code", "message", "data": {"status"}}`.

    python -m emulators woocommerce --port 8802 --key ck_test --secret cs_test

Control (no credentials; loopback): POST /_emulator/seed {"orders": [{"id": 727,
"status": "processing", "notes": ["..."]}]}; POST /_emulator/faults {"status": 503 | 429 |
401, "retry_after": 3, "drop": false, "reset": false, "delay": 0, "count": 1, "operation":
"create_note"}, operations being get_order, update_order, list_notes, create_note, get_note;
GET /_emulator/counters (orders, their status and notes, requests per operation).
"""

from __future__ import annotations

import base64
import binascii
import itertools
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import orjson
from aiohttp import web

from emulators.control import (
    CONTROL,
    Fault,
    add_control,
    arguments,
    cut,
    same_secret,
    serve,
)

API = "/wp-json/wc/v3"
STATUSES = ("pending", "processing", "on-hold", "completed", "cancelled", "refunded",
            "failed", "trash")
LABELS = {"pending": "Pending payment", "processing": "Processing", "on-hold": "On hold",
          "completed": "Completed", "cancelled": "Cancelled", "refunded": "Refunded",
          "failed": "Failed", "trash": "Trash"}


class WPError(Exception):
    """A WordPress REST error: answered as {"code", "message", "data": {"status", ...}}."""

    def __init__(self, status: int, code: str, message: str, **data: Any) -> None:
        super().__init__(message)
        self.status, self.code, self.message, self.data = status, code, message, data

    def response(self) -> web.Response:
        return web.json_response({"code": self.code, "message": self.message,
                                  "data": {"status": self.status, **self.data}},
                                 status=self.status)


@dataclass
class Store:
    """Orders and their notes; what was asked of it."""

    base: str = "http://127.0.0.1"
    auto_orders: bool = True
    orders: dict[int, dict[str, Any]] = field(default_factory=dict)
    notes: dict[int, list[dict[str, Any]]] = field(default_factory=dict)
    ids: itertools.count[int] = field(default_factory=lambda: itertools.count(281))

    def order(self, order_id: int) -> dict[str, Any]:
        if order_id not in self.orders and self.auto_orders:
            self.add_order(order_id, "processing", ())
        if order_id not in self.orders:
            raise WPError(404, "woocommerce_rest_shop_order_invalid_id", "Invalid ID.")
        return self.orders[order_id]

    def add_order(self, order_id: int, status: str, notes: Sequence[str]) -> None:
        now = _now()
        self.orders[order_id] = {"id": order_id, "status": status, "date_created": now,
                                 "date_modified": now}
        self.notes[order_id] = []
        for text in notes:
            self.add_note(order_id, text, customer=True, author="system")

    def add_note(self, order_id: int, text: str, customer: bool, author: str) -> dict[str, Any]:
        note_id = next(self.ids)
        note = {"id": note_id, "author": author, "date_created": _now(),
                "date_created_gmt": _now(), "note": text, "customer_note": customer,
                "_links": {
                    "self": [{"href": f"{self.base}{API}/orders/{order_id}/notes/{note_id}"}],
                    "collection": [{"href": f"{self.base}{API}/orders/{order_id}/notes"}],
                    "up": [{"href": f"{self.base}{API}/orders/{order_id}"}]}}
        self.notes[order_id].insert(0, note)  # newest first, as WooCommerce lists them
        return note

    def state(self) -> dict[str, Any]:
        return {"orders": {str(oid): {"status": o["status"], "notes": self.notes[oid]}
                           for oid, o in self.orders.items()}}

    def seed(self, body: dict[str, Any]) -> None:
        for order in body.get("orders", []):
            self.add_order(int(order["id"]), order.get("status", "processing"),
                           order.get("notes", ()))


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime())


STORE = web.AppKey("store", Store)
KEYS = web.AppKey("keys", tuple)


def authenticate(request: web.Request) -> None:
    """WooCommerce's check over HTTPS: the key and secret as Basic credentials, or as query
    parameters; no credentials at all is the permission check's 401."""
    key = secret = None
    header = request.headers.get("Authorization", "")
    if header.startswith("Basic "):
        try:
            key, _, secret = base64.b64decode(header[6:], validate=True).decode().partition(":")
        except (binascii.Error, UnicodeDecodeError):
            key = secret = None
    if key is None:
        key = request.query.get("consumer_key")
        secret = request.query.get("consumer_secret")
    want_key, want_secret = request.app[KEYS]
    if not key:
        raise WPError(401, "woocommerce_rest_cannot_view", "Sorry, you cannot list resources.")
    if not same_secret(key, want_key):
        raise WPError(401, "woocommerce_rest_authentication_error", "Consumer key is invalid.")
    if not same_secret(secret or "", want_secret):
        raise WPError(401, "woocommerce_rest_authentication_error",
                      "Consumer secret is invalid.")


async def json_body(request: web.Request) -> dict[str, Any]:
    if request.content_type != "application/json":
        raise WPError(400, "rest_invalid_json", "Invalid JSON body passed.")
    try:
        body = orjson.loads(await request.read())
    except orjson.JSONDecodeError:
        raise WPError(400, "rest_invalid_json", "Invalid JSON body passed.") from None
    if not isinstance(body, dict):
        raise WPError(400, "rest_invalid_json", "Invalid JSON body passed.")
    return body


def invalid(params: dict[str, str]) -> WPError:
    return WPError(400, "rest_invalid_param", f"Invalid parameter(s): {', '.join(params)}",
                   params=params)


def order_id(request: web.Request) -> int:
    return int(request.match_info["id"])


async def get_order(request: web.Request) -> web.Response:
    order = request.app[STORE].order(order_id(request))
    fields = request.query.get("_fields")
    if fields:
        order = {k: v for k, v in order.items() if k in fields.split(",")}
    return web.json_response(order)


async def update_order(request: web.Request) -> web.Response:
    store = request.app[STORE]
    order = store.order(order_id(request))
    body = await json_body(request)
    status = body.get("status", order["status"])
    if status not in STATUSES:
        raise invalid({"status": f"status is not one of {', '.join(STATUSES)}."})
    if status != order["status"]:
        store.add_note(order["id"], f"Order status changed from {LABELS[order['status']]} "
                       f"to {LABELS[status]}.", customer=False, author="system")
        order["status"] = status
        order["date_modified"] = _now()
    return web.json_response(order)


async def list_notes(request: web.Request) -> web.Response:
    store = request.app[STORE]
    store.order(order_id(request))
    kind = request.query.get("type", "any")
    if kind not in ("any", "customer", "internal"):
        raise invalid({"type": "type is not one of any, customer, and internal."})
    notes = [n for n in store.notes[order_id(request)]
             if kind == "any" or n["customer_note"] == (kind == "customer")]
    return web.json_response(notes)


async def create_note(request: web.Request) -> web.Response:
    store = request.app[STORE]
    store.order(order_id(request))
    body = await json_body(request)
    if not isinstance(body.get("note"), str) or not body["note"]:
        if "note" not in body:
            raise WPError(400, "rest_missing_callback_param", "Missing parameter(s): note",
                          params=["note"])
        raise WPError(400, "woocommerce_rest_invalid_order_note",
                      "Cannot create order note, please try again.")
    wrong: dict[str, str] = {k: f"{k} is not of type boolean."
                             for k in ("customer_note", "added_by_user")
                             if k in body and not isinstance(body[k], bool)}
    if wrong:
        raise invalid(wrong)
    note = store.add_note(order_id(request), body["note"], bool(body.get("customer_note")),
                          "admin" if body.get("added_by_user") else "system")
    return web.json_response(note, status=201)


async def get_note(request: web.Request) -> web.Response:
    store = request.app[STORE]
    store.order(order_id(request))
    wanted = int(request.match_info["note"])
    for note in store.notes[order_id(request)]:
        if note["id"] == wanted:
            return web.json_response(note)
    raise WPError(404, "woocommerce_rest_invalid_id", "Invalid resource ID.")


Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def fault_response(request: web.Request, fault: Fault) -> web.StreamResponse:
    if fault.drop or fault.reset:
        return cut(request)
    status = fault.status if isinstance(fault.status, int) else 500  # a name it lacks
    if status == 401:
        return WPError(401, "woocommerce_rest_authentication_error",
                       "Consumer key is invalid.").response()
    # 429 always says when (Shopify 2.0 s, WooCommerce's rate limiters their window); a 503
    # when the test asks, as a store behind a maintenance page or a proxy does.
    after = 3 if fault.retry_after is None else fault.retry_after
    headers = ({"Retry-After": str(after)}
               if status == 429 or fault.retry_after is not None else {})
    return web.json_response({"code": "internal_server_error" if status >= 500
                              else "too_many_requests", "message": f"HTTP {status}",
                              "data": {"status": status}}, status=status, headers=headers)


def operation(name: str, handler: Handler) -> Handler:
    """`handler` behind authentication, the faults asked for `name`, and WPError answers."""
    async def run(request: web.Request) -> web.StreamResponse:
        control = request.app[CONTROL]
        control.requests[name] += 1
        try:
            authenticate(request)
            if (fault := await control.take(name, after_work=False)) is not None:
                return fault_response(request, fault)
            response = await handler(request)
        except WPError as exc:
            return exc.response()
        if (fault := await control.take(name, after_work=True)) is not None:
            return fault_response(request, fault)
        return response
    return run


async def no_route(request: web.Request) -> web.Response:
    return WPError(404, "rest_no_route",
                   "No route was found matching the URL and request method").response()


def create_app(consumer_key: str, consumer_secret: str,
               auto_orders: bool = True) -> web.Application:
    """The emulator's app: one store whose REST API key is `consumer_key`/`consumer_secret`."""
    if not consumer_key or not consumer_secret:
        raise ValueError("the emulator needs a consumer key and secret to enforce")
    app = web.Application()
    app[KEYS] = (consumer_key, consumer_secret)
    app[STORE] = store = Store(auto_orders=auto_orders)
    add_control(app, store.state, store.seed)
    r = app.router
    order, notes = API + r"/orders/{id:\d+}", API + r"/orders/{id:\d+}/notes"
    r.add_get(order, operation("get_order", get_order))
    r.add_put(order, operation("update_order", update_order))
    r.add_get(notes, operation("list_notes", list_notes))
    r.add_post(notes, operation("create_note", create_note))
    r.add_get(notes + r"/{note:\d+}", operation("get_note", get_note))
    r.add_route("*", "/wp-json/{tail:.*}", no_route)
    return app


def main(argv: list[str]) -> int:
    parser = arguments("WooCommerce REST API v3 emulator (orders, order notes)")
    parser.add_argument("--key", required=True, help="the consumer key to accept")
    parser.add_argument("--secret", required=True, help="the consumer secret to accept")
    parser.add_argument("--no-auto-orders", action="store_true",
                        help="unknown order ids are 404 (default: created, processing)")
    args = parser.parse_args(argv)
    app = create_app(args.key, args.secret, not args.no_auto_orders)
    app[STORE].base = f"http://{args.host}:{args.port}"
    return serve(app, args)
