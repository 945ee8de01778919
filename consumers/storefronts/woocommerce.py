"""WooCommerce: the REST API v3. The tracking number goes on the order as a customer note
(WooCommerce e-mails it to the customer), once: a note already carrying the number is taken
as done. Then, when configured, the order is set `completed` unless it already is.
Credentials are the REST API consumer key and secret, as HTTP Basic over HTTPS, or as the
query-string parameters WooCommerce documents for servers that drop the Authorization
header. At most `max_in_flight` requests at a time go to one store (consumers.storefronts.pacing):
a WooCommerce site is often one small PHP server that a whole batch at once would swamp into
5xx answers and the retry ladder."""

from __future__ import annotations

import base64
import re
from typing import Any

import aiohttp
import orjson

from consumers.storefronts.contract import Tracking, WriteBack
from consumers.storefronts.errors import StoreAuthRevoked, StoreRefused, StoreUnavailable
from consumers.storefronts.pacing import MAX_IN_FLIGHT, Slots
from consumers.storefronts.transport import Request, Response, check_base_url, retry_after, send

API = "/wp-json/wc/v3"


def order_id(order_ref: str) -> str:
    """WooCommerce's numeric order id."""
    ref = order_ref.strip()
    if not re.fullmatch(r"\d+", ref):
        raise StoreRefused(f"not a WooCommerce order id: {order_ref!r}")
    return ref


def note_text(tracking: Tracking) -> str:
    """The customer-visible note: carrier, tracking number and link."""
    text = f"Shipped with {tracking.company}. Tracking number: {tracking.number}"
    return f"{text} ({tracking.url})" if tracking.url else text


def _request(method: str, path: str, auth: tuple[str, str], query_auth: bool,
             body: dict[str, Any] | None = None, writes: bool = False,
             params: tuple[tuple[str, str], ...] = ()) -> Request:
    key, secret = auth
    headers = {"Accept": "application/json"}
    if query_auth:
        params = (*params, ("consumer_key", key), ("consumer_secret", secret))
    else:
        token = base64.b64encode(f"{key}:{secret}".encode()).decode("ascii")
        headers["Authorization"] = f"Basic {token}"
    if body is not None:
        headers["Content-Type"] = "application/json"
    return Request(method, API + path, headers=headers, params=params,
                   body=orjson.dumps(body) if body is not None else None, writes=writes)


def build_list_notes(order_ref: str, auth: tuple[str, str], query_auth: bool) -> Request:
    """GET the order's customer notes (the endpoint is not paginated)."""
    return _request("GET", f"/orders/{order_id(order_ref)}/notes", auth, query_auth,
                    params=(("type", "customer"),))


def build_create_note(order_ref: str, tracking: Tracking, auth: tuple[str, str],
                      query_auth: bool) -> Request:
    """POST the tracking note, customer-visible (`customer_note`: the customer is e-mailed)."""
    return _request("POST", f"/orders/{order_id(order_ref)}/notes", auth, query_auth,
                    {"note": note_text(tracking), "customer_note": True}, writes=True)


def build_get_order(order_ref: str, auth: tuple[str, str], query_auth: bool) -> Request:
    """GET the order's id and status only."""
    return _request("GET", f"/orders/{order_id(order_ref)}", auth, query_auth,
                    params=(("_fields", "id,status"),))


def build_complete_order(order_ref: str, auth: tuple[str, str], query_auth: bool) -> Request:
    """PUT the order's status to `completed` (the same again changes nothing)."""
    return _request("PUT", f"/orders/{order_id(order_ref)}", auth, query_auth,
                    {"status": "completed"}, writes=True)


def read_json(response: Response) -> Any:
    """The answer's JSON, or the error it is: 401/403 revoke, 429 and 5xx are unavailable,
    any other 4xx refuses with WooCommerce's `message` (and `code`)."""
    status = response.status
    try:
        body = orjson.loads(response.body)
    except orjson.JSONDecodeError:
        body = None
    if 200 <= status < 300 and body is not None:
        return body
    said = _error(body) or response.body[:200].decode("utf-8", "replace")
    if status in (401, 403):
        raise StoreAuthRevoked(f"WooCommerce answered HTTP {status}: {said}", status)
    if status == 429 or status >= 500:
        raise StoreUnavailable(f"WooCommerce answered HTTP {status}: {said}",
                               retry_after(response.headers))
    if 400 <= status < 500:
        raise StoreRefused(f"WooCommerce refused: {said}", status)
    raise StoreUnavailable(f"WooCommerce answered HTTP {status} without JSON")


def _error(body: Any) -> str | None:
    if isinstance(body, dict) and "message" in body:
        return f"{body['message']} ({body.get('code', '')})"
    return None


def existing_note(notes: Any, number: str) -> str | None:
    """The id of a note that already carries tracking `number` as a whole word (not as the
    start of a longer number)."""
    if not isinstance(notes, list):
        raise StoreUnavailable("WooCommerce's notes answer is not a list")
    word = re.compile(rf"(?<![0-9A-Za-z]){re.escape(number)}(?![0-9A-Za-z])")
    return next((str(n["id"]) for n in notes
                 if isinstance(n, dict) and "id" in n and word.search(str(n.get("note", "")))),
                None)


def parse_created_note(response: Response) -> str:
    """The created note's id."""
    note = read_json(response)
    if not isinstance(note, dict) or "id" not in note:
        raise StoreUnavailable("WooCommerce's note answer has no id")
    return str(note["id"])


class WooCommerce:
    """One WooCommerce store's REST API v3, at `base_url` (the site's root URL)."""

    kind = "woocommerce"

    def __init__(self, session: aiohttp.ClientSession, base_url: str, consumer_key: str,
                 consumer_secret: str, complete_order: bool = True,
                 query_string_auth: bool = False, timeout: float = 10.0,
                 max_in_flight: int = MAX_IN_FLIGHT) -> None:
        if not consumer_key or not consumer_secret:
            raise ValueError("WooCommerce consumer key and secret are both needed")
        self.session = session
        self.base_url = check_base_url(base_url)
        self.auth = (consumer_key, consumer_secret)
        self.complete_order = complete_order
        self.query_string_auth = query_string_auth
        self.timeout = timeout
        self.slots = Slots(max_in_flight)

    def __repr__(self) -> str:  # never the key or secret
        return f"WooCommerce({self.base_url!r}, complete_order={self.complete_order})"

    async def _call(self, request: Request) -> Response:
        async with self.slots.turn():
            return await send(self.session, self.base_url, request, self.timeout)

    async def fulfil(self, order_ref: str, tracking: Tracking,
                     notify_customer: bool) -> WriteBack:
        # notify_customer has nothing to switch here: WooCommerce mails every customer note,
        # and a private note would hide the tracking from the customer's order page.
        auth, qs = self.auth, self.query_string_auth
        notes = read_json(await self._call(build_list_notes(order_ref, auth, qs)))
        found = existing_note(notes, tracking.number)
        if found is None:
            created = await self._call(build_create_note(order_ref, tracking, auth, qs))
            note_id = parse_created_note(created)
        if self.complete_order:
            # Also after an earlier note: the attempt that wrote it may have died before this.
            order = read_json(await self._call(build_get_order(order_ref, auth, qs)))
            if not isinstance(order, dict) or order.get("status") != "completed":
                read_json(await self._call(build_complete_order(order_ref, auth, qs)))
        return WriteBack(found, True) if found is not None else WriteBack(note_id, False)
