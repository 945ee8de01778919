"""EasyPost's REST API v2: pure build-request and parse-response functions, and `EasyPost`,
the thin transport that sends them.

Shapes follow EasyPost's API documentation and the recorded API traffic of its official
Python client (tests/fixtures/providers/README.md says which recording each fixture is from):
POST /shipments {"shipment": {...}} answers 201 with the Shipment and its rates; POST
/shipments/{id}/buy {"rate": {"id": ...}} answers the Shipment with `postage_label`,
`tracking_code`, `selected_rate` and `tracker`; POST /shipments/{id}/refund answers it with
`refund_status`; errors are {"error": {"code", "message", "errors": [...]}}.
"""

from __future__ import annotations

import base64
from collections.abc import Mapping
from decimal import Decimal, InvalidOperation
from typing import Any

import aiohttp
import orjson

from consumers.carriers.base import (
    Address,
    AddressRejected,
    CarrierError,
    CarrierRefused,
    CarrierUnavailable,
    Label,
    Rate,
    Refund,
    Shipment,
    ShipmentRequest,
    Uncertain,
)

BASE_URL = "https://api.easypost.com/v2"
TIMEOUT_SECONDS = 30.0
# A second buy of a bought shipment: the label exists, read it instead (EasyPost's error code).
POSTAGE_EXISTS = "SHIPMENT.POSTAGE.EXISTS"
TRANSIENT_STATUSES = frozenset({408, 429, 500, 502, 503, 504})


# -- build ------------------------------------------------------------------------------------

def build_address(address: Address) -> dict[str, Any]:
    fields = {
        "name": address.name, "company": address.company, "street1": address.line1,
        "street2": address.line2, "city": address.city, "state": address.region,
        "zip": address.postal_code, "country": address.country, "phone": address.phone,
        "email": address.email,
    }
    return {key: value for key, value in fields.items() if value}


def build_create(request: ShipmentRequest) -> dict[str, Any]:
    """The body of POST /shipments."""
    to_address = build_address(request.to_address)
    if request.verify_address:
        # strict: an undeliverable address fails the create with ADDRESS.VERIFY.FAILURE
        # instead of yielding a shipment with no rates
        to_address["verify_strict"] = ["delivery"]
    parcel: dict[str, Any] = {"weight": request.parcel.weight_oz}
    if request.parcel.length_in is not None:
        parcel |= {"length": request.parcel.length_in, "width": request.parcel.width_in,
                   "height": request.parcel.height_in}
    return {"shipment": {
        "reference": request.reference,
        "to_address": to_address,
        "from_address": build_address(request.from_address),
        "parcel": parcel,
    }}


def build_buy(rate_id: str) -> dict[str, Any]:
    """The body of POST /shipments/{id}/buy."""
    return {"rate": {"id": rate_id}}


# -- parse ------------------------------------------------------------------------------------

def _money(value: Any, where: str) -> Decimal:
    try:
        return Decimal(str(value))
    except InvalidOperation:
        raise CarrierRefused(200, "", f"{where}: not an amount: {value!r}") from None


def parse_rate(body: Mapping[str, Any]) -> Rate:
    return Rate(
        id=body["id"], carrier=body["carrier"], service=body["service"],
        amount=_money(body["rate"], "rate"), currency=body["currency"],
        delivery_days=body.get("delivery_days"),
    )


def parse_shipment(body: Mapping[str, Any]) -> Shipment:
    """A Shipment object (create, retrieve, buy and refund all answer one)."""
    try:
        label = None
        postage = body.get("postage_label")
        if postage and body.get("tracking_code"):
            chosen = parse_rate(body["selected_rate"])
            tracker = body.get("tracker") or {}
            label = Label(
                shipment_id=body["id"], tracking_code=body["tracking_code"],
                carrier=chosen.carrier, service=chosen.service, amount=chosen.amount,
                currency=chosen.currency, label_url=postage["label_url"],
                tracking_url=tracker.get("public_url") or "",
            )
        return Shipment(
            id=body["id"], reference=body.get("reference"),
            rates=tuple(parse_rate(rate) for rate in body.get("rates") or ()),
            label=label, refund_status=body.get("refund_status"),
        )
    except (KeyError, TypeError) as exc:
        raise CarrierRefused(200, "", f"not an EasyPost Shipment: missing {exc}") from exc


def parse_label(body: Mapping[str, Any]) -> Label:
    """The answer to a buy: the shipment, now with its label."""
    shipment = parse_shipment(body)
    if shipment.label is None:
        raise CarrierRefused(200, "", f"shipment {shipment.id} was bought but has no label")
    return shipment.label


def parse_refund(body: Mapping[str, Any]) -> Refund:
    shipment = parse_shipment(body)
    return Refund(shipment_id=shipment.id, status=shipment.refund_status or "unknown")


def retry_after(headers: Mapping[str, str]) -> float | None:
    """Retry-After in seconds; an HTTP date (which EasyPost does not send) is ignored."""
    value = headers.get("Retry-After", "").strip()
    try:
        return max(0.0, float(value)) if value else None
    except ValueError:
        return None


def _describe(error: Mapping[str, Any]) -> str:
    """The carrier's message with its field errors, as an operator should read it."""
    message = str(error.get("message") or "")
    details = []
    for item in error.get("errors") or ():
        if isinstance(item, Mapping):
            text = ": ".join(str(item[k]) for k in ("field", "message") if item.get(k))
            if item.get("suggestion"):
                text += f" (suggestion: {item['suggestion']})"
            details.append(text)
        else:
            details.append(str(item))
    return "; ".join([message, *details]) if details else message


def parse_error(status: int, headers: Mapping[str, str], raw: bytes) -> CarrierError:
    """The typed error for a non-2xx answer."""
    try:
        error = orjson.loads(raw)["error"]
        code, message = str(error.get("code") or ""), _describe(error)
    except (orjson.JSONDecodeError, KeyError, TypeError, AttributeError):
        code, message = "", raw[:200].decode("utf-8", "replace")
    if status in TRANSIENT_STATUSES or status >= 500:
        return CarrierUnavailable(f"EasyPost answered {status} {code}: {message}".strip(),
                                  status=status, retry_after=retry_after(headers))
    if status == 422 and code.startswith("ADDRESS."):
        return AddressRejected(message, code)
    return CarrierRefused(status, code, message)


# -- transport --------------------------------------------------------------------------------

class EasyPost:
    """The transport: one request per call, HTTP Basic auth with the API key as user name.
    `session` and `base_url` are the caller's (tests point them at the emulator)."""

    name = "easypost"

    def __init__(self, api_key: str, session: aiohttp.ClientSession, *,
                 base_url: str = BASE_URL, timeout: float = TIMEOUT_SECONDS) -> None:
        if not api_key:
            raise ValueError("EasyPost needs an API key")
        # HTTP Basic, the key as user name and no password (built here: aiohttp's BasicAuth
        # is deprecated)
        token = base64.b64encode(f"{api_key}:".encode()).decode("ascii")
        self._authorization = f"Basic {token}"
        self._session = session
        self._base_url = base_url.rstrip("/")
        self._timeout = aiohttp.ClientTimeout(total=timeout)

    async def create_shipment(self, request: ShipmentRequest) -> Shipment:
        return parse_shipment(await self._call("POST", "/shipments", build_create(request)))

    async def retrieve_shipment(self, shipment_id: str) -> Shipment:
        """By EasyPost's id; EasyPost also takes the `reference` given at creation (the
        newest shipment with it), which finds a shipment whose create answer was lost."""
        return parse_shipment(await self._call("GET", f"/shipments/{shipment_id}"))

    async def buy(self, shipment_id: str, rate_id: str) -> Label:
        try:
            body = await self._call("POST", f"/shipments/{shipment_id}/buy", build_buy(rate_id))
        except CarrierRefused as exc:
            if exc.code != POSTAGE_EXISTS:
                raise
            # bought already (by an earlier attempt whose answer was lost): take that label
            return parse_label(await self._call("GET", f"/shipments/{shipment_id}"))
        return parse_label(body)

    async def refund(self, shipment_id: str) -> Refund:
        return parse_refund(await self._call("POST", f"/shipments/{shipment_id}/refund", {}))

    async def _call(self, method: str, path: str,
                    body: Mapping[str, Any] | None = None) -> Mapping[str, Any]:
        url = self._base_url + path
        data = None if body is None else orjson.dumps(body)
        headers = {"Accept": "application/json", "Authorization": self._authorization}
        if data is not None:
            headers["Content-Type"] = "application/json"
        try:
            async with self._session.request(method, url, data=data, headers=headers,
                                             timeout=self._timeout) as answer:
                raw = await answer.read()
                status, answer_headers = answer.status, answer.headers
        except (aiohttp.ClientConnectorError, aiohttp.ConnectionTimeoutError) as exc:
            # nothing was sent: safe to retry anything
            raise CarrierUnavailable(f"EasyPost unreachable: {exc!r}") from exc
        except (TimeoutError, aiohttp.ClientError) as exc:
            if method == "GET":  # a lost read changed nothing
                raise CarrierUnavailable(f"EasyPost {method} {path}: {exc!r}") from exc
            raise Uncertain(f"EasyPost {method} {path} sent, answer lost: {exc!r}") from exc
        if not 200 <= status < 300:
            raise parse_error(status, answer_headers, raw)
        try:
            parsed = orjson.loads(raw)
        except orjson.JSONDecodeError as exc:
            if method == "GET":
                raise CarrierUnavailable(f"EasyPost {path}: unreadable answer") from exc
            raise Uncertain(f"EasyPost {method} {path}: unreadable answer {status}") from exc
        if not isinstance(parsed, Mapping):
            raise CarrierRefused(status, "", f"EasyPost {path}: not a JSON object")
        return parsed
