"""GET /rejections against the real RabbitMQ: a refused request leaves its reason (and no
more) on our side, counted in /metrics, read where /metrics is read, from every worker."""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path

import aiohttp
import orjson
import pytest
from aiohttp import web
from ports import free_port
from test_ingress import BAD_INPUT, SHOPIFY_ORDER, with_source
from test_runner import wait_for
from test_server import (  # noqa: F401 (make_server, server_config: fixtures)
    is_dir,
    make_server,
    paused,
    server_config,
    wait_status,
    worker_pids,
)

from router.app import create_app
from router.providers import signed_headers
from router.settings import Settings

pytestmark = pytest.mark.integration

FORGED_HMAC = "bm90IHRoZSBzaWduYXR1cmUgb2YgdGhpcyBib2R5IGF0IGFsbA=="
SHOPIFY_401 = {"source": "shopify", "status": "401", "reason": "invalid_signature"}
# What the forged body says: none of it may come back.
BODY_TEXT = ("5820982911946154508", "jane.doe@example.com", "123 Main Street", "PEP-BPC157-5MG")


def rejections_total(text: str, labels: dict[str, str]) -> float:
    """webhook_rejections_total{labels} in the exposition `text`, whatever the labels' order
    (one process writes them as declared, the multiprocess collector sorted)."""
    for line in text.splitlines():
        if line.startswith("webhook_rejections_total{"):
            sample, value = line.rsplit(" ", 1)
            if dict(re.findall(r'(\w+)="([^"]*)"', sample)) == labels:
                return float(value)
    return 0.0


def forged(settings: Settings) -> dict[str, str]:
    """Shopify's headers for SHOPIFY_ORDER, with a fresh delivery id and a wrong HMAC."""
    headers = signed_headers(settings, "shopify", SHOPIFY_ORDER, "orders/create")
    headers["X-Shopify-Hmac-Sha256"] = FORGED_HMAC
    return headers


async def rejections(client, query: str = "") -> dict:
    response = await client.get(f"/rejections{query}")
    assert 200 == response.status, await response.text()
    return await response.json()


class TestRecorded:
    async def test_a_forged_request_leaves_its_reason_and_nothing_else(
        self, client, settings, queue_depths
    ):
        """A forged Shopify order is on /rejections as 401 invalid_signature with its delivery
        id and client, counted in /metrics; neither its body, its signature nor the message
        it got is in the answer, and nothing reached a queue."""
        before = rejections_total(await (await client.get("/metrics")).text(), SHOPIFY_401)
        headers = forged(settings)
        response = await client.post("/webhooks/shopify", data=SHOPIFY_ORDER, headers=headers)
        assert 401 == response.status
        message = (await response.json())["message"]

        answer = await client.get("/rejections")
        text = await answer.text()
        assert (200, "application/json") == (answer.status, answer.content_type)
        [rejection] = orjson.loads(text)["rejections"]
        at = rejection.pop("at")
        assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}\+00:00", at), at
        assert {"source": "shopify", "status": 401, "reason": "invalid_signature",
                "delivery_id": headers["X-Shopify-Event-Id"], "client": "127.0.0.1"} == rejection
        assert {"shopify": {"invalid_signature": 1}} == orjson.loads(text)["counts"]
        for secret in (*BODY_TEXT, FORGED_HMAC, message):
            assert secret not in text
        assert 0 == sum((await queue_depths()).values())
        after = rejections_total(await (await client.get("/metrics")).text(), SHOPIFY_401)
        assert before + 1 == after

    async def test_accepted_requests_leave_nothing(self, client, settings):
        """A 202, its duplicate's 200 and the probes are not rejections."""
        headers = signed_headers(settings, "shopify", SHOPIFY_ORDER, "orders/create")
        for _ in range(2):
            response = await client.post("/webhooks/shopify", data=SHOPIFY_ORDER,
                                         headers=headers)
            assert response.status in (200, 202)
        assert {"rejections": [], "counts": {}} == await rejections(client)

    async def test_every_refusal_of_the_bad_input_table(self, settings, make_client,
                                                        queue_depths):
        """Each bad request of test_ingress's table is on /rejections with the status and
        reason it got, its source ("-" where no source took it) and its delivery id."""
        clients = {}
        for case, path, body, headers, method, change, status, _ in BAD_INPUT:
            key = repr(change)
            if key not in clients:
                changed = with_source(settings, "shopify", **change) if change else settings
                clients[key] = await make_client(changed)
            sent = headers(settings)
            response = await clients[key].request(method, path, data=body, headers=sent)
            reason = (await response.json())["error"]
            [newest] = (await rejections(clients[key], "?limit=1"))["rejections"]
            newest.pop("at")
            delivery_id = sent.get("X-Shopify-Event-Id")
            source = "shopify" if path == "/webhooks/shopify" and method == "POST" else "-"
            assert {"source": source, "status": status, "reason": reason,
                    "delivery_id": delivery_id and delivery_id[:200],
                    "client": "127.0.0.1"} == newest, case
        assert 0 == sum((await queue_depths()).values())

    async def test_the_client_behind_a_trusted_proxy(self, settings, make_client):
        """Behind a trusted proxy the client is the address it forwards, as the allowlists
        and rate limits see it, also for a refusal before the body is read."""
        server = dataclasses.replace(settings.server, trusted_proxies=("127.0.0.1",))
        client = await make_client(dataclasses.replace(settings, server=server))
        through_proxy = {"X-Forwarded-For": "203.0.113.9"}
        await client.post("/webhooks/shopify", data=SHOPIFY_ORDER,
                          headers={**forged(settings), **through_proxy})
        await client.post("/webhooks/shopify", data=SHOPIFY_ORDER,
                          headers={"Content-Type": "text/plain", **through_proxy})
        answer = await rejections(client)
        assert [(415, "203.0.113.9"), (401, "203.0.113.9")] == [
            (r["status"], r["client"]) for r in answer["rejections"]]

    async def test_source_and_limit(self, client, settings):
        """`source` and `limit` narrow the answer; bad values are a 400 with a JSON reason."""
        for _ in range(3):
            await client.post("/webhooks/shopify", data=SHOPIFY_ORDER, headers=forged(settings))
        await client.post("/nowhere", data=b"x")
        assert 2 == len((await rejections(client, "?source=shopify&limit=2"))["rejections"])
        only = await rejections(client, "?source=-")
        assert [("-", "unknown_source")] == [(r["source"], r["reason"])
                                             for r in only["rejections"]]
        assert {"-": {"unknown_source": 1}} == only["counts"]
        for query in ("?source=nowhere", "?limit=0", "?limit=ten", "?since=1"):
            response = await client.get(f"/rejections{query}")
            assert (400, "bad_request") == (response.status, (await response.json())["error"])


class TestAccess:
    @pytest.mark.parametrize(("allow", "status"), [
        (["127.0.0.0/8"], 200),
        (["10.0.0.0/8"], 403),
    ])
    async def test_read_by_whom_may_read_the_metrics(self, settings, make_client, allow,
                                                     status):
        """metrics_allow rules /rejections as it rules /metrics: 403 address_not_allowed."""
        server = dataclasses.replace(settings.server, metrics_allow=tuple(allow))
        client = await make_client(dataclasses.replace(settings, server=server))
        for path in ("/metrics", "/rejections"):
            response = await client.get(path)
            assert status == response.status, path
            if status == 403:
                assert "address_not_allowed" == (await response.json())["error"]

    async def test_loopback_only_by_default(self, settings, make_client):
        """Without metrics_allow, /metrics and /rejections answer this machine only: a client
        elsewhere (here behind a trusted proxy) gets 403 address_not_allowed, and could
        neither read them nor learn what was refused."""
        assert settings.server.metrics_allow == ("127.0.0.0/8", "::1")
        server = dataclasses.replace(settings.server, trusted_proxies=("127.0.0.1",))
        client = await make_client(dataclasses.replace(settings, server=server))
        for path in ("/metrics", "/rejections"):
            assert 200 == (await client.get(path)).status, path
            response = await client.get(path, headers={"X-Forwarded-For": "192.0.2.1"})
            assert (403, "address_not_allowed") == (
                response.status, (await response.json())["error"]), path

    async def test_only_on_the_metrics_port_when_it_is_set(self, settings, topology):
        """With metrics_port, /rejections is served there, as /metrics is, and the webhook
        port answers 404 for both (one app listening on both ports, as `serve` does)."""
        webhook_port, metrics_port = free_port(), free_port()
        server = dataclasses.replace(settings.server, metrics_port=metrics_port)
        runner = web.AppRunner(create_app(dataclasses.replace(settings, server=server)))
        await runner.setup()
        try:
            for port in (webhook_port, metrics_port):
                await web.TCPSite(runner, "127.0.0.1", port).start()
            async with aiohttp.ClientSession() as session:
                for path in ("/metrics", "/rejections"):
                    async with session.get(f"http://127.0.0.1:{metrics_port}{path}") as response:
                        assert 200 == response.status, path
                    async with session.get(f"http://127.0.0.1:{webhook_port}{path}") as response:
                        assert (404, "unknown_source") == (
                            response.status, (await response.json())["error"]), path
        finally:
            await runner.cleanup()


async def forge_fresh(base: str, settings: Settings, count: int) -> list[str]:
    """`count` forged orders, each on a new connection; their delivery ids."""
    ids = []
    for _ in range(count):
        headers = forged(settings)
        async with aiohttp.ClientSession() as fresh, fresh.post(
            f"{base}/webhooks/shopify", data=SHOPIFY_ORDER, headers=headers
        ) as response:
            assert 401 == response.status
        ids.append(headers["X-Shopify-Event-Id"])
    return ids


def in_files(metrics_dir: Path) -> set[str]:
    """The delivery ids every worker has written to its file so far."""
    found = set()
    for path in metrics_dir.glob("rejections-*.json"):
        found |= {r["delivery_id"] for r in orjson.loads(path.read_bytes())["rejections"]}
    return found


class TestWorkers:
    async def test_every_workers_rejections_from_the_metrics_port(
        self, server_config, make_server,  # noqa: F811 (fixtures of test_server)
        settings, queue_depths,
    ):
        """With --workers 2 and metrics_port, rejections each worker took (the other paused)
        all show on /rejections from the metrics port, whichever worker answers, and in the
        counter of /metrics; the webhook port answers 404 for /rejections."""
        metrics_port = free_port()
        server = make_server(server_config(f"metrics_port = {metrics_port}"))
        await server.start("--workers", "2")
        await server.wait_for_line(b'"workers_starting"')
        metrics_dir = Path(re.search(rb'"metrics_dir":"([^"]+)"', server.output)[1].decode())
        for _ in range(2):
            await server.wait_for_line(b'"broker_connected"')
        first, second = worker_pids(server.output)
        forged_ids = set()
        for pid in (first, second):
            with paused(pid):  # the other worker refuses these
                forged_ids |= set(await forge_fresh(server.base, settings, 3))

        async def all_written() -> bool:
            return forged_ids == in_files(metrics_dir)

        await wait_for(all_written, timeout=10)
        metrics_base = f"http://127.0.0.1:{metrics_port}"
        for pid in (first, second):
            with paused(pid):  # the other worker answers
                async with aiohttp.ClientSession() as fresh:
                    async with fresh.get(f"{metrics_base}/rejections") as response:
                        answer = await response.json()
                    async with fresh.get(f"{metrics_base}/metrics") as response:
                        assert 6 == rejections_total(await response.text(), SHOPIFY_401)
                assert forged_ids == {r["delivery_id"] for r in answer["rejections"]}
                assert {"shopify": {"invalid_signature": 6}} == answer["counts"]
        async with aiohttp.ClientSession() as session:
            await wait_status(session, f"{server.base}/rejections", 404, timeout=5)
        assert 0 == sum((await queue_depths()).values())
        await server.stop()
        assert 0 == server.proc.returncode
        assert not is_dir(metrics_dir)
