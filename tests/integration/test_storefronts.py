"""The storefront drivers against their emulators on a local port: one suite for every
store (written once, asked twice: exactly once, lost answers, refused keys, outages), then
each store's own cases, and the emulators' own checks of what they are sent."""

from __future__ import annotations

import asyncio
import base64
import re
import socket
import subprocess
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from consumers.storefronts import (
    StoreAuthRevoked,
    Storefront,
    StoreRefused,
    StoreUnavailable,
    Tracking,
    Uncertain,
    open_storefront,
)
from consumers.storefronts.errors import Throttled
from consumers.storefronts.shopify import MAX_THROTTLE_WAIT
from emulators import shopify as shopify_emulator
from emulators import woocommerce as woocommerce_emulator

ROOT = Path(__file__).resolve().parents[2]
TOKEN = "shpat_test_0123"
KEY, SECRET = "ck_test_0123", "cs_test_4567"
TRACKING = Tracking("1Z1234512345123456", "UPS", "https://www.ups.com/track?tracknum=1Z12")


@dataclass
class Store:
    """A driver, its emulator, and what the emulator recorded."""

    kind: str
    server: TestServer
    session: aiohttp.ClientSession
    write: str  # the emulator's name for the operation that writes

    @property
    def base(self) -> str:
        return str(self.server.make_url("")).rstrip("/")

    def driver(self, session: aiohttp.ClientSession | None = None,
               **config: Any) -> Storefront:
        credentials: dict[str, Any] = (
            {"access_token": TOKEN} if self.kind == "shopify"
            else {"consumer_key": KEY, "consumer_secret": SECRET})
        return open_storefront(self.kind, session or self.session,
                               **{"base_url": self.base, **credentials, **config})

    async def control(self, path: str, body: dict[str, Any] | None = None) -> dict[str, Any]:
        if body is None:
            async with self.session.get(f"{self.base}/_emulator/{path}") as answer:
                return await answer.json()
        async with self.session.post(f"{self.base}/_emulator/{path}", json=body) as answer:
            assert 200 == answer.status, await answer.text()
            return await answer.json()

    async def fail(self, **fault: Any) -> None:
        await self.control("faults", fault)

    async def written(self, order: str) -> list[str]:
        """The tracking numbers the store holds for `order` (fulfillments; customer notes)."""
        state = await self.control("counters")
        order_state = state["orders"].get(order, {})
        if self.kind == "shopify":
            return [t["number"] for f in order_state.get("fulfillments", [])
                    for t in f["trackingInfo"]]
        return [TRACKING.number for n in order_state.get("notes", [])
                if n["customer_note"] and TRACKING.number in n["note"]]

    async def requests(self) -> dict[str, int]:
        return (await self.control("counters"))["requests"]


def emulator(kind: str, **options: Any) -> web.Application:
    if kind == "shopify":
        return shopify_emulator.create_app(TOKEN, **options)
    return woocommerce_emulator.create_app(KEY, SECRET, **options)


async def started(kind: str, **options: Any) -> AsyncIterator[Store]:
    server = TestServer(emulator(kind, **options), host="127.0.0.1")
    await server.start_server()
    try:
        async with aiohttp.ClientSession() as session:
            yield Store(kind, server, session,
                        "fulfillmentCreate" if kind == "shopify" else "create_note")
    finally:
        await server.close()


@pytest.fixture(params=["shopify", "woocommerce"])
async def store(request: pytest.FixtureRequest) -> AsyncIterator[Store]:
    async for s in started(request.param):
        yield s


@pytest.fixture
async def shop() -> AsyncIterator[Store]:
    async for s in started("shopify"):
        yield s


@pytest.fixture
async def woo() -> AsyncIterator[Store]:
    async for s in started("woocommerce"):
        yield s


class TestEveryStore:
    async def test_written_once_and_found_the_second_time(self, store):
        """The first call writes the tracking; the second finds it (already_done, the same
        id) and the store holds it once."""
        driver = store.driver()
        first = await driver.fulfil("1001", TRACKING, True)
        second = await driver.fulfil("1001", TRACKING, True)
        assert (False, True) == (first.already_done, second.already_done)
        assert first.external_id == second.external_id
        assert [TRACKING.number] == await store.written("1001")
        assert 1 == (await store.requests())[store.write]

    async def test_answer_lost_after_the_write(self, store):
        """The connection is cut after the store wrote: Uncertain; the retry finds the write
        and does not write again."""
        await store.fail(reset=True, operation=store.write)
        driver = store.driver()
        with pytest.raises(Uncertain):
            await driver.fulfil("1002", TRACKING, True)
        again = await driver.fulfil("1002", TRACKING, True)
        assert again.already_done
        assert [TRACKING.number] == await store.written("1002")

    async def test_connection_cut_before_the_write(self, store):
        """Cut before the store wrote: Uncertain too (the driver cannot tell); the retry
        writes, once."""
        await store.fail(drop=True, operation=store.write)
        driver = store.driver()
        with pytest.raises(Uncertain):
            await driver.fulfil("1003", TRACKING, True)
        assert [] == await store.written("1003")
        assert not (await driver.fulfil("1003", TRACKING, True)).already_done
        assert [TRACKING.number] == await store.written("1003")

    @pytest.mark.parametrize("status", [500, 503])
    async def test_server_error_writes_nothing(self, store, status):
        """A 5xx on the write: unavailable, nothing written; the retry writes once."""
        await store.fail(status=status, operation=store.write)
        with pytest.raises(StoreUnavailable):
            await store.driver().fulfil("1004", TRACKING, True)
        assert [] == await store.written("1004")
        await store.driver().fulfil("1004", TRACKING, True)
        assert [TRACKING.number] == await store.written("1004")

    async def test_rate_limited(self, store):
        """HTTP 429: unavailable with the store's Retry-After."""
        await store.fail(status=429)
        with pytest.raises(StoreUnavailable) as caught:
            await store.driver().fulfil("1005", TRACKING, True)
        assert caught.value.retry_after in (2.0, 3.0)  # what each emulator sends

    async def test_rate_limited_for_the_seconds_asked(self, store):
        """A fault's retry_after is the Retry-After the store sends."""
        await store.fail(status=429, retry_after=7)
        with pytest.raises(StoreUnavailable) as caught:
            await store.driver().fulfil("1011", TRACKING, True)
        assert 7.0 == caught.value.retry_after

    async def test_unavailable_for_the_seconds_asked(self, store):
        """A 503 with Retry-After (a maintenance page): unavailable for that long."""
        await store.fail(status=503, retry_after=30)
        with pytest.raises(StoreUnavailable) as caught:
            await store.driver().fulfil("1012", TRACKING, True)
        assert 30.0 == caught.value.retry_after

    async def test_a_write_slower_than_the_timeout_is_uncertain(self, store):
        """A delayed answer: the store may still write after the driver gave up."""
        await store.fail(delay=2.0, operation=store.write)
        with pytest.raises(Uncertain):
            await store.driver(timeout=0.3).fulfil("1012", TRACKING, True)

    async def test_no_more_requests_at_once_than_max_in_flight(self, store):
        """Six write-backs at once, every answer 0.2 s late, max_in_flight 2: never more than
        two requests out to the store at a time (yet two: they do overlap), and all six
        written."""
        await store.fail(delay=0.2, count=1000)
        out = peak = 0

        async def started(*_: Any) -> None:
            nonlocal out, peak
            out += 1
            peak = max(peak, out)

        async def ended(*_: Any) -> None:
            nonlocal out
            out -= 1

        trace = aiohttp.TraceConfig()
        trace.on_request_start.append(started)
        trace.on_request_end.append(ended)
        trace.on_request_exception.append(ended)
        async with aiohttp.ClientSession(trace_configs=[trace]) as session:
            driver = store.driver(session, max_in_flight=2)
            orders = [str(1300 + n) for n in range(6)]
            await asyncio.gather(*(driver.fulfil(o, TRACKING, True) for o in orders))
        assert 2 == peak
        for order in orders:
            assert [TRACKING.number] == await store.written(order)

    async def test_revoked_credentials(self, store):
        """401 (the token or key revoked): StoreAuthRevoked, nothing written."""
        await store.fail(status=401)
        with pytest.raises(StoreAuthRevoked) as caught:
            await store.driver().fulfil("1006", TRACKING, True)
        assert 401 == caught.value.status
        assert [] == await store.written("1006")

    async def test_wrong_credentials(self, store):
        """Credentials the store does not know: StoreAuthRevoked, with the store's words."""
        wrong = ({"access_token": "shpat_other"} if store.kind == "shopify"
                 else {"consumer_secret": "cs_other"})
        with pytest.raises(StoreAuthRevoked, match="Invalid API key|Consumer secret is invalid"):
            await store.driver(**wrong).fulfil("1007", TRACKING, True)

    async def test_nothing_listening(self, store):
        """No store at that address: unavailable (nothing was sent)."""
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            port = probe.getsockname()[1]
        driver = open_storefront(store.kind, store.session,
                                 **{**_credentials(store.kind),
                                    "base_url": f"http://127.0.0.1:{port}"})
        with pytest.raises(StoreUnavailable, match="unreachable"):
            await driver.fulfil("1008", TRACKING, True)


def _credentials(kind: str) -> dict[str, str]:
    return ({"access_token": TOKEN} if kind == "shopify"
            else {"consumer_key": KEY, "consumer_secret": SECRET})


class TestShopify:
    async def test_fulfillment_as_asked(self, shop):
        """One fulfillment with the tracking number, company, URL and notifyCustomer; the
        order's fulfillment order is closed."""
        result = await shop.driver().fulfil("2001", TRACKING, False)
        order = (await shop.control("counters"))["orders"]["2001"]
        [fulfillment] = order["fulfillments"]
        assert result.external_id == fulfillment["id"]
        assert [{"number": TRACKING.number, "company": "UPS", "url": TRACKING.url}] == \
            fulfillment["trackingInfo"]
        assert fulfillment["notifyCustomer"] is False
        assert ["CLOSED"] == [fo["status"] for fo in order["fulfillment_orders"]]

    async def test_already_fulfilled_with_that_number(self, shop):
        """Fulfilled at the store already (by hand, or an attempt we lost): already_done,
        and no fulfillmentCreate is sent."""
        await shop.control("seed", {"orders": [{
            "id": 2002, "fulfillment_orders": ["CLOSED"],
            "fulfillments": [{"number": TRACKING.number, "company": "UPS"}]}]})
        result = await shop.driver().fulfil("2002", TRACKING, True)
        assert result.already_done
        assert "fulfillmentCreate" not in await shop.requests()
        assert [TRACKING.number] == await shop.written("2002")

    async def test_only_open_fulfillment_orders_are_sent(self, shop):
        """Closed and on-hold fulfillment orders are left out of the fulfillment."""
        await shop.control("seed", {"orders": [{
            "id": 2003, "fulfillment_orders": ["CLOSED", "OPEN", "ON_HOLD"]}]})
        await shop.driver().fulfil("2003", TRACKING, True)
        order = (await shop.control("counters"))["orders"]["2003"]
        assert ["CLOSED", "CLOSED", "ON_HOLD"] == \
            [fo["status"] for fo in order["fulfillment_orders"]]

    async def test_no_open_fulfillment_order(self, shop):
        """Nothing left to fulfil and no fulfillment with our number: refused, not retried."""
        await shop.control("seed", {"orders": [{"id": 2004, "fulfillment_orders": ["CLOSED"]}]})
        with pytest.raises(StoreRefused, match="no open fulfillment order"):
            await shop.driver().fulfil("2004", TRACKING, True)
        assert "fulfillmentCreate" not in await shop.requests()

    async def test_throttled(self, shop):
        """The cost bucket empty: THROTTLED, unavailable with a retry-after from the cost and
        the restore rate; nothing written."""
        await shop.control("seed", {"bucket": {"available": 0, "restore_rate": 1}})
        with pytest.raises(StoreUnavailable, match="throttled") as caught:
            await shop.driver().fulfil("2005", TRACKING, True)
        assert caught.value.retry_after is not None and caught.value.retry_after >= 1
        assert [] == await shop.written("2005")

    async def test_a_short_throttle_is_waited_out(self, shop):
        """The bucket empty but refilling within a second (restoreRate 1000): the driver
        waits the computed second itself and asks again; the fulfillment is written."""
        await shop.control("seed", {"bucket": {"available": 0, "restore_rate": 1000}})
        result = await shop.driver().fulfil("2006", TRACKING, True)
        assert not result.already_done
        assert [TRACKING.number] == await shop.written("2006")
        assert 2 == (await shop.requests())["order"]  # throttled once, then answered

    async def test_a_long_throttle_goes_to_the_retry_ladder(self, shop):
        """Refilling at 1 point a second, the wait is the query's cost in seconds (more
        than MAX_THROTTLE_WAIT): Throttled at once with that wait, asked only once."""
        await shop.control("seed", {"bucket": {"available": 0, "restore_rate": 1}})
        with pytest.raises(Throttled) as caught:
            await shop.driver().fulfil("2007", TRACKING, True)
        assert caught.value.retry_after is not None
        assert caught.value.retry_after > MAX_THROTTLE_WAIT
        assert 1 == (await shop.requests())["order"]

    async def test_user_errors(self, shop):
        """userErrors on fulfillmentCreate: refused with the store's message."""
        await shop.fail(status="user_error", operation="fulfillmentCreate",
                        message="Tracking number is invalid for the carrier.")
        with pytest.raises(StoreRefused) as caught:
            await shop.driver().fulfil("2006", TRACKING, True)
        assert "fulfillment: Tracking number is invalid for the carrier." == \
            caught.value.message

    async def test_api_version(self, shop):
        """A configured API version is the path's; a made-up one is refused at once."""
        await shop.driver(api_version="2025-01").fulfil("2007", TRACKING, True)
        with pytest.raises(ValueError):
            shop.driver(api_version="latest")


class TestWooCommerce:
    async def test_note_and_completed(self, woo):
        """A customer note with the number and link, and the order completed."""
        result = await woo.driver().fulfil("3001", TRACKING, True)
        order = (await woo.control("counters"))["orders"]["3001"]
        note = next(n for n in order["notes"] if str(n["id"]) == result.external_id)
        assert note["customer_note"] is True
        assert TRACKING.number in note["note"] and TRACKING.url in note["note"]
        assert "completed" == order["status"]

    async def test_not_completed_when_not_configured(self, woo):
        await woo.driver(complete_order=False).fulfil("3002", TRACKING, True)
        assert "processing" == (await woo.control("counters"))["orders"]["3002"]["status"]
        assert "update_order" not in await woo.requests()

    async def test_completed_once(self, woo):
        """A second write-back finds the note and the order completed: no second PUT."""
        driver = woo.driver()
        await driver.fulfil("3003", TRACKING, True)
        await driver.fulfil("3003", TRACKING, True)
        assert 1 == (await woo.requests())["update_order"]

    async def test_died_between_note_and_status(self, woo):
        """The note written, the status change failed: the retry finds the note (already
        done) and still completes the order."""
        await woo.fail(status=503, operation="update_order")
        driver = woo.driver()
        with pytest.raises(StoreUnavailable):
            await driver.fulfil("3004", TRACKING, True)
        assert (await driver.fulfil("3004", TRACKING, True)).already_done
        assert "completed" == (await woo.control("counters"))["orders"]["3004"]["status"]
        assert [TRACKING.number] == await woo.written("3004")

    async def test_query_string_keys(self, woo):
        """Keys as query parameters (servers that drop the Authorization header) work."""
        result = await woo.driver(query_string_auth=True).fulfil("3005", TRACKING, True)
        assert not result.already_done

    async def test_unknown_order(self):
        """An order the store does not have: refused with WooCommerce's message."""
        async for woo in started("woocommerce", auto_orders=False):
            with pytest.raises(StoreRefused, match="Invalid ID"):
                await woo.driver().fulfil("3006", TRACKING, True)


class TestShopifyEmulatorChecks:
    async def post(self, shop: Store, body: dict[str, Any], token: str = TOKEN,
                   version: str = "2024-10") -> tuple[int, Any]:
        async with shop.session.post(f"{shop.base}/admin/api/{version}/graphql.json",
                                     json=body,
                                     headers={"X-Shopify-Access-Token": token}) as answer:
            return answer.status, await answer.json()

    async def test_missing_token(self, shop):
        status, body = await self.post(shop, {"query": "{ order(id: \"x\") { id } }"}, "")
        assert 401 == status and "Invalid API key" in body["errors"]

    async def test_token_not_ascii(self, shop):
        """Whatever bytes the header carries: 401, never a 500."""
        async with shop.session.post(
                f"{shop.base}/admin/api/2024-10/graphql.json", json={"query": "{ a }"},
                headers={"X-Shopify-Access-Token": "shpat_é".encode().decode("latin-1")}
        ) as answer:
            assert 401 == answer.status

    async def test_variables_not_an_object(self, shop):
        status, body = await self.post(shop, {"query": "{ order(id: \"x\") { id } }",
                                              "variables": [1]})
        assert 400 == status and "query" in body["errors"]

    async def test_wrong_input_type(self, shop):
        """A variable declared with another type than the argument's: variableMismatch."""
        query = ("mutation f($x: FulfillmentV2Input!) { fulfillmentCreate(fulfillment: $x) "
                 "{ userErrors { message } } }")
        status, body = await self.post(shop, {"query": query, "variables": {"x": {}}})
        assert 200 == status
        assert "variableMismatch" == body["errors"][0]["extensions"]["code"]

    async def test_field_not_in_the_input(self, shop):
        """A FulfillmentInput with a field it does not have: INVALID_VARIABLE, naming it."""
        query = ("mutation f($x: FulfillmentInput!) { fulfillmentCreate(fulfillment: $x) "
                 "{ userErrors { message } } }")
        variables = {"x": {"lineItemsByFulfillmentOrder": [{"fulfillmentOrderId": "gid://1"}],
                           "trackingInfo": {"number": "1", "carrier": "UPS"}}}
        _, body = await self.post(shop, {"query": query, "variables": variables})
        [error] = body["errors"]
        assert "INVALID_VARIABLE" == error["extensions"]["code"]
        assert [["trackingInfo", "carrier"]] == \
            [p["path"] for p in error["extensions"]["problems"]]

    async def test_required_input_missing(self, shop):
        query = ("mutation f($x: FulfillmentInput!) { fulfillmentCreate(fulfillment: $x) "
                 "{ userErrors { message } } }")
        _, body = await self.post(shop, {"query": query, "variables": {"x": {}}})
        problems = body["errors"][0]["extensions"]["problems"]
        assert [["lineItemsByFulfillmentOrder"]] == [p["path"] for p in problems]

    async def test_unknown_field(self, shop):
        _, body = await self.post(shop, {"query": "{ order(id: \"gid://shopify/Order/1\") "
                                                  "{ id tracking } }"})
        assert "undefinedField" == body["errors"][0]["extensions"]["code"]

    async def test_answer_is_what_was_selected_with_cost(self, shop):
        """Only the selected fields, under their aliases, and extensions.cost."""
        _, body = await self.post(shop, {"query": "query { o: order(id: "
                                                  "\"gid://shopify/Order/9\") { id } }"})
        assert {"o": {"id": "gid://shopify/Order/9"}} == body["data"]
        assert {"requestedQueryCost", "actualQueryCost", "throttleStatus"} == \
            set(body["extensions"]["cost"])

    async def test_unknown_version(self, shop):
        status, _ = await self.post(shop, {"query": "{ order(id: \"x\") { id } }"},
                                    version="2024-13")
        assert 404 == status


class TestWooCommerceEmulatorChecks:
    async def call(self, woo: Store, method: str, path: str, body: Any = None,
                   auth: bool = True) -> tuple[int, Any]:
        headers = {"Authorization": "Basic " + base64.b64encode(
            f"{KEY}:{SECRET}".encode()).decode()} if auth else {}
        async with woo.session.request(method, f"{woo.base}/wp-json/wc/v3{path}", json=body,
                                       headers=headers) as answer:
            return answer.status, await answer.json()

    async def test_no_credentials(self, woo):
        status, body = await self.call(woo, "GET", "/orders/1/notes", auth=False)
        assert (401, "woocommerce_rest_cannot_view") == (status, body["code"])
        assert {"status": 401} == body["data"]

    async def test_key_not_ascii(self, woo):
        """Basic credentials that are not ASCII: 401, never a 500."""
        async with woo.session.get(
                f"{woo.base}/wp-json/wc/v3/orders/1/notes",
                headers={"Authorization": "Basic " + base64.b64encode(
                    "ck_é:cs_é".encode()).decode()}) as answer:
            assert 401 == answer.status
        async with woo.session.get(
                f"{woo.base}/wp-json/wc/v3/orders/1/notes",
                params={"consumer_key": "ck_é", "consumer_secret": "x"}) as answer:
            assert 401 == answer.status

    async def test_note_missing(self, woo):
        status, body = await self.call(woo, "POST", "/orders/1/notes", {"customer_note": True})
        assert (400, "rest_missing_callback_param") == (status, body["code"])

    async def test_customer_note_not_boolean(self, woo):
        status, body = await self.call(woo, "POST", "/orders/1/notes",
                                       {"note": "x", "customer_note": "yes"})
        assert (400, "rest_invalid_param") == (status, body["code"])
        assert "customer_note" in body["data"]["params"]

    async def test_status_unknown(self, woo):
        status, body = await self.call(woo, "PUT", "/orders/1", {"status": "shipped"})
        assert (400, "rest_invalid_param") == (status, body["code"])

    async def test_no_route(self, woo):
        status, body = await self.call(woo, "GET", "/orders/abc/notes")
        assert (404, "rest_no_route") == (status, body["code"])


@pytest.mark.parametrize(("name", "options"), [
    ("shopify", ["--token", TOKEN]),
    ("woocommerce", ["--key", KEY, "--secret", SECRET]),
])
async def test_started_by_hand(name, options):
    """`python -m emulators NAME --port 0 ...` serves until stopped, its first line saying
    where; a driver talks to it."""
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "emulators", name, "--port", "0", *options,
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        assert process.stdout is not None
        line = (await asyncio.wait_for(process.stdout.readline(), timeout=30)).decode()
        match = re.fullmatch(r"listening on (http://127\.0\.0\.1:\d+)\n", line)
        assert match, line
        async with aiohttp.ClientSession() as session:
            driver = open_storefront(name, session, base_url=match[1], **_credentials(name))
            assert not (await driver.fulfil("4001", TRACKING, True)).already_done
    finally:
        process.terminate()
        await asyncio.wait_for(process.wait(), timeout=30)


async def test_redirect_not_followed(store):
    """A store answering with a redirect: not followed (the credentials would go with it);
    the write-back is unavailable and the other address never hears of it."""
    heard: list[str] = []

    async def elsewhere(request: web.Request) -> web.Response:
        heard.append(request.path)
        return web.json_response({})

    other_app = web.Application()
    other_app.router.add_route("*", "/{tail:.*}", elsewhere)
    other = TestServer(other_app, host="127.0.0.1")
    await other.start_server()

    async def redirect(request: web.Request) -> web.Response:
        raise web.HTTPFound(str(other.make_url(request.path)))

    moved_app = web.Application()
    moved_app.router.add_route("*", "/{tail:.*}", redirect)
    moved = TestServer(moved_app, host="127.0.0.1")
    await moved.start_server()
    try:
        driver = open_storefront(store.kind, store.session, **_credentials(store.kind),
                                 base_url=str(moved.make_url("")).rstrip("/"))
        with pytest.raises(StoreUnavailable, match="302"):
            await driver.fulfil("5001", TRACKING, True)
        assert [] == heard
    finally:
        await moved.close()
        await other.close()
