"""What goes wrong with the broker, as the router's broker code reports it.

    AmqpError                 our publish-only client (router.broker.protocol)
    ├── ConnectionLost        the connection or channel is gone (broker, network or close())
    ├── PublishNacked         the broker nacked the message (it did not take responsibility)
    └── PublishReturned       a mandatory message could not be routed to any queue
    PublishFailed             Publisher: the broker did not take a message (not connected,
    │                         blocked, too many in flight, nacked, unroutable): it was not
    │                         published (the ingress answers 503; a consumer tries again later)
    ├── PublishRefused        the broker nacked it: a bounded queue is full (reject-publish)
    │                         or the broker could not store it
    └── PublishInDoubt        it was sent but not confirmed in time, or the connection went
                              before the confirm: the broker may still publish it (504)

BROKER_ERRORS holds every exception that means "the broker or the connection failed", from
aio-pika, aiormq, our client and the socket, for the places that catch them all.
"""

from __future__ import annotations

import ssl

import aiormq
from aio_pika.exceptions import AMQPException


class AmqpError(Exception):
    """Base of this module's errors.

    AmqpError
    ├── ConnectionLost    the connection or channel is gone (broker, network or close())
    ├── PublishNacked     the broker nacked the message (it did not take responsibility)
    └── PublishReturned   a mandatory message could not be routed to any queue
    """


class ConnectionLost(AmqpError):
    """The connection or the channel closed; `reply_code`/`reply_text` are the broker's if it
    said why (e.g. 403 ACCESS_REFUSED, 404 NOT_FOUND, 320 CONNECTION_FORCED), else None/text."""

    def __init__(self, reply_code: int | None = None, reply_text: str = "connection lost") -> None:
        super().__init__(f"{reply_code} {reply_text}" if reply_code else reply_text)
        self.reply_code = reply_code
        self.reply_text = reply_text


class PublishNacked(AmqpError):
    """The broker sent basic.nack for the message: it was not stored; publish it again."""


class PublishReturned(AmqpError):
    """A mandatory message was unroutable: the broker returned it (basic.return) instead."""

    def __init__(self, reply_code: int, reply_text: str, exchange: str, routing_key: str) -> None:
        super().__init__(f"{reply_code} {reply_text} (exchange {exchange!r}, key {routing_key!r})")
        self.reply_code = reply_code
        self.reply_text = reply_text
        self.exchange = exchange
        self.routing_key = routing_key



class PublishFailed(Exception):
    """The broker did not take a message: not connected, or it did not confirm in time (or
    nacked, returned, or lost the connection first). `message` is safe to show."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class PublishRefused(PublishFailed):
    """The broker nacked the message: a queue it routes to is full (x-overflow
    reject-publish), or the broker could not store it. Nothing was published."""


class PublishInDoubt(PublishFailed):
    """A message was written to the broker but not confirmed (in time, or before the
    connection went): the broker may have it, or take it later (a blocked connection's
    unread frames are published when the alarm clears). Never report it as not published."""


def describe(exc: BaseException) -> str:
    """One line saying what went wrong reaching the broker, for logs and error messages:
    TLS failures say why (an untrusted certificate, a wrong host name), others their type."""
    if isinstance(exc, PublishFailed):
        return exc.message
    if isinstance(exc, ssl.SSLCertVerificationError):
        return f"TLS: the broker's certificate was refused: {exc.verify_message}"
    if isinstance(exc, ssl.SSLError):
        return f"TLS: {exc.reason or exc}"
    cause = exc.__cause__ or exc.__context__
    if isinstance(cause, ssl.SSLError):  # aiormq wraps it in AMQPConnectionError
        return describe(cause)
    if isinstance(exc, ConnectionLost):
        return str(exc)
    return type(exc).__name__


BROKER_ERRORS: tuple[type[BaseException], ...] = (
    AmqpError,
    AMQPException,
    aiormq.exceptions.AMQPError,
    aiormq.exceptions.ChannelInvalidStateError,
    OSError,  # ConnectionError among them
    TimeoutError,
)
