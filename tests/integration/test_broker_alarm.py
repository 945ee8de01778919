"""A RabbitMQ resource alarm (Connection.Blocked), on a RabbitMQ node of the test's own so
the broker the other tests use is never alarmed: the ingress answers 503 at once while the
broker blocks it, /readyz says 503, and nothing answered 503 is ever published.

RabbitMQ blocks a connection only once it publishes during an alarm, and then reads nothing
more from it until the alarm clears, when it takes every frame already sent - even from a
client that has since hung up.  So the publish that meets the alarm cannot be called "not
taken": it is answered 504 (sent, maybe delivered), and it is indeed delivered later."""

from __future__ import annotations

import asyncio
import dataclasses
import os
import shutil
import subprocess
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aio_pika
import pytest
from ports import free_port

from router.providers import signed_headers

pytestmark = pytest.mark.integration
SHOPIFY_ORDER = (Path(__file__).resolve().parents[2] / "config" / "samples"
                 / "shopify-orders-create.json").read_bytes()
CLI_PORTS = range(35672, 35683)  # rabbitmqctl's own distribution ports


def _free_port() -> int:
    while True:
        port = free_port()
        if port not in CLI_PORTS and port + 1 not in CLI_PORTS:
            return port


@dataclasses.dataclass
class Node:
    name: str
    url: str

    def ctl(self, *args: str) -> None:
        subprocess.run(["rabbitmqctl", "-n", self.name, "-q", *args], check=True,
                       capture_output=True, timeout=60)


@pytest.fixture(scope="module")
def node() -> Iterator[Node]:
    """A RabbitMQ node of this module's own (own name, ports and data in a temp folder),
    beside the default one; stopped and removed afterwards."""
    folder = Path(tempfile.mkdtemp(prefix="rabbitmq-alarm-"))
    folder.chmod(0o755)
    port = _free_port()
    name = f"alarm-{uuid.uuid4().hex[:8]}@localhost"
    (folder / "rabbitmq.conf").write_text(f"listeners.tcp.local = 127.0.0.1:{port}\n")
    (folder / "rabbitmq-env.conf").write_text("ERL_EPMD_ADDRESS=127.0.0.1\n")
    (folder / "enabled_plugins").write_text("[].\n")
    shutil.chown(folder, "rabbitmq", "rabbitmq")
    for path in folder.iterdir():
        shutil.chown(path, "rabbitmq", "rabbitmq")
    env = dict(
        os.environ,
        RABBITMQ_NODENAME=name, RABBITMQ_NODE_PORT=str(port),
        RABBITMQ_DIST_PORT=str(_free_port()),
        RABBITMQ_CONFIG_FILE=str(folder / "rabbitmq.conf"),
        RABBITMQ_CONF_ENV_FILE=str(folder / "rabbitmq-env.conf"),
        RABBITMQ_ENABLED_PLUGINS_FILE=str(folder / "enabled_plugins"),
        RABBITMQ_MNESIA_BASE=str(folder / "mnesia"), RABBITMQ_LOG_BASE=str(folder / "log"),
        RABBITMQ_PID_FILE=str(folder / "node.pid"),
        ERL_FLAGS="-kernel inet_dist_use_interface {127,0,0,1}",
    )
    server = subprocess.Popen(["rabbitmq-server"], env=env, cwd=folder,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    started = Node(name, f"amqp://guest:guest@127.0.0.1:{port}/")
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                started.ctl("await_startup", "--timeout", "60")
                break
            except subprocess.CalledProcessError:  # not registered with epmd yet
                if server.poll() is not None or time.monotonic() > deadline:
                    raise
                time.sleep(0.5)
        yield started
    finally:
        try:
            started.ctl("stop")
        except subprocess.SubprocessError:
            pass
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()
        shutil.rmtree(folder, ignore_errors=True)


async def post(client: Any, settings: Any, event_id: str) -> tuple[int, dict[str, Any]]:
    headers = signed_headers(settings, "shopify", SHOPIFY_ORDER, "orders/create")
    headers["X-Shopify-Event-Id"] = event_id
    response = await client.post("/webhooks/shopify", data=SHOPIFY_ORDER, headers=headers)
    return response.status, await response.json()


async def wait_status(client: Any, status: int, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while (await client.get("/readyz")).status != status:
        assert time.monotonic() < deadline, f"/readyz did not turn {status}"
        await asyncio.sleep(0.05)


async def queued_ids(url: str, queue_name: str, count: int) -> list[str]:
    """The message ids of the next `count` messages on `queue_name` (waits up to 20 s)."""
    ids: list[str] = []
    async with await aio_pika.connect(url) as connection:
        channel = await connection.channel()
        queue = await channel.declare_queue(queue_name, passive=True)
        deadline = time.monotonic() + 20
        while len(ids) < count and time.monotonic() < deadline:
            message = await queue.get(fail=False, no_ack=True)
            if message is None:
                await asyncio.sleep(0.05)
                continue
            ids.append(str(message.message_id))
        assert 0 == (await channel.declare_queue(queue_name, passive=True)
                     ).declaration_result.message_count
    return ids


class TestResourceAlarm:
    async def test_blocked_broker_answers_503_at_once_and_never_publishes_it(
        self, node, settings, make_client
    ):
        """The order that meets the alarm is 504 (sent: it is delivered when the alarm
        clears); then /readyz is 503 and an order is 503 at once and never delivered; after
        the alarm, /readyz is 200 and orders are accepted again."""
        broker = dataclasses.replace(settings.broker, url=node.url, confirm_timeout=1.0)
        settings = dataclasses.replace(settings, broker=broker)
        client = await make_client(settings)
        met, refused, after = (f"{word}-{uuid.uuid4().hex[:8]}"
                               for word in ("met", "refused", "after"))
        try:
            node.ctl("set_vm_memory_high_watermark", "0.000001")
            status, body = await post(client, settings, met)
            assert (504, "broker_unconfirmed") == (status, body["error"])
            await wait_status(client, 503)
            readyz = await (await client.get("/readyz")).json()
            assert "broker_unavailable" == readyz["reason"]
            status, body = await post(client, settings, refused)
            assert (503, "broker_unavailable") == (status, body["error"])
            assert "blocking" in body["message"]
        finally:
            node.ctl("set_vm_memory_high_watermark", "0.4")
        await wait_status(client, 200)
        assert 202 == (await post(client, settings, after))[0]
        queue = f"{settings.broker.prefix}orders"
        assert [met, after] == await queued_ids(node.url, queue, 2)
