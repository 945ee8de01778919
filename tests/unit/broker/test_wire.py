"""router.broker.wire and .protocol without RabbitMQ: the hand-written encoders byte for byte
against pamqp, and the publisher's frame handling against a scripted fake broker on loopback."""

from __future__ import annotations

import asyncio
import datetime
import os
from collections.abc import AsyncIterator
from typing import Any

import pytest
from pamqp import body as pamqp_body
from pamqp import commands, encode, frame, header

from router.broker.errors import ConnectionLost, PublishNacked, PublishReturned
from router.broker.protocol import ConfirmingPublisher
from router.broker.wire import encode_properties, encode_publish, encode_table

# --- encoders against pamqp ------------------------------------------------------------------

TABLES = [
    {},
    {"source": "shopify", "schema": "order.v1", "attempt": 1},
    {"b": True, "a": False, "c": ""},
    {"unicode": "Grüße, 東京", "ключ": "значение"},
    {f"i{n}": n for n in (0, 127, -128, 128, -129, 32767, -32768, 32768, 65535, 65536)},
    {"big": 2**31 - 1, "bigger": 2**31, "u32": 2**32 - 1, "i64": 2**32, "neg": -(2**63)},
    {"long": "x" * 70000},
]


@pytest.mark.parametrize("table", TABLES)
def test_field_table_matches_pamqp(table: dict[str, Any]) -> None:
    assert encode_table(table) == encode.field_table(table)


def test_field_table_rejects_what_amqp_cannot_carry() -> None:
    with pytest.raises(TypeError):
        encode_table({"f": 1.5})  # type: ignore[dict-item]
    with pytest.raises(ValueError):
        encode_table({"k" * 129: "v"})
    with pytest.raises(ValueError):
        encode_table({"k": 2**64})


STAMP = 1_764_300_000


@pytest.mark.parametrize(
    "props",
    [
        {},
        {"content_type": "application/json", "delivery_mode": 2},
        {"content_type": "application/json", "delivery_mode": 1, "message_id": "m"},
        {
            "content_type": "application/json",
            "headers": {"source": "shopify", "schema": "order.v1", "attempt": 3, "replay": True},
            "delivery_mode": 2,
            "correlation_id": "corr-ü",
            "message_id": "evt-" + "9" * 200,
            "timestamp": STAMP,
            "message_type": "order.created",
        },
        {"message_id": "m", "timestamp": 0, "message_type": "t"},
        {"content_type": "", "correlation_id": "", "message_id": "m"},  # "" is absent
    ],
)
def test_properties_match_pamqp(props: dict[str, Any]) -> None:
    theirs = dict(props)
    if "timestamp" in theirs:
        theirs["timestamp"] = datetime.datetime.fromtimestamp(theirs["timestamp"], datetime.UTC)
    assert encode_properties(**props) == commands.Basic.Properties(**theirs).marshal()


def test_properties_reject_long_shortstrs() -> None:
    with pytest.raises(ValueError):
        encode_properties(message_id="x" * 256)
    with pytest.raises(ValueError):
        encode_properties(correlation_id="é" * 128)  # 256 bytes in UTF-8
    assert encode_properties(message_id="é" * 127)  # 254 bytes: fine


def pamqp_publish(
    exchange: str, key: str, body: bytes, props: commands.Basic.Properties, frame_max: int
) -> bytes:
    chunk = frame_max - 8
    frames = [
        frame.marshal(
            commands.Basic.Publish(exchange=exchange, routing_key=key, mandatory=True), 1
        ),
        frame.marshal(header.ContentHeader(0, len(body), props), 1),
    ]
    frames += [
        frame.marshal(pamqp_body.ContentBody(body[i : i + chunk]), 1)
        for i in range(0, len(body), chunk)
    ]
    return b"".join(frames)


@pytest.mark.parametrize("size", [0, 1, 700, 4088, 4089, 20000, 300 * 1024])
@pytest.mark.parametrize("frame_max", [4096, 131072])
def test_publish_frames_match_pamqp(size: int, frame_max: int) -> None:
    body = os.urandom(size)
    ours = encode_properties(
        content_type="application/json",
        headers={"source": "shopify", "attempt": 1},
        delivery_mode=2,
        message_id="evt-1",
        timestamp=STAMP,
        message_type="order.created",
    )
    theirs = commands.Basic.Properties(
        content_type="application/json",
        headers={"source": "shopify", "attempt": 1},
        delivery_mode=2,
        message_id="evt-1",
        timestamp=datetime.datetime.fromtimestamp(STAMP, datetime.UTC),
        message_type="order.created",
    )
    expected = pamqp_publish("events", "order.created", body, theirs, frame_max)
    assert (
        encode_publish("events", "order.created", body, ours, mandatory=True, frame_max=frame_max)
        == expected
    )


# --- the publisher against a scripted broker ------------------------------------------------


class FakeBroker:
    """Speaks just enough AMQP: the handshake, then records frames and answers Close."""

    def __init__(self, *, heartbeat: int = 0, frame_max: int = 131072) -> None:
        self.heartbeat = heartbeat
        self.frame_max = frame_max
        self.frames: list[tuple[int, Any]] = []  # (channel, pamqp object) after the handshake
        self.start_ok: Any = None
        self.tune_ok: Any = None
        self.open: Any = None
        self.ready = asyncio.Event()
        self.closed = asyncio.Event()
        self.answer_close = True
        self.writer: asyncio.StreamWriter | None = None
        self.server: asyncio.Server | None = None
        self.port = 0
        self.changed = asyncio.Event()

    async def start(self) -> None:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = self.server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        if self.writer is not None:
            self.writer.close()
        if self.server is not None:
            self.server.close()

    def send(self, channel: int, *objects: Any) -> None:
        assert self.writer is not None
        self.writer.write(b"".join(frame.marshal(o, channel) for o in objects))

    async def _read(self, reader: asyncio.StreamReader) -> tuple[int, Any]:
        head = await reader.readexactly(7)
        rest = await reader.readexactly(int.from_bytes(head[3:7], "big") + 1)
        _, channel, value = frame.unmarshal(head + rest)
        return channel, value

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.writer = writer
        try:
            assert await reader.readexactly(8) == b"AMQP\x00\x00\x09\x01"
            self.send(0, commands.Connection.Start(server_properties={}, mechanisms="PLAIN"))
            _, self.start_ok = await self._read(reader)
            self.send(0, commands.Connection.Tune(2047, self.frame_max, self.heartbeat))
            _, self.tune_ok = await self._read(reader)
            _, self.open = await self._read(reader)
            self.send(0, commands.Connection.OpenOk())
            assert isinstance((await self._read(reader))[1], commands.Channel.Open)
            self.send(1, commands.Channel.OpenOk())
            assert isinstance((await self._read(reader))[1], commands.Confirm.Select)
            self.send(1, commands.Confirm.SelectOk())
            self.ready.set()
            while True:
                channel, value = await self._read(reader)
                self.frames.append((channel, value))
                self.changed.set()
                if self.answer_close and isinstance(value, commands.Channel.Close):
                    self.send(channel, commands.Channel.CloseOk())
                elif self.answer_close and isinstance(value, commands.Connection.Close):
                    self.send(0, commands.Connection.CloseOk())
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            self.closed.set()
            writer.close()

    def received(self, kind: type) -> list[Any]:
        return [value for _, value in self.frames if isinstance(value, kind)]

    async def wait_for(self, kind: type, count: int = 1, timeout: float = 5.0) -> list[Any]:
        async with asyncio.timeout(timeout):
            while len(self.received(kind)) < count:
                self.changed.clear()
                await self.changed.wait()
        return self.received(kind)


@pytest.fixture
async def broker() -> AsyncIterator[FakeBroker]:
    fake = FakeBroker()
    await fake.start()
    yield fake
    await fake.stop()


async def connected(broker: FakeBroker, **kwargs: Any) -> ConfirmingPublisher:
    url = kwargs.pop("url", f"amqp://guest:guest@127.0.0.1:{broker.port}/")
    publisher = ConfirmingPublisher(url, **kwargs)
    await publisher.connect(timeout=5)
    assert publisher.ready
    return publisher


def ack(tag: int, multiple: bool = False) -> bytes:
    return frame.marshal(commands.Basic.Ack(tag, multiple), 1)


async def test_handshake_negotiates_and_logs_in(broker: FakeBroker) -> None:
    broker.frame_max = 4096
    url = f"amqp://us%40er:p%3Ass@127.0.0.1:{broker.port}/v%2Fhost"
    publisher = await connected(broker, url=url, connection_name="unit-test", heartbeat=30)
    props = broker.start_ok.client_properties
    assert props["connection_name"] == "unit-test"
    for capability in ("publisher_confirms", "basic.nack", "connection.blocked"):
        assert props["capabilities"][capability] is True
    assert broker.start_ok.mechanism == "PLAIN"
    assert broker.start_ok.response == "\0us@er\0p:ss"
    assert (broker.tune_ok.frame_max, broker.tune_ok.heartbeat) == (4096, 30)  # broker: 0
    assert broker.open.virtual_host == "v/host"
    await publisher.close()


async def test_default_vhost_is_slash(broker: FakeBroker) -> None:
    publisher = await connected(broker, url=f"amqp://guest:guest@127.0.0.1:{broker.port}")
    assert broker.open.virtual_host == "/"
    await publisher.close()


async def test_body_is_split_by_the_negotiated_frame_max(broker: FakeBroker) -> None:
    broker.frame_max = 4096
    publisher = await connected(broker)
    body = os.urandom(10000)
    future = publisher.publish("ex", "key", body, message_id="m", headers={"a": 1})
    bodies = await broker.wait_for(pamqp_body.ContentBody, 3)
    assert [len(b.value) for b in bodies] == [4088, 4088, 1824]
    assert b"".join(b.value for b in bodies) == body
    [publish] = broker.received(commands.Basic.Publish)
    assert (publish.exchange, publish.routing_key, publish.mandatory) == ("ex", "key", True)
    [content] = broker.received(header.ContentHeader)
    assert content.body_size == 10000 and content.properties.headers == {"a": 1}
    publisher.data_received(ack(1))
    assert future.done() and future.result() is None
    await publisher.close()


async def test_acks_and_nacks_split_anywhere(broker: FakeBroker) -> None:
    publisher = await connected(broker)
    futures = [publisher.publish("ex", "k", b"{}", message_id=str(i)) for i in range(1, 8)]
    futures[4].cancel()  # tag 5: its caller timed out
    stream = (
        ack(2, multiple=True)  # 1, 2
        + ack(4)  # out of order
        + frame.marshal(commands.Basic.Nack(3), 1)
        + frame.marshal(commands.Connection.Blocked("low on memory"), 0)
        + ack(6, multiple=True)  # 5 (cancelled), 6
    )
    for i in range(len(stream)):  # one byte at a time
        publisher.data_received(stream[i : i + 1])
    assert [f.done() for f in futures] == [True] * 6 + [False]
    assert futures[0].result() is None and futures[1].result() is None
    assert futures[3].result() is None and futures[5].result() is None
    assert isinstance(futures[2].exception(), PublishNacked)
    assert futures[4].cancelled()
    assert publisher.blocked and publisher.pending == 1
    publisher.data_received(frame.marshal(commands.Connection.Unblocked(), 0) + ack(7))
    assert not publisher.blocked and futures[6].result() is None and publisher.pending == 0
    await publisher.close()


async def test_return_marks_the_oldest_matching_publish(broker: FakeBroker) -> None:
    publisher = await connected(broker, frame_max=4096)
    routed = publisher.publish("ex", "good", b"a", message_id="dup")
    lost = publisher.publish("ex", "bad", b"b" * 5000, message_id="dup")
    lost_too = publisher.publish("ex", "bad", b"c", message_id="dup")
    returned = b"".join(
        [
            frame.marshal(commands.Basic.Return(312, "NO_ROUTE", "ex", "bad"), 1),
            frame.marshal(
                header.ContentHeader(0, 5000, commands.Basic.Properties(message_id="dup")), 1
            ),
            frame.marshal(pamqp_body.ContentBody(b"b" * 4000), 1),
            frame.marshal(pamqp_body.ContentBody(b"b" * 1000), 1),
        ]
    )
    publisher.data_received(returned[:10])
    publisher.data_received(returned[10:] + ack(3, multiple=True))
    assert routed.result() is None
    error = lost.exception()
    assert isinstance(error, PublishReturned)
    assert (error.reply_code, error.routing_key) == (312, "bad")
    assert lost_too.result() is None  # only one return came
    await publisher.close()


async def test_broker_connection_close_fails_pending(broker: FakeBroker) -> None:
    lost: list[ConnectionLost] = []
    publisher = await connected(broker, on_lost=lost.append)
    future = publisher.publish("ex", "k", b"{}", message_id="m")
    broker.send(0, commands.Connection.Close(320, "CONNECTION_FORCED - bye", 0, 0))
    with pytest.raises(ConnectionLost) as caught:
        async with asyncio.timeout(5):
            await future
    assert (caught.value.reply_code, caught.value.reply_text) == (320, "CONNECTION_FORCED - bye")
    await broker.wait_for(commands.Connection.CloseOk)
    assert not publisher.ready
    await asyncio.sleep(0)
    assert [e.reply_code for e in lost] == [320]
    async with asyncio.timeout(5):
        await broker.closed.wait()
    await publisher.close()
    assert len(lost) == 1


async def test_broker_channel_close_closes_the_connection_too(broker: FakeBroker) -> None:
    lost: list[ConnectionLost] = []
    publisher = await connected(broker, on_lost=lost.append)
    future = publisher.publish("nope", "k", b"{}", message_id="m")
    broker.send(1, commands.Channel.Close(404, "NOT_FOUND - no exchange 'nope'", 60, 40))
    with pytest.raises(ConnectionLost) as caught:
        async with asyncio.timeout(5):
            await future
    assert caught.value.reply_code == 404
    await broker.wait_for(commands.Channel.CloseOk)
    await broker.wait_for(commands.Connection.Close)
    async with asyncio.timeout(5):
        await broker.closed.wait()
    assert [e.reply_code for e in lost] == [404]
    await publisher.close()


async def test_frame_error_drops_the_connection(broker: FakeBroker) -> None:
    lost: list[ConnectionLost] = []
    publisher = await connected(broker, on_lost=lost.append)
    future = publisher.publish("ex", "k", b"{}", message_id="m")
    publisher.data_received(ack(1)[:-1] + b"\x00")  # wrong frame end
    assert isinstance(future.exception(), ConnectionLost)
    assert not publisher.ready
    await asyncio.sleep(0)
    assert len(lost) == 1 and "protocol error" in lost[0].reply_text
    await publisher.close()


async def test_heartbeats_are_sent_and_a_silent_broker_is_dropped() -> None:
    broker = FakeBroker(heartbeat=1)
    await broker.start()
    try:
        lost: list[ConnectionLost] = []
        publisher = await connected(broker, heartbeat=60, on_lost=lost.append)
        assert broker.tune_ok.heartbeat == 1
        # Idle, the client sends heartbeats; the broker sends none, so after ~2 s it gives up.
        async with asyncio.timeout(5):
            await broker.closed.wait()
        assert any(type(value).__name__ == "Heartbeat" for _, value in broker.frames)
        assert not publisher.ready
        await asyncio.sleep(0)
        assert len(lost) == 1 and "heartbeat" in lost[0].reply_text
        await publisher.close()
    finally:
        await broker.stop()


async def test_close_is_polite_and_bounded(broker: FakeBroker) -> None:
    publisher = await connected(broker)
    future = publisher.publish("ex", "k", b"{}", message_id="m")
    broker.answer_close = False  # never answers: close() must still finish
    loop = asyncio.get_running_loop()
    started = loop.time()
    async with asyncio.timeout(5):
        await asyncio.gather(publisher.close(), publisher.close())
    assert loop.time() - started < 4
    assert broker.received(commands.Channel.Close)
    assert isinstance(future.exception(), ConnectionLost)
    await publisher.close()


async def test_close_answered_by_the_broker_is_quick(broker: FakeBroker) -> None:
    publisher = await connected(broker)
    async with asyncio.timeout(1):
        await publisher.close()
    assert broker.received(commands.Channel.Close)
    assert broker.received(commands.Connection.Close)
