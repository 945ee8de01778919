"""What a client sends never makes a 500 or holds the door open: header bytes that are not
UTF-8, JWT time claims beyond a float, slow bodies, too many connections, compressed bodies,
the unsigned ping, IPv6 rate limits, concurrent copies of one delivery, and the access log
line of a refusal. Against the real RabbitMQ."""

from __future__ import annotations

import asyncio
import dataclasses
import gzip
import time
from pathlib import Path

import aiohttp
import jwt
import orjson
import pytest
import structlog
from test_ingress import SHOPIFY_ORDER, get_one, with_source
from test_server import make_server, server_config, wait_status  # noqa: F401 (fixtures)

from router.app import INGRESS
from router.broker.errors import PublishFailed, PublishInDoubt
from router.providers import signed_headers
from router.settings import RateLimit, Settings

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[2]
JWT_KEY = b"portal-jwt-test-key-of-32-bytes!"


class Raw:
    """An HTTP/1.1 exchange over a plain socket, for what aiohttp's client will not send."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer

    @classmethod
    async def connect(cls, port: int) -> Raw:
        return cls(*await asyncio.open_connection("127.0.0.1", port))

    def send_head(self, path: str, headers: dict[str, str], length: int,
                  extra: bytes = b"") -> None:
        lines = [f"POST {path} HTTP/1.1", "Host: test", f"Content-Length: {length}",
                 *(f"{k}: {v}" for k, v in headers.items())]
        self.writer.write("\r\n".join(lines).encode() + b"\r\n" + extra + b"\r\n")

    async def response(self, timeout: float = 10.0) -> tuple[int, dict[str, str], bytes]:
        """The status, headers and body of the answer."""
        async with asyncio.timeout(timeout):
            status_line = await self.reader.readline()
            headers: dict[str, str] = {}
            while (line := await self.reader.readline()) not in (b"\r\n", b""):
                name, _, value = line.decode().partition(":")
                headers[name.strip().lower()] = value.strip()
            body = await self.reader.readexactly(int(headers.get("content-length", "0")))
        return int(status_line.split()[1]), headers, body

    async def closed_by_server(self, timeout: float = 10.0) -> bool:
        """True once the server has closed the connection (EOF or reset)."""
        try:
            async with asyncio.timeout(timeout):
                return b"" == await self.reader.read()
        except ConnectionResetError:
            return True

    def close(self) -> None:
        self.writer.close()


async def post_raw(port: int, path: str, body: bytes, headers: dict[str, str],
                   extra: bytes = b"") -> tuple[int, dict]:
    """POST with `extra` raw header lines; the status and the JSON answer."""
    raw = await Raw.connect(port)
    try:
        raw.send_head(path, {**headers, "Connection": "close"}, len(body), extra)
        raw.writer.write(body)
        status, _, answer = await raw.response()
    finally:
        raw.close()
    return status, orjson.loads(answer)


def without(headers: dict[str, str], *names: str) -> dict[str, str]:
    return {k: v for k, v in headers.items() if k not in names}


def jwt_portal(settings: Settings) -> Settings:
    """The portal source verifying HS256 JWTs instead of its bearer token."""
    return with_source(settings, "portal", scheme="jwt", secrets=(JWT_KEY,), options={})


PORTAL_ORDER = (ROOT / "config" / "samples" / "portal-order-created.json").read_bytes()


class TestHeadersThatAreNotUtf8:
    async def test_delivery_id_not_utf8_is_400(self, client, settings, queue_depths):
        """A signed order whose delivery id header holds byte 0xff is refused with 400
        invalid_event_id (made valid, two different ids could become one), never a 500."""
        headers = without(signed_headers(settings, "shopify", SHOPIFY_ORDER, "orders/create"),
                          "X-Shopify-Event-Id", "X-Shopify-Webhook-Id")
        status, answer = await post_raw(client.server.port, "/webhooks/shopify", SHOPIFY_ORDER,
                                        headers, b"X-Shopify-Webhook-Id: 12\xff34\r\n")
        assert (400, "invalid_event_id") == (status, answer["error"])
        assert 0 == sum((await queue_depths()).values())

    async def test_event_time_header_not_utf8_is_left_out(
        self, make_client, settings, tmp_path, amqp, topology
    ):
        """An event time header holding byte 0xff, for a mapping that takes the time from
        it, is treated as absent: the order is accepted, with no occurred_at."""
        mapping = tmp_path / "shopify.toml"
        text = (ROOT / "config" / "mappings" / "shopify.toml").read_text()
        mapping.write_text(text.replace(
            'occurred_at = { path = ["updated_at", "created_at"] }\n', "", 1))
        client = await make_client(with_source(settings, "shopify", mapping=mapping))
        headers = without(signed_headers(settings, "shopify", SHOPIFY_ORDER, "orders/create"),
                          "X-Shopify-Triggered-At")
        status, answer = await post_raw(client.server.port, "/webhooks/shopify", SHOPIFY_ORDER,
                                        headers, b"X-Shopify-Triggered-At: 2026\xff\r\n")
        assert 202 == status, answer
        message = await get_one(amqp, topology.queue("orders"))
        assert None is orjson.loads(message.body)["occurred_at"]

    @pytest.mark.parametrize(
        ("case", "line", "status", "reason"),
        [
            ("jwt", b"Authorization: Bearer ey\xff.ey.sig\r\n", 401, "invalid_token"),
            ("content coding", b"Content-Encoding: gz\xffip\r\n", 415, "unsupported_encoding"),
            ("forwarded for", b"X-Forwarded-For: 1.2.3.\xff\r\n", 401, "missing_credentials"),
        ],
    )
    async def test_other_headers_not_utf8_are_4xx(self, make_client, settings, queue_depths,
                                                  case, line, status, reason):
        """The other headers the pipeline reads, holding byte 0xff: a 4xx, never a 500."""
        settings = dataclasses.replace(settings, server=dataclasses.replace(
            settings.server, trusted_proxies=("127.0.0.1/32",)))
        client = await make_client(jwt_portal(settings))
        got, answer = await post_raw(client.server.port, "/webhooks/portal", PORTAL_ORDER,
                                     {"Content-Type": "application/json"}, line)
        assert (status, reason) == (got, answer["error"])
        assert 0 == sum((await queue_depths()).values())


class TestJwtTimes:
    @pytest.mark.parametrize("claim", ["exp", "nbf", "iat"])
    async def test_time_claim_of_10_to_the_400_is_401(self, make_client, settings,
                                                       queue_depths, claim):
        """A JWT whose time claim is 10**400 (no float holds it) gets 401 invalid_token."""
        client = await make_client(jwt_portal(settings))
        claims = {"exp": int(time.time()) + 60, claim: 10**400}
        token = jwt.encode(claims, JWT_KEY, algorithm="HS256")
        response = await client.post(
            "/webhooks/portal", data=PORTAL_ORDER,
            headers={"Content-Type": "application/json", "Authorization": f"Bearer {token}"})
        assert (401, "invalid_token") == (response.status, (await response.json())["error"])
        assert 0 == sum((await queue_depths()).values())


class TestSlowBodies:
    async def test_trickled_body_is_cut_off_while_others_are_served(
        self, make_client, settings, queue_depths, topology
    ):
        """A body trickled a byte at a time gets 408 body_timeout at the source's deadline
        and its connection is closed, while another client's order is served meanwhile."""
        client = await make_client(with_source(settings, "shopify", body_timeout=2.0))
        headers = signed_headers(settings, "shopify", SHOPIFY_ORDER, "orders/create")
        slow = await Raw.connect(client.server.port)
        slow.send_head("/webhooks/shopify", headers, len(SHOPIFY_ORDER))
        started = asyncio.Event()

        async def trickle() -> None:
            for byte in SHOPIFY_ORDER:
                slow.writer.write(bytes([byte]))
                await slow.writer.drain()
                started.set()
                await asyncio.sleep(0.2)

        trickling = asyncio.create_task(trickle())
        answer = asyncio.create_task(slow.response(timeout=30))
        try:
            await asyncio.wait_for(started.wait(), 10)
            other = signed_headers(settings, "shopify", SHOPIFY_ORDER, "orders/create")
            response = await client.post("/webhooks/shopify", data=SHOPIFY_ORDER, headers=other)
            assert 202 == response.status
            assert not answer.done()  # served while the slow one was still being read

            status, response_headers, body = await answer
            assert (408, "body_timeout") == (status, orjson.loads(body)["error"])
            assert "close" == response_headers["connection"]
            assert await slow.closed_by_server()
        finally:
            trickling.cancel()
            slow.close()
        assert 1 == (await queue_depths())[topology.queue("orders")]


class TestConnectionCap:
    @pytest.mark.parametrize(("workers", "cap"), [(1, 3), (2, 1)])
    async def test_past_the_cap_connections_are_refused_until_some_close(
        self, server_config, make_server,  # noqa: F811 (fixtures of test_server)
        workers, cap,
    ):
        """With max_connections per process and that many idle keep-alive connections open
        in each process (one process, or gunicorn's workers), the next one is answered 503
        with Retry-After and closed; once the idle ones close, new connections are served
        again."""
        config = server_config()
        config.write_text(config.read_text().replace(
            "max_connections = 1000", f"max_connections = {cap}", 1))
        server = make_server(config)
        await server.start("--workers", str(workers))
        async with aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(force_close=True)
        ) as session:
            await wait_status(session, f"{server.base}/readyz", 200)

        async def served() -> Raw | None:
            """A connection that was served one request and is kept open; None if refused."""
            raw = await Raw.connect(server.port)
            raw.writer.write(b"GET /healthz HTTP/1.1\r\nHost: test\r\n\r\n")
            status, _, _ = await raw.response()
            if status == 200:
                return raw
            raw.close()
            return None

        async def until_served(timeout: float = 10.0) -> Raw:
            # The server notices a closed connection on its next turn: retry until then.
            deadline = time.monotonic() + timeout
            while time.monotonic() < deadline:
                raw = await served()
                if raw is not None:
                    return raw
                await asyncio.sleep(0.05)
            raise AssertionError("no connection was served")

        # Which worker takes a connection is the kernel's choice: a refused one is retried
        # until every process holds `cap` of them.
        idle = [await until_served() for _ in range(workers * cap)]
        try:
            refused = await Raw.connect(server.port)
            status, headers, body = await refused.response()
            assert (503, "1") == (status, headers["retry-after"])
            assert "too_many_connections" == orjson.loads(body)["error"]
            assert await refused.closed_by_server()
            refused.close()
        finally:
            for raw in idle:
                raw.close()
        again = await until_served()
        again.close()


class TestCompressedBodies:
    async def test_decompressed_size_is_held_to_the_sources_limit(
        self, make_client, settings, queue_depths
    ):
        """A gzip body of 200 bytes on the wire that inflates past the source's own
        max_body (5,000) is 413, though another source takes 1 MiB."""
        body = orjson.dumps({**orjson.loads(SHOPIFY_ORDER), "note": "x" * 20_000})
        client = await make_client(with_source(settings, "shopify", max_body=5_000))
        headers = signed_headers(settings, "shopify", body, "orders/create")
        sent = gzip.compress(body)
        assert len(sent) < 5_000 < len(body)
        response = await client.post("/webhooks/shopify", data=sent,
                                     headers={**headers, "Content-Encoding": "gzip"})
        assert (413, "payload_too_large") == (response.status,
                                              (await response.json())["error"])
        assert 0 == sum((await queue_depths()).values())

    async def test_compressed_body_within_the_limit_is_accepted(
        self, client, settings, amqp, topology
    ):
        """A gzip body is verified and mapped as the bytes it inflates to."""
        headers = signed_headers(settings, "shopify", SHOPIFY_ORDER, "orders/create")
        response = await client.post("/webhooks/shopify", data=gzip.compress(SHOPIFY_ORDER),
                                     headers={**headers, "Content-Encoding": "gzip"})
        assert 202 == response.status, await response.text()
        message = await get_one(amqp, topology.queue("orders"))
        assert "5820982911946154508" == orjson.loads(message.body)["data"]["order_id"]


PING = {"Content-Type": "application/x-www-form-urlencoded"}


class TestPing:
    async def test_ping_from_an_address_not_allowed_is_403(self, make_client, settings,
                                                           queue_depths):
        """WooCommerce's unsigned ping is answered only after the address allowlist."""
        client = await make_client(
            with_source(settings, "woocommerce", allow_ips=("203.0.113.0/24",)))
        response = await client.post("/webhooks/woocommerce", data=b"webhook_id=15",
                                     headers=PING)
        assert (403, "address_not_allowed") == (response.status,
                                                (await response.json())["error"])
        assert 0 == sum((await queue_depths()).values())

    async def test_ping_counts_toward_the_rate_limit(self, make_client, settings,
                                                     queue_depths):
        """A ping takes a token: past the burst it is 429, not 200."""
        client = await make_client(with_source(
            settings, "woocommerce", rate_limit=RateLimit(rate=0.1, burst=1)))
        first = await client.post("/webhooks/woocommerce", data=b"webhook_id=15", headers=PING)
        second = await client.post("/webhooks/woocommerce", data=b"webhook_id=15", headers=PING)
        assert (200, 429) == (first.status, second.status)
        assert "rate_limited" == (await second.json())["error"]
        assert 0 == sum((await queue_depths()).values())


class TestIpv6RateLimit:
    async def test_buckets_are_per_slash_64(self, make_client, settings, queue_depths,
                                            topology):
        """Behind a trusted proxy, two addresses of one IPv6 /64 share a bucket; the next
        /64 has its own."""
        settings = dataclasses.replace(settings, server=dataclasses.replace(
            settings.server, trusted_proxies=("127.0.0.1/32",)))
        client = await make_client(with_source(
            settings, "shopify", rate_limit=RateLimit(rate=0.1, burst=1)))
        statuses = []
        for n, address in enumerate(("2001:db8::1", "2001:db8::2", "2001:db8:0:1::1")):
            body = SHOPIFY_ORDER.replace(b'"#1042"', b'"#1042-%d"' % n)  # its own body
            headers = signed_headers(settings, "shopify", body, "orders/create")
            response = await client.post("/webhooks/shopify", data=body,
                                         headers={**headers, "X-Forwarded-For": address})
            statuses.append(response.status)
        assert [202, 429, 202] == statuses
        assert 2 == (await queue_depths())[topology.queue("orders")]


def publish_after_all_checked(ingress, monkeypatch, copies: int, then) -> list[int]:
    """Truly at once: no publish goes out before all `copies` have passed the duplicate
    check (on loopback the first one would otherwise be confirmed before the last arrives);
    then `then(publish, *args, **kwargs)` runs in place of the publisher's publish. Returns
    a list that counts the publishes."""
    checked, all_checked, publishes = 0, asyncio.Event(), []
    seen, publish = ingress.recent.seen, ingress.publisher.publish

    def counting_seen(key: str, now: float) -> bool:
        nonlocal checked
        checked += 1
        if checked >= copies:
            all_checked.set()
        return seen(key, now)

    async def held_publish(*args, **kwargs) -> float:
        publishes.append(1)
        await asyncio.wait_for(all_checked.wait(), 10)
        return await then(publish, *args, **kwargs)

    monkeypatch.setattr(ingress.recent, "seen", counting_seen)
    monkeypatch.setattr(ingress.publisher, "publish", held_publish)
    return publishes


async def post_copies(client, headers: dict[str, str], copies: int) -> list[tuple[int, dict]]:
    async def post() -> tuple[int, dict]:
        response = await client.post("/webhooks/shopify", data=SHOPIFY_ORDER, headers=headers)
        return response.status, await response.json()

    return await asyncio.gather(*(post() for _ in range(copies)))


class TestConcurrentCopies:
    async def test_thirty_copies_at_once_publish_once(self, client, settings, queue_depths,
                                                      topology, monkeypatch):
        """30 concurrent posts of one signed delivery: one 202 accepted, 29 answered as
        duplicates once it was confirmed, and exactly one message on the queue."""
        headers = signed_headers(settings, "shopify", SHOPIFY_ORDER, "orders/create")

        async def publish(real, *args, **kwargs) -> float:
            return await real(*args, **kwargs)

        publish_after_all_checked(client.server.app[INGRESS], monkeypatch, 30, publish)
        answers = await post_copies(client, headers, 30)
        delivery_id = headers["X-Shopify-Event-Id"]
        assert [(202, {"status": "accepted", "id": delivery_id})] + [
            (200, {"status": "duplicate", "id": delivery_id})] * 29 == sorted(
            answers, key=lambda answer: -answer[0])
        assert 1 == (await queue_depths())[topology.queue("orders")]

    @pytest.mark.parametrize(("failure", "status", "reason"), [
        (PublishFailed("not connected"), 503, "broker_unavailable"),
        (PublishInDoubt("not confirmed in time"), 504, "broker_unconfirmed"),
    ])
    async def test_copies_answer_as_the_first_failed(self, client, settings, queue_depths,
                                                     monkeypatch, failure, status, reason):
        """When the first copy's publish fails, the copies that waited for it get its answer:
        503 when nothing was taken, 504 when the broker may still deliver it (never a 503
        for something that may be delivered), and none of them publishes."""
        headers = signed_headers(settings, "shopify", SHOPIFY_ORDER, "orders/create")

        async def fail(real, *args, **kwargs) -> float:
            raise failure

        publishes = publish_after_all_checked(client.server.app[INGRESS], monkeypatch, 10, fail)
        answers = await post_copies(client, headers, 10)
        assert [(status, reason)] * 10 == [(code, body["error"]) for code, body in answers]
        assert 1 == len(publishes)
        assert 0 == sum((await queue_depths()).values())


class TestAccessLog:
    async def test_a_refusal_logs_its_reason_and_delivery_id(self, client, settings):
        """The access log line of a 4xx names its reason and the provider's delivery id (even
        one that was not UTF-8, made valid), never the body or a secret."""
        headers = signed_headers(settings, "shopify", SHOPIFY_ORDER, "orders/create")
        delivery_id = headers["X-Shopify-Event-Id"]
        with structlog.testing.capture_logs() as logs:
            forged = {**headers, "X-Shopify-Hmac-Sha256": "AAAA"}
            response = await client.post("/webhooks/shopify", data=SHOPIFY_ORDER, headers=forged)
            assert 401 == response.status
            status, _ = await post_raw(
                client.server.port, "/webhooks/shopify", SHOPIFY_ORDER,
                without(headers, "X-Shopify-Event-Id", "X-Shopify-Webhook-Id"),
                b"X-Shopify-Webhook-Id: 12\xff34\r\n")
            assert 400 == status
        lines = [(line["status"], line["reason"], line["event_id"])
                 for line in logs if line["event"] == "request"]
        assert [(401, "invalid_signature", delivery_id),
                (400, "invalid_event_id", "12\ufffd34")] == lines
        orjson.dumps(logs)  # what the JSON renderer will be given
        assert "Jane" not in str(logs) and settings.sources["shopify"].secrets[0].decode() \
            not in str(logs)
