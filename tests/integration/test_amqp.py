"""router.broker.protocol.ConfirmingPublisher against the real RabbitMQ: confirms, returns,
nacks, channel and connection loss (resource alarms: test_broker_alarm.py, on a node of its
own).  aio-pika declares the topology and reads messages back."""

from __future__ import annotations

import asyncio
import os
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass

import aio_pika
import pytest

from router.broker.errors import ConnectionLost, PublishNacked, PublishReturned
from router.broker.protocol import ConfirmingPublisher

pytestmark = pytest.mark.integration
AMQP_URL = os.environ.get("AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/")
KEY = "order.created"


@dataclass
class Route:
    exchange: str  # a direct exchange bound to `queue` with KEY
    queue: aio_pika.abc.AbstractQueue
    channel: aio_pika.abc.AbstractChannel


@pytest.fixture
async def route(prefix: str, amqp: aio_pika.abc.AbstractConnection) -> AsyncIterator[Route]:
    """A direct exchange and a quorum queue bound with KEY; deleted after the test."""
    channel = await amqp.channel()
    await channel.set_qos(prefetch_count=1000)
    exchange = await channel.declare_exchange(f"{prefix}x", aio_pika.ExchangeType.DIRECT)
    queue = await channel.declare_queue(
        f"{prefix}q", durable=True, arguments={"x-queue-type": "quorum"}
    )
    await queue.bind(exchange, KEY)
    try:
        yield Route(exchange.name, queue, channel)
    finally:
        cleanup = await amqp.channel()
        await cleanup.queue_delete(queue.name, if_unused=False, if_empty=False)
        await cleanup.exchange_delete(exchange.name)
        await cleanup.close()


@pytest.fixture
async def make_publisher() -> AsyncIterator[Callable[..., Awaitable[ConfirmingPublisher]]]:
    """Connects ConfirmingPublishers with a connection name unique to the test; closes them."""
    publishers: list[ConfirmingPublisher] = []

    async def make(**kwargs: object) -> ConfirmingPublisher:
        kwargs.setdefault("connection_name", f"test-amqp-{uuid.uuid4().hex}")
        publisher = ConfirmingPublisher(AMQP_URL, **kwargs)  # type: ignore[arg-type]
        publishers.append(publisher)
        await publisher.connect(timeout=10)
        return publisher

    yield make
    for publisher in publishers:
        await publisher.close()


async def read(queue: aio_pika.abc.AbstractQueue, count: int, timeout: float = 20.0) -> list:
    """The next `count` messages of `queue`, acked."""
    messages: list[aio_pika.abc.AbstractIncomingMessage] = []
    async with asyncio.timeout(timeout), queue.iterator() as iterator:
        async for message in iterator:
            await message.ack()
            messages.append(message)
            if len(messages) == count:
                break
    return messages


async def wait_for(condition: Callable[[], bool], timeout: float = 10.0) -> None:
    """Poll `condition` until it holds; TimeoutError after `timeout` seconds."""
    async with asyncio.timeout(timeout):
        while True:
            if condition():
                return
            await asyncio.sleep(0.01)


async def rabbitmqctl(*args: str) -> str:
    process = await asyncio.create_subprocess_exec(
        "rabbitmqctl",
        "-q",
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    async with asyncio.timeout(60):
        stdout, stderr = await process.communicate()
    if process.returncode != 0:
        raise RuntimeError(f"rabbitmqctl {' '.join(args)}: {stderr.decode()}")
    return stdout.decode()


async def connection_pid(connection_name: str) -> str:
    """The Erlang pid of the connection with that client-provided name."""
    listing = await rabbitmqctl("list_connections", "pid", "client_properties")
    for line in listing.splitlines():
        if line.startswith("<") and f'{{"connection_name","{connection_name}"}}' in line:
            return line.split("\t", 1)[0]
    raise AssertionError(f"no connection named {connection_name}:\n{listing}")


async def test_publish_is_confirmed_and_arrives_with_its_properties(
    route: Route, make_publisher: Callable[..., Awaitable[ConfirmingPublisher]]
) -> None:
    publisher = await make_publisher()
    assert publisher.ready and not publisher.blocked
    stamp = int(time.time())
    body = b'{"id": 1042, "name": "caf\xc3\xa9"}'
    headers = {"source": "shopify", "attempt": 3, "big": 2**40, "neg": -70000, "replay": True}

    future = publisher.publish(
        route.exchange,
        KEY,
        body,
        message_id="evt-1",
        message_type="order.created",
        correlation_id="corr-1",
        headers=headers,
        timestamp=stamp,
    )
    async with asyncio.timeout(10):
        assert await future is None
    assert publisher.pending == 0

    [message] = await read(route.queue, 1)
    assert message.body == body
    assert message.content_type == "application/json"
    assert message.delivery_mode == aio_pika.DeliveryMode.PERSISTENT
    assert message.message_id == "evt-1"
    assert message.type == "order.created"
    assert message.correlation_id == "corr-1"
    assert message.timestamp is not None and message.timestamp.timestamp() == stamp
    assert message.headers == headers
    assert message.routing_key == KEY


async def test_many_concurrent_publishes_all_confirm_and_arrive_in_order(
    route: Route, make_publisher: Callable[..., Awaitable[ConfirmingPublisher]]
) -> None:
    publisher = await make_publisher()
    count = 5000
    futures = [
        publisher.publish(route.exchange, KEY, b"%d" % i, message_id=f"m{i}", headers={"n": i})
        for i in range(count)
    ]
    async with asyncio.timeout(30):
        await asyncio.gather(*futures)
    assert publisher.pending == 0

    messages = await read(route.queue, count)
    assert [m.message_id for m in messages] == [f"m{i}" for i in range(count)]
    assert [m.body for m in messages] == [b"%d" % i for i in range(count)]
    assert messages[-1].headers == {"n": count - 1}


async def test_body_larger_than_frame_max_arrives_intact(
    route: Route, make_publisher: Callable[..., Awaitable[ConfirmingPublisher]]
) -> None:
    publisher = await make_publisher(frame_max=131072)
    body = os.urandom(300 * 1024)  # three body frames
    async with asyncio.timeout(10):
        await publisher.publish(route.exchange, KEY, body, message_id="big")
    [message] = await read(route.queue, 1)
    assert message.body == body


async def test_empty_body_and_transient_message(
    route: Route, make_publisher: Callable[..., Awaitable[ConfirmingPublisher]]
) -> None:
    publisher = await make_publisher()
    async with asyncio.timeout(10):
        await publisher.publish(
            route.exchange,
            KEY,
            b"",
            message_id="empty",
            content_type="text/plain",
            persistent=False,
        )
    [message] = await read(route.queue, 1)
    assert message.body == b""
    assert message.content_type == "text/plain"
    assert message.delivery_mode == aio_pika.DeliveryMode.NOT_PERSISTENT
    assert message.headers == {} and message.type is None and message.timestamp is None
    assert not publisher.writing_paused


async def test_unroutable_mandatory_publish_is_returned(
    prefix: str,
    route: Route,
    make_publisher: Callable[..., Awaitable[ConfirmingPublisher]],
) -> None:
    lonely = await route.channel.declare_exchange(f"{prefix}lonely", aio_pika.ExchangeType.DIRECT)
    try:
        publisher = await make_publisher()
        returned = publisher.publish(lonely.name, KEY, b"lost", message_id="same-id")
        # Same message id, routable, published right after: must still be acked.
        routed = publisher.publish(route.exchange, KEY, b"kept", message_id="same-id")
        async with asyncio.timeout(10):
            with pytest.raises(PublishReturned) as caught:
                await returned
            await routed
        assert caught.value.reply_code == 312  # NO_ROUTE
        assert caught.value.exchange == lonely.name
        assert caught.value.routing_key == KEY

        # The publisher is still usable, and a non-mandatory unroutable message is just acked.
        async with asyncio.timeout(10):
            await publisher.publish(lonely.name, KEY, b"drop", message_id="x", mandatory=False)
            await publisher.publish(route.exchange, KEY, b"after", message_id="after")
        assert publisher.ready and publisher.pending == 0
        assert [m.body for m in await read(route.queue, 2)] == [b"kept", b"after"]
    finally:
        await lonely.delete()


async def test_rejected_publish_is_nacked(
    prefix: str,
    route: Route,
    make_publisher: Callable[..., Awaitable[ConfirmingPublisher]],
) -> None:
    full = await route.channel.declare_queue(
        f"{prefix}full", arguments={"x-max-length": 1, "x-overflow": "reject-publish"}
    )
    try:
        await full.bind(route.exchange, "full")
        publisher = await make_publisher()
        async with asyncio.timeout(10):
            await publisher.publish(route.exchange, "full", b"first", message_id="1")
            with pytest.raises(PublishNacked):
                await publisher.publish(route.exchange, "full", b"second", message_id="2")
            await publisher.publish(route.exchange, KEY, b"elsewhere", message_id="3")
        assert publisher.ready
    finally:
        await full.delete(if_unused=False, if_empty=False)


async def test_publish_to_missing_exchange_loses_the_channel(
    prefix: str, make_publisher: Callable[..., Awaitable[ConfirmingPublisher]]
) -> None:
    lost: list[ConnectionLost] = []
    publisher = await make_publisher(on_lost=lost.append)
    future = publisher.publish(f"{prefix}missing", KEY, b"{}", message_id="m")
    async with asyncio.timeout(10):
        with pytest.raises(ConnectionLost) as caught:
            await future
    assert caught.value.reply_code == 404
    assert "NOT_FOUND" in caught.value.reply_text
    assert not publisher.ready
    with pytest.raises(ConnectionLost) as again:
        publisher.publish(f"{prefix}missing", KEY, b"{}", message_id="m2")
    assert again.value.reply_code == 404
    await wait_for(lambda: len(lost) == 1)
    assert lost[0].reply_code == 404


async def test_broker_closing_the_connection_fails_pending_publishes(
    route: Route, make_publisher: Callable[..., Awaitable[ConfirmingPublisher]]
) -> None:
    lost: list[ConnectionLost] = []
    name = f"test-amqp-forced-{uuid.uuid4().hex}"
    publisher = await make_publisher(connection_name=name, on_lost=lost.append)
    pid = await connection_pid(name)

    # Keep 100 publishes in flight, as a busy ingress would, until the broker kills it.
    outcomes: list[BaseException | None] = []

    async def worker(n: int) -> None:
        i = 0
        while publisher.ready:
            try:
                await publisher.publish(route.exchange, KEY, b"{}", message_id=f"{n}-{i}")
                outcomes.append(None)
            except ConnectionLost as exc:
                outcomes.append(exc)
                return
            i += 1

    workers = [asyncio.create_task(worker(n)) for n in range(100)]
    await wait_for(lambda: len(outcomes) > 1000)
    await rabbitmqctl("close_connection", pid, "test says goodbye")
    async with asyncio.timeout(10):
        await asyncio.gather(*workers)

    failures = [o for o in outcomes if isinstance(o, ConnectionLost)]
    assert failures, "no publish was pending when the connection was closed"
    assert all(f.reply_code == 320 for f in failures)  # CONNECTION_FORCED
    assert "test says goodbye" in failures[0].reply_text
    assert not publisher.ready
    await wait_for(lambda: len(lost) == 1)
    assert lost[0].reply_code == 320
    with pytest.raises(ConnectionLost):
        publisher.publish(route.exchange, KEY, b"{}", message_id="late")


async def test_bad_credentials_fail_connect() -> None:
    url = AMQP_URL.replace("guest:guest@", "guest:not-the-password@")
    publisher = ConfirmingPublisher(url, connection_name="test-amqp-bad-credentials")
    with pytest.raises(ConnectionLost) as caught:
        await publisher.connect(timeout=10)
    assert caught.value.reply_code == 403
    assert "ACCESS_REFUSED" in caught.value.reply_text
    assert not publisher.ready
    await publisher.close()


async def test_connect_to_closed_port_raises_oserror() -> None:
    publisher = ConfirmingPublisher("amqp://guest:guest@127.0.0.1:1/")
    with pytest.raises(OSError):
        await publisher.connect(timeout=5)
    await publisher.close()


async def test_cancelled_futures_do_not_disturb_the_others(
    route: Route, make_publisher: Callable[..., Awaitable[ConfirmingPublisher]]
) -> None:
    publisher = await make_publisher()
    futures = [
        publisher.publish(route.exchange, KEY, b"%d" % i, message_id=str(i)) for i in range(100)
    ]
    for future in futures[::2]:
        future.cancel()  # what a caller's timeout does
    with pytest.raises(TimeoutError):  # a caller timing out while waiting
        async with asyncio.timeout(0):
            await publisher.publish(route.exchange, KEY, b"timed-out", message_id="t")
    async with asyncio.timeout(10):
        await asyncio.gather(*futures[1::2])
        await publisher.publish(route.exchange, KEY, b"last", message_id="last")
    assert publisher.pending == 0
    assert len(await read(route.queue, 102)) == 102


async def test_invalid_values_raise_before_anything_is_sent(
    route: Route, make_publisher: Callable[..., Awaitable[ConfirmingPublisher]]
) -> None:
    publisher = await make_publisher()
    with pytest.raises(ValueError):
        publisher.publish(route.exchange, KEY, b"{}", message_id="x" * 256)
    with pytest.raises(ValueError):
        publisher.publish(route.exchange, "é" * 128, b"{}", message_id="m")
    with pytest.raises(TypeError):
        publisher.publish(route.exchange, KEY, b"{}", message_id="m", headers={"f": 1.5})  # type: ignore[dict-item]
    assert publisher.pending == 0 and publisher.ready
    async with asyncio.timeout(10):
        await publisher.publish(route.exchange, KEY, b"ok", message_id="ok")
    [message] = await read(route.queue, 1)
    assert message.body == b"ok"


async def test_close_is_idempotent_and_fails_later_publishes(
    route: Route, make_publisher: Callable[..., Awaitable[ConfirmingPublisher]]
) -> None:
    lost: list[ConnectionLost] = []
    publisher = await make_publisher(on_lost=lost.append)
    in_flight = [
        publisher.publish(route.exchange, KEY, b"{}", message_id=str(i)) for i in range(50)
    ]
    async with asyncio.timeout(10):
        await asyncio.gather(publisher.close(), publisher.close())
        await publisher.close()
    assert not publisher.ready
    # Each was either confirmed before the channel closed or failed: none is left hanging.
    for future in in_flight:
        assert future.done()
        assert future.exception() is None or isinstance(future.exception(), ConnectionLost)
    with pytest.raises(ConnectionLost):
        publisher.publish(route.exchange, KEY, b"{}", message_id="late")
    await asyncio.sleep(0)  # on_lost would be called soon: it must not be
    assert lost == []


async def test_publish_before_connect_raises() -> None:
    publisher = ConfirmingPublisher(AMQP_URL)
    with pytest.raises(ConnectionLost):
        publisher.publish("x", KEY, b"{}", message_id="m")
    await publisher.close()
    with pytest.raises(RuntimeError):
        await publisher.connect()
