"""How every connection to the broker is opened: with the [broker] heartbeat and, for
amqps://, the same TLS options aio-pika takes, so the ingress's publisher, the consumers and
the operator commands all reach RabbitMQ the same way.

TLS options come from [broker] `cafile`, `certfile`, `keyfile` and `verify`, or from the URL's
query as aio-pika reads it (`?cafile=...&certfile=...&keyfile=...&no_verify_ssl=1`); a
[broker] key wins over the query.
"""

from __future__ import annotations

import ssl
from typing import Any
from urllib.parse import parse_qs, urlsplit

import aio_pika

from router.settings import BrokerSettings


def tls_context(settings: BrokerSettings) -> ssl.SSLContext | None:
    """The client TLS context for an amqps:// URL (None for amqp://): the system's CAs or
    `cafile`, a client certificate if `certfile` (and `keyfile`) are given, and the broker's
    certificate and host name verified unless `verify` is off.  Raises OSError/ssl.SSLError
    for files that cannot be read."""
    parts = urlsplit(settings.url)
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


async def open_connection(
    settings: BrokerSettings, name: str, *, robust: bool = False, timeout: float = 10.0
) -> Any:
    """An aio-pika connection (a robust one, which reconnects by itself, if `robust`) named
    `name` in the management UI, with the [broker] heartbeat and TLS options.  `timeout`
    bounds each attempt to connect (a robust connection's reconnects too: a path that went
    silent must not hold one for aiormq's default minute)."""
    connect = aio_pika.connect_robust if robust else aio_pika.connect
    return await connect(
        settings.url,
        client_properties={"connection_name": name},
        ssl_context=tls_context(settings),
        timeout=timeout,
        heartbeat=settings.heartbeat,
    )
