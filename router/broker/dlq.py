"""`python -m router dlq list|show|replay|purge NAME`: look after a consumer's dead letters,
and (NAME = held.SOURCE) after the deliveries a source held (router.hold).

The console does the same through peek_dead, replay_dead and purge_dead, which answer
with data (each message as dead_letter_record) and raise DlqError.

    list    count, and one line per message (up to --limit); nothing is removed
    show    like list, with every header and the body (or only the one with --id)
    replay  move every message (or only --id) back to the work queue, attempt reset to 0
            (held deliveries are not replayed but released: `dlq release held.SOURCE`)
    purge   drop them all, after a confirmation unless --yes

list and show take messages with basic.get and hold them unacknowledged, then close the
channel: the broker puts every one back, in order.  Nothing is acknowledged unless it was
replayed, and a replayed message is acknowledged only after the broker confirmed its copy
on the work queue, so an interruption at any point loses nothing (at worst, one message is
both on the work queue and still dead, and the consumer's inbox makes the repeat a no-op).
"""

from __future__ import annotations

import asyncio
import contextlib
import sys
from collections.abc import AsyncIterator, Callable
from datetime import datetime
from typing import Any, TextIO

import aio_pika
import orjson
from aio_pika.abc import AbstractChannel, AbstractIncomingMessage
from aio_pika.exceptions import ChannelNotFoundEntity

from router.broker.connect import open_connection
from router.broker.errors import BROKER_ERRORS, describe
from router.broker.messages import (
    DEAD_HEADERS,
    HELD_AT,
    HELD_ERRORS,
    HELD_REASON,
    REPLAYED_AT,
    copy_message,
)
from router.broker.topology import Topology
from router.settings import BrokerSettings
from router.terminal import printable
from router.times import now_iso

ACTIONS = ("list", "show", "replay", "purge")
HELD = "held."  # NAME = held.SOURCE: the source's hold queue itself
CONNECT_TIMEOUT = 10.0


class DlqError(Exception):
    """A problem to report in one line (with an exit code for the CLI; no traceback)."""

    def __init__(self, message: str, code: int = 1) -> None:
        super().__init__(message)
        self.code = code


def _text(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, bytes | bytearray):
        return printable(bytes(value).decode("utf-8", "replace"))
    return printable(str(value))


def _envelope(message: AbstractIncomingMessage) -> dict[str, Any]:
    try:
        event = orjson.loads(message.body)
    except orjson.JSONDecodeError:
        return {}
    return event if isinstance(event, dict) else {}


def _message_id(message: AbstractIncomingMessage) -> str:
    """The AMQP message id, or the envelope's id when the message has none."""
    return _text(message.message_id or _envelope(message).get("id"))


def _summary(message: AbstractIncomingMessage) -> str:
    headers = message.headers or {}
    event_type = message.type or _envelope(message).get("type")
    if HELD_REASON in headers:
        fields = {
            "id": _message_id(message),
            "type": _text(event_type),
            "held-at": _text(headers.get(HELD_AT)),
            "reason": _text(headers.get(HELD_REASON)),
            "errors": _text(headers.get(HELD_ERRORS)),
        }
    else:
        fields = {
            "id": _message_id(message),
            "type": _text(event_type),
            "attempt": _text(headers.get("attempt", 0)),
            "consumer": _text(headers.get("x-dead-consumer")),
            "dead-at": _text(headers.get("x-dead-at")),
            "reason": _text(headers.get("x-dead-reason")),
        }
    return "  ".join(f"{key}={value}" for key, value in fields.items())


def _json_default(value: Any) -> Any:
    if isinstance(value, bytes | bytearray):
        return bytes(value).decode("utf-8", "replace")
    if isinstance(value, datetime):
        return value.isoformat()
    return str(value)


def _details(message: AbstractIncomingMessage) -> str:
    properties = {
        "message_id": message.message_id,
        "type": message.type,
        "content_type": message.content_type,
        "correlation_id": message.correlation_id,
        "timestamp": message.timestamp,
        "headers": dict(message.headers or {}),
    }
    option = orjson.OPT_INDENT_2 | orjson.OPT_SORT_KEYS | orjson.OPT_NON_STR_KEYS
    # In JSON a newline inside a string is already \\n: the ones left are the indentation.
    head = printable(orjson.dumps(properties, default=_json_default, option=option).decode(),
                     keep="\n")
    try:
        body = printable(orjson.dumps(orjson.loads(message.body),
                                      option=orjson.OPT_INDENT_2).decode(), keep="\n")
    except orjson.JSONDecodeError:
        body = printable(message.body.decode("utf-8", "replace"))
    return f"--- {_message_id(message)}\n{head}\nbody:\n{body}"


def _replay_copy(message: AbstractIncomingMessage) -> aio_pika.Message:
    return copy_message(message, drop=DEAD_HEADERS, attempt=0, **{
        REPLAYED_AT: now_iso("seconds")})


async def queue_depth(channel: AbstractChannel, queue: str) -> int | None:
    """Messages waiting in `queue`; None if it does not exist (the channel is then closed by
    the broker: use a fresh one)."""
    try:
        declared = await channel.declare_queue(queue, passive=True)
    except ChannelNotFoundEntity:
        return None
    return declared.declaration_result.message_count or 0


async def _depth(channel: AbstractChannel, queue: str) -> int:
    depth = await queue_depth(channel, queue)
    if depth is None:
        raise DlqError(f"queue {queue} does not exist (run `topology` first)")
    return depth


async def _take(channel: AbstractChannel, queue: str, count: int,
                wanted: str | None = None) -> list[AbstractIncomingMessage]:
    """Up to `count` messages (or only the one with id `wanted`, looking at `count`), held
    unacknowledged: closing the channel gives them all back to the queue."""
    source = await channel.get_queue(queue, ensure=False)
    taken: list[AbstractIncomingMessage] = []
    for _ in range(count):
        message = await source.get(no_ack=False, fail=False)
        if message is None:
            break
        if wanted is None:
            taken.append(message)
        elif _message_id(message) == wanted:
            return [message]
    return [] if wanted is not None else taken


async def _inspect(channel: AbstractChannel, queue: str, action: str, limit: int,
                   message_id: str | None, out: TextIO) -> int:
    total = await _depth(channel, queue)
    # Looking for one id means looking through the whole queue.
    taken = await _take(channel, queue, total if message_id else min(limit, total), message_id)
    if message_id is not None and not taken:
        raise DlqError(f"no message {message_id} in {queue}")
    if message_id is None:
        shown = f" (showing {len(taken)})" if len(taken) < total else ""
        print(f"{total} message(s) in {queue}{shown}", file=out)
    for message in taken:
        print(_summary(message) if action == "list" else _details(message), file=out)
    return 0


async def _move_back(channel: AbstractChannel, topology: Topology, name: str,
                     message_id: str | None) -> int:
    """Move `name`'s dead letters (or only `message_id`) back to its work queue, each acked
    once the broker confirmed its copy; how many moved."""
    queue = topology.dead_queue(name)
    total = await _depth(channel, queue)
    source = await channel.get_queue(queue, ensure=False)
    replayed = 0
    # At most the messages there when we started: nothing is read twice.
    for _ in range(total):
        message = await source.get(no_ack=False, fail=False)
        if message is None:
            break
        if message_id is not None and _message_id(message) != message_id:
            continue  # held unacknowledged; goes back when the channel closes
        await channel.default_exchange.publish(
            _replay_copy(message), routing_key=topology.queue(name), mandatory=True
        )
        await message.ack()
        replayed += 1
        if message_id is not None:
            break
    if message_id is not None and not replayed:
        raise DlqError(f"no message {message_id} in {queue}")
    return replayed


async def _replay(channel: AbstractChannel, topology: Topology, name: str,
                  message_id: str | None, out: TextIO) -> int:
    replayed = await _move_back(channel, topology, name, message_id)
    print(f"replayed {replayed} message(s) from {topology.dead_queue(name)} to "
          f"{topology.queue(name)}", file=out)
    return 0


def dead_letter_record(message: AbstractIncomingMessage) -> dict[str, Any]:
    """One dead letter as data: what `list` and `show` print (body parsed when JSON)."""
    headers = dict(message.headers or {})
    try:
        body: Any = orjson.loads(message.body)
    except orjson.JSONDecodeError:
        body = message.body.decode("utf-8", "replace")
    return {
        "id": _message_id(message),
        "type": message.type or _envelope(message).get("type"),
        "attempt": headers.get("attempt", 0),
        "consumer": _text(headers.get("x-dead-consumer")),
        "dead_at": _text(headers.get("x-dead-at")),
        "reason": _text(headers.get("x-dead-reason")),
        "headers": orjson.loads(orjson.dumps(headers, default=_json_default,
                                             option=orjson.OPT_NON_STR_KEYS)),
        "body": body,
    }


@contextlib.asynccontextmanager
async def _dead_channel(broker: BrokerSettings) -> AsyncIterator[AbstractChannel]:
    """A confirming channel; closing it gives back every message taken and not acked."""
    try:
        async with asyncio.timeout(CONNECT_TIMEOUT):
            connection = await open_connection(broker, f"{broker.connection_name}-dlq")
    except BROKER_ERRORS as exc:
        raise DlqError(f"cannot reach the broker: {describe(exc)}") from exc
    async with connection:
        yield await connection.channel(publisher_confirms=True)


async def peek_dead(broker: BrokerSettings, name: str, limit: int,
                    message_id: str | None = None) -> tuple[int, list[dict[str, Any]]]:
    """How many dead letters consumer `name` has, and up to `limit` of them (or only
    `message_id`), as records; every one stays in the queue."""
    queue = Topology.of(broker).dead_queue(name)
    async with _dead_channel(broker) as channel:
        total = await _depth(channel, queue)
        taken = await _take(channel, queue, total if message_id else min(limit, total),
                            message_id)
        return total, [dead_letter_record(message) for message in taken]


async def replay_dead(broker: BrokerSettings, name: str, message_id: str | None) -> int:
    """`dlq replay`: back to the work queue, attempt reset; how many moved."""
    async with _dead_channel(broker) as channel:
        return await _move_back(channel, Topology.of(broker), name, message_id)


async def purge_dead(broker: BrokerSettings, name: str) -> int:
    """`dlq purge --yes`: drop every dead letter of consumer `name`; how many went."""
    queue = Topology.of(broker).dead_queue(name)
    async with _dead_channel(broker) as channel:
        await _depth(channel, queue)
        result = await (await channel.get_queue(queue, ensure=False)).purge()
        return int(result.message_count or 0)


def _ask(prompt: str) -> bool:
    try:
        return input(prompt + " ").strip().lower() in ("y", "yes")
    except EOFError:
        return False


async def _purge(channel: AbstractChannel, queue: str, yes: bool, out: TextIO,
                 confirm: Callable[[str], bool] | None) -> int:
    total = await _depth(channel, queue)
    if total == 0:
        print(f"{queue} is empty", file=out)
        return 0
    if not yes:
        ask = confirm or _ask
        if not await asyncio.to_thread(ask, f"Purge {total} messages from {queue}? [y/N]"):
            print("aborted: nothing purged", file=out)
            return 1
    result = await (await channel.get_queue(queue, ensure=False)).purge()
    print(f"purged {result.message_count} message(s) from {queue}", file=out)
    return 0


async def dlq_command(broker: BrokerSettings, action: str, name: str, *, limit: int = 20,
                      message_id: str | None = None, yes: bool = False,
                      out: TextIO = sys.stdout,
                      confirm: Callable[[str], bool] | None = None) -> int:
    """Run one `dlq` action on consumer `name`'s dead queue and return the exit code."""
    if action not in ACTIONS:
        print(f"unknown action {action!r} (one of: {', '.join(ACTIONS)})", file=sys.stderr)
        return 2
    held = name.startswith(HELD)
    topology = Topology.of(broker)
    known = topology.work_queue_bases()  # labels, when [labels] is on
    if name not in known and not name.startswith("deliver.") and not held:
        print(f"unknown queue {name!r} (known: {', '.join(known)}, "
              "deliver.SUBSCRIPTION or held.SOURCE)", file=sys.stderr)
        return 2
    if held and action == "replay":
        print(f"held deliveries are mapped again, not replayed: dlq release {name}",
              file=sys.stderr)
        return 2
    if limit < 1:
        print("limit must be at least 1", file=sys.stderr)
        return 2
    try:
        async with asyncio.timeout(CONNECT_TIMEOUT):
            connection = await open_connection(broker, f"{broker.connection_name}-dlq")
    except BROKER_ERRORS as exc:
        print(f"cannot reach the broker: {describe(exc)}", file=sys.stderr)
        return 1
    try:
        async with connection:
            channel = await connection.channel(publisher_confirms=True)
            queue = (topology.hold_queue(name.removeprefix(HELD)) if held
                     else topology.dead_queue(name))
            if action in ("list", "show"):
                return await _inspect(channel, queue, action, limit, message_id, out)
            if action == "replay":
                return await _replay(channel, topology, name, message_id, out)
            return await _purge(channel, queue, yes, out, confirm)
    except DlqError as exc:
        print(str(exc), file=sys.stderr)
        return exc.code
    except BrokenPipeError:
        raise  # our reader went away; not the broker's doing
    except BROKER_ERRORS as exc:
        print(f"broker error: {exc or type(exc).__name__}", file=sys.stderr)
        return 1
