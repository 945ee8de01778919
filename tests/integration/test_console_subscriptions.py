"""The console's Subscriptions pages against the real RabbitMQ, both stores and an HTTP
receiver started here: each subscription's state, failures, last success, queues and newest
attempts; Enable, Disable, Send test notification and Replay since, operators only, each
recorded in operator_actions; refusals with their status and reason."""

from __future__ import annotations

import dataclasses

import aio_pika
import orjson
import pytest
from test_console_actions import actions, csrf, depth
from test_console_server import CSRF, console_settings, login
from test_notifications import receivers, subscription  # noqa: F401 (a fixture)
from test_runner import wait_for

from consumers.outbound.notification import delivery_queue
from router.settings import NotificationSettings

pytestmark = pytest.mark.integration

VIEWER = {"name": "", "password": "", "token": "bo-token-0123"}
POSTS = ["/subscriptions/enable", "/subscriptions/disable", "/subscriptions/test",
         "/subscriptions/replay"]


@pytest.fixture
async def config(settings, store_url, receivers, amqp, topology):  # noqa: F811
    """Console settings with two subscriptions to the local receiver: `hooks` (its URL with a
    query that must never show) and `off` (off in config); their queues declared, deleted
    after."""
    subs = {
        "hooks": subscription("hooks", receivers.url("hooks") + "?key=not-for-eyes",
                              events=("shipment.*",)),
        "off": dataclasses.replace(subscription("off", receivers.url("off")), enabled=False,
                                   secrets=()),
    }
    configured = dataclasses.replace(
        console_settings(settings, store_url), subscriptions=subs,
        notifications=NotificationSettings(mode="development", retry_ladder=(1, 2)))
    specs = topology.delivery_queues(subs, configured.notifications.retry_ladder)
    channel = await amqp.channel()
    await topology.declare_queues(channel, specs)
    yield configured
    channel = await amqp.channel()
    for spec in specs:
        await channel.queue_delete(spec.name)


@pytest.fixture
async def console(make_console, config, store):
    return await make_console(config)


def queue(topology, name: str) -> str:
    return topology.queue(delivery_queue(name))


async def state_of(store, name: str) -> str | None:
    async with store.transaction() as tx:
        return await tx.fetchval("SELECT state FROM subscription_state WHERE name = $1", name)


class TestPages:
    async def test_list_and_one_show_state_failures_last_success_and_attempts(
            self, console, store, amqp, topology):
        """The list shows each subscription's URL (no query), events, state with its reason,
        failures in a row, last success and waiting messages; its page shows its newest
        attempts with status or error and latency, newest first."""
        async with store.transaction() as tx:
            for i, (status, error, latency, at) in enumerate([
                    (204, None, 12.4, "2026-11-28T10:00:00.000000+00:00"),
                    (None, "timeout after 15 s", 15000.0, "2026-11-28T11:00:00.000000+00:00"),
                    (503, None, 37.6, "2026-11-28T12:00:00.000000+00:00")]):
                await tx.execute(
                    "INSERT INTO deliveries (subscription, message_id, event_id, type, attempt,"
                    " status_code, error, latency_ms, at) VALUES ('hooks', $1, $2,"
                    " 'shipment.updated', $3, $4, $5, $6, $7)",
                    f"msg-{i}", f"evt-{i}", i + 1, status, error, latency, at)
            await tx.execute(
                "INSERT INTO subscription_state (name, state, reason, failures, updated_at)"
                " VALUES ('hooks', 'paused', '2 consecutive failures over 3600 s', 2, $1)",
                "2026-11-28T12:00:00.000000+00:00")
        channel = await amqp.channel(publisher_confirms=True)
        await channel.default_exchange.publish(
            aio_pika.Message(b"{}"), routing_key=queue(topology, "hooks"))
        assert 303 == (await login(console)).status
        page = await (await console.get("/subscriptions")).text()
        row = page[page.index(">hooks</a>"):page.index("</tr>", page.index(">hooks</a>"))]
        assert "/hooks</code>" in row and "not-for-eyes" not in page
        assert "shipment.*" in row and "paused <small>(2 consecutive failures" in row
        cells = [cell.split("</td>")[0] for cell in row.split("<td>")[1:]]
        assert ["2", "2026-11-28T10:00:00.000000+00:00", "1", "0"] == cells[3:]
        assert "off in config" in page
        page = await (await console.get("/subscriptions/one", params={"name": "hooks"})).text()
        attempts = page[page.index('id="attempts"'):]
        assert attempts.index("msg-2") < attempts.index("msg-1") < attempts.index("msg-0")
        assert "HTTP 503</td><td>38 ms" in attempts and "HTTP 204</td><td>12 ms" in attempts
        assert "timeout after 15 s</td><td>15000 ms" in attempts
        assert "Send test notification" in page

    async def test_unknown_subscription_is_404(self, console):
        """A page or action for a subscription the config does not have: 404, as JSON when
        asked for."""
        assert 303 == (await login(console)).status
        response = await console.get("/subscriptions/one", params={"name": "nobody"},
                                     headers={"Accept": "application/json"})
        assert (404, "unknown_subscription") == (response.status,
                                                 (await response.json())["error"])
        response = await console.post("/subscriptions/disable", data={
            "csrf": await csrf(console), "name": "nobody"})
        assert 404 == response.status and "unknown_subscription" in await response.text()


class TestActions:
    async def test_disable_and_enable_change_the_state_and_are_recorded(self, console, store):
        """Disable then Enable: the store's state follows, the page says it, and each is
        one operator_actions row."""
        assert 303 == (await login(console)).status
        token = await csrf(console)
        response = await console.post("/subscriptions/disable", data={
            "csrf": token, "name": "hooks"})
        assert 200 == response.status
        assert "disabled <small>(disabled by ana (console))" in await response.text()
        assert "disabled" == await state_of(store, "hooks")
        response = await console.post("/subscriptions/enable", allow_redirects=False, data={
            "csrf": token, "name": "hooks"})
        assert 303 == response.status
        assert "enabled" == await state_of(store, "hooks")
        assert [("ana", "disable", "hooks", "[]", "disabled"),
                ("ana", "enable", "hooks", "[]", "enabled")] == await actions(store)

    async def test_send_test_notification_reaches_the_receiver(self, console, store,
                                                               receivers):  # noqa: F811
        """The receiver gets a webhook.test it verifies; the page shows its answer and
        latency; the send is recorded with its webhook-id, as is a refusing receiver's."""
        assert 303 == (await login(console)).status
        token = await csrf(console)
        page = await (await console.post("/subscriptions/test", data={
            "csrf": token, "name": "hooks"})).text()
        [got] = receivers.got["hooks"]
        assert "webhook.test" == got["payload"]["type"]
        assert f"<code>{got['id']}</code>: HTTP 204 in " in page
        receivers.mode["hooks"] = "gone"
        page = await (await console.post("/subscriptions/test", data={
            "csrf": token, "name": "hooks"})).text()
        assert 'class="problem">Test notification' in page and ": HTTP 410 in " in page
        recorded = await actions(store)
        assert [("ana", "test-notification", "hooks", orjson.dumps([got["id"]]).decode())] \
            == [row[:4] for row in recorded[:1]]
        assert ["answered HTTP 204 in", "answered HTTP 410 in"] == [
            row[4].rsplit(" ", 2)[0] for row in recorded]

    async def test_replay_since_queues_what_the_subscriber_wants_since_then(
            self, console, store, amqp, topology):
        """Of four outbox rows, the two since the time given and of a type the subscription
        wants are queued again on deliver.hooks; the page says 2; recorded."""
        async with store.transaction() as tx:
            for i, kind in enumerate(["shipment.updated", "shipment.updated", "stock.changed",
                                      "shipment.updated"]):
                body = orjson.dumps({"id": f"old-{i}", "type": kind, "data": {}})
                await tx.add_outbox(kind, f"notify.{kind}", body, f"old-{i}")
            await tx.execute("UPDATE outbox SET created_at = $1 WHERE message_id = 'old-0'",
                             "2020-01-01T00:00:00.000000+00:00")
        assert 303 == (await login(console)).status
        page = await (await console.post("/subscriptions/replay", data={
            "csrf": await csrf(console), "name": "hooks", "since": "2025-01-01T00:00:00Z"}
        )).text()
        since = "2025-01-01T00:00:00.000000+00:00"
        assert f"queued 2 notifications since {since} again" in page

        async def queued() -> bool:
            return await depth(amqp, queue(topology, "hooks")) == 2

        await wait_for(queued)
        assert [("ana", "replay-since", "hooks", "[]", f"queued 2 since {since}")] \
            == await actions(store)

    @pytest.mark.parametrize(("path", "form", "status", "reason"), [
        ("/subscriptions/enable", {"name": "off"}, 409, "subscription_off"),
        ("/subscriptions/test", {"name": "off"}, 409, "subscription_off"),
        ("/subscriptions/replay", {"name": "off", "since": "2025-01-01"}, 409,
         "subscription_off"),
        ("/subscriptions/replay", {"name": "hooks", "since": "yesterday"}, 400, "bad_time"),
        ("/subscriptions/replay", {"name": "hooks", "since": ""}, 400, "bad_time"),
        ("/subscriptions/test", {"name": "nobody"}, 404, "unknown_subscription"),
    ])
    async def test_refusals(self, console, store, amqp, topology, receivers,  # noqa: F811
                            path, form, status, reason):
        """Off in config, a bad time or an unknown name: the status and reason as JSON,
        nothing done, nothing recorded."""
        assert 303 == (await login(console)).status
        response = await console.post(path, data={"csrf": await csrf(console), **form},
                                      headers={"Accept": "application/json"})
        assert (status, reason) == (response.status, (await response.json())["error"])
        assert [] == await actions(store)
        assert None is await state_of(store, "off")
        assert not receivers.calls


class TestRefused:
    @pytest.mark.parametrize("path", POSTS)
    async def test_a_viewer_gets_403(self, console, store, amqp, topology,
                                     receivers, path):  # noqa: F811
        """A viewer sees the pages without a button, and each action is 403: nothing done,
        nothing recorded."""
        assert 303 == (await login(console, **VIEWER)).status
        page = await (await console.get("/subscriptions/one", params={"name": "hooks"})).text()
        assert "hooks" in page and "<button type=\"submit\">Enable" not in page
        response = await console.post(path, data={
            "csrf": CSRF.search(page)[1], "name": "hooks", "since": "2000-01-01"})
        assert (403, True) == (response.status, "forbidden" in await response.text())
        assert [] == await actions(store)
        assert None is await state_of(store, "hooks")
        assert not receivers.calls
        assert 0 == await depth(amqp, queue(topology, "hooks"))

    @pytest.mark.parametrize("path", POSTS)
    async def test_without_the_csrf_token_is_403(self, console, store, receivers,  # noqa: F811
                                                 path):
        """An operator's action without the session's CSRF token: 403 csrf_token_invalid."""
        assert 303 == (await login(console)).status
        response = await console.post(path, data={"name": "hooks", "since": "2000-01-01"},
                                      headers={"Accept": "application/json"})
        assert (403, "csrf_token_invalid") == (response.status,
                                               (await response.json())["error"])
        assert [] == await actions(store)
        assert None is await state_of(store, "hooks")
        assert not receivers.calls
