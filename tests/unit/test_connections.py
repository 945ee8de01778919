"""The per-process connection cap in front of aiohttp's server."""

from __future__ import annotations

import asyncio
import contextlib
import gc

from aiohttp import web

from router.connections import HEAD_TIMEOUT, REFUSAL, ConnectionLimit


class Recorder(asyncio.Protocol):
    """Stands in for aiohttp's protocol: records what reaches it."""

    def __init__(self) -> None:
        self.events: list[str] = []

    def connection_made(self, transport) -> None:
        self.events.append("made")

    def data_received(self, data: bytes) -> None:
        self.events.append(data.decode())

    def connection_lost(self, exc) -> None:
        self.events.append("lost")


class Transport(asyncio.Transport):
    def __init__(self) -> None:
        super().__init__()
        self.written = b""
        self.closed = False

    def write(self, data) -> None:
        self.written += bytes(data)

    def close(self) -> None:
        self.closed = True


class TestConnectionLimit:
    def test_below_the_limit_connections_reach_the_server(self):
        """Up to the limit each connection gets the server's protocol, events passed on."""
        made: list[Recorder] = []
        limit = ConnectionLimit(lambda: made.append(Recorder()) or made[-1], 2)
        protocol = limit()
        protocol.connection_made(Transport())
        protocol.data_received(b"GET /")
        protocol.connection_lost(None)
        assert ["made", "GET /", "lost"] == made[0].events
        assert 0 == limit.open

    def test_at_the_limit_a_connection_is_answered_503_and_closed(self):
        """The connection past the limit never reaches the server: 503, Retry-After, closed;
        once one closes, the next is served again."""
        limit = ConnectionLimit(Recorder, 2)
        first, second = limit(), limit()
        for protocol in (first, second):
            protocol.connection_made(Transport())
        refused, transport = limit(), Transport()
        refused.connection_made(transport)
        assert transport.written == REFUSAL and transport.closed
        assert transport.written.startswith(b"HTTP/1.1 503 ")
        assert b"Retry-After: 1" in transport.written
        assert b'"too_many_connections"' in transport.written
        first.connection_lost(None)
        assert not isinstance(limit(), type(refused))

    def test_accepted_but_not_yet_connected_count(self):
        """Connections accepted in one batch count before the loop connects them (or their
        TLS handshake ends), so a batch cannot overshoot the limit."""
        limit = ConnectionLimit(Recorder, 2)
        pending = [limit(), limit()]
        assert 2 == limit.open
        assert type(limit()).__name__ == "_Refusal"
        del pending

    def test_a_connection_never_made_is_let_go(self):
        """One whose TLS handshake failed (never connected, never lost) stops counting once
        it is gone."""
        limit = ConnectionLimit(Recorder, 1)
        protocol = limit()
        assert 1 == limit.open
        del protocol
        gc.collect()
        assert 0 == limit.open


@contextlib.asynccontextmanager
async def serving(header_timeout: float):
    """aiohttp's server for a one-route app, on loopback behind a ConnectionLimit with
    `header_timeout`; yields its port."""
    async def healthz(request: web.Request) -> web.Response:
        return web.Response(text="ok")

    app = web.Application()
    app.router.add_get("/healthz", healthz)
    runner = web.AppRunner(app)
    await runner.setup()
    assert runner.server is not None
    listener = await asyncio.get_running_loop().create_server(
        ConnectionLimit(runner.server, 10, header_timeout=header_timeout), "127.0.0.1", 0)
    try:
        yield listener.sockets[0].getsockname()[1]
    finally:
        listener.close()
        await runner.cleanup()


async def trickle(writer: asyncio.StreamWriter, data: bytes, every: float) -> None:
    for byte in data:
        writer.write(bytes([byte]))
        await writer.drain()
        await asyncio.sleep(every)


class TestHeaderTimeout:
    async def test_a_head_sent_byte_by_byte_is_cut_off_at_the_deadline(self):
        """Request line and headers trickled slower than header_timeout: 408 with a JSON
        reason, then the server closes the connection (read until EOF, with a timeout)."""
        async with serving(header_timeout=0.3) as port:
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            slow = asyncio.create_task(trickle(
                writer, b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Slow: " + b"a" * 1000, 0.05))
            try:
                answer = await asyncio.wait_for(reader.read(), 10)
            finally:
                slow.cancel()
                writer.close()
            assert HEAD_TIMEOUT == answer
            assert b'"error":"header_timeout"' in answer

    async def test_a_head_sent_at_once_is_served_and_the_body_may_take_longer(self):
        """A complete head stops the clock: the request is served on a connection that
        stays open past the deadline (keep-alive), and a second request is served too."""
        async with serving(header_timeout=0.3) as port:
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            request = b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n"
            writer.write(request[:10])
            await writer.drain()
            writer.write(request[10:])  # the blank line in a second packet
            first = await asyncio.wait_for(reader.readuntil(b"ok"), 10)
            await asyncio.sleep(0.5)  # past the deadline: the connection is still ours
            writer.write(request)
            second = await asyncio.wait_for(reader.readuntil(b"ok"), 10)
            writer.close()
            assert first.startswith(b"HTTP/1.1 200") and second.startswith(b"HTTP/1.1 200")
