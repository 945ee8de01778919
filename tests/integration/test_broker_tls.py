"""amqps:// for the ingress's publisher and the consumers alike, through a TLS-terminating
proxy in front of the real RabbitMQ, with a CA and a server certificate made in the test:
the [broker] TLS keys (or aio-pika's URL query) are honoured, and a certificate from another
CA is refused with a one-line reason, not a traceback."""

from __future__ import annotations

import asyncio
import dataclasses
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aio_pika
import orjson
import pytest
from broker_proxy import Certificates, Proxy, make_ca
from structlog.testing import capture_logs

from consumers.runner import ConsumerSpec, Runner
from consumers.store import open_store
from router.broker.errors import PublishFailed
from router.broker.publisher import Publisher
from router.providers import signed_headers
from router.settings import Settings

pytestmark = pytest.mark.integration
SHOPIFY_ORDER = (Path(__file__).resolve().parents[2] / "config" / "samples"
                 / "shopify-orders-create.json").read_bytes()


@pytest.fixture
def certificates(tmp_path: Path) -> Certificates:
    return make_ca(tmp_path / "tls")


@pytest.fixture
async def tls_proxy(certificates: Certificates) -> AsyncIterator[Proxy]:
    proxy = await Proxy(tls=certificates.server_context()).start()
    try:
        yield proxy
    finally:
        await proxy.close()


def over_tls(settings: Settings, url: str, **broker: Any) -> Settings:
    return dataclasses.replace(
        settings, broker=dataclasses.replace(settings.broker, url=url, **broker)
    )


async def wait_until(check: Any, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"not within {timeout} s")


class TestPublisherOverTls:
    async def test_an_order_is_accepted_over_amqps(self, settings, tls_proxy, certificates,
                                                   make_client, queue_depths, topology):
        """With [broker] cafile naming the test CA, the ingress connects over amqps://, an
        order is answered 202 and is on its queue."""
        settings = over_tls(settings, tls_proxy.url("amqps"), cafile=certificates.ca)
        client = await make_client(settings)
        headers = signed_headers(settings, "shopify", SHOPIFY_ORDER, "orders/create")
        response = await client.post("/webhooks/shopify", data=SHOPIFY_ORDER, headers=headers)
        assert 202 == response.status
        assert 1 == (await queue_depths())[topology.queue("orders")]
        assert tls_proxy.links  # it did go through the TLS proxy

    async def test_verification_off_takes_any_certificate(self, settings, tls_proxy,
                                                          topology):
        """aio-pika's `no_verify_ssl=1` in the URL turns verification off (for tests and
        private networks only): the publisher connects without knowing the CA."""
        settings = over_tls(settings, tls_proxy.url("amqps", "no_verify_ssl=1"))
        publisher = Publisher(settings.broker)
        try:
            await publisher.start()
            assert publisher.ready
        finally:
            await publisher.close()

    async def test_a_certificate_from_another_ca_is_refused_clearly(
        self, settings, tls_proxy, tmp_path, topology
    ):
        """Trusting another CA, start() fails with PublishFailed saying the certificate was
        refused and why, in one line."""
        other = make_ca(tmp_path / "other", name="other")
        settings = over_tls(settings, tls_proxy.url("amqps"), cafile=other.ca)
        publisher = Publisher(settings.broker)
        with pytest.raises(PublishFailed) as caught:
            await publisher.start()
        await publisher.close()
        assert "certificate was refused" in caught.value.message
        assert "\n" not in caught.value.message


class TestConsumerOverTls:
    async def test_a_consumer_takes_messages_over_amqps(self, settings, tls_proxy,
                                                        certificates, topology, amqp, tmp_path):
        """A consumer given the CA in the URL's query, as aio-pika takes it
        (`?cafile=...`), connects over amqps:// and applies a message."""
        settings = over_tls(settings, tls_proxy.url("amqps", f"cafile={certificates.ca}"))
        seen: list[str] = []

        async def record(tx: Any, event: dict[str, Any], batch: None = None) -> None:
            seen.append(event["id"])

        channel = await amqp.channel(publisher_confirms=True)
        exchange = await channel.get_exchange(topology.exchange)
        body = orjson.dumps({"id": "over-tls", "type": "order.created", "data": {}})
        await exchange.publish(aio_pika.Message(body, headers={"attempt": 0}),
                               routing_key="order.created")
        async with open_store(f"sqlite:///{tmp_path}/store.sqlite3") as store:
            stop = asyncio.Event()
            runner = Runner(ConsumerSpec("orders", record), store, settings.broker)
            task = asyncio.create_task(runner.run(stop))
            try:
                await wait_until(lambda: "over-tls" in seen, timeout=20)
            finally:
                stop.set()
                await asyncio.wait_for(task, 20)
        assert len(tls_proxy.links) >= 2  # the consumer's and its outbox publisher's

    async def test_a_consumer_refused_by_tls_logs_why(self, settings, tls_proxy, tmp_path,
                                                      topology):
        """A consumer that does not trust the broker's certificate keeps retrying and logs
        a one-line broker_unavailable saying the certificate was refused."""
        other = make_ca(tmp_path / "other", name="other")
        settings = over_tls(settings, tls_proxy.url("amqps"), cafile=other.ca)

        async def never(tx: Any, event: dict[str, Any], batch: None = None) -> None:
            raise AssertionError("nothing should be consumed")

        async with open_store(f"sqlite:///{tmp_path}/store.sqlite3") as store:
            stop = asyncio.Event()
            runner = Runner(ConsumerSpec("orders", never), store, settings.broker)
            with capture_logs() as logs:
                task = asyncio.create_task(runner.run(stop))
                try:
                    await wait_until(
                        lambda: any(e["event"] == "broker_unavailable" for e in logs), 20)
                finally:
                    stop.set()
                    await asyncio.wait_for(task, 20)
        errors = [e["error"] for e in logs if e["event"] == "broker_unavailable"]
        assert "certificate was refused" in errors[0], errors
