"""The SSRF guard for outbound webhooks: which addresses and URLs are refused."""

from __future__ import annotations

import ipaddress
import socket

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from router.egress import (
    GuardedResolver,
    Unresolvable,
    UnsafeURL,
    check_resolved,
    check_url,
    guarded_connector,
    is_blocked,
)


@pytest.mark.parametrize(("address", "blocked"), [
    ("10.1.2.3", True), ("172.16.0.1", True), ("192.168.1.1", True), ("127.0.0.1", True),
    ("169.254.169.254", True), ("100.64.0.1", True), ("0.0.0.0", True), ("224.0.0.1", True),
    ("192.0.2.1", True), ("::1", True), ("fe80::1", True), ("fc00::1", True),
    ("::ffff:10.0.0.1", True), ("2002:a00:1::", True), ("::ffff:8.8.8.8", False),
    ("8.8.8.8", False), ("2606:4700:4700::1111", False),
])
def test_only_public_unicast_addresses_pass(address, blocked):
    assert blocked == is_blocked(ipaddress.ip_address(address))


@pytest.mark.parametrize(("url", "mode", "allow", "problem"), [
    ("http://portal.example.com/h", "production", False, "https only"),
    ("http://portal.example.com/h", "development", False, "loopback"),
    ("http://127.0.0.1:8000/h", "development", False, "loopback"),
    ("https://user:pw@portal.example.com/h", "production", False, "credentials"),
    ("ftp://portal.example.com/h", "production", False, "scheme"),
    ("https://[fe80::1]/h", "production", False, "link-local"),
    ("http://0x7f.1/h", "development", True, "numeric host"),
    ("https://2130706433/h", "production", False, "2130706433"),
    ("https://169.254.169.254/latest?token=s3cr3t", "production", False, "169.254.169.254"),
    ("https:///nohost", "production", False, "no host"),
])
def test_refused_urls_say_why(url, mode, allow, problem):
    with pytest.raises(UnsafeURL) as info:
        check_url(url, mode=mode, allow_private=allow)
    assert problem in str(info.value)
    assert "s3cr3t" not in str(info.value)


@pytest.mark.parametrize(("url", "mode", "allow"), [
    ("https://portal.example.com/h", "production", False),
    ("http://127.0.0.1:8000/h", "development", True),
    ("http://localhost:8000/h", "development", True),
    ("https://10.0.0.5/h", "production", True),
])
def test_allowed_urls(url, mode, allow):
    check_url(url, mode=mode, allow_private=allow)


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
