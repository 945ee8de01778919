"""The per-process connection cap in front of aiohttp's server."""

from __future__ import annotations

import asyncio
import gc

from router.connections import REFUSAL, ConnectionLimit


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
