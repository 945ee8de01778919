"""The AMQP 0-9-1 wire format of a confirmed publish, encoded by hand (pure, no I/O).

Method, content header and body frames are built as one bytes object, byte for byte what
pamqp (hence aiormq and aio-pika) writes (tests/unit/broker checks them against pamqp), and
the hot inbound frames (basic.ack/nack) have their layout here too.
"""

from __future__ import annotations

import platform
import struct
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote, urlsplit

from router.broker.errors import PublishReturned

__all__ = ["AmqpAddress", "encode_properties", "encode_publish", "encode_table", "parse_url"]

# --- constants ------------------------------------------------------------------------------

FRAME_METHOD, FRAME_HEADER, FRAME_BODY, FRAME_HEARTBEAT = 1, 2, 3, 8
FRAME_END = 0xCE
HEARTBEAT = b"\x08\x00\x00\x00\x00\x00\x00\xce"
CHANNEL = 1  # the only channel we open
ACK = (60 << 16) | 80  # Basic.Ack as class<<16|method
NACK = (60 << 16) | 120

FRAME_HDR = struct.Struct(">BHI")  # type, channel, payload size
ACK_PAYLOAD = struct.Struct(">IQB")  # method id, delivery tag, bits: 13 bytes for ack and nack
# Content header frame up to the property flags: type, channel, size, class, weight, body size.
CONTENT_HDR = struct.Struct(">BHIHHQ")
END_BODY_HDR = struct.Struct(">BBHI")  # the content header's end octet, a body frame header
_U16 = struct.Struct(">H")
_U32 = struct.Struct(">I")
_U64 = struct.Struct(">Q")
_LEN1 = [bytes((n,)) for n in range(256)]  # shortstr length prefixes

CLIENT_PROPERTIES: dict[str, Any] = {
    "product": "webhook-router",
    "platform": f"Python {platform.python_version()}",
    "capabilities": {
        "publisher_confirms": True,
        "basic.nack": True,
        "connection.blocked": True,
        "consumer_cancel_notify": True,
        "exchange_exchange_bindings": True,
        "per_consumer_qos": True,
        # Makes RabbitMQ say 403 ACCESS_REFUSED instead of just dropping the socket.
        "authentication_failure_close": True,
    },
}


# --- pure encoders (also unit-tested against pamqp) -----------------------------------------


def _shortstr(value: str, what: str) -> bytes:
    data = value.encode()
    if len(data) > 255:
        raise ValueError(f"{what} is longer than 255 bytes in UTF-8")
    return _LEN1[len(data)] + data


def _table_integer(value: int) -> bytes:
    # The smallest type that holds it, exactly as pamqp (hence aiormq/aio-pika) encodes it, so
    # consumers see the same wire types as from the aio-pika publisher.
    if -128 <= value <= 127:
        return b"b" + struct.pack(">b", value)
    if -32768 <= value <= 32767:
        return b"s" + struct.pack(">h", value)
    if 0 <= value <= 65535:
        return b"u" + struct.pack(">H", value)
    if -2147483648 <= value <= 2147483647:
        return b"I" + struct.pack(">i", value)
    if 0 <= value <= 4294967295:
        return b"i" + struct.pack(">I", value)
    if -9223372036854775808 <= value <= 9223372036854775807:
        return b"l" + struct.pack(">q", value)
    raise ValueError(f"header integer out of the signed 64-bit range: {value}")


def encode_table(table: Mapping[str, str | int | bool]) -> bytes:
    """Encode a field table (str → 'S', bool → 't', int → smallest integer type), keys sorted:
    the same bytes as `pamqp.encode.field_table`.  Raises ValueError/TypeError on bad input."""
    parts = []
    for key in sorted(table):
        value = table[key]
        encoded_key = key.encode()
        if len(encoded_key) > 128:
            raise ValueError(f"header name longer than 128 bytes: {key[:40]!r}...")
        parts.append(_LEN1[len(encoded_key)] + encoded_key)
        if isinstance(value, bool):  # before int: bool is an int
            parts.append(b"t\x01" if value else b"t\x00")
        elif isinstance(value, int):
            parts.append(_table_integer(value))
        elif isinstance(value, str):
            data = value.encode()
            parts.append(b"S" + _U32.pack(len(data)) + data)
        else:
            raise TypeError(f"header {key!r}: unsupported type {type(value).__name__}")
    data = b"".join(parts)
    return _U32.pack(len(data)) + data


_table_cache: dict[tuple[Any, ...], bytes] = {}
_shortstr_cache: dict[str, bytes] = {}
_method_cache: dict[tuple[str, str, bool], bytes] = {}
_CACHE_MAX = 4096


def _cached_table(headers: Mapping[str, str | int | bool]) -> bytes:
    # Types are part of the key: {"a": 1} == {"a": True} but they encode differently.
    key = (*headers.items(), *map(type, headers.values()))
    data = _table_cache.get(key)
    if data is None:
        data = encode_table(headers)
        if len(_table_cache) >= _CACHE_MAX:
            _table_cache.clear()
        _table_cache[key] = data
    return data


def _cached_shortstr(value: str, what: str) -> bytes:
    # For low-cardinality values (content type, message type); ids are encoded each time.
    data = _shortstr_cache.get(value)
    if data is None:
        data = _shortstr(value, what)
        if len(_shortstr_cache) >= _CACHE_MAX:
            _shortstr_cache.clear()
        _shortstr_cache[value] = data
    return data


def pack_properties(
    content_type: str | None,
    headers: Mapping[str, str | int | bool] | None,
    delivery_mode: int | None,
    correlation_id: str | None,
    message_id: str | None,
    timestamp: int | None,
    message_type: str | None,
) -> bytes:
    # Flags then values in flag order; like pamqp, None and "" mean "absent".
    flags = 0
    parts = []
    if content_type:
        flags = 0x8000
        parts.append(_cached_shortstr(content_type, "content_type"))
    if headers:
        flags |= 0x2000
        parts.append(_cached_table(headers))
    if delivery_mode is not None:
        flags |= 0x1000
        parts.append(_LEN1[delivery_mode])
    if correlation_id:
        flags |= 0x0400
        parts.append(_shortstr(correlation_id, "correlation_id"))
    if message_id:
        flags |= 0x0080
        parts.append(_shortstr(message_id, "message_id"))
    if timestamp is not None:
        if not 0 <= timestamp < 1 << 64:
            raise ValueError(f"timestamp out of range: {timestamp}")
        flags |= 0x0040
        parts.append(_U64.pack(timestamp))
    if message_type:
        flags |= 0x0020
        parts.append(_cached_shortstr(message_type, "message_type"))
    return _U16.pack(flags) + b"".join(parts)


def encode_properties(
    *,
    content_type: str | None = None,
    headers: Mapping[str, str | int | bool] | None = None,
    delivery_mode: int | None = None,
    correlation_id: str | None = None,
    message_id: str | None = None,
    timestamp: int | None = None,
    message_type: str | None = None,
) -> bytes:
    """Encode the property flags and values of a content header: the same bytes as
    `pamqp.commands.Basic.Properties(...).marshal()` (timestamp in epoch seconds)."""
    return pack_properties(
        content_type, headers, delivery_mode, correlation_id, message_id, timestamp, message_type
    )


def publish_method(exchange: str, routing_key: str, mandatory: bool) -> bytes:
    key = (exchange, routing_key, mandatory)
    data = _method_cache.get(key)
    if data is None:
        payload = (
            b"\x00\x3c\x00\x28\x00\x00"  # class 60, method 40, reserved short
            + _shortstr(exchange, "exchange")
            + _shortstr(routing_key, "routing_key")
            + (b"\x01" if mandatory else b"\x00")  # bits: mandatory, immediate=0
        )
        data = FRAME_HDR.pack(FRAME_METHOD, CHANNEL, len(payload)) + payload + b"\xce"
        if len(_method_cache) >= _CACHE_MAX:
            _method_cache.clear()
        _method_cache[key] = data
    return data


def content_frames(properties: bytes, body: bytes, frame_max: int) -> list[bytes]:
    size = len(body)
    header_size = 12 + len(properties)  # class, weight, body size, then flags and values
    if header_size + 8 > frame_max:
        raise ValueError("message properties do not fit in one frame (headers too large?)")
    parts = [
        CONTENT_HDR.pack(FRAME_HEADER, CHANNEL, header_size, 60, 0, size),
        properties,
    ]
    chunk = frame_max - 8  # frame header (7) and end octet (1) count against frame_max
    if size <= chunk:
        if size:
            parts.append(b"\xce" + FRAME_HDR.pack(FRAME_BODY, CHANNEL, size))
            parts.append(body)
        parts.append(b"\xce")
        return parts
    view = memoryview(body)
    for start in range(0, size, chunk):
        piece = view[start : start + chunk]
        parts.append(b"\xce" + FRAME_HDR.pack(FRAME_BODY, CHANNEL, len(piece)))
        parts.append(piece)  # type: ignore[arg-type]  # b"".join takes buffers
    parts.append(b"\xce")
    return parts


def encode_publish(
    exchange: str,
    routing_key: str,
    body: bytes,
    properties: bytes,
    *,
    mandatory: bool = True,
    frame_max: int = 131072,
) -> bytes:
    """The Basic.Publish method frame, content header frame and body frame(s) on channel 1, as
    one bytes object.  `properties` is `encode_properties(...)`."""
    return b"".join(
        [publish_method(exchange, routing_key, mandatory)]
        + content_frames(properties, body, frame_max)
    )



# --- decoding ----------------------------------------------------------------------------


class ReturnedMessage:
    """A basic.return being assembled from its method, content header and body frames."""

    __slots__ = ("error", "message_id", "remaining")

    def __init__(self, error: PublishReturned) -> None:
        self.error = error
        self.message_id: str | None = None
        self.remaining = -1  # body bytes still to skip; -1 until the content header arrives


# --- connecting ---------------------------------------------------------------------------


@dataclass(frozen=True)
class AmqpAddress:
    tls: bool
    host: str
    port: int
    username: str
    password: str
    vhost: str


def parse_url(url: str) -> AmqpAddress:
    """amqp[s]://user:password@host:port/vhost (URL-encoded; guest/guest, port 5672 or 5671
    and vhost "/" by default); ValueError for another scheme."""
    parts = urlsplit(url)
    if parts.scheme not in ("amqp", "amqps"):
        raise ValueError(f"not an amqp:// or amqps:// URL: scheme {parts.scheme!r}")
    tls = parts.scheme == "amqps"
    return AmqpAddress(
        tls=tls,
        host=parts.hostname or "localhost",
        port=parts.port or (5671 if tls else 5672),
        username=unquote(parts.username or "guest"),
        password=unquote(parts.password or "guest"),
        vhost=unquote(parts.path[1:]) if len(parts.path) > 1 else "/",
    )


def negotiate(ours: int, theirs: int) -> int:
    """The smaller of two limits where 0 means "no limit"."""
    if ours and theirs:
        return min(ours, theirs)
    return ours or theirs
