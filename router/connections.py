"""A cap on the connections one process holds open, in front of aiohttp's server.

    listener = await loop.create_server(ConnectionLimit(runner.server, limit), host, port)

or, where aiohttp makes the listeners itself (its gunicorn worker's sites), a
`LimitedRunner`, whose `server` is the capped factory.

Below `limit` open connections (TLS handshakes under way included) a new connection is
aiohttp's as usual. At the limit it is answered at once with 503, `Retry-After` and a JSON
reason, and closed: clients that hold connections open (a body trickled byte by byte, idle
keep-alives) cannot take the process's file descriptors and memory, and the requests being
served go on.
"""

from __future__ import annotations

import asyncio
import weakref
from collections.abc import Callable
from typing import cast

import orjson
from aiohttp import web

_BODY = orjson.dumps(
    {"error": "too_many_connections", "message": "the server is at its connection limit; retry"}
)
REFUSAL = (
    b"HTTP/1.1 503 Service Unavailable\r\n"
    b"Content-Type: application/json\r\n"
    b"Retry-After: 1\r\n"
    b"Connection: close\r\n"
    b"Content-Length: %d\r\n\r\n%s" % (len(_BODY), _BODY)
)


class ConnectionLimit:
    """A protocol factory for `loop.create_server`: `factory`'s protocol (aiohttp's
    `runner.server`) for at most `limit` connections at a time, a refusal beyond."""

    def __init__(self, factory: Callable[[], asyncio.Protocol], limit: int) -> None:
        if limit < 1:
            raise ValueError("limit must be at least 1")
        self.limit = limit
        self._factory = factory
        self._connected = 0
        # Accepted but not yet connected (a TLS handshake, or the loop's next turn); weakly
        # held, so one whose handshake fails, and which is never connected, is let go.
        self._connecting: weakref.WeakSet[_Counted] = weakref.WeakSet()

    @property
    def open(self) -> int:
        """Connections accepted and not yet closed."""
        return self._connected + len(self._connecting)

    def __call__(self) -> asyncio.BaseProtocol:
        if self.open >= self.limit:
            return _Refusal()
        counted = _Counted(self, self._factory())
        self._connecting.add(counted)
        return counted

    def _made(self, counted: _Counted) -> None:
        self._connecting.discard(counted)
        self._connected += 1

    def _lost(self) -> None:
        self._connected -= 1

    def __getattr__(self, name: str) -> object:
        # Everything else (requests_count, shutdown, ...) is the wrapped server's.
        return getattr(self._factory, name)


class LimitedRunner(web.AppRunner):
    """aiohttp's AppRunner whose sites listen through a ConnectionLimit of `limit`."""

    def __init__(self, app: web.Application, *, limit: int, **kwargs: object) -> None:
        super().__init__(app, **kwargs)  # type: ignore[arg-type]
        self._limit = limit
        self._capped: ConnectionLimit | None = None

    @property
    def server(self) -> web.Server | None:
        inner = super().server
        if inner is None:
            return None
        if self._capped is None or self._capped._factory is not inner:
            self._capped = ConnectionLimit(inner, self._limit)
        return cast(web.Server, self._capped)


class _Counted(asyncio.Protocol):
    """The server's protocol for one connection, counted while it is open."""

    __slots__ = ("_limit", "_inner", "_connected", "__weakref__")

    def __init__(self, limit: ConnectionLimit, inner: asyncio.Protocol) -> None:
        self._limit = limit
        self._inner = inner
        self._connected = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._connected = True
        self._limit._made(self)
        self._inner.connection_made(transport)

    def connection_lost(self, exc: Exception | None) -> None:
        if self._connected:
            self._connected = False
            self._limit._lost()
        self._inner.connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        self._inner.data_received(data)

    def eof_received(self) -> bool | None:
        return self._inner.eof_received()

    def pause_writing(self) -> None:
        self._inner.pause_writing()

    def resume_writing(self) -> None:
        self._inner.resume_writing()


class _Refusal(asyncio.Protocol):
    """Answers 503 and closes, whatever the client sends."""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        writer = cast(asyncio.WriteTransport, transport)
        writer.write(REFUSAL)
        writer.close()
