"""The SSRF guard for outbound webhooks: router.egress's address rules applied to what DNS
answers, because each check alone can be bypassed:

- `check_url` (router.egress, no DNS) before every request;
- `check_resolved` at start-up (`check_addresses` for every subscription): the host
  resolves, and to allowed addresses only;
- `GuardedResolver` (in `guarded_connector`) at connect time: the addresses aiohttp connects
  to are filtered again, so a DNS answer that changed since start-up (DNS rebinding) still
  cannot reach a private address.

Callers must also send without redirects (`allow_redirects=False`: a redirect to a literal IP
would skip both the per-request check and the resolver) and without proxies (`trust_env` off:
the resolver would then only see the proxy's name).
"""

from __future__ import annotations

import asyncio
import errno
import socket
from typing import TYPE_CHECKING

import aiohttp
import structlog
from aiohttp.abc import AbstractResolver

from router.egress import (
    UnsafeURL,
    address_reason,
    host_of,
    host_reason,
    parse_ip,
    parse_url,
    refused,
)
from router.settings import Settings

if TYPE_CHECKING:
    # A TypedDict in aiohttp >= 3.10 (a plain dict before): for annotations only.
    from aiohttp.abc import ResolveResult

log = structlog.get_logger("consumers.outbound")


# Seconds aiohttp caches a (filtered) DNS answer: the cache only ever holds what the guarded
# resolver let through, so it cannot be used to skip the filter.
_DNS_CACHE_SECONDS = 10


class Unresolvable(UnsafeURL):
    """The host did not resolve (the caller may choose to only warn at start-up)."""



async def _resolve(host: str, port: int | None, timeout: float) -> list[str]:
    """The addresses `host` resolves to, in order, without duplicates; Unresolvable if none."""
    loop = asyncio.get_running_loop()
    try:
        async with asyncio.timeout(timeout):
            infos = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except TimeoutError:
        raise Unresolvable(f"URL host {host} did not resolve within {timeout:g}s") from None
    except (OSError, UnicodeError) as exc:
        detail = getattr(exc, "strerror", None) or str(exc)
        raise Unresolvable(f"URL host {host} does not resolve: {detail}") from None
    addresses = list(dict.fromkeys(str(info[4][0]) for info in infos))
    if not addresses:
        raise Unresolvable(f"URL host {host} does not resolve: no address")
    return addresses


async def check_resolved(url: str, *, allow_private: bool, timeout: float = 5.0) -> list[str]:
    """Resolve the URL's host (start-up check) and return its addresses.

    Raises Unresolvable if the host does not resolve within `timeout` seconds, UnsafeURL if
    any address (or the host itself, see `check_url`) is blocked and not `allow_private`. A
    literal IP host is returned without DNS. The scheme is not checked: see `check_url`.
    """
    parsed = parse_url(url)
    host = host_of(parsed)
    if not allow_private:
        reason = host_reason(parsed, host)
        if reason is not None:
            raise refused(host, reason)
    address = parse_ip(parsed.host or host)
    if address is not None:
        return [str(address)]
    addresses = await _resolve(host, parsed.port, timeout)
    if not allow_private:
        for text in addresses:
            reason = address_reason(text)
            if reason is not None:
                raise refused(host, f"it resolves to {text} ({reason})")
    return addresses


class GuardedResolver(AbstractResolver):
    """An aiohttp resolver that drops blocked addresses from another resolver's answers.

    Raises OSError naming the host when no address is left, which aiohttp reports as
    ClientConnectorDNSError (a ClientConnectorError). aiohttp does not call the resolver for
    literal IP hosts: `check_url` must still be called before each request.
    """

    def __init__(self, *, allow_private: bool, resolver: AbstractResolver | None = None) -> None:
        """`resolver` defaults to aiohttp.ThreadedResolver (needs a running event loop)."""
        self._allow_private = allow_private
        self._resolver = resolver if resolver is not None else aiohttp.ThreadedResolver()

    # The signature and the result dicts (hostname, host, port, family, proto, flags) are those
    # of aiohttp.abc.AbstractResolver; the connector calls resolve() only for names.
    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        results = await self._resolver.resolve(host, port, family)
        if self._allow_private:
            return results
        allowed = [result for result in results if address_reason(result["host"]) is None]
        if not allowed:
            dropped = ", ".join(
                f"{result['host']} ({address_reason(result['host'])})" for result in results
            )
            raise OSError(
                errno.EACCES,
                f"host {host} has no allowed address: {dropped or 'no address'}",
            )
        return allowed

    async def close(self) -> None:
        await self._resolver.close()


def guarded_connector(*, allow_private: bool, limit: int = 100) -> aiohttp.TCPConnector:
    """A TCPConnector whose DNS answers go through GuardedResolver (needs a running loop).

    A connector given a resolver does not close it; the default ThreadedResolver holds
    nothing to release, so closing the connector is enough.
    """
    return aiohttp.TCPConnector(
        resolver=GuardedResolver(allow_private=allow_private),
        limit=limit,
        ttl_dns_cache=_DNS_CACHE_SECONDS,
    )


async def check_addresses(settings: Settings) -> None:
    """Refuse to start with a subscription whose host resolves to an address it may not
    reach; a host that does not resolve yet is only logged (it is checked at every
    connect). Raises UnsafeURL naming the subscription."""
    for sub in settings.subscriptions.values():
        if not sub.enabled:
            continue
        try:
            await check_resolved(sub.url, allow_private=sub.allow_private)
        except Unresolvable as exc:
            log.warning("subscription_unresolvable", subscription=sub.name, error=str(exc))
        except UnsafeURL as exc:
            raise UnsafeURL(f"subscriptions.{sub.name}.url: {exc}") from exc

