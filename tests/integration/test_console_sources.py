"""The console's Sources page against the real RabbitMQ and both stores: Send test payload
(signed as the provider would, posted to a live ingress, its answer shown, the send recorded;
operators only, CSRF required) and the mapping preview (the canonical event with personal
data masked, or the 422 reason and paths; nothing published)."""

from __future__ import annotations

import dataclasses
import hashlib

import orjson
import pytest
from test_console_actions import actions, csrf
from test_console_roles import depths
from test_console_server import console_settings, login
from test_runner import wait_for

pytestmark = pytest.mark.integration

# Every source that holds what it cannot map: a refused send reaches none of these queues.
HELD = ("shopify", "woocommerce", "easypost", "aftership")
PII = ("jane.doe@example.com", "Jane Doe", "123 Main Street", "78701")


def sample(settings) -> str:
    return settings.sources["shopify"].sample.read_text()


def digest(settings) -> str:
    return hashlib.sha256(sample(settings).encode()).hexdigest()


async def details(store) -> list[dict[str, str]]:
    async with store.transaction() as tx:
        rows = await tx.fetch("SELECT detail FROM operator_actions ORDER BY id")
    return [orjson.loads(row["detail"]) for row in rows]


@pytest.fixture
async def ingress(settings, make_client):
    return await make_client(settings)


@pytest.fixture
async def console(make_console, settings, store, store_url, ingress):
    url = str(ingress.make_url("")).rstrip("/")
    return await make_console(console_settings(settings, store_url, ingress_url=url))


class TestSendTestPayload:
    async def test_an_operator_sends_the_shopify_sample(self, console, settings, topology,
                                                        queue_depths, store, amqp):
        """The sample, signed as Shopify would, is accepted by the live ingress (202 shown);
        the order is on the orders queue (and its copy on audit's), marked with the header
        x-console-test: ana; the send is recorded with its topic and body digest."""
        assert 303 == (await login(console)).status
        page = await (await console.get("/sources")).text()
        assert "Send test payload" in page and "orders/create" in page and "#1042" in page
        response = await console.post("/sources/send", data={
            "csrf": await csrf(console), "source": "shopify", "topic": "orders/create",
            "payload": sample(settings)})
        page = await response.text()
        assert 200 == response.status
        assert "The ingress answered <strong>202</strong>" in page
        assert not any(value in page for value in PII)

        async def queued() -> bool:
            depths = await queue_depths()
            return (1, 1) == (depths[topology.queue("orders")], depths[topology.queue("audit")])

        await wait_for(queued, timeout=10)
        [(actor, action, target, ids, outcome)] = await actions(store)
        assert ("ana", "send-test", "shopify", "answered 202") == (actor, action, target,
                                                                   outcome)
        assert orjson.loads(ids)[0] in page  # the fresh delivery id it was sent with
        assert [{"topic": "orders/create", "body_sha256": digest(settings)}] == await details(
            store)
        audit = await (await console.get("/audit")).text()
        assert "send-test" in audit and digest(settings) in audit
        # Marked as this operator's test, so downstream can tell it from real traffic.
        channel = await amqp.channel()
        queue = await channel.get_queue(topology.queue("orders"))
        message = await queue.get(no_ack=True)
        assert "ana" == message.headers["x-console-test"]
        assert "x-console-test: ana" in page

    async def test_a_viewer_gets_403_and_no_button(self, console, settings, queue_depths,
                                                   store):
        """A viewer may preview but not send: no button, and a send is 403, nothing sent."""
        assert 303 == (await login(console, name="", password="",
                                   token="bo-token-0123")).status
        page = await (await console.get("/sources")).text()
        assert "Preview mapping" in page and "Send test payload" not in page
        response = await console.post("/sources/send", data={
            "csrf": await csrf(console), "source": "shopify", "topic": "orders/create",
            "payload": sample(settings)})
        assert (403, True) == (response.status, "forbidden" in await response.text())
        assert not any((await queue_depths()).values())
        assert [] == await actions(store)

    async def test_without_the_csrf_token_it_is_refused(self, console, settings,
                                                        queue_depths, store):
        """A send without this session's CSRF token is 403 csrf_token_invalid."""
        assert 303 == (await login(console)).status
        for token in ({}, {"csrf": "forged"}):
            response = await console.post("/sources/send", data={
                **token, "source": "shopify", "topic": "orders/create",
                "payload": sample(settings)})
            assert (403, True) == (response.status,
                                   "csrf_token_invalid" in await response.text())
        assert not any((await queue_depths()).values())
        assert [] == await actions(store)

    @pytest.mark.parametrize(("source", "topic", "reason"), [
        ("shopify", "orders/create\r\nX-Injected: 1", "bad_topic"),
        ("shopify", "orders/create\n", "bad_topic"),
        ("shopify", "\rorders/create", "bad_topic"),
        ("shopify", "orders/made-up", "unknown_topic"),
        ("shopify", "x" * 4000, "unknown_topic"),
        ("easypost", "tracker.updated", "unknown_topic"),  # its topic is in the body
    ])
    async def test_a_bad_or_unknown_topic_is_refused_and_recorded(
            self, console, settings, topology, amqp, store, source, topic, reason):
        """A topic with CR/LF (or another control character), one the source's provider does
        not send, or one for a source that reads its topic from the body: 422 with its
        reason as JSON; nothing reached any queue (held.* included); the refusal is
        recorded with the topic and the body's digest."""
        assert 303 == (await login(console)).status
        response = await console.post("/sources/send", headers={"Accept": "application/json"},
                                      data={"csrf": await csrf(console), "source": source,
                                            "topic": topic, "payload": sample(settings)})
        answer = await response.json()
        assert (422, reason) == (response.status, answer["error"])
        assert "nothing was sent" in answer["message"]
        names = [*topology.names(), *(topology.hold_queue(held) for held in HELD)]
        assert {name: 0 for name in names} == await depths(amqp, names)
        [(actor, action, target, ids, outcome)] = await actions(store)
        assert ("ana", "send-test", source, "[]", f"refused: {reason}") == (
            actor, action, target, ids, outcome)
        assert [{"topic": topic[:200], "body_sha256": digest(settings)}] == await details(
            store)

    async def test_an_unreachable_ingress_is_shown_and_recorded(
            self, make_console, settings, store, store_url):
        """No ingress at ingress_url: the page says so and the failed send is recorded."""
        dead = console_settings(settings, store_url)  # ingress_metrics: a closed port
        dead = dataclasses.replace(dead, console=dataclasses.replace(
            dead.console, ingress_url=dead.console.ingress_metrics))
        console = await make_console(dead)
        assert 303 == (await login(console)).status
        response = await console.post("/sources/send", data={
            "csrf": await csrf(console), "source": "shopify", "topic": "orders/create",
            "payload": sample(settings)})
        assert "cannot reach the ingress" in await response.text()
        [(_, _, _, _, outcome)] = await actions(store)
        assert outcome.startswith("failed: cannot reach the ingress")


class TestMappingPreview:
    async def test_the_shopify_sample_maps_to_the_canonical_order(
            self, console, settings, queue_depths):
        """A viewer previews the sample: order id and lines, personal data masked, and
        nothing published."""
        assert 303 == (await login(console, name="", password="",
                                   token="bo-token-0123")).status
        response = await console.post("/sources/preview", data={
            "csrf": await csrf(console), "source": "shopify", "topic": "orders/create",
            "payload": sample(settings)})
        page = await response.text()
        assert 200 == response.status
        assert "order.created" in page and "5820982911946154508" in page
        assert "PEP-BPC157-5MG" in page and "BAC-WATER-10ML" in page
        assert "shipping_address" in page and "[redacted]" in page
        assert not any(value in page for value in PII)
        assert not any((await queue_depths()).values())

    async def test_a_missing_field_gives_the_422_reason_and_path(
            self, console, settings, queue_depths, store):
        """Without created_at: 422 schema_violation at /created_at; nothing published,
        nothing recorded."""
        assert 303 == (await login(console)).status
        payload = orjson.loads(sample(settings))
        del payload["created_at"]
        response = await console.post("/sources/preview", data={
            "csrf": await csrf(console), "source": "shopify", "topic": "orders/create",
            "payload": orjson.dumps(payload).decode()})
        page = await response.text()
        assert "422 <code>schema_violation</code>" in page
        assert "<code>/created_at</code> is a required property" in page
        assert not any((await queue_depths()).values())
        assert [] == await actions(store)

    async def test_an_unknown_source_is_404_and_csrf_is_needed(self, console):
        """A source not configured is 404 unknown_source; a preview without CSRF is 403."""
        assert 303 == (await login(console)).status
        response = await console.post("/sources/preview", data={
            "csrf": await csrf(console), "source": "nope", "payload": "{}"})
        assert (404, True) == (response.status, "unknown_source" in await response.text())
        response = await console.post("/sources/preview", data={"source": "shopify",
                                                                 "payload": "{}"})
        assert 403 == response.status
