"""The one thin transport the drivers share: send a built request, give back the status,
headers and body, and turn what went wrong on the way into the errors tree. Building the
request and reading the answer are the drivers' pure functions."""

from __future__ import annotations

import ipaddress
import time
from dataclasses import dataclass, field
from email.utils import parsedate_to_datetime
from urllib.parse import urlsplit

import aiohttp

from consumers.storefronts.errors import StoreUnavailable, Uncertain


@dataclass(frozen=True)
class Request:
    """One HTTP request, as a driver's build function makes it. `writes` marks the request
    that changes the store: losing its answer is Uncertain, not merely unavailable."""

    method: str
    path: str
    headers: dict[str, str] = field(default_factory=dict)
    params: tuple[tuple[str, str], ...] = ()
    body: bytes | None = None
    writes: bool = False


@dataclass(frozen=True)
class Response:
    """One HTTP answer; `headers` keys are lower case."""

    status: int
    headers: dict[str, str]
    body: bytes


def check_base_url(base_url: str) -> str:
    """`base_url` without its trailing slash; credentials travel only over HTTPS, or over
    plain HTTP to this machine (a local emulator)."""
    parts = urlsplit(base_url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"store URL {base_url!r} is not an http(s) URL")
    if parts.scheme == "http" and not _is_loopback(parts.hostname):
        raise ValueError(f"store URL {base_url!r}: credentials are sent only over https "
                         "(plain http only to this machine)")
    return base_url.rstrip("/")


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def retry_after(headers: dict[str, str]) -> float | None:
    """Retry-After in seconds (delta-seconds, decimal or an HTTP date), None if absent or
    unreadable: a hint, never an exception."""
    value = headers.get("retry-after", "").strip()
    if not value:
        return None
    try:
        seconds = float(value)
    except ValueError:
        try:
            return max(0.0, parsedate_to_datetime(value).timestamp() - time.time())
        except (TypeError, ValueError, OverflowError, IndexError):
            return None
    return seconds if 0 <= seconds < float("inf") else None


async def send(session: aiohttp.ClientSession, base_url: str, request: Request,
               timeout: float) -> Response:
    """Send `request` to `base_url` and read the whole answer. No connection, or a connect
    timeout: StoreUnavailable (nothing was sent). The answer lost after the request went out:
    Uncertain for a request that writes, StoreUnavailable for a read."""
    try:
        async with session.request(
            request.method, base_url + request.path, params=list(request.params) or None,
            headers=request.headers, data=request.body,
            timeout=aiohttp.ClientTimeout(total=timeout, sock_connect=timeout),
            allow_redirects=False,  # a redirect would carry the credentials elsewhere
        ) as answer:
            body = await answer.read()
            headers = {k.lower(): v for k, v in answer.headers.items()}
            return Response(answer.status, headers, body)
    except (aiohttp.ClientConnectorError, aiohttp.ConnectionTimeoutError) as exc:
        raise StoreUnavailable(f"store unreachable: {type(exc).__name__}") from exc
    except (aiohttp.ClientError, TimeoutError) as exc:
        what = f"no answer from the store: {type(exc).__name__}"
        if request.writes:
            raise Uncertain(what) from exc
        raise StoreUnavailable(what) from exc
