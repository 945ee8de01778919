"""How every connection to the broker is opened: with the [broker] heartbeat and, for
amqps://, the same TLS options aio-pika takes, so the ingress's publisher, the consumers and
the operator commands all reach RabbitMQ the same way.

TLS options come from [broker] `cafile`, `certfile`, `keyfile` and `verify`, or from the URL's
query as aio-pika reads it (`?cafile=...&certfile=...&keyfile=...&no_verify_ssl=1`); a
[broker] key wins over the query.

A cluster has several addresses ([broker] urls): a connection goes to the first of them that
answers, starting at a random one so that many processes spread over the nodes, and a
connection lost moves on to the next node (`rotation`): a robust connection by itself
(RotatingRobustConnection), the publisher when it reconnects (`try_addresses`).
"""

from __future__ import annotations

import random
import ssl
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, TypeVar
from urllib.parse import parse_qs, urlsplit

import aio_pika
import structlog
from aio_pika.connection import make_url
from pamqp.common import FieldTable
from yarl import URL

from router.broker.errors import BROKER_ERRORS, describe
from router.settings import BrokerSettings

T = TypeVar("T")
log = structlog.get_logger("router.broker")


def tls_context(settings: BrokerSettings, url: str | None = None) -> ssl.SSLContext | None:
    """The client TLS context for an amqps:// URL (`url`, by default [broker] url; None for
    amqp://): the system's CAs or `cafile`, a client certificate if `certfile` (and
    `keyfile`) are given, and the broker's certificate and host name verified unless `verify`
    is off.  Raises OSError/ssl.SSLError for files that cannot be read."""
    parts = urlsplit(settings.url if url is None else url)
    if parts.scheme != "amqps":
        return None
    query = {key: values[-1] for key, values in parse_qs(parts.query).items()}
    cafile = settings.cafile or query.get("cafile")
    certfile = settings.certfile or query.get("certfile")
    keyfile = settings.keyfile or query.get("keyfile")
    verify = settings.verify and query.get("no_verify_ssl", "0") == "0"
    context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=cafile)
    if certfile:
        context.load_cert_chain(certfile, keyfile)
    if not verify:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    return context


def where(url: str) -> str:
    """host:port of an AMQP URL, for logs (never its credentials)."""
    parts = urlsplit(url)
    return f"{parts.hostname}:{parts.port or (5671 if parts.scheme == 'amqps' else 5672)}"


def rotation(addresses: Sequence[str], after: str | None = None) -> list[str]:
    """`addresses` in the order to try them: from the one after `after` (the address a
    connection was just lost on: the others first, it last), else from a random one."""
    start = (addresses.index(after) + 1 if after in addresses
             else random.randrange(len(addresses)))
    return [*addresses[start:], *addresses[:start]]


async def try_addresses(
    settings: BrokerSettings, attempt: Callable[[str], Awaitable[T]], *,
    after: str | None = None,
) -> T:
    """`await attempt(url)` for each broker address in `rotation` order until one returns,
    and return what it returned; if every one fails for the broker's sake (BROKER_ERRORS),
    raise the last failure."""
    addresses = rotation(settings.addresses, after)
    for url in addresses[:-1]:
        try:
            return await attempt(url)
        except BROKER_ERRORS as exc:
            log.warning("broker_address_failed", address=where(url), error=describe(exc))
    return await attempt(addresses[-1])


class RotatingRobustConnection(aio_pika.RobustConnection):
    """aio-pika's robust connection over several addresses: each reconnect goes to the next
    one, so a consumer whose node went away carries on on another node of the cluster (its
    channels, queues and consumers restored there as aio-pika does) instead of waiting for
    that node to come back."""

    def __init__(self, addresses: Sequence[tuple[str, URL, ssl.SSLContext | None]],
                 **kwargs: Any) -> None:
        """`addresses`: (address, its URL with the connection's query, its TLS context), the
        first tried first; `kwargs` as for aio_pika.RobustConnection."""
        super().__init__(addresses[0][1], ssl_context=addresses[0][2], **kwargs)
        self._addresses = list(addresses)
        self._attempts = 0

    @property
    def address(self) -> str:
        """The address this connection was last (or is first) made to."""
        return self._addresses[max(self._attempts - 1, 0) % len(self._addresses)][0]

    async def _RobustConnection__connect_transport(self) -> None:  # noqa: N802
        # RobustConnection makes every (re)connect attempt here (a private method of
        # aio-pika 10: tests/unit/broker/test_connect.py fails if it is renamed): the
        # first goes to the first address, each later one to the next.
        _, self.url, self.kwargs["context"] = self._addresses[
            self._attempts % len(self._addresses)]
        self._attempts += 1
        await super()._RobustConnection__connect_transport()  # type: ignore[misc]


async def open_connection(
    settings: BrokerSettings, name: str, *, robust: bool = False, timeout: float = 10.0
) -> Any:
    """An aio-pika connection (a robust one, which reconnects by itself, if `robust`) named
    `name` in the management UI, with the [broker] heartbeat and TLS options, to the first of
    the broker's addresses that answers (try_addresses).  `timeout` bounds each attempt to
    connect (a robust connection's reconnects too: a path that went silent must not hold one
    for aiormq's default minute)."""
    properties: FieldTable = {"connection_name": name}

    async def connect(url: str) -> Any:
        if not robust:
            return await aio_pika.connect(
                url, client_properties=properties, ssl_context=tls_context(settings, url),
                timeout=timeout, heartbeat=settings.heartbeat)
        # url first, then the others in turn
        order = [url, *rotation(settings.addresses, url)[:-1]]
        connection = RotatingRobustConnection(
            [(address, make_url(address, heartbeat=settings.heartbeat),
              tls_context(settings, address)) for address in order],
            client_properties=properties)
        try:
            await connection.connect(timeout=timeout)
        except BaseException:
            await connection.close()  # its reconnecting task, which failed fast
            raise
        return connection

    return await try_addresses(settings, connect)
