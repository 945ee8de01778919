"""An EasyPost REST API v2 emulator: create, retrieve, buy and refund shipments, in memory.

It answers with the bodies EasyPost documents (and its official client's recorded traffic
shows: tests/fixtures/providers/README.md), checks every request as EasyPost would (path,
method, the API key as HTTP Basic user or Bearer token, the required body fields: 422 with
EasyPost's error body), and counts what it sold. Tests and the soak read the counters at
GET /_emulator/counters and make it fail with POST /_emulator/faults (emulators/control.py;
the operations are create_shipment, retrieve_shipment, buy_shipment and refund_shipment).

    python -m emulators easypost --port 12011 --key KEY
"""

from __future__ import annotations

import base64
import binascii
import secrets
import struct
import zlib
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import orjson
from aiohttp import web

from emulators.control import CONTROL, Fault, add_control, arguments, cut, same_secret, serve

# What a shipment is offered when the emulator is not told otherwise: the rates of EasyPost's
# recorded test shipment (USPS), plus one UPS rate so that a carrier rule has a choice.
DEFAULT_RATES: tuple[tuple[str, str, str, int], ...] = (
    ("USPS", "Express", "34.15", 1),
    ("USPS", "Priority", "7.42", 2),
    ("USPS", "GroundAdvantage", "6.07", 3),
    ("UPS", "Ground", "9.10", 4),
)
ADDRESS_FIELDS = ("name", "company", "street1", "street2", "city", "state", "zip", "country",
                  "phone", "email")


@dataclass
class Emulator:
    key: str
    rejected_streets: frozenset[str] = frozenset()  # street1 values (any case) it cannot verify
    rates: tuple[tuple[str, str, str, int], ...] = DEFAULT_RATES
    shipments: dict[str, dict[str, Any]] = field(default_factory=dict)
    labels_by_shipment: Counter[str] = field(default_factory=Counter)
    labels_by_reference: Counter[str] = field(default_factory=Counter)
    counts: Counter[str] = field(default_factory=Counter)

    def __post_init__(self) -> None:
        if not self.key:
            raise ValueError("the emulator needs the API key its clients must present")
        self.rejected_streets = frozenset(street.casefold() for street in self.rejected_streets)

    def counters(self) -> dict[str, Any]:
        return {
            "labels_sold": sum(self.labels_by_shipment.values()),
            "labels_by_shipment": dict(self.labels_by_shipment),
            "labels_by_reference": dict(self.labels_by_reference),
            **dict(self.counts),
        }


EMULATOR = web.AppKey("emulator", Emulator)
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def error(status: int, code: str, message: str, errors: list[Any] | None = None,
          headers: dict[str, str] | None = None) -> web.Response:
    """EasyPost's error body: {"error": {"code", "message", "errors"}}."""
    body = {"error": {"code": code, "message": message, "errors": errors or []}}
    return web.json_response(body, status=status, headers=headers, dumps=_dumps)


def _dumps(value: Any) -> str:
    return orjson.dumps(value).decode()


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _id(prefix: str) -> str:
    return f"{prefix}_{secrets.token_hex(16)}"


def authorized(request: web.Request, key: str) -> bool:
    """EasyPost takes the key as HTTP Basic user name (empty password) or as a Bearer token
    (what its own client libraries send)."""
    header = request.headers.get("Authorization", "")
    scheme, _, credentials = header.partition(" ")
    if scheme.lower() == "bearer":
        return same_secret(credentials.strip(), key)
    if scheme.lower() == "basic":
        try:
            user, _, _password = base64.b64decode(credentials, validate=True).decode(
            ).partition(":")
        except (binascii.Error, UnicodeDecodeError):
            return False
        return same_secret(user, key)
    return False


def fault_response(request: web.Request, fault: Fault) -> web.StreamResponse:
    if fault.drop or fault.reset:
        return cut(request)
    status = fault.status if isinstance(fault.status, int) else 500  # a name it lacks
    headers = {"Retry-After": str(fault.retry_after)} if fault.retry_after is not None else None
    code = "RATE_LIMITED" if status == 429 else "INTERNAL_SERVER_ERROR"
    return error(status, code, fault.message, headers=headers)


@web.middleware
async def easypost_errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    """On the API (/v2/): the key checked, then any fault asked for the route's name, and
    aiohttp's own 404 and 405 in EasyPost's body."""
    if not request.path.startswith("/v2/"):  # its control endpoints, the label and tracking
        return await handler(request)          # pages: public, as EasyPost's files are
    if not authorized(request, request.app[EMULATOR].key):
        return error(401, "UNAUTHORIZED",
                     "The request could not be authorized: a valid API key is required.")
    control = request.app[CONTROL]
    name = request.match_info.route.name or "no_route"  # aiohttp's 404 or 405
    control.requests[name] += 1
    if (fault := await control.take(name, after_work=False)) is not None:
        return fault_response(request, fault)
    try:
        response = await handler(request)
    except web.HTTPNotFound:
        response = error(404, "NOT_FOUND", "The requested resource could not be found.")
    except web.HTTPMethodNotAllowed:
        response = error(405, "METHOD_NOT_ALLOWED", "The method is not allowed here.")
    if (fault := await control.take(name, after_work=True)) is not None:
        # the work is done (a label sold, say) but the client never hears of it
        return fault_response(request, fault)
    return response


async def _json_body(request: web.Request) -> dict[str, Any] | web.Response:
    raw = await request.read()
    if not raw:
        return {}
    if not request.content_type.startswith("application/json"):
        return error(422, "BAD_REQUEST", "The body must be JSON (Content-Type: application/json).")
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return error(400, "BAD_REQUEST", "The request body is not valid JSON.")
    if not isinstance(body, dict):
        return error(422, "BAD_REQUEST", "The request body must be a JSON object.")
    return body


def _missing(where: str, value: Any, required: tuple[str, ...]) -> list[dict[str, str]]:
    if not isinstance(value, dict):
        return [{"field": where, "message": "cannot be blank"}]
    return [{"field": f"{where}.{name}", "message": "cannot be blank"}
            for name in required if value.get(name) in (None, "")]


def _address(fields: dict[str, Any]) -> dict[str, Any]:
    now = _now()
    return {
        "id": _id("adr"), "object": "Address", "created_at": now, "updated_at": now,
        **{name: fields.get(name) for name in ADDRESS_FIELDS},
        "mode": "test", "carrier_facility": None, "residential": None, "federal_tax_id": None,
        "state_tax_id": None, "verifications": {},
    }


def _rate(shipment_id: str, carrier: str, service: str, amount: str, days: int) -> dict[str, Any]:
    now = _now()
    return {
        "id": _id("rate"), "object": "Rate", "created_at": now, "updated_at": now,
        "mode": "test", "service": service, "carrier": carrier, "rate": amount,
        "currency": "USD", "retail_rate": amount, "retail_currency": "USD", "list_rate": amount,
        "list_currency": "USD", "billing_type": "easypost", "delivery_days": days,
        "delivery_date": None, "delivery_date_guaranteed": False, "est_delivery_days": days,
        "shipment_id": shipment_id, "carrier_account_id": "ca_emulated",
    }


def _check_parcel(parcel: dict[str, Any]) -> list[dict[str, str]]:
    problems = []
    for name in ("weight", "length", "width", "height"):
        value = parcel.get(name)
        if value is not None and (not isinstance(value, int | float) or value <= 0):
            problems.append({"field": f"shipment.parcel.{name}",
                             "message": "must be a positive number"})
    given = [parcel.get(name) is not None for name in ("length", "width", "height")]
    if any(given) and not all(given):
        problems.append({"field": "shipment.parcel",
                         "message": "length, width and height go together"})
    return problems


async def create_shipment(request: web.Request) -> web.Response:
    emulator = request.app[EMULATOR]
    body = await _json_body(request)
    if isinstance(body, web.Response):
        return body
    spec = body.get("shipment")
    if not isinstance(spec, dict) or not spec:
        # EasyPost's own answer to a create without a shipment
        return error(422, "PARAMETER.REQUIRED", "Missing required parameter.",
                     [{"field": "shipment", "message": "cannot be blank"}])
    address_fields = ("street1", "city", "zip", "country")
    problems = [
        *_missing("shipment.to_address", spec.get("to_address"), address_fields),
        *_missing("shipment.from_address", spec.get("from_address"), address_fields),
        *_missing("shipment.parcel", spec.get("parcel"), ("weight",)),
    ]
    if problems:
        return error(422, "PARAMETER.REQUIRED", "Missing required parameter.", problems)
    problems = _check_parcel(spec["parcel"])
    if problems:
        return error(422, "PARCEL.PARAMETERS.INVALID", "Invalid parcel.", problems)
    to_address = spec["to_address"]
    undeliverable = str(to_address["street1"]).casefold() in emulator.rejected_streets
    if undeliverable and to_address.get("verify_strict"):
        # EasyPost's recorded answer for an address it cannot verify
        return error(422, "ADDRESS.VERIFY.FAILURE", "Unable to verify address.", [
            {"code": "E.ADDRESS.NOT_FOUND", "field": "address", "message": "Address not found",
             "suggestion": None},
        ])
    shipment_id = _id("shp")
    now = _now()
    to_record, from_record = _address(to_address), _address(spec["from_address"])
    parcel = spec["parcel"]
    shipment = {
        "id": shipment_id, "object": "Shipment", "created_at": now, "updated_at": now,
        "is_return": False, "mode": "test", "reference": spec.get("reference"),
        "status": "unknown", "tracking_code": None, "batch_id": None, "batch_status": None,
        "batch_message": None, "customs_info": None, "insurance": None, "order_id": None,
        "options": {**(spec.get("options") or {}), "currency": "USD",
                    "payment": {"type": "SENDER"}, "date_advance": 0},
        "messages": ([{"carrier": "USPS", "carrier_account_id": "ca_emulated",
                       "type": "rate_error", "message": "Address not found"}]
                     if undeliverable else []),
        "from_address": from_record, "to_address": to_record,
        "return_address": from_record, "buyer_address": to_record,
        "parcel": {"id": _id("prcl"), "object": "Parcel", "created_at": now, "updated_at": now,
                   "length": parcel.get("length"), "width": parcel.get("width"),
                   "height": parcel.get("height"), "predefined_package": None,
                   "weight": parcel["weight"], "mode": "test"},
        "postage_label": None,
        "rates": [] if undeliverable else [
            _rate(shipment_id, *offer) for offer in emulator.rates],
        "refund_status": None, "scan_form": None, "selected_rate": None, "tracker": None,
        "usps_zone": 4, "forms": [], "fees": [],
    }
    emulator.shipments[shipment_id] = shipment
    emulator.counts["shipments_created"] += 1
    return web.json_response(shipment, status=201, dumps=_dumps,
                             headers={"Location": f"/api/v2/shipments/{shipment_id}"})


def _find(request: web.Request) -> dict[str, Any]:
    """The shipment named in the path, by id or (as EasyPost allows) by the reference given
    at creation, the newest first; else 404 (the middleware writes EasyPost's body)."""
    shipments = request.app[EMULATOR].shipments
    wanted = request.match_info["id"]
    if wanted in shipments:
        return shipments[wanted]
    matching = [s for s in shipments.values() if s["reference"] == wanted]
    if not matching:
        raise web.HTTPNotFound()
    return matching[-1]


async def retrieve_shipment(request: web.Request) -> web.Response:
    return web.json_response(_find(request), dumps=_dumps)


async def buy_shipment(request: web.Request) -> web.Response:
    emulator = request.app[EMULATOR]
    shipment = _find(request)
    body = await _json_body(request)
    if isinstance(body, web.Response):
        return body
    chosen = body.get("rate")
    rate_id = chosen.get("id") if isinstance(chosen, dict) else None
    if not rate_id:
        return error(422, "SHIPMENT.MISSING_RATE", "Missing required parameter.",
                     [{"field": "rate", "message": "cannot be blank"}])
    if shipment["postage_label"] is not None:
        return error(422, "SHIPMENT.POSTAGE.EXISTS",
                     "Postage already exists for this shipment.")
    rate = next((r for r in shipment["rates"] if r["id"] == rate_id), None)
    if rate is None:
        return error(422, "SHIPMENT.INVALID_PARAMS", "The rate is not one of this shipment's.",
                     [{"field": "rate.id", "message": "not found"}])
    now = _now()
    origin = f"{request.scheme}://{request.host}"
    tracking_code = "9400" + "".join(str(secrets.randbelow(10)) for _ in range(18))
    label_id, tracker_id = _id("pl"), _id("trk")
    shipment |= {
        "updated_at": now, "tracking_code": tracking_code, "selected_rate": rate,
        "postage_label": {
            "object": "PostageLabel", "id": label_id, "created_at": now, "updated_at": now,
            "date_advance": 0, "integrated_form": "none", "label_date": now,
            "label_resolution": 300, "label_size": "4x6", "label_type": "default",
            "label_file_type": "image/png", "label_url": f"{origin}/files/postage_label/"
            f"{label_id}.png", "label_pdf_url": None, "label_zpl_url": None,
            "label_epl2_url": None, "label_file": None,
        },
        "tracker": {
            "id": tracker_id, "object": "Tracker", "mode": "test",
            "tracking_code": tracking_code, "status": "unknown", "status_detail": "unknown",
            "created_at": now, "updated_at": now, "signed_by": None, "weight": None,
            "est_delivery_date": None, "shipment_id": shipment["id"],
            "carrier": rate["carrier"], "tracking_details": [], "fees": [],
            "carrier_detail": None, "public_url": f"{origin}/track/{tracker_id}",
        },
    }
    emulator.labels_by_shipment[shipment["id"]] += 1
    if shipment["reference"] is not None:
        emulator.labels_by_reference[shipment["reference"]] += 1
    return web.json_response(shipment, dumps=_dumps)


async def refund_shipment(request: web.Request) -> web.Response:
    emulator = request.app[EMULATOR]
    shipment = _find(request)
    if shipment["postage_label"] is None:
        return error(422, "SHIPMENT.REFUND.UNAVAILABLE", "The shipment has no postage to refund.")
    if shipment["refund_status"] is None:  # a repeated refund changes nothing
        shipment |= {"refund_status": "submitted", "updated_at": _now()}
        emulator.counts["refunds"] += 1
    return web.json_response(shipment, dumps=_dumps)


def _by_label(request: web.Request, key: str) -> dict[str, Any]:
    wanted = request.match_info["name"].removesuffix(".png")
    for shipment in request.app[EMULATOR].shipments.values():
        if (shipment.get(key) or {}).get("id") == wanted:
            return shipment
    raise web.HTTPNotFound()


async def label_file(request: web.Request) -> web.Response:
    """The label's URL opens: a 1x1 PNG standing for the 4x6 label."""
    _by_label(request, "postage_label")
    return web.Response(body=_PNG, content_type="image/png")


async def tracking_page(request: web.Request) -> web.Response:
    """The tracker's public_url opens on the tracking code and its status."""
    tracker = _by_label(request, "tracker")["tracker"]
    return web.Response(text=f"{tracker['carrier']} {tracker['tracking_code']}: "
                             f"{tracker['status']}\n")


def _one_pixel_png() -> bytes:
    def chunk(kind: bytes, data: bytes) -> bytes:
        return (struct.pack(">I", len(data)) + kind + data
                + struct.pack(">I", zlib.crc32(kind + data)))

    header = struct.pack(">IIBBBBB", 1, 1, 8, 0, 0, 0, 0)  # 1x1, 8-bit grey
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header)
            + chunk(b"IDAT", zlib.compress(b"\x00\xff")) + chunk(b"IEND", b""))


_PNG = _one_pixel_png()


def build_app(emulator: Emulator) -> web.Application:
    app = web.Application(middlewares=[easypost_errors])
    app[EMULATOR] = emulator
    add_control(app, emulator.counters)
    # the route names are the operations a fault can be asked for
    for method, path, handler in (("POST", "/v2/shipments", create_shipment),
                                  ("GET", "/v2/shipments/{id}", retrieve_shipment),
                                  ("POST", "/v2/shipments/{id}/buy", buy_shipment),
                                  ("POST", "/v2/shipments/{id}/refund", refund_shipment)):
        app.router.add_route(method, path, handler, name=handler.__name__)
    app.router.add_get("/files/postage_label/{name}", label_file)
    app.router.add_get("/track/{name}", tracking_page)
    return app


def main(argv: list[str]) -> int:
    parser = arguments("EasyPost REST API v2 emulator (shipments, buy, refund)")
    parser.add_argument("--key", required=True, help="the API key clients must present")
    parser.add_argument("--reject-street", action="append", default=[], metavar="STREET1",
                        help="a street1 it fails to verify (ADDRESS.VERIFY.FAILURE); repeatable")
    args = parser.parse_args(argv)
    emulator = Emulator(key=args.key, rejected_streets=frozenset(args.reject_street))
    return serve(build_app(emulator), args)
