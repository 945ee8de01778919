"""One AMQP 0-9-1 connection with one channel, as an asyncio protocol: the part of our lean
client that is not about publishing (router.broker.protocol builds the publisher on it).

It connects (TCP or TLS), logs in with PLAIN, tunes, opens channel 1 and then whatever a
subclass adds (`_open_channel_steps`), keeps heartbeats both ways, follows
connection.blocked/unblocked, and closes politely or, when the broker stops answering or
breaks the protocol, by aborting the socket.  Inbound frames are parsed here; a subclass
gets basic.ack/nack (`_settle`, the hot path, decoded by hand), the other channel methods
(`_on_channel_method`) and content frames (`_on_content_header`, `_on_content_body`).
"""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import Callable
from typing import Any

from pamqp import commands, frame
from pamqp.header import ProtocolHeader

from router.broker.errors import AmqpError, ConnectionLost, PublishNacked
from router.broker.wire import (
    ACK,
    ACK_PAYLOAD,
    CHANNEL,
    CLIENT_PROPERTIES,
    FRAME_BODY,
    FRAME_END,
    FRAME_HDR,
    FRAME_HEADER,
    FRAME_HEARTBEAT,
    FRAME_METHOD,
    HEARTBEAT,
    NACK,
    negotiate,
    parse_url,
)


class AmqpConnection(asyncio.Protocol):
    """A connection with channel 1 open, single-use: when it goes, the owner makes a new one.

    `on_lost` is called once, soon after the connection or channel is lost (not after
    `close()`).  The connection_made/data_received/... methods are the event loop's.
    """

    def __init__(
        self,
        url: str,
        *,
        connection_name: str = "webhook-router",
        heartbeat: int = 60,
        frame_max: int = 131072,
        tls: ssl.SSLContext | None = None,
        on_lost: Callable[[ConnectionLost], None] | None = None,
    ) -> None:
        """`url`: amqp[s]://user:password@host:port/vhost (URL-encoded; vhost "/" by default;
        a query is ignored: TLS options come as `tls`, router.broker.connect.tls_context).
        `connection_name` shows in the management UI; `heartbeat` (seconds, 0 = off) and
        `frame_max` are proposals, the broker's smaller non-zero values win; `tls` is the
        context for amqps:// (default: the system's CAs, verified)."""
        self._address = parse_url(url)
        self._connection_name = connection_name
        self._heartbeat = heartbeat
        self._frame_max = frame_max
        self._tls = tls
        self._on_lost = on_lost

        self._loop: asyncio.AbstractEventLoop | None = None
        self._transport: asyncio.Transport | None = None
        self._buffer = b""  # an incomplete inbound frame
        self._started = False  # connect() was called: a connection is single-use
        self._opened = False  # the handshake completed
        self._ready = False
        self._channel_open = False
        self._connection_closing = False  # we sent Connection.Close
        self._abort_timer: asyncio.TimerHandle | None = None  # in case CloseOk never comes
        self._user_closing = False
        self._lost_error: ConnectionLost | None = None
        self._transport_closed: asyncio.Future[None] | None = None
        self._close_done: asyncio.Future[None] | None = None
        self._waiter: asyncio.Future[Any] | None = None
        self._waiting_for: tuple[type, ...] = ()
        self._blocked = False
        self._writing_paused = False

        # Heartbeats: flags set on every write/read, looked at by a timer.
        self._heartbeat_interval = 0
        self._heartbeat_timer: asyncio.TimerHandle | None = None
        self._sent = False
        self._received = False
        self._last_received = 0.0

    # -- public ------------------------------------------------------------------------------

    @property
    def ready(self) -> bool:
        """Connected, channel open (and set up), not closing."""
        return self._ready

    @property
    def blocked(self) -> bool:
        """The broker blocked the connection (resource alarm): it reads nothing we send until
        it unblocks, and then it takes everything sent meanwhile."""
        return self._blocked

    @property
    def writing_paused(self) -> bool:
        """The transport's write buffer is over its high-water mark (for metrics)."""
        return self._writing_paused

    @property
    def heartbeat(self) -> int:
        """The negotiated heartbeat in seconds (0: none)."""
        return self._heartbeat_interval

    async def connect(self, timeout: float = 10.0) -> None:
        """Connect, log in, open channel 1 and set it up.

        Raises ConnectionLost (the broker closed: bad credentials → 403 ACCESS_REFUSED, unknown
        vhost → 530 NOT_ALLOWED), OSError (TCP; ssl.SSLError for TLS) or TimeoutError.  Call
        it once.
        """
        if self._started or self._close_done is not None:
            raise RuntimeError("connect() may be called once: make a new connection")
        self._started = True
        loop = self._loop = asyncio.get_running_loop()
        self._transport_closed = loop.create_future()
        try:
            async with asyncio.timeout(timeout):
                await self._handshake(loop)
            if self._lost_error is not None:  # closed in the same read as the last reply
                raise self._not_ready()
        except BaseException:
            self._ready = False
            if self._transport is not None:
                self._transport.abort()
            if self._lost_error is None:
                self._lost_error = ConnectionLost(None, "connect failed")
            raise
        self._opened = True
        self._ready = True

    def abandon(self, reason: str) -> None:
        """Give up on a connection that stopped answering: abort the socket now and report it
        lost (on_lost, pending work fails with ConnectionLost(None, reason))."""
        if self._lost_error is None:
            self._fail(ConnectionLost(None, reason), reply_code=320)

    async def close(self) -> None:
        """Close the channel and the connection politely (waiting ~2 s at most), fail what is
        still pending with ConnectionLost and close the socket.  Idempotent; does not call
        on_lost."""
        if self._close_done is not None:
            await asyncio.shield(self._close_done)
            return
        loop = asyncio.get_running_loop()
        self._close_done = loop.create_future()
        try:
            await self._close()
        finally:
            self._close_done.set_result(None)

    # -- for subclasses ----------------------------------------------------------------------

    def _open_channel_steps(self) -> list[tuple[Any, type]]:
        """(request, reply) pairs sent on channel 1 once it is open."""
        return []

    def _settle(self, tag: int, multiple: int, nacked: type[PublishNacked] | None) -> None:
        """basic.ack (nacked None) or basic.nack for `tag` (and below it if `multiple`)."""

    def _on_channel_method(self, method: Any) -> None:
        """A method on channel 1 other than the ones handled here."""

    def _on_content_header(self, payload: bytes) -> None:
        """A content header frame's payload (of a basic.return)."""

    def _on_content_body(self, size: int) -> None:
        """A content body frame of `size` bytes arrived."""

    def _fail_pending(self, error: ConnectionLost) -> None:
        """The connection is gone: fail whatever waits on it with copies of `error`."""

    # -- asyncio.Protocol ------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = transport  # type: ignore[assignment]

    def connection_lost(self, exc: Exception | None) -> None:
        for timer in (self._heartbeat_timer, self._abort_timer):
            if timer is not None:
                timer.cancel()
        self._ready = False
        reason = f"connection lost: {exc}" if exc else "connection closed"
        self._lost(ConnectionLost(None, reason))
        if self._transport_closed is not None and not self._transport_closed.done():
            self._transport_closed.set_result(None)

    def pause_writing(self) -> None:
        # Keep writing into the transport's buffer: the owner bounds what is in flight.
        self._writing_paused = True

    def resume_writing(self) -> None:
        self._writing_paused = False

    def data_received(self, data: bytes) -> None:
        self._received = True
        if self._buffer:
            data = self._buffer + data
        pos = 0
        end_of_data = len(data)
        unpack_header = FRAME_HDR.unpack_from
        try:
            while end_of_data - pos >= 8:
                frame_type, channel, size = unpack_header(data, pos)
                end = pos + 7 + size
                if end >= end_of_data:
                    if size > self._frame_max + 8:
                        raise ValueError(f"frame of {size} bytes exceeds frame_max")
                    break
                if data[end] != FRAME_END:
                    raise ValueError("frame end octet missing")
                if frame_type == FRAME_METHOD and size == 13:
                    # Basic.Ack/Nack are the only hot inbound frames: decode them by hand.
                    method, tag, bits = ACK_PAYLOAD.unpack_from(data, pos + 7)
                    if method == ACK:
                        self._settle(tag, bits & 1, None)
                    elif method == NACK:
                        self._settle(tag, bits & 1, PublishNacked)
                    else:
                        self._on_frame(frame_type, channel, data, pos, end)
                else:
                    self._on_frame(frame_type, channel, data, pos, end)
                pos = end + 1
        except Exception as exc:  # a broken stream: nothing after it can be trusted
            self._buffer = b""
            self._fail(ConnectionLost(None, f"protocol error: {exc}"), reply_code=501)
            return
        self._buffer = data[pos:] if pos < end_of_data else b""

    def eof_received(self) -> bool | None:
        return None  # close the transport

    # -- inbound frames (cold path) ------------------------------------------------------------

    def _on_frame(self, frame_type: int, channel: int, data: bytes, pos: int, end: int) -> None:
        if frame_type == FRAME_HEARTBEAT:
            return
        if frame_type == FRAME_HEADER:
            self._on_content_header(data[pos + 7 : end])
            return
        if frame_type == FRAME_BODY:
            self._on_content_body(end - pos - 7)
            return
        if frame_type != FRAME_METHOD:
            raise ValueError(f"unknown frame type {frame_type}")
        _, _, method = frame.unmarshal(data[pos : end + 1])
        self._on_method(channel, method)

    def _on_method(self, channel: int, method: Any) -> None:
        if isinstance(method, commands.Connection.Close):
            self._write_method(0, commands.Connection.CloseOk())
            self._lost(ConnectionLost(method.reply_code, method.reply_text))
            if self._transport is not None:
                self._transport.close()
        elif isinstance(method, commands.Channel.Close):
            self._write_method(channel, commands.Channel.CloseOk())
            self._channel_open = False
            self._lost(ConnectionLost(method.reply_code, method.reply_text))
            # We never reopen a channel: drop the connection too unless close() is on it.
            if not self._user_closing and self._opened:
                self._send_connection_close(200, "channel closed")
        elif isinstance(method, commands.Connection.CloseOk):
            if self._transport is not None:
                self._transport.close()
        elif isinstance(method, commands.Connection.Blocked):
            self._blocked = True
        elif isinstance(method, commands.Connection.Unblocked):
            self._blocked = False
        else:
            self._on_channel_method(method)
        waiter = self._waiter
        if waiter is not None and isinstance(method, self._waiting_for):
            self._waiter = None
            if not waiter.done():
                waiter.set_result(method)

    # -- handshake and close -----------------------------------------------------------------

    def _write_method(self, channel: int, method: Any) -> None:
        if self._transport is not None and not self._transport.is_closing():
            self._transport.write(frame.marshal(method, channel))
            self._sent = True

    def _expect(self, *kinds: type) -> asyncio.Future[Any]:
        # A plain future, set up before the request is written, so no reply can slip past.
        if self._lost_error is not None:
            raise self._not_ready()
        waiter = self._waiter = self._loop.create_future()  # type: ignore[union-attr]
        self._waiting_for = kinds
        return waiter

    async def _handshake(self, loop: asyncio.AbstractEventLoop) -> None:
        address = self._address
        tls = (self._tls or ssl.create_default_context()) if address.tls else None
        await loop.create_connection(
            lambda: self,
            address.host,
            address.port,
            ssl=tls,
            server_hostname=address.host if tls else None,
        )
        transport = self._transport
        assert transport is not None
        waiter = self._expect(commands.Connection.Start)
        transport.write(ProtocolHeader().marshal())
        method: Any = await waiter
        if "PLAIN" not in str(method.mechanisms).split():
            raise ConnectionLost(None, f"the broker does not offer PLAIN: {method.mechanisms}")
        properties = dict(CLIENT_PROPERTIES, connection_name=self._connection_name)
        tune_waiter = self._expect(commands.Connection.Tune)
        self._write_method(
            0,
            commands.Connection.StartOk(
                client_properties=properties,
                mechanism="PLAIN",
                response=f"\0{address.username}\0{address.password}",
                locale="en_US",
            ),
        )
        tune = await tune_waiter
        self._frame_max = negotiate(self._frame_max, tune.frame_max)
        channel_max = negotiate(2047, tune.channel_max)
        # heartbeat=0 from us disables them; 0 from the broker means "as the client likes".
        heartbeat = 0 if self._heartbeat == 0 else negotiate(self._heartbeat, tune.heartbeat)
        self._write_method(0, commands.Connection.TuneOk(channel_max, self._frame_max, heartbeat))
        if heartbeat > 0:
            self._heartbeat_interval = heartbeat
            self._last_received = loop.time()
            self._heartbeat_timer = loop.call_later(heartbeat / 2, self._heartbeat_tick)
        steps: list[tuple[int, Any, type]] = [
            (0, commands.Connection.Open(virtual_host=address.vhost), commands.Connection.OpenOk),
            (CHANNEL, commands.Channel.Open(), commands.Channel.OpenOk),
        ]
        steps += [(CHANNEL, request, reply) for request, reply in self._open_channel_steps()]
        for channel, request, reply in steps:
            reply_waiter = self._expect(reply)
            self._write_method(channel, request)
            await reply_waiter
            if reply is commands.Channel.OpenOk:
                self._channel_open = True

    async def _close(self) -> None:
        self._user_closing = True
        self._ready = False
        transport = self._transport
        if transport is not None and self._opened and self._lost_error is None:
            try:
                async with asyncio.timeout(2.0):
                    if self._channel_open:
                        waiter = self._expect(commands.Channel.CloseOk)
                        self._write_method(CHANNEL, commands.Channel.Close(200, "closing", 0, 0))
                        await waiter
                        self._channel_open = False
                    # Anything not confirmed by Channel.CloseOk never will be.
                    self._lost(ConnectionLost(None, "closed by the client"))
                    if not self._connection_closing:
                        self._send_connection_close(200, "closing")
                    await asyncio.shield(self._transport_closed)  # type: ignore[arg-type]
            except (TimeoutError, AmqpError):
                pass
        self._lost(ConnectionLost(None, "closed by the client"))
        if transport is not None:
            transport.close()
            if self._transport_closed is not None and not self._transport_closed.done():
                try:
                    async with asyncio.timeout(1.0):
                        await asyncio.shield(self._transport_closed)
                except TimeoutError:
                    transport.abort()
        if self._heartbeat_timer is not None:
            self._heartbeat_timer.cancel()

    def _send_connection_close(self, reply_code: int, reply_text: str) -> None:
        # Connection.CloseOk from the broker closes the transport (see _on_method); if it
        # never comes, abort after 2 s.
        self._connection_closing = True
        self._write_method(0, commands.Connection.Close(reply_code, reply_text, 0, 0))
        transport = self._transport
        if transport is not None and self._loop is not None:
            self._abort_timer = self._loop.call_later(2.0, transport.abort)

    # -- failure -----------------------------------------------------------------------------

    def _not_ready(self) -> ConnectionLost:
        error = self._lost_error
        if error is None:
            return ConnectionLost(None, "not connected")
        return ConnectionLost(error.reply_code, error.reply_text)

    def _lost(self, error: ConnectionLost) -> None:
        """Fail everything pending with (copies of) `error`; the first reason wins."""
        self._ready = False
        if self._lost_error is None:
            self._lost_error = error
            if self._opened and not self._user_closing and self._on_lost is not None:
                # Soon, not now: the callback may call close() or publish.
                self._loop.call_soon(self._on_lost, error)  # type: ignore[union-attr]
        error = self._lost_error
        self._fail_pending(error)
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_exception(ConnectionLost(error.reply_code, error.reply_text))

    def _fail(self, error: ConnectionLost, reply_code: int) -> None:
        """Give up on a connection that broke the protocol or stopped answering."""
        self._write_method(0, commands.Connection.Close(reply_code, error.reply_text[:200], 0, 0))
        self._lost(error)
        if self._transport is not None:
            self._transport.abort()

    def _heartbeat_tick(self) -> None:
        transport = self._transport
        if transport is None or transport.is_closing():
            return
        now = self._loop.time()  # type: ignore[union-attr]
        interval = self._heartbeat_interval
        if self._received:
            self._received = False
            self._last_received = now
        elif now - self._last_received > 2 * interval:
            self._fail(ConnectionLost(None, "missed heartbeats from the broker"), reply_code=501)
            return
        if not self._sent:
            transport.write(HEARTBEAT)
        self._sent = False
        self._heartbeat_timer = self._loop.call_later(  # type: ignore[union-attr]
            interval / 2, self._heartbeat_tick
        )
