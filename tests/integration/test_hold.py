"""Authentic deliveries a provider's source cannot map are held, answered 202, counted, shown
with the DLQ commands and released once the mapping is fixed (router.hold)."""

from __future__ import annotations

import asyncio
import dataclasses
import io

import orjson
import pytest
from test_ingress import BAD_QTY, NO_LINES, SHOPIFY_ORDER, with_source

from router.broker.dlq import dlq_command
from router.hold import release_command
from router.providers import signed_headers

pytestmark = pytest.mark.integration

UNUSABLE = [
    # (case, body, topic, reason, a path the errors name)
    ("schema violation", BAD_QTY, "orders/create", "schema_violation", "/line_items/0/quantity"),
    ("unmappable", NO_LINES, "orders/create", "unmappable", "/lines"),
    ("unknown topic", SHOPIFY_ORDER, "products/update", "unknown_event", None),
]


async def held_messages(amqp, topology, source: str = "shopify") -> list:
    """Everything on the source's hold queue (taken and given back)."""
    channel = await amqp.channel()
    queue = await channel.get_queue(topology.hold_queue(source))
    taken = []
    while (message := await queue.get(no_ack=False, fail=False)) is not None:
        taken.append(message)
    await channel.close()  # unacknowledged: they go back
    return taken


async def post(client, settings, body: bytes, topic: str, delivery_id: str | None = None):
    headers = signed_headers(settings, "shopify", body, topic, delivery_id=delivery_id)
    response = await client.post("/webhooks/shopify", data=body, headers=headers)
    return response.status, await response.json(), headers


class TestHeld:
    @pytest.mark.parametrize(("body", "topic", "reason", "path"),
                             [row[1:] for row in UNUSABLE], ids=[row[0] for row in UNUSABLE])
    async def test_held_answered_202_and_nothing_reaches_a_work_queue(
        self, settings, make_client, amqp, topology, queue_depths, body, topic, reason, path
    ):
        """A verified delivery that fails its schema or mapping, or whose topic is not mapped,
        is answered 202 held once the broker has it on held.shopify, byte for byte with its
        reason and paths (no values); no work queue sees it; the provider's retry of it is a
        duplicate."""
        client = await make_client(settings)
        status, answer, headers = await post(client, settings, body, topic)
        delivery_id = headers["X-Shopify-Event-Id"]
        assert (202, {"status": "held", "id": delivery_id, "reason": reason}) == (status, answer)
        depths = await queue_depths()
        assert 1 == depths.pop(topology.hold_queue("shopify"))
        assert 0 == sum(depths.values())
        [message] = await held_messages(amqp, topology)
        held = message.headers
        assert (body, delivery_id, "shopify", reason) == (
            message.body, message.message_id, held["source"], held["x-held-reason"])
        errors = orjson.loads(held["x-held-errors"])
        if path is not None:
            assert path in [error["path"] for error in errors]
        assert b"two" not in held["x-held-errors"].encode()  # never a payload value
        kept = orjson.loads(held["x-held-headers"])
        assert (topic, delivery_id) == (kept["X-Shopify-Topic"], kept["X-Shopify-Event-Id"])
        assert "X-Shopify-Hmac-Sha256" not in kept  # never the signature

        again, answer, _ = await post(client, settings, body, topic, delivery_id=delivery_id)
        assert (200, "duplicate") == (again, answer["status"])
        assert 1 == len(await held_messages(amqp, topology))

    async def test_a_captured_body_under_made_up_topics_is_held_once(
        self, settings, make_client, amqp, topology, queue_depths
    ):
        """The signed body re-sent with new delivery ids and made-up topics (each unknown,
        4,000 bytes) is held once: the copies are duplicates of what is signed."""
        client = await make_client(settings)
        answers = []
        for n in range(5):
            status, answer, _ = await post(client, settings, SHOPIFY_ORDER, f"{n}" * 4000)
            answers.append((status, answer["status"]))
        assert [(202, "held")] + [(200, "duplicate")] * 4 == answers
        depths = await queue_depths()
        assert 1 == depths.pop(topology.hold_queue("shopify"))
        assert 0 == sum(depths.values())

    async def test_held_deliveries_are_counted_by_source_and_reason(
        self, settings, make_client, topology
    ):
        """webhook_held_total{source, reason} counts what was held."""
        from test_ingress import metric

        client = await make_client(settings)
        before = metric(await (await client.get("/metrics")).text(), "webhook_held_total",
                        source="shopify", reason="unmappable")
        await post(client, settings, NO_LINES, "orders/create")
        after = metric(await (await client.get("/metrics")).text(), "webhook_held_total",
                       source="shopify", reason="unmappable")
        assert 1.0 == after - before


    async def test_a_topic_header_that_is_not_utf8_is_held_not_a_500(
        self, settings, make_client, amqp, topology, queue_depths
    ):
        """A signed delivery whose topic header is not UTF-8 (the body is what is signed) maps
        to no event: it is held like any other, its kept headers made valid text."""
        client = await make_client(settings)
        headers = signed_headers(settings, "shopify", SHOPIFY_ORDER, "orders/create")
        headers.pop("X-Shopify-Topic")
        head = "".join(f"{name}: {value}\r\n" for name, value in headers.items()).encode()
        reader, writer = await asyncio.open_connection("127.0.0.1", client.server.port)
        writer.write(b"POST /webhooks/shopify HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
                     + head + b"X-Shopify-Topic: orders/\xff\xfe\r\n"
                     + f"Content-Length: {len(SHOPIFY_ORDER)}\r\n\r\n".encode()
                     + SHOPIFY_ORDER)
        answer = await reader.read()
        writer.close()
        assert answer.startswith(b"HTTP/1.1 202"), answer[:200]
        assert b'"status":"held"' in answer
        depths = await queue_depths()
        assert 1 == depths.pop(topology.hold_queue("shopify"))
        assert 0 == sum(depths.values())
        [message] = await held_messages(amqp, topology)
        kept = orjson.loads(message.headers["x-held-headers"])
        assert "orders/\ufffd\ufffd" == kept["X-Shopify-Topic"]


class TestRelease:
    async def test_release_publishes_what_now_maps_and_holds_the_rest_again(
        self, settings, make_client, amqp, topology, queue_depths
    ):
        """Held while orders/paid was not wired, a delivery is released once it is: published
        as the event it would have been, under its delivery id; one that still cannot be
        mapped stays held with its reason, counted as released once. `dlq list` shows them
        and `dlq replay` refuses a hold queue."""
        unwired = with_source(settings, "shopify", events={
            k: v for k, v in settings.sources["shopify"].events.items() if k != "orders/paid"})
        client = await make_client(unwired)
        paid_order = orjson.dumps({**orjson.loads(SHOPIFY_ORDER), "financial_status": "paid"})
        _, paid, _ = await post(client, unwired, paid_order, "orders/paid")
        _, broken, _ = await post(client, unwired, NO_LINES, "orders/create")
        assert ("held", "held") == (paid["status"], broken["status"])

        listing = io.StringIO()
        assert 0 == await dlq_command(settings.broker, "list", "held.shopify", out=listing)
        assert "2 message(s)" in listing.getvalue()
        assert f"id={paid['id']}" in listing.getvalue()
        assert "reason=unknown_event" in listing.getvalue()
        assert 2 == await dlq_command(settings.broker, "replay", "held.shopify")

        wired = with_source(settings, "shopify", events={
            **settings.sources["shopify"].events, "orders/paid": "order.updated"})
        report = io.StringIO()
        assert 0 == await release_command(wired, "shopify", out=report)
        assert "released 1 of 2" in report.getvalue()
        assert "still held: unmappable 1" in report.getvalue()

        channel = await amqp.channel()
        orders = await channel.get_queue(topology.queue("orders"))
        event = await orders.get(no_ack=True, timeout=5)
        envelope = orjson.loads(event.body)
        assert (paid["id"], "order.updated", "shopify") == (
            event.message_id, envelope["type"], envelope["source"])
        [still] = await held_messages(amqp, topology)
        assert (broken["id"], "unmappable", 1) == (
            still.message_id, still.headers["x-held-reason"], still.headers["x-held-releases"])

    async def test_release_of_one_id_leaves_the_others(
        self, settings, make_client, amqp, topology
    ):
        """`release --id` takes only that delivery off the hold queue."""
        client = await make_client(settings)
        _, first, _ = await post(client, settings, order_numbered(1), "products/update")
        _, second, _ = await post(client, settings, order_numbered(2), "products/update")
        wired = with_source(settings, "shopify", events={
            **settings.sources["shopify"].events, "products/update": "order.updated"})
        assert 0 == await release_command(wired, "shopify", message_id=second["id"],
                                          out=io.StringIO())
        assert [first["id"]] == [m.message_id for m in await held_messages(amqp, topology)]

    async def test_a_broker_error_during_release_keeps_everything_held(
        self, settings, make_client, amqp, topology, capsys
    ):
        """If the broker refuses the replacement (here: the events exchange is gone), release
        says so and exits 1, and the delivery stays held: nothing is lost."""
        client = await make_client(settings)
        _, held, _ = await post(client, settings, SHOPIFY_ORDER, "products/update")
        channel = await amqp.channel()
        await (await channel.get_exchange(topology.exchange, ensure=False)).delete()
        wired = with_source(settings, "shopify", events={
            **settings.sources["shopify"].events, "products/update": "order.updated"})
        assert 1 == await release_command(wired, "shopify", out=io.StringIO())
        assert "broker error after 0 message(s)" in capsys.readouterr().err
        assert [held["id"]] == [m.message_id for m in await held_messages(amqp, topology)]

    async def test_a_source_that_rejects_holds_nothing(self, settings, make_client, topology):
        """on_invalid = "reject" (our own feeds) answers 422 and holds nothing."""
        rejecting = with_source(settings, "shopify", on_invalid="reject")
        client = await make_client(rejecting)
        status, answer, _ = await post(client, rejecting, NO_LINES, "orders/create")
        assert (422, "unmappable") == (status, answer["error"])
        assert dataclasses.replace(settings.sources["portal"]).on_invalid == "reject"


def order_numbered(n: int) -> bytes:
    """The Shopify sample as another order (its own body, so no copy of another)."""
    return orjson.dumps({**orjson.loads(SHOPIFY_ORDER), "id": 820982911946154500 + n})


def bounded(settings, **limits):
    return dataclasses.replace(settings, broker=dataclasses.replace(settings.broker, **limits))


class TestBounded:
    async def test_a_full_hold_queue_answers_503_and_keeps_what_it_holds(
        self, settings, make_client, amqp, topology, queue_depths
    ):
        """held.* has x-max-length with reject-publish: once full, the next delivery to hold
        is answered 503 hold_queue_full with Retry-After (the provider retries later), the
        deliveries held before stay, and nothing else is queued."""
        small = bounded(settings, held_max_length=2)
        client = await make_client(small)
        held, refused = [], None
        for n in range(8):  # a quorum queue may take one past its limit before it refuses
            status, answer, _ = await post(client, small, order_numbered(n), "products/update")
            if status != 202:
                refused = (status, answer)
                break
            held.append(answer["id"])
        assert refused is not None, f"{len(held)} held and none refused"
        status, answer = refused
        assert (503, "hold_queue_full") == (status, answer["error"])
        assert "retry later" in answer["message"]
        response = await client.post("/webhooks/shopify", data=order_numbered(99), headers=(
            signed_headers(small, "shopify", order_numbered(99), "products/update")))
        assert (503, "5") == (response.status, response.headers["Retry-After"])
        assert 2 <= len(held)
        assert held == [m.message_id for m in await held_messages(amqp, topology)]
        depths = await queue_depths()
        assert len(held) == depths.pop(topology.hold_queue("shopify"))
        assert 0 == sum(depths.values())

    async def test_the_limits_are_exported_as_gauges(self, settings, make_client, topology):
        """/metrics shows each bounded queue's limits and that the broker enforces them."""
        from test_ingress import metric

        client = await make_client(bounded(settings, held_max_length=7, held_max_bytes=4096))
        text = await (await client.get("/metrics")).text()
        held, audit = topology.hold_queue("shopify"), topology.queue("audit")
        assert (7, 4096, 1) == tuple(metric(text, f"webhook_queue_{name}", queue=held) for name in (
            "max_length", "max_bytes", "limit_applied"))
        assert (1_000_000, 1) == (metric(text, "webhook_queue_max_length", queue=audit),
                                  metric(text, "webhook_queue_limit_applied", queue=audit))

    async def test_a_hold_queue_from_before_the_limits_still_works_and_says_so(
        self, settings, make_client, amqp, topology, capsys
    ):
        """A held.* queue declared by an older release (no limits; RabbitMQ refuses to
        redeclare it with them) does not stop the ingress: it is used as it is, the log says
        what to do, and /metrics shows it unbounded."""
        from test_ingress import metric

        channel = await amqp.channel()
        await channel.declare_queue(topology.hold_queue("shopify"), durable=True,
                                    arguments={"x-queue-type": "quorum"})
        client = await make_client(settings)
        status, answer, _ = await post(client, settings, SHOPIFY_ORDER, "products/update")
        assert (202, "held") == (status, answer["status"])
        text = await (await client.get("/metrics")).text()
        assert 0 == metric(text, "webhook_queue_limit_applied",
                           queue=topology.hold_queue("shopify"))
        logged = capsys.readouterr()
        assert "queue_limits_not_applied" in logged.out + logged.err
        assert "rabbitmqctl set_policy" in logged.out + logged.err


class TestKeptHeaders:
    async def test_a_4000_byte_topic_is_kept_cut(self, settings, make_client, amqp, topology):
        """A made-up 4,000-byte topic is held with its first 256 bytes and a marker of what
        was cut; all the held message's headers stay small."""
        client = await make_client(settings)
        status, answer, _ = await post(client, settings, SHOPIFY_ORDER, "t" * 4000)
        assert (202, "held") == (status, answer["status"])
        [message] = await held_messages(amqp, topology)
        kept = orjson.loads(message.headers["x-held-headers"])
        assert "t" * 256 + "...[3744 bytes cut]" == kept["X-Shopify-Topic"]
        assert 2048 > sum(len(str(value)) for value in message.headers.values())
