"""A cap on the connections one process holds open, in front of aiohttp's server.

    listener = await loop.create_server(
        ConnectionLimit(runner.server, limit, header_timeout=10.0), host, port)

or, where aiohttp makes the listeners itself (its gunicorn worker's sites), a
`LimitedRunner`, whose `server` is the capped factory.

Below `limit` open connections (TLS handshakes under way included) a new connection is
aiohttp's as usual. At the limit it is answered at once with 503, `Retry-After` and a JSON
reason, and closed: clients that hold connections open (a body trickled byte by byte, idle
keep-alives) cannot take the process's file descriptors and memory, and the requests being
served go on.

With `header_timeout`, a connection whose first request line and headers are not complete
(a blank line seen) within that many seconds of its opening is answered 408 with a JSON
reason and closed: aiohttp has no such deadline, so a client sending its headers one byte at
a time held a connection for as long as it liked. The heads of later requests on a kept-alive
connection are bounded by aiohttp's keepalive_timeout, which closes a connection still
waiting for a complete request when it expires.
"""

from __future__ import annotations

import asyncio
import re
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

_HEAD_BODY = orjson.dumps(
    {"error": "header_timeout",
     "message": "the request line and headers did not arrive in time"}
)
HEAD_TIMEOUT = (
    b"HTTP/1.1 408 Request Timeout\r\n"
    b"Content-Type: application/json\r\n"
    b"Connection: close\r\n"
    b"Content-Length: %d\r\n\r\n%s" % (len(_HEAD_BODY), _HEAD_BODY)
)
# The blank line that ends a request's head (aiohttp's parser accepts a bare LF too).
_END_OF_HEAD = re.compile(rb"\n\r?\n")


class ConnectionLimit:
    """A protocol factory for `loop.create_server`: `factory`'s protocol (aiohttp's
    `runner.server`) for at most `limit` connections at a time, a refusal beyond."""

    def __init__(self, factory: Callable[[], asyncio.Protocol], limit: int, *,
                 header_timeout: float | None = None) -> None:
        if limit < 1:
            raise ValueError("limit must be at least 1")
        self.limit = limit
        self.header_timeout = header_timeout
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

    def __init__(self, app: web.Application, *, limit: int,
                 header_timeout: float | None = None, **kwargs: object) -> None:
        super().__init__(app, **kwargs)  # type: ignore[arg-type]
        self._limit = limit
        self._header_timeout = header_timeout
        self._capped: ConnectionLimit | None = None

    @property
    def server(self) -> web.Server | None:
        inner = super().server
        if inner is None:
            return None
        if self._capped is None or self._capped._factory is not inner:
            self._capped = ConnectionLimit(inner, self._limit,
                                           header_timeout=self._header_timeout)
        return cast(web.Server, self._capped)


class _Counted(asyncio.Protocol):
    """The server's protocol for one connection, counted while it is open, and closed if its
    first request head is not complete within the limit's header_timeout."""

    __slots__ = ("_limit", "_inner", "_connected", "_deadline", "_head_end", "__weakref__")

    def __init__(self, limit: ConnectionLimit, inner: asyncio.Protocol) -> None:
        self._limit = limit
        self._inner = inner
        self._connected = False
        self._deadline: asyncio.TimerHandle | None = None
        self._head_end = b""  # the last bytes of the head so far (a blank line may straddle)

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._connected = True
        self._limit._made(self)
        if self._limit.header_timeout is not None:
            self._deadline = asyncio.get_running_loop().call_later(
                self._limit.header_timeout, self._head_too_slow,
                cast(asyncio.WriteTransport, transport))
        self._inner.connection_made(transport)

    def _head_too_slow(self, transport: asyncio.WriteTransport) -> None:
        self._deadline = None
        transport.write(HEAD_TIMEOUT)
        transport.close()

    def connection_lost(self, exc: Exception | None) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None
        if self._connected:
            self._connected = False
            self._limit._lost()
        self._inner.connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self._deadline is not None:
            seen = self._head_end + data
            if _END_OF_HEAD.search(seen):
                self._deadline.cancel()
                self._deadline = None
            else:
                self._head_end = seen[-2:]
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
