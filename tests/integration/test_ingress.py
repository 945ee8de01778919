"""The ingress end to end, against the real RabbitMQ: accepted events land on their queues,
bad input gets a clear 4xx with a JSON reason and publishes nothing."""

from __future__ import annotations

import asyncio
import dataclasses
import time
from pathlib import Path
from typing import Any

import aio_pika
import orjson
import pytest

from router.broker.topology import Topology
from router.providers import signed_headers
from router.settings import RateLimit, Settings

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[2]
SAMPLES = ROOT / "config" / "samples"
SHOPIFY_ORDER = (SAMPLES / "shopify-orders-create.json").read_bytes()


def with_source(settings: Settings, name: str, **changes: Any) -> Settings:
    sources = dict(settings.sources)
    sources[name] = dataclasses.replace(sources[name], **changes)
    return dataclasses.replace(settings, sources=sources)


async def get_one(amqp, queue_name: str, timeout: float = 5.0) -> aio_pika.IncomingMessage:
    channel = await amqp.channel()
    queue = await channel.declare_queue(queue_name, passive=True)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        message = await queue.get(fail=False, no_ack=True)
        if message is not None:
            return message
        await asyncio.sleep(0.02)
    raise AssertionError(f"nothing arrived on {queue_name}")


async def rabbitmqctl(*args: str) -> None:
    proc = await asyncio.create_subprocess_exec("rabbitmqctl", "-q", *args)
    assert 0 == await proc.wait()


async def broker_started(timeout: float = 60.0) -> None:
    """`start_app`, then wait until every quorum queue has its leader again. RabbitMQ 3.10's
    at-least-once dead-letter worker crashes when its queue is deleted (a test's teardown)
    before the queue has elected its leader, and enough such crashes stop the broker's
    rabbit_fifo_dlx_sup: dead-lettering quorum queues then fail for everyone, INTERNAL_ERROR."""
    await rabbitmqctl("start_app")
    await rabbitmqctl("await_startup")
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        proc = await asyncio.create_subprocess_exec(
            "rabbitmqctl", "-q", "list_queues", "name", "type", "leader",
            stdout=asyncio.subprocess.PIPE)
        out, _ = await proc.communicate()
        rows = [line.split("\t") for line in out.decode().splitlines()[1:]]
        leaderless = [r[0] for r in rows if len(r) == 3 and r[1] == "quorum"
                      and r[2].strip() in ("", "undefined")]
        if proc.returncode == 0 and not leaderless:
            return
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"quorum queues without a leader: {leaderless[:5]}")
        await asyncio.sleep(0.2)


class TestAccepted:
    async def test_shopify_order_lands_on_orders_queue(self, client, settings, amqp, topology):
        """A signed Shopify order is answered 202 and its canonical order.created is queued."""
        headers = signed_headers(settings, "shopify", SHOPIFY_ORDER, "orders/create")
        response = await client.post("/webhooks/shopify", data=SHOPIFY_ORDER, headers=headers)
        body = await response.json()
        assert 202 == response.status
        assert {"status": "accepted", "id": headers["X-Shopify-Event-Id"]} == body

        message = await get_one(amqp, topology.queue("orders"))
        envelope = orjson.loads(message.body)
        assert headers["X-Shopify-Event-Id"] == envelope["id"] == message.message_id
        assert "order.created" == envelope["type"] == message.type
        assert "shopify" == envelope["source"]
        assert "order.created/v1" == envelope["schema"]
        assert "5820982911946154508" == envelope["data"]["order_id"]
        assert [
            {"sku": "PEP-BPC157-5MG", "quantity": 2, "ships": True},
            {"sku": "BAC-WATER-10ML", "quantity": 1, "ships": True},
        ] == envelope["data"]["lines"]
        assert aio_pika.DeliveryMode.PERSISTENT == message.delivery_mode
        assert response.headers["X-Request-Id"] == message.correlation_id
        assert "application/json" == message.content_type
        headers_sent = {k: message.headers[k] for k in ("source", "schema", "attempt")}
        assert {"source": "shopify", "schema": "order.created/v1", "attempt": 0} == headers_sent

    @pytest.mark.parametrize(
        ("source", "sample", "topic", "queue"),
        [
            ("woocommerce", "woocommerce-order-created.json", "order.created", "orders"),
            ("portal", "portal-order-created.json", None, "orders"),
            ("inventory", "inventory-stock-updated.json", None, "inventory"),
            ("easypost", "easypost-tracker-updated.json", None, "shipping"),
            ("aftership", "aftership-tracking-update.json", None, "shipping"),
        ],
    )
    async def test_every_shipped_source_routes_its_sample(
        self, client, settings, amqp, topology, source, sample, topic, queue
    ):
        """Each shipped source accepts its signed sample and routes it to its queue."""
        body = (SAMPLES / sample).read_bytes()
        headers = signed_headers(settings, source, body, topic)
        response = await client.post(f"/webhooks/{source}", data=body, headers=headers)
        assert 202 == response.status, await response.text()
        message = await get_one(amqp, topology.queue(queue))
        assert source == orjson.loads(message.body)["source"]

    async def test_repeated_delivery_is_answered_duplicate(
        self, client, settings, queue_depths, topology
    ):
        """A provider's retry of an accepted event gets 200 duplicate and is not published twice."""
        headers = signed_headers(settings, "shopify", SHOPIFY_ORDER, "orders/create")
        first = await client.post("/webhooks/shopify", data=SHOPIFY_ORDER, headers=headers)
        second = await client.post("/webhooks/shopify", data=SHOPIFY_ORDER, headers=headers)
        assert 202 == first.status
        assert 200 == second.status
        assert {"status": "duplicate", "id": headers["X-Shopify-Event-Id"]} == await second.json()
        assert 1 == (await queue_depths())[topology.queue("orders")]

    @pytest.mark.parametrize(("source", "sample", "topic"), [
        ("shopify", "shopify-orders-create.json", "orders/create"),
        ("woocommerce", "woocommerce-order-created.json", "order.created"),
    ])
    async def test_a_captured_body_under_new_delivery_ids_is_a_duplicate(
        self, client, settings, queue_depths, topology, source, sample, topic
    ):
        """Shopify and WooCommerce sign the body alone: the same signed body sent again with
        a new delivery id is answered 200 duplicate and published once (orders and audit
        each get one copy)."""
        body = (SAMPLES / sample).read_bytes()
        answers = []
        for _ in range(5):
            headers = signed_headers(settings, source, body, topic)  # a fresh delivery id
            response = await client.post(f"/webhooks/{source}", data=body, headers=headers)
            answers.append((response.status, (await response.json())["status"]))
        assert [(202, "accepted")] + [(200, "duplicate")] * 4 == answers
        depths = await queue_depths()
        assert (1, 1) == (depths.pop(topology.queue("orders")), depths.pop(topology.queue("audit")))
        assert 0 == sum(depths.values())

    async def test_the_same_body_under_two_mapped_topics_is_two_events(
        self, client, settings, queue_depths, topology
    ):
        """Shopify may send one body as orders/create and orders/updated: under topics the
        source maps, each is an event of its own."""
        for topic in ("orders/create", "orders/updated"):
            headers = signed_headers(settings, "shopify", SHOPIFY_ORDER, topic)
            response = await client.post("/webhooks/shopify", data=SHOPIFY_ORDER,
                                         headers=headers)
            assert (202, "accepted") == (response.status, (await response.json())["status"])
        assert 2 == (await queue_depths())[topology.queue("orders")]

    async def test_woocommerce_creation_ping_gets_200(self, client, queue_depths):
        """WooCommerce's unsigned creation ping is answered 200 and publishes nothing."""
        response = await client.post(
            "/webhooks/woocommerce",
            data=b"webhook_id=15",
            headers={"Content-Type": "application/x-www-form-urlencoded"},
        )
        assert 200 == response.status
        assert {"status": "ping"} == await response.json()
        assert 0 == sum((await queue_depths()).values())


def _shopify(body: bytes = SHOPIFY_ORDER, topic: str = "orders/create", **override: str):
    """A request to the shopify source: (path, body, headers-builder)."""

    def headers(settings: Settings) -> dict[str, str]:
        h = signed_headers(settings, "shopify", body, topic)
        h.update(override)
        return {k: v for k, v in h.items() if v != "<drop>"}

    return "/webhooks/shopify", body, headers


DEEP = b'{"a":' * 40 + b"1" + b"}" * 40
BAD_QTY = SHOPIFY_ORDER.replace(b'"quantity":2', b'"quantity":"two"', 1)
NO_LINES = orjson.dumps({**orjson.loads(SHOPIFY_ORDER), "line_items": []})


REJECT = {"on_invalid": "reject"}
BAD_INPUT = [
    # (case, path, body, headers(settings), method, settings change, status, reason)
    ("unknown path", "/webhooks/nope", SHOPIFY_ORDER, lambda s: {}, "POST", None, 404,
     "unknown_source"),
    ("wrong method", "/webhooks/shopify", b"", lambda s: {}, "GET", None, 405,
     "method_not_allowed"),
    ("body over the limit", *_shopify(), "POST", {"max_body": 100}, 413, "payload_too_large"),
    ("content type not accepted", *_shopify(**{"Content-Type": "text/plain"}), "POST", None, 415,
     "unsupported_media_type"),
    ("address not allowed", *_shopify(), "POST", {"allow_ips": ("203.0.113.0/24",)}, 403,
     "address_not_allowed"),
    ("missing signature", *_shopify(**{"X-Shopify-Hmac-Sha256": "<drop>"}), "POST", None, 401,
     "missing_signature"),
    ("invalid signature", *_shopify(**{"X-Shopify-Hmac-Sha256": "AAAA"}), "POST", None, 401,
     "invalid_signature"),
    ("malformed JSON", *_shopify(b'{"id": 1,'), "POST", None, 400, "invalid_json"),
    ("invalid UTF-8", *_shopify(b'{"note": "\xff\xfe"}'), "POST", None, 400, "invalid_utf8"),
    ("nested too deep", *_shopify(DEEP), "POST", None, 400, "too_deep"),
    # A source that rejects what it cannot map (our own feeds) says why; a provider's source
    # holds it instead (TestHold).
    ("schema violation", *_shopify(BAD_QTY), "POST", REJECT, 422, "schema_violation"),
    ("unmappable order", *_shopify(NO_LINES), "POST", REJECT, 422, None),
    ("unknown topic", *_shopify(topic="products/update"), "POST", REJECT, 422, "unknown_event"),
    ("delivery id too long", *_shopify(**{"X-Shopify-Event-Id": "e" * 300}), "POST", None, 400,
     "invalid_event_id"),
]


class TestBadInput:
    @pytest.mark.parametrize(
        ("path", "body", "headers", "method", "change", "status", "reason"),
        [row[1:] for row in BAD_INPUT],
        ids=[row[0] for row in BAD_INPUT],
    )
    async def test_refused_with_reason_and_nothing_published(
        self, settings, make_client, queue_depths, path, body, headers, method, change, status,
        reason,
    ):
        """A bad request gets its status and JSON reason, and no queue receives anything."""
        if change:
            settings = with_source(settings, "shopify", **change)
        client = await make_client(settings)
        response = await client.request(method, path, data=body, headers=headers(settings))
        payload = await response.json()
        assert status == response.status, payload
        if reason is not None:
            assert reason == payload["error"]
        assert isinstance(payload["message"], str)
        assert 0 == sum((await queue_depths()).values())

    async def test_schema_violation_lists_failing_paths_without_values(
        self, make_client, settings, queue_depths
    ):
        """A 422 (from a source that rejects) names each failing path and never echoes the
        payload's values."""
        client = await make_client(with_source(settings, "shopify", **REJECT))
        body = BAD_QTY.replace(b'"quantity":1', b'"quantity":"one"', 1)
        headers = signed_headers(settings, "shopify", body, "orders/create")
        response = await client.post("/webhooks/shopify", data=body, headers=headers)
        payload = await response.json()
        assert 422 == response.status
        paths = sorted(e["path"] for e in payload["errors"])
        assert ["/line_items/0/quantity", "/line_items/1/quantity"] == paths
        assert b"two" not in await response.read()
        assert 0 == sum((await queue_depths()).values())

    async def test_chunked_body_over_the_limit_is_refused(self, settings, make_client,
                                                           queue_depths):
        """A chunked body (no Content-Length) is cut off with 413 once it passes the limit."""
        settings = with_source(settings, "shopify", max_body=1000)
        client = await make_client(settings)
        headers = signed_headers(settings, "shopify", SHOPIFY_ORDER, "orders/create")

        async def chunks():
            for _ in range(10):
                yield SHOPIFY_ORDER[:500]

        response = await client.post("/webhooks/shopify", data=chunks(), headers=headers)
        assert 413 == response.status
        assert "payload_too_large" == (await response.json())["error"]
        assert 0 == sum((await queue_depths()).values())

    async def test_stale_timestamp_is_refused(self, client, settings, queue_depths):
        """An inventory delivery signed ten minutes ago is refused as out of tolerance."""
        body = (SAMPLES / "inventory-stock-updated.json").read_bytes()
        from router.verify import build_verifier

        s = settings.sources["inventory"]
        verifier = build_verifier(s.scheme, s.secrets, s.options, file="t", key="k")
        headers = verifier.sign(body, time.time() - 600, "id-1")
        headers["Content-Type"] = "application/json"
        response = await client.post("/webhooks/inventory", data=body, headers=headers)
        assert 401 == response.status
        assert "timestamp_out_of_tolerance" == (await response.json())["error"]
        assert 0 == sum((await queue_depths()).values())

    async def test_wrong_bearer_token_is_refused(self, client, queue_depths):
        """The portal refuses a wrong bearer token with 401 invalid_credentials."""
        body = (SAMPLES / "portal-order-created.json").read_bytes()
        response = await client.post(
            "/webhooks/portal",
            data=body,
            headers={"Content-Type": "application/json", "Authorization": "Bearer wrong"},
        )
        assert 401 == response.status
        assert "invalid_credentials" == (await response.json())["error"]
        assert 0 == sum((await queue_depths()).values())

    async def test_rate_limit_answers_429_with_retry_after(self, settings, make_client,
                                                          topology, queue_depths):
        """Past the burst, a client gets 429 with Retry-After and the request is not published."""
        settings = with_source(settings, "shopify", rate_limit=RateLimit(rate=0.1, burst=1))
        client = await make_client(settings)
        headers = signed_headers(settings, "shopify", SHOPIFY_ORDER, "orders/create")
        first = await client.post("/webhooks/shopify", data=SHOPIFY_ORDER, headers=headers)
        assert 202 == first.status
        headers = signed_headers(settings, "shopify", SHOPIFY_ORDER, "orders/create")
        second = await client.post("/webhooks/shopify", data=SHOPIFY_ORDER, headers=headers)
        assert 429 == second.status
        assert "rate_limited" == (await second.json())["error"]
        assert 1 <= int(second.headers["Retry-After"]) <= 10
        assert 1 == (await queue_depths())[topology.queue("orders")]

    async def test_xml_entity_expansion_is_refused(self, settings, make_client, queue_depths):
        """A source that takes XML refuses a billion-laughs body with 400 and publishes nothing."""
        settings = with_source(
            settings, "shopify", content_types=("application/json", "application/xml")
        )
        client = await make_client(settings)
        body = (
            b'<?xml version="1.0"?><!DOCTYPE lolz [<!ENTITY lol "lol">'
            b'<!ENTITY lol2 "&lol;&lol;&lol;&lol;">]><order>&lol2;</order>'
        )
        headers = signed_headers(settings, "shopify", body, "orders/create")
        headers["Content-Type"] = "application/xml"
        response = await client.post("/webhooks/shopify", data=body, headers=headers)
        assert 400 == response.status
        assert "xml_forbidden" == (await response.json())["error"]
        assert 0 == sum((await queue_depths()).values())


class TestBrokerTrouble:
    async def test_broker_unreachable_gives_503_and_not_ready(self, settings, make_client,
                                                              queue_depths):
        """With no broker to talk to, /readyz and webhooks answer 503 with Retry-After."""
        broker = dataclasses.replace(settings.broker, url="amqp://guest:guest@127.0.0.1:1/")
        client = await make_client(dataclasses.replace(settings, broker=broker), ready=False)
        ready = await client.get("/readyz")
        assert 503 == ready.status
        headers = signed_headers(settings, "shopify", SHOPIFY_ORDER, "orders/create")
        response = await client.post("/webhooks/shopify", data=SHOPIFY_ORDER, headers=headers)
        assert 503 == response.status
        assert "broker_unavailable" == (await response.json())["error"]
        assert "5" == response.headers["Retry-After"]
        assert 0 == sum((await queue_depths()).values())

    async def test_publish_the_broker_returns_gives_503(self, settings, make_client, amqp,
                                                        topology):
        """With no queue to take it (the orders and audit queues and the unrouted queue behind the
        alternate exchange are gone), the broker returns the event: 503 with Retry-After, so
        the provider tries again; never a 500."""
        client = await make_client(settings)
        channel = await amqp.channel()
        for name in (topology.queue("orders"), topology.queue("audit"), topology.unrouted_queue):
            queue = await channel.get_queue(name, ensure=False)
            await queue.delete(if_unused=False, if_empty=False)
        headers = signed_headers(settings, "shopify", SHOPIFY_ORDER, "orders/create")
        response = await client.post("/webhooks/shopify", data=SHOPIFY_ORDER, headers=headers)
        assert (503, "broker_unavailable", "5") == (
            response.status, (await response.json())["error"], response.headers["Retry-After"]
        )
        await topology.declare(channel)  # back as it was, for the clean-up


def metric(text: str, name: str, **labels: str) -> float:
    from prometheus_client.parser import text_string_to_metric_families

    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and sample.labels == labels:
                return sample.value
    return 0.0


class TestMetrics:
    async def test_requests_failures_and_publish_latency_are_counted(self, client, settings):
        """/metrics counts requests by source and status, verification failures by reason,
        and observes the publish latency."""
        before = await (await client.get("/metrics")).text()
        headers = signed_headers(settings, "shopify", SHOPIFY_ORDER, "orders/create")
        assert 202 == (await client.post("/webhooks/shopify", data=SHOPIFY_ORDER,
                                         headers=headers)).status
        headers["X-Shopify-Hmac-Sha256"] = "AAAA"
        assert 401 == (await client.post("/webhooks/shopify", data=SHOPIFY_ORDER,
                                         headers=headers)).status
        after = await (await client.get("/metrics")).text()

        def delta(name: str, **labels: str) -> float:
            return metric(after, name, **labels) - metric(before, name, **labels)

        assert 1 == delta("webhook_requests_total", source="shopify", status="202")
        assert 1 == delta("webhook_requests_total", source="shopify", status="401")
        assert 1 == delta("webhook_verification_failures_total", source="shopify",
                          reason="invalid_signature")
        assert 1 == delta("webhook_publish_latency_seconds_count", source="shopify")


ODD_BODIES = [
    b"[]", b'"order"', b"42", b"null", b"true", b"{}", b'{"id": null}',
    b'{"id": 123456789012345678901234567890}', b'{"line_items": "none"}',
    b'{"event": 7, "event_id": [], "description": {}}', b"\xef\xbb\xbf{}", b"",
]


class TestOddBodies:
    @pytest.mark.parametrize("source", ["shopify", "woocommerce", "portal", "inventory",
                                        "easypost", "aftership"])
    async def test_signed_odd_bodies_get_4xx_never_500(self, client, settings, queue_depths,
                                                       source):
        """Correctly signed but odd JSON bodies get a 4xx with a JSON reason (or, from a
        provider's source that holds what it cannot use, 202 held), never a 500, and nothing
        reaches a work queue."""
        holds = settings.sources[source].on_invalid == "hold"
        held = 0
        for body in ODD_BODIES:
            headers = signed_headers(settings, source, body, None)
            response = await client.post(f"/webhooks/{source}", data=body, headers=headers)
            payload = await response.json()
            if holds and response.status == 202:
                assert "held" == payload["status"], (body, payload)
                held += 1
            else:
                assert 400 <= response.status < 500, (body, response.status, payload)
                assert isinstance(payload["error"], str)
        depths = await queue_depths()
        assert held == depths.pop(Topology.of(settings.broker).hold_queue(source))
        assert 0 == sum(depths.values())


class TestAuditBound:
    @pytest.fixture
    def settings(self, settings: Settings) -> Settings:
        return dataclasses.replace(
            settings, broker=dataclasses.replace(settings.broker, audit_max_length=2))

    async def test_a_full_audit_queue_answers_503(self, client, settings, queue_depths,
                                                  topology):
        """The audit queue is bounded too (reject-publish): with nobody consuming it, once
        full the broker nacks the next event and the ingress answers 503 with Retry-After,
        not a disk alarm later; what it holds stays."""
        accepted, refused = 0, None
        for n in range(8):  # a quorum queue may take one past its limit before it refuses
            body = SHOPIFY_ORDER.replace(b'"#1042"', b'"#1042-%d"' % n)
            response = await client.post("/webhooks/shopify", data=body, headers=signed_headers(
                settings, "shopify", body, "orders/create"))
            if response.status != 202:
                refused = (response.status, (await response.json())["error"],
                           response.headers.get("Retry-After"))
                break
            accepted += 1
        assert (503, "broker_unavailable", "5") == refused
        assert 2 <= accepted == (await queue_depths())[topology.queue("audit")]
