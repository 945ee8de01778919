"""The SSRF guard for outbound webhooks: DNS answers checked at start-up and at connect."""

from __future__ import annotations

import socket

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from consumers.outbound.guard import (
    GuardedResolver,
    Unresolvable,
    check_resolved,
    guarded_connector,
)
from router.egress import UnsafeURL


class FakeResolver(aiohttp.abc.AbstractResolver):
    def __init__(self, hosts):
        self.hosts = hosts

    async def resolve(self, host, port=0, family=socket.AF_INET):
        return [{"hostname": host, "host": h, "port": port, "family": family, "proto": 0,
                 "flags": 0} for h in self.hosts]

    async def close(self):
        pass


async def test_resolver_drops_private_answers():
    """A DNS answer mixing public and private addresses keeps only the public ones; an
    answer with only private ones is refused (DNS rebinding)."""
    mixed = GuardedResolver(allow_private=False, resolver=FakeResolver(["10.0.0.1", "8.8.4.4"]))
    assert ["8.8.4.4"] == [e["host"] for e in await mixed.resolve("portal.example.com", 443)]
    private = GuardedResolver(allow_private=False, resolver=FakeResolver(["169.254.169.254"]))
    with pytest.raises(OSError, match="portal.example.com"):
        await private.resolve("portal.example.com", 443)
    allowed = GuardedResolver(allow_private=True, resolver=FakeResolver(["10.0.0.1"]))
    assert 1 == len(await allowed.resolve("portal.example.com", 443))


async def test_check_resolved():
    with pytest.raises(UnsafeURL, match="localhost"):
        await check_resolved("http://localhost:1/", allow_private=False)
    assert "127.0.0.1" in await check_resolved("http://localhost:1/", allow_private=True)
    with pytest.raises(Unresolvable):
        await check_resolved("https://no-such-host.invalid/", allow_private=False)


async def test_connections_to_private_hosts_are_refused_at_connect():
    """A name that resolves to loopback cannot be reached without allow_private."""
    app = web.Application()
    async def ok(request: web.Request) -> web.Response:
        return web.Response(status=204)

    app.router.add_post("/", ok)
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    url = f"http://localhost:{server.port}/"
    try:
        async with aiohttp.ClientSession(connector=guarded_connector(allow_private=False)) as s:
            with pytest.raises(aiohttp.ClientConnectorError):
                await s.post(url)
        async with aiohttp.ClientSession(connector=guarded_connector(allow_private=True)) as s:
            async with s.post(url) as response:
                assert 204 == response.status
    finally:
        await server.close()
