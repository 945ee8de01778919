"""Reading a body within a source's limits: decompressed size, content codings, deadline."""

from __future__ import annotations

import asyncio
import gzip
import zlib
from unittest import mock

import pytest
from aiohttp import streams
from aiohttp.test_utils import make_mocked_request

from router.body import read_body
from router.errors import IngressError

ORDER = b'{"id": 1, "note": "' + b"x" * 500 + b'"}'


def request(body: bytes | None, *, encoding: str | None = None, chunked: bool = False,
            fed: bool = True):
    """A request whose body is `body` (all there, unless `fed` is False: none of it comes)."""
    protocol = mock.Mock(_reading_paused=False)
    payload = streams.StreamReader(protocol, 2**16, loop=asyncio.get_running_loop())
    headers = {"Content-Type": "application/json"}
    if encoding:
        headers["Content-Encoding"] = encoding
    if body is not None and not chunked:
        headers["Content-Length"] = str(len(body))
    if fed and body is not None:
        for start in range(0, len(body), 1000):
            payload.feed_data(body[start:start + 1000])
        payload.feed_eof()
    return make_mocked_request("POST", "/webhooks/x", headers=headers, payload=payload)


async def refused(req, limit: int = 1024, timeout: float = 5.0) -> tuple[int, str]:
    with pytest.raises(IngressError) as caught:
        await read_body(req, limit=limit, timeout=timeout)
    return caught.value.status, caught.value.reason


class TestReadBody:
    @pytest.mark.parametrize("encoding", [None, "identity", "gzip", "x-gzip", "deflate"])
    async def test_each_coding_gives_the_body(self, encoding):
        """A body as is, gzipped or deflated comes out as it was sent."""
        sent = {"gzip": gzip.compress, "x-gzip": gzip.compress,
                "deflate": zlib.compress}.get(encoding or "", lambda b: b)(ORDER)
        assert ORDER == await read_body(request(sent, encoding=encoding), limit=1024,
                                        timeout=5)

    @pytest.mark.parametrize("chunked", [False, True])
    async def test_decompressed_size_is_held_to_the_limit(self, chunked):
        """A gzip body small on the wire but over the limit once inflated is 413."""
        sent = gzip.compress(ORDER)
        assert len(sent) < 100 < len(ORDER)
        assert (413, "payload_too_large") == await refused(
            request(sent, encoding="gzip", chunked=chunked), limit=100)

    async def test_a_bomb_is_never_inflated_past_the_limit(self):
        """100 MB of zeros in a ~100 KB gzip body is refused, having inflated no more than
        the limit + 1 bytes in all."""
        bomb = gzip.compress(bytes(100 * 1024 * 1024), 9)
        limit = 200_000
        assert len(bomb) < limit
        inflated: list[int] = []
        decompressobj = zlib.decompressobj  # patched below, in the zlib module itself

        class Spy:
            def __init__(self, wbits: int) -> None:
                self._inflate = decompressobj(wbits)

            def __getattr__(self, name: str):
                return getattr(self._inflate, name)

            def decompress(self, data: bytes, max_length: int = 0) -> bytes:
                out = self._inflate.decompress(data, max_length)
                inflated.append(len(out))
                return out

        with mock.patch("router.body.zlib.decompressobj", Spy):
            assert (413, "payload_too_large") == await refused(
                request(bomb, encoding="gzip", chunked=True), limit=limit)
        assert limit < sum(inflated) <= limit + 1

    @pytest.mark.parametrize(
        ("sent", "encoding", "status", "reason"),
        [
            (gzip.compress(ORDER)[:-10], "gzip", 400, "invalid_encoding"),  # cut short
            (b"not gzip at all", "gzip", 400, "invalid_encoding"),
            (gzip.compress(ORDER) + b"trailing", "gzip", 400, "invalid_encoding"),
            (ORDER, "br", 415, "unsupported_encoding"),
            (ORDER, "gzip, gzip", 415, "unsupported_encoding"),
        ],
    )
    async def test_what_cannot_be_decoded_is_refused(self, sent, encoding, status, reason):
        """A corrupt or truncated compressed body is 400; a coding we do not decode, 415."""
        assert (status, reason) == await refused(request(sent, encoding=encoding))

    @pytest.mark.parametrize("encoding", [None, "gzip"])
    async def test_a_body_that_does_not_come_times_out(self, encoding):
        """A body not all there within the deadline is 408."""
        assert (408, "body_timeout") == await refused(
            request(ORDER, encoding=encoding, fed=False), timeout=0.05)
