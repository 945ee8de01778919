"""Outbound webhooks against real HTTP receivers started here and the real broker: every
delivery verifies with the official `standardwebhooks` package, retries keep the webhook-id,
410 disables, a receiver that never answers is retried then dead-lettered while a healthy
one keeps getting its events, pausing parks messages until `subscriptions enable`, and
unsafe URLs are refused."""

from __future__ import annotations

import asyncio
import base64
import dataclasses
import io
import time
from collections import defaultdict
from typing import Any

import aio_pika
import orjson
import pytest
import structlog
from aiohttp import web
from standardwebhooks.webhooks import Webhook, WebhookVerificationError

from consumers.outbound.admin import Usage, deliveries_command, subscriptions_command
from consumers.outbound.fanout import Notifications  # noqa: E402
from consumers.outbound.notification import delivery_queue
from consumers.store import open_store
from router.errors import ConfigError
from router.settings import NotificationSettings, SubscriptionSettings, load_settings

pytestmark = pytest.mark.integration

SECRET_1 = "whsec_" + base64.b64encode(b"first-key-0123456789abcdef").decode()
SECRET_2 = "whsec_" + base64.b64encode(b"second-key-0123456789abcdef").decode()

# What receivers have been seen to send, and worse: none of it may crash a delivery.
RETRY_AFTER_HINTS = ["\u00b2", "Fri, 31 Dec 9999 23:59:59 GMT", "-5", "9" * 400, "soon",
                     "Sun, 06 Nov 1994 08:49:37 GMT", "\u0663", "Mon, 01 Jan 99999 00:00:00 GMT",
                     "1.5", "Thu, 01 Jan 1970 00:00:00 +9999", "2"]


class Receivers:
    """One aiohttp server; each path behaves as a kind of subscriber and records what it got."""

    def __init__(self) -> None:
        self.got: dict[str, list[dict[str, Any]]] = defaultdict(list)
        self.calls: dict[str, list[str]] = defaultdict(list)
        self.mode: dict[str, str] = {}
        self.arrived = asyncio.Event()
        self.release = asyncio.Event()  # lets the "held" receivers answer
        self.runner: web.AppRunner | None = None
        self.port = 0

    async def start(self) -> None:
        app = web.Application()
        app.router.add_post("/{name}", self.handle)
        self.runner = web.AppRunner(app)
        await self.runner.setup()
        site = web.TCPSite(self.runner, "127.0.0.1", 0)
        await site.start()
        self.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]

    async def stop(self) -> None:
        assert self.runner is not None
        await self.runner.cleanup()

    def url(self, name: str) -> str:
        return f"http://127.0.0.1:{self.port}/{name}"

    async def handle(self, request: web.Request) -> web.Response:
        name = request.match_info["name"]
        body = await request.read()
        webhook_id = request.headers.get("webhook-id", "")
        self.calls[name].append(webhook_id)
        mode = self.mode.get(name, "ok")
        if mode == "hang":
            await asyncio.sleep(30)
        if mode == "held":  # until the test lets it go, then answered as "ok"
            await self.release.wait()
        if mode == "gone":
            return web.Response(status=410)
        if mode == "redirect":
            raise web.HTTPFound(f"/{name}-target")
        if mode == "fail":
            return web.Response(status=500, text="x" * 100_000)  # longer than we read
        if mode == "hinted":  # 503 with each Retry-After in RETRY_AFTER_HINTS in turn
            hint = RETRY_AFTER_HINTS[(len(self.calls[name]) - 1) % len(RETRY_AFTER_HINTS)]
            return web.Response(status=503, headers={"Retry-After": hint})
        if mode == "flaky" and self.calls[name].count(webhook_id) <= 2:
            return web.Response(status=503, headers={"Retry-After": "1"})
        secret = SECRET_2 if name.endswith("-key2") else SECRET_1
        try:
            payload = Webhook(secret).verify(body, dict(request.headers))
        except WebhookVerificationError:
            return web.Response(status=400, text="bad signature")
        self.got[name].append({"id": webhook_id, "payload": payload, "at": time.monotonic()})
        self.arrived.set()
        return web.Response(status=204)


@pytest.fixture
async def receivers():
    r = Receivers()
    await r.start()
    yield r
    await r.stop()


def subscription(name: str, url: str, *, events=("order.*", "shipment.*"), **kw: Any):
    return SubscriptionSettings(
        name=name, url=url, events=tuple(events),
        secrets=(SECRET_1.encode(), SECRET_2.encode()), allow_private=True, **kw)


@pytest.fixture
async def notifying(settings, store_url, amqp):
    """Runs the notifications consumer with the given subscriptions; stops it and deletes the
    delivery queues afterwards."""
    running: list[tuple[asyncio.Event, asyncio.Task[None], Any]] = []
    declared: list[str] = []

    async def start(subs: list[SubscriptionSettings], **notify: Any):
        config = dataclasses.replace(
            settings,
            consumers=dataclasses.replace(settings.consumers, store=store_url),
            notifications=NotificationSettings(
                mode="development", retry_ladder=(1, 1), **notify),
            subscriptions={sub.name: sub for sub in subs},
        )
        store = open_store(store_url)
        await store.open()
        stop = asyncio.Event()
        task = asyncio.create_task(Notifications(config, store).run(stop))
        running.append((stop, task, store))
        b = config.broker
        from router.broker.topology import Topology

        topology = Topology(b.prefix, b.retry_ladder, b.delivery_limit)
        for sub in subs:
            declared.extend(spec.name for spec in topology.work_queues(
                delivery_queue(sub.name), config.notifications.retry_ladder))
        channel = await amqp.channel()
        for sub in subs:  # wait until every deliverer consumes
            while True:
                try:
                    queue = await channel.declare_queue(
                        topology.queue(delivery_queue(sub.name)), passive=True)
                    if queue.declaration_result.consumer_count:
                        break
                except aio_pika.exceptions.AMQPException:
                    channel = await amqp.channel()
                assert not task.done(), task
                await asyncio.sleep(0.05)
        return config, store, topology

    yield start
    for stop, task, store in running:
        stop.set()
        await asyncio.wait_for(task, 15)
        await store.close()
    async with await aio_pika.connect(settings.broker.url) as connection:
        channel = await connection.channel()
        for name in declared:
            await channel.queue_delete(name)


async def notify(amqp, topology, kind: str, n: int, tag: str = "") -> list[str]:
    """Publish n notify.<kind> messages as the consumers' outbox relay does; their ids."""
    channel = await amqp.channel(publisher_confirms=True)
    exchange = await channel.get_exchange(topology.exchange)
    ids = []
    for i in range(n):
        message_id = f"evt-{tag}{i}:{kind}:o-{i}"
        body = orjson.dumps({"id": message_id, "type": kind, "timestamp": "2026-11-28T00:00:00Z",
                             "data": {"order_id": f"o-{i}"}, "cause": f"evt-{tag}{i}"})
        await exchange.publish(
            aio_pika.Message(body, message_id=message_id, type=f"notify.{kind}",
                             delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
                             headers={"attempt": 0}),
            routing_key=f"notify.{kind}")
        ids.append(message_id)
    await channel.close()
    return ids


async def until(check, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if await check() if asyncio.iscoroutinefunction(check) else check():
            return
        await asyncio.sleep(0.05)
    raise AssertionError("condition not met in time")


async def depth(amqp, name: str) -> int:
    channel = await amqp.channel()
    queue = await channel.declare_queue(name, passive=True)
    await channel.close()
    return queue.declaration_result.message_count


class TestDelivery:
    async def test_every_delivery_verifies_with_either_rotated_key(
        self, amqp, topology, receivers, notifying
    ):
        """Two subscribers each hold only one of the two active secrets: both verify every
        delivery with the official package; the webhook-id is the notification id; a type a
        subscription does not want never reaches it."""
        await notifying([
            subscription("portal-key1", receivers.url("portal-key1")),
            subscription("portal-key2", receivers.url("portal-key2"),
                         events=("order.allocated",)),
        ])
        ids = await notify(amqp, topology, "order.allocated", 5)
        await notify(amqp, topology, "shipment.updated", 2, tag="s")
        await until(lambda: len(receivers.got["portal-key1"]) == 7
                    and len(receivers.got["portal-key2"]) == 5)
        assert sorted(ids) == sorted(g["id"] for g in receivers.got["portal-key2"])
        payload = receivers.got["portal-key2"][0]["payload"]
        assert ("order.allocated", "2026-11-28T00:00:00Z") == (payload["type"],
                                                               payload["timestamp"])

    async def test_failing_twice_then_succeeding_keeps_the_webhook_id(
        self, amqp, topology, receivers, notifying, store_url
    ):
        """503 with Retry-After twice, then success: three attempts with one webhook-id, all
        recorded, shown by `deliveries EVENT_ID`."""
        receivers.mode["flaky"] = "flaky"
        config, store, _ = await notifying([subscription("flaky", receivers.url("flaky"))])
        [message_id] = await notify(amqp, topology, "order.allocated", 1)
        await until(lambda: len(receivers.got["flaky"]) == 1, timeout=30)
        assert [message_id] * 3 == receivers.calls["flaky"]
        attempts: list[str] = []

        async def all_recorded() -> bool:
            # The receiver has the third call before the deliverer has recorded its answer.
            out = io.StringIO()
            assert 0 == await deliveries_command(config, "evt-0", subscription=None,
                                                 since=None, out=out)
            attempts[:] = [line.split("  ")[4] for line in out.getvalue().splitlines()]
            return len(attempts) >= 3

        await until(all_recorded, timeout=10)
        assert ["HTTP 503", "HTTP 503", "HTTP 204"] == attempts

    async def test_redirects_are_failures_and_not_followed(
        self, amqp, topology, receivers, notifying
    ):
        """A 302 is a failed attempt (retried, then dead); the Location is never requested.
        Each failed attempt and the dead letter log at warning, where alerts look."""
        receivers.mode["moved"] = "redirect"
        config, _, topo = await notifying([subscription("moved", receivers.url("moved"))])
        dead = topo.dead_queue(delivery_queue("moved"))
        with structlog.testing.capture_logs() as logs:
            await notify(amqp, topology, "order.allocated", 1)
            await until(lambda: len(receivers.calls["moved"]) >= 2)  # first try and one retry
            assert not receivers.calls["moved-target"]
            out = io.StringIO()
            await deliveries_command(config, "evt-0", subscription=None, since=None, out=out)
            assert "HTTP 302" in out.getvalue()

            async def dead_lettered() -> bool:
                return await depth(amqp, dead) == 1

            await until(dead_lettered)
        levels = [(e["event"], e["log_level"]) for e in logs
                  if e["event"] in ("delivery", "delivery_dead")]
        assert [("delivery", "warning")] * 3 + [("delivery_dead", "warning")] == levels

    async def test_410_disables_and_keeps_the_message(
        self, amqp, topology, receivers, notifying
    ):
        """A 410 disables the subscription; its message stays queued and is delivered once an
        operator enables it again."""
        receivers.mode["gone"] = "gone"
        config, store, topo = await notifying([subscription("gone", receivers.url("gone"))])
        await notify(amqp, topology, "order.allocated", 1)
        queue = topo.queue(delivery_queue("gone"))
        await until(lambda: len(receivers.calls["gone"]) == 1)

        async def parked() -> bool:
            return await depth(amqp, queue) == 1

        await until(parked)
        out = io.StringIO()
        await subscriptions_command(config, "list", None, out=out)
        assert "gone: disabled" in out.getvalue()
        assert "410 Gone" in out.getvalue()
        receivers.mode["gone"] = "ok"
        assert 0 == await subscriptions_command(config, "enable", "gone", out=io.StringIO())
        await until(lambda: len(receivers.got["gone"]) == 1)

    async def test_silent_receiver_is_retried_then_dead_while_others_stay_on_time(
        self, amqp, topology, receivers, notifying
    ):
        """A receiver that never answers costs only its own queue: it is retried on the ladder
        and dead-lettered with the reason, while the healthy one gets every event at once:
        all of them while another receiver holds every delivery it may have in flight,
        unanswered until the test lets it go (an order of events, not a stopwatch)."""
        receivers.mode["silent"] = "hang"
        receivers.mode["stuck"] = "held"
        _, _, topo = await notifying([
            subscription("silent", receivers.url("silent"), events=("order.*",), timeout=0.5),
            # longer than any wait below: were deliveries queued behind it, nothing would come
            subscription("stuck", receivers.url("stuck"), events=("shipment.*",), timeout=120),
            subscription("healthy", receivers.url("healthy")),
        ], concurrency=2)
        await notify(amqp, topology, "shipment.updated", 2, tag="s")
        await until(lambda: len(receivers.calls["stuck"]) == 2)  # its concurrency, both held
        await notify(amqp, topology, "order.allocated", 4)
        await until(lambda: len(receivers.got["healthy"]) == 6)
        assert (2, [], False) == (len(receivers.calls["stuck"]), receivers.got["stuck"],
                                  receivers.release.is_set())
        receivers.release.set()
        await until(lambda: len(receivers.got["stuck"]) == 2)
        dead = topo.dead_queue(delivery_queue("silent"))

        async def all_dead() -> bool:
            return await depth(amqp, dead) == 4

        await until(all_dead, timeout=40)
        channel = await amqp.channel()
        message = await (await channel.get_queue(dead)).get(no_ack=False)
        assert 3 == message.headers["attempt"]
        assert message.headers["x-dead-reason"].startswith("timeout")
        await message.nack(requeue=True)
        assert 3 * 4 == len(receivers.calls["silent"])

    async def test_consecutive_failures_pause_and_enable_resumes(
        self, amqp, topology, receivers, notifying
    ):
        """After pause_after failures the subscription is paused and its messages wait;
        `subscriptions enable` lets them flow."""
        receivers.mode["down"] = "fail"
        config, store, topo = await notifying(
            [subscription("down", receivers.url("down"))],
            pause_after=2, pause_window=0.001, concurrency=1)
        await notify(amqp, topology, "order.allocated", 3)
        out = io.StringIO()

        async def paused() -> bool:
            out.seek(0)
            out.truncate()
            await subscriptions_command(config, "list", None, out=out)
            return "down: paused" in out.getvalue()

        await until(paused)
        calls = len(receivers.calls["down"])
        queue = topo.queue(delivery_queue("down"))

        async def all_parked() -> bool:
            return await depth(amqp, queue) == 3

        await until(all_parked, timeout=20)
        assert calls == len(receivers.calls["down"])  # nothing is tried while paused
        receivers.mode["down"] = "ok"
        await subscriptions_command(config, "enable", "down", out=io.StringIO())
        await until(lambda: len(receivers.got["down"]) == 3)


    async def test_operator_disable_stops_a_running_deliverer_within_seconds(
        self, amqp, topology, receivers, notifying
    ):
        """`subscriptions disable` from another process: the running deliverer sees it at its
        next state poll and stops taking messages (they wait in deliver.NAME); enable
        lets them flow again."""
        config, _, topo = await notifying([subscription("ops", receivers.url("ops"))])
        await notify(amqp, topology, "order.allocated", 2, tag="a")
        await until(lambda: len(receivers.got["ops"]) == 2)
        assert 0 == await subscriptions_command(config, "disable", "ops", out=io.StringIO())
        queue = topo.queue(delivery_queue("ops"))

        async def not_consuming() -> bool:
            channel = await amqp.channel()
            declared = await channel.declare_queue(queue, passive=True)
            await channel.close()
            return declared.declaration_result.consumer_count == 0

        await until(not_consuming, timeout=10)
        await notify(amqp, topology, "order.allocated", 3, tag="b")

        async def parked() -> bool:
            return await depth(amqp, queue) == 3

        await until(parked)
        assert 2 == len(receivers.got["ops"])
        assert 0 == await subscriptions_command(config, "enable", "ops", out=io.StringIO())
        await until(lambda: len(receivers.got["ops"]) == 5)

    async def test_a_delivery_forgets_the_failures_counted_before_it(
        self, amqp, topology, receivers, notifying
    ):
        """Two 503s are counted as consecutive failures; the delivery that then succeeds
        resets the count (in the same commit as its attempt record)."""
        receivers.mode["flaky"] = "flaky"
        _, store, _ = await notifying([subscription("flaky", receivers.url("flaky"))])
        await notify(amqp, topology, "order.allocated", 1)
        await until(lambda: len(receivers.got["flaky"]) == 1, timeout=30)

        async def reset() -> bool:
            async with store.transaction() as tx:
                row = await tx.fetchrow(
                    "SELECT failures, first_failure_at FROM subscription_state"
                    " WHERE name = $1", "flaky")
                attempts = await tx.fetchval("SELECT COUNT(*) FROM deliveries")
            return attempts == 3 and row is not None and row["failures"] == 0 \
                and row["first_failure_at"] is None

        await until(reset)

    async def test_any_retry_after_is_an_attempt_recorded_and_counted(
        self, amqp, topology, receivers, notifying
    ):
        """503s with every kind of Retry-After (superscript and Arabic-Indic digits, dates in
        years 9999 and 99999, negative, 400 digits, garbage): each attempt is a row in
        deliveries with its status, none an internal error, and they pause the
        subscription as any failures do."""
        receivers.mode["hinted"] = "hinted"
        config, store, _ = await notifying(
            [subscription("hinted", receivers.url("hinted"))],
            pause_after=len(RETRY_AFTER_HINTS), pause_window=0.001, concurrency=1)
        await notify(amqp, topology, "order.allocated", 4)
        out = io.StringIO()

        async def paused() -> bool:
            out.seek(0)
            out.truncate()
            await subscriptions_command(config, "list", None, out=out)
            return "hinted: paused" in out.getvalue()

        await until(paused, timeout=60)
        async with store.transaction() as tx:
            rows = await tx.fetch("SELECT status_code, error FROM deliveries"
                                  " WHERE subscription = $1", "hinted")
            state = await tx.fetchrow("SELECT failures FROM subscription_state"
                                      " WHERE name = $1", "hinted")
        assert len(receivers.calls["hinted"]) == len(rows)
        assert {(503, None)} == {(row["status_code"], row["error"]) for row in rows}
        assert state is not None and state["failures"] >= len(RETRY_AFTER_HINTS)

class TestOperatorCommands:
    async def test_subscription_test_sends_a_signed_test_event(
        self, receivers, settings, store_url
    ):
        """`subscriptions test NAME` posts a verifiable webhook.test event and says how the
        receiver answered; a refusing receiver makes it exit 1."""
        receivers.mode["refuses"] = "gone"
        config = dataclasses.replace(
            settings, consumers=dataclasses.replace(settings.consumers, store=store_url),
            notifications=NotificationSettings(mode="development"),
            subscriptions={name: subscription(name, receivers.url(name))
                           for name in ("answers", "refuses")})
        out = io.StringIO()
        assert 0 == await subscriptions_command(config, "test", "answers", out=out)
        assert "HTTP 204" in out.getvalue()
        [got] = receivers.got["answers"]
        assert "webhook.test" == got["payload"]["type"]
        assert 1 == await subscriptions_command(config, "test", "refuses", out=io.StringIO())

    async def test_replay_resends_past_notifications_to_one_subscriber(
        self, amqp, topology, receivers, notifying
    ):
        """`deliveries replay --subscription NAME --since TIME` sends the outbox rows since
        then that the subscriber wants again, with their original webhook-ids."""
        config, store, _ = await notifying([
            subscription("lost-data", receivers.url("lost-data"), events=("shipment.*",)),
        ])
        async with store.transaction() as tx:
            for i, kind in enumerate(["shipment.updated", "stock.changed", "shipment.updated"]):
                body = orjson.dumps({"id": f"old-{i}", "type": kind, "data": {}, "cause": "c"})
                await tx.add_outbox(kind, f"notify.{kind}", body, f"old-{i}")
        out = io.StringIO()
        assert 0 == await deliveries_command(config, "replay", subscription="lost-data",
                                             since="2000-01-01T00:00:00", out=out)
        assert "2 notifications" in out.getvalue()
        await until(lambda: len(receivers.got["lost-data"]) == 2)
        assert ["old-0", "old-2"] == sorted(g["id"] for g in receivers.got["lost-data"])
        with pytest.raises(Usage, match="unknown subscription 'nobody'"):
            await deliveries_command(config, "replay", subscription="nobody",
                                     since="2000-01-01", out=io.StringIO())


class TestUnsafeURLs:
    @pytest.mark.parametrize(("mode", "url", "allow", "problem"), [
        ("production", "http://portal.example.com/hook", False, "https"),
        ("development", "http://portal.example.com/hook", False, "http"),
        ("production", "https://169.254.169.254/latest/meta-data", False, "169.254.169.254"),
        ("production", "https://10.1.2.3/hook", False, "10.1.2.3"),
        ("development", "http://127.0.0.1:9/hook", False, "127.0.0.1"),
    ])
    def test_refused_at_start_up(self, tmp_path, mode, url, allow, problem):
        """An SSRF-prone or insecure subscription URL stops start-up, naming the key."""
        config = tmp_path / "router.toml"
        config.write_text(
            f'[notifications]\nmode = "{mode}"\n'
            f'[subscriptions.portal]\nurl = "{url}"\nevents = ["shipment.*"]\n'
            f'secrets = ["env:S"]\nallow_private = {str(allow).lower()}\n')
        with pytest.raises(ConfigError) as info:
            load_settings(config, environ={"S": SECRET_1})
        assert "subscriptions.portal.url" == info.value.key
        assert problem in info.value.problem


class TestBrokerRestart:
    async def test_broker_restart_while_delivering_loses_nothing(
        self, settings, amqp, topology, receivers, notifying
    ):
        """RabbitMQ stopped and started while notifications flow: the fan-out and the
        deliverers come back by themselves, every notification published before, during and
        after reaches the subscriber (at least once, one webhook-id each) and nothing is left
        on its queues; SIGTERM-like stop afterwards is clean."""
        from test_ingress import broker_started, rabbitmqctl

        _, _, topo = await notifying([subscription("portal", receivers.url("portal"))])
        before = await notify(amqp, topology, "order.allocated", 2000, tag="a")
        await until(lambda: len(receivers.got["portal"]) >= 100)
        await rabbitmqctl("stop_app")
        await broker_started()
        async with await aio_pika.connect(settings.broker.url) as fresh:
            after = await notify(fresh, topology, "order.allocated", 20, tag="b")
        await until(lambda: set(before + after) <= {g["id"] for g in receivers.got["portal"]},
                    timeout=60)

        async def drained() -> bool:
            async with await aio_pika.connect(settings.broker.url) as fresh:
                names = [topo.queue("notifications"), topo.queue(delivery_queue("portal"))]
                return [0, 0] == [await depth(fresh, name) for name in names]

        await until(drained, timeout=30)


class TestStoreOutage:
    async def test_deliveries_go_on_while_the_store_is_away(
        self, amqp, topology, receivers, notifying
    ):
        """The store closed under a running notifications consumer: it keeps delivering (on
        the last known subscription state) and keeps running; once the store is back, the
        attempts are recorded again."""
        _, store, _ = await notifying([subscription("portal", receivers.url("portal"))])
        await store.close()
        away = await notify(amqp, topology, "order.allocated", 3, tag="away")
        await until(lambda: set(away) <= {g["id"] for g in receivers.got["portal"]})
        await store.open()
        back = await notify(amqp, topology, "order.allocated", 2, tag="back")
        await until(lambda: set(back) <= {g["id"] for g in receivers.got["portal"]})

        async def recorded() -> bool:
            async with store.transaction() as tx:
                rows = await tx.fetch("SELECT message_id FROM deliveries")
            return set(back) <= {row["message_id"] for row in rows}

        await until(recorded)


class TestAttemptLog:
    async def test_attempts_finishing_together_share_commits_and_all_land(self, store):
        """250 attempts recorded at once (more than one INSERT's worth of parameters): every
        row is committed before its record() returns, and a delivered one among them resets
        the failure count."""
        from consumers.outbound.attempts import AttemptLog

        async with store.transaction() as tx:
            await tx.execute(
                "INSERT INTO subscription_state (name, state, failures, first_failure_at,"
                " updated_at) VALUES ('bulk', 'enabled', 3, $1, $1)", "2026-11-28T00:00:00+00:00")
        log = AttemptLog(store, "bulk")
        rows = [("bulk", f"m-{i}", f"evt-{i}", "order.allocated", 1, 204, None, 1.0,
                 "2026-11-28T00:00:00+00:00") for i in range(250)]
        await asyncio.gather(*(log.record(row, delivered=(i == 249))
                               for i, row in enumerate(rows)))
        async with store.transaction() as tx:
            assert 250 == await tx.fetchval("SELECT COUNT(*) FROM deliveries")
            assert 0 == await tx.fetchval(
                "SELECT failures FROM subscription_state WHERE name = 'bulk'")
