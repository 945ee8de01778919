"""Reading a request body within a source's limits: its size after decompression and a
deadline for the whole read.

    body = await read_body(request, limit=max_body, timeout=body_timeout)

    over `limit` bytes, as sent or once decompressed     PayloadTooLarge (413)
    not all there within `timeout` seconds               RequestTimeout (408)
    Content-Encoding other than gzip, deflate, identity  UnsupportedMediaType (415)
    a compressed body that does not decompress           MalformedPayload (400)

The app turns aiohttp's own decompression off (it would only be bounded by the largest
source's limit); here a compressed body is inflated as it arrives, never more than `limit`
+ 1 bytes at a time, so a small bomb cannot blow up in memory.
"""

from __future__ import annotations

import asyncio
import zlib
from collections.abc import AsyncIterator

from aiohttp import web

from router.errors import MalformedPayload, PayloadTooLarge, RequestTimeout, UnsupportedMediaType

# Content codings: zlib's wbits for each (gzip; deflate, which is zlib-wrapped by the RFC).
_WBITS = {"gzip": 16 + zlib.MAX_WBITS, "x-gzip": 16 + zlib.MAX_WBITS, "deflate": zlib.MAX_WBITS}


def _over(limit: int) -> PayloadTooLarge:
    return PayloadTooLarge(f"the body is over this source's limit of {limit} bytes")


def refuse_over(size: int | None, limit: int) -> None:
    """PayloadTooLarge if a known `size` is over `limit`."""
    if size is not None and size > limit:
        raise _over(limit)


def content_coding(request: web.Request) -> str | None:
    """The body's content coding (None: as is); 415 for one we do not decode."""
    value = request.headers.get("Content-Encoding")
    if value is None:
        return None
    coding = value.strip().lower()
    if coding in ("", "identity"):
        return None
    if coding not in _WBITS:
        raise UnsupportedMediaType(
            "the body's Content-Encoding is not one of gzip, deflate or identity",
            reason="unsupported_encoding",
        )
    return coding


async def read_body(
    request: web.Request, *, limit: int, timeout: float, coding: str | None | bool = True
) -> bytes:
    """The whole body, decompressed (see the module's docstring for what is refused).
    `coding` is the request's content_coding where the caller has it already."""
    if coding is True:
        coding = content_coding(request)
    assert coding is None or isinstance(coding, str)
    if coding is None and request.content.is_eof():
        # Already all here (a small body comes with its headers): nothing to wait for, so
        # no deadline to arm (a timer per request costs the ingress ~8% of its throughput).
        return await _read_plain(request, limit)
    try:
        async with asyncio.timeout(timeout):
            if coding is None:
                return await _read_plain(request, limit)
            return await _read_compressed(request.content.iter_any(), coding, limit)
    except TimeoutError:
        raise RequestTimeout(
            f"the body did not arrive within {timeout:g} seconds"
        ) from None


async def _read_plain(request: web.Request, limit: int) -> bytes:
    refuse_over(request.content_length, limit)
    if request.content_length is not None:
        return await request.read()
    chunks: list[bytes] = []  # chunked: count as it arrives
    size = 0
    async for chunk in request.content.iter_any():
        size += len(chunk)
        refuse_over(size, limit)
        chunks.append(chunk)
    return b"".join(chunks)


async def _read_compressed(chunks: AsyncIterator[bytes], coding: str, limit: int) -> bytes:
    inflate = zlib.decompressobj(_WBITS[coding])
    out: list[bytes] = []
    size = sent = 0
    try:
        async for chunk in chunks:
            sent += len(chunk)  # what is sent counts too (empty deflate blocks inflate to 0)
            refuse_over(sent, limit)
            pending = chunk
            while pending and not inflate.eof:
                # Never more than one byte past the limit: enough to know it is over.
                piece = inflate.decompress(pending, limit - size + 1)
                size += len(piece)
                refuse_over(size, limit)
                out.append(piece)
                pending = inflate.unconsumed_tail
            if inflate.eof and (pending or inflate.unused_data):
                raise _undecodable(coding)
    except zlib.error:
        raise _undecodable(coding) from None
    if not inflate.eof:
        raise _undecodable(coding)
    return b"".join(out)


def _undecodable(coding: str) -> MalformedPayload:
    return MalformedPayload(
        f"the body is not valid {coding} data (corrupt or cut short)", reason="invalid_encoding"
    )
