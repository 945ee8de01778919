"""The `dlq` command against the real RabbitMQ: list, show, replay and purge dead letters."""

from __future__ import annotations

import asyncio
import dataclasses
import io
from collections.abc import Awaitable, Callable

import aio_pika
import orjson
import pytest

from router.broker.dlq import dlq_command
from router.broker.topology import Topology
from router.settings import Settings

pytestmark = pytest.mark.integration

Depths = Callable[[], Awaitable[dict[str, int]]]


def envelope(n: int) -> dict[str, object]:
    """An event envelope like the ingress publishes."""
    return {"id": f"evt-{n}", "type": "order.created", "data": {"order": f"A-{n}"}}


async def put_dead(amqp: aio_pika.abc.AbstractConnection, topology: Topology, count: int) -> None:
    """Publish `count` dead letters to orders.dead with the headers the runner sets."""
    channel = await amqp.channel(publisher_confirms=True)
    for n in range(count):
        await channel.default_exchange.publish(
            aio_pika.Message(
                orjson.dumps(envelope(n)),
                content_type="application/json",
                delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
                message_id=f"evt-{n}",
                type="order.created",
                headers={
                    "attempt": 2,
                    "source": "shopify",
                    "x-dead-reason": f"TimeoutError: downstream {n}",
                    "x-dead-consumer": "orders",
                    "x-dead-at": "2024-05-01T12:00:00+00:00",
                },
            ),
            routing_key=topology.dead_queue("orders"),
        )
    await channel.close()


async def wait_depths(depths: Depths, expected: dict[str, int], timeout: float = 10.0) -> None:
    """Poll the queue depths until those named in `expected` match it."""
    actual: dict[str, int] = {}
    try:
        async with asyncio.timeout(timeout):
            while True:
                counts = await depths()
                actual = {name: counts[name] for name in expected}
                if actual == expected:
                    return
                await asyncio.sleep(0.05)
    except TimeoutError:
        assert expected == actual


async def take_all(amqp: aio_pika.abc.AbstractConnection, queue: str,
                   count: int) -> list[aio_pika.abc.AbstractIncomingMessage]:
    """Consume and ack `count` messages from `queue` (within a timeout)."""
    channel = await amqp.channel()
    source = await channel.get_queue(queue, ensure=False)
    messages = []
    async with asyncio.timeout(10):
        while len(messages) < count:
            message = await source.get(no_ack=False, fail=False)
            if message is None:
                await asyncio.sleep(0.05)
                continue
            await message.ack()
            messages.append(message)
    await channel.close()
    return messages


async def run(settings: Settings, action: str, **kwargs: object) -> tuple[int, str]:
    """Run the command with captured output; returns (exit code, output)."""
    out = io.StringIO()
    code = await dlq_command(settings.broker, action, "orders", out=out, **kwargs)
    return code, out.getvalue()


async def test_list_prints_each_message_without_removing_it(
    settings: Settings, amqp: aio_pika.abc.AbstractConnection, topology: Topology,
    queue_depths: Depths,
) -> None:
    """list prints a line per dead letter with its reason and leaves them all on the queue."""
    dead = topology.dead_queue("orders")
    await put_dead(amqp, topology, 3)
    await wait_depths(queue_depths, {dead: 3})

    code, output = await run(settings, "list")

    assert 0 == code
    lines = output.splitlines()
    assert f"3 message(s) in {dead}" == lines[0]
    expected = [
        f"id=evt-{n}  type=order.created  attempt=2  consumer=orders  "
        f"dead-at=2024-05-01T12:00:00+00:00  reason=TimeoutError: downstream {n}"
        for n in range(3)
    ]
    assert expected == lines[1:]
    assert "A-0" not in output
    await wait_depths(queue_depths, {dead: 3})
    # The messages went back in their order: a second listing prints the same.
    assert (0, output) == await run(settings, "list")


async def test_list_stops_at_the_limit(
    settings: Settings, amqp: aio_pika.abc.AbstractConnection, topology: Topology,
    queue_depths: Depths,
) -> None:
    """list with a limit prints the total and only that many lines."""
    dead = topology.dead_queue("orders")
    await put_dead(amqp, topology, 3)
    await wait_depths(queue_depths, {dead: 3})

    code, output = await run(settings, "list", limit=2)

    assert 0 == code
    lines = output.splitlines()
    assert f"3 message(s) in {dead} (showing 2)" == lines[0]
    assert ["evt-0", "evt-1"] == [line.split()[0].removeprefix("id=") for line in lines[1:]]
    await wait_depths(queue_depths, {dead: 3})


async def test_show_prints_headers_and_body(
    settings: Settings, amqp: aio_pika.abc.AbstractConnection, topology: Topology,
    queue_depths: Depths,
) -> None:
    """show by message id prints that message's headers and pretty body, and keeps it."""
    dead = topology.dead_queue("orders")
    await put_dead(amqp, topology, 3)
    await wait_depths(queue_depths, {dead: 3})

    code, output = await run(settings, "show", message_id="evt-1")

    assert 0 == code
    assert output.startswith("--- evt-1\n")
    assert '"x-dead-reason": "TimeoutError: downstream 1"' in output
    assert "body:\n" + orjson.dumps(envelope(1), option=orjson.OPT_INDENT_2).decode() in output
    assert "evt-0" not in output
    assert "evt-2" not in output
    await wait_depths(queue_depths, {dead: 3})


async def test_replay_moves_every_message_back_with_attempt_zero(
    settings: Settings, amqp: aio_pika.abc.AbstractConnection, topology: Topology,
    queue_depths: Depths,
) -> None:
    """replay republishes every dead letter to the work queue, reset, and empties the dead queue."""
    dead, work = topology.dead_queue("orders"), topology.queue("orders")
    await put_dead(amqp, topology, 3)
    await wait_depths(queue_depths, {dead: 3})

    code, output = await run(settings, "replay")

    assert 0 == code
    assert f"replayed 3 message(s) from {dead} to {work}\n" == output
    await wait_depths(queue_depths, {dead: 0, work: 3})
    messages = await take_all(amqp, work, 3)
    assert ["evt-0", "evt-1", "evt-2"] == [m.message_id for m in messages]
    for n, message in enumerate(messages):
        headers = dict(message.headers or {})
        assert "x-replayed-at" in headers
        del headers["x-replayed-at"]
        headers.pop("x-delivery-count", None)  # set by the work queue on this delivery
        assert {"attempt": 0, "source": "shopify"} == headers
        assert envelope(n) == orjson.loads(message.body)
        assert "order.created" == message.type
        assert "application/json" == message.content_type


async def test_replay_by_message_id_moves_only_that_one(
    settings: Settings, amqp: aio_pika.abc.AbstractConnection, topology: Topology,
    queue_depths: Depths,
) -> None:
    """replay with a message id moves that message and leaves the others dead."""
    dead, work = topology.dead_queue("orders"), topology.queue("orders")
    await put_dead(amqp, topology, 3)
    await wait_depths(queue_depths, {dead: 3})

    code, output = await run(settings, "replay", message_id="evt-1")

    assert 0 == code
    assert f"replayed 1 message(s) from {dead} to {work}\n" == output
    await wait_depths(queue_depths, {dead: 2, work: 1})
    [message] = await take_all(amqp, work, 1)
    assert "evt-1" == message.message_id
    assert 0 == message.headers["attempt"]
    code, output = await run(settings, "list")
    assert ["evt-0", "evt-2"] == [line.split()[0].removeprefix("id=")
                                  for line in output.splitlines()[1:]]


async def test_replay_of_an_unknown_message_id_fails_and_keeps_everything(
    settings: Settings, amqp: aio_pika.abc.AbstractConnection, topology: Topology,
    queue_depths: Depths, capsys: pytest.CaptureFixture[str],
) -> None:
    """replay with an id that is not there exits 1 and moves nothing."""
    dead, work = topology.dead_queue("orders"), topology.queue("orders")
    await put_dead(amqp, topology, 2)
    await wait_depths(queue_depths, {dead: 2})

    code, _ = await run(settings, "replay", message_id="evt-9")

    assert 1 == code
    assert f"no message evt-9 in {dead}\n" == capsys.readouterr().err
    await wait_depths(queue_depths, {dead: 2, work: 0})


async def test_purge_declined_purges_nothing(
    settings: Settings, amqp: aio_pika.abc.AbstractConnection, topology: Topology,
    queue_depths: Depths,
) -> None:
    """purge asks first, and a no keeps every message."""
    dead = topology.dead_queue("orders")
    await put_dead(amqp, topology, 3)
    await wait_depths(queue_depths, {dead: 3})
    prompts: list[str] = []

    def decline(prompt: str) -> bool:
        prompts.append(prompt)
        return False

    code, output = await run(settings, "purge", confirm=decline)

    assert 1 == code
    assert [f"Purge 3 messages from {dead}? [y/N]"] == prompts
    assert "aborted: nothing purged\n" == output
    await wait_depths(queue_depths, {dead: 3})


async def test_purge_with_yes_purges_everything(
    settings: Settings, amqp: aio_pika.abc.AbstractConnection, topology: Topology,
    queue_depths: Depths,
) -> None:
    """purge with yes does not ask and empties the dead queue."""
    dead = topology.dead_queue("orders")
    await put_dead(amqp, topology, 3)
    await wait_depths(queue_depths, {dead: 3})

    def refuse(prompt: str) -> bool:
        raise AssertionError(f"asked {prompt!r} despite yes")

    code, output = await run(settings, "purge", yes=True, confirm=refuse)

    assert 0 == code
    assert f"purged 3 message(s) from {dead}\n" == output
    await wait_depths(queue_depths, {dead: 0})


async def test_unknown_name_exits_2_listing_the_known_names(
    settings: Settings, capsys: pytest.CaptureFixture[str],
) -> None:
    """An unknown consumer name exits 2 and names the known ones."""
    code = await dlq_command(settings.broker, "list", "payments", out=io.StringIO())

    assert 2 == code
    expected = ("unknown queue 'payments' (known: orders, inventory, shipping, notifications, "
                "audit, deliver.SUBSCRIPTION or held.SOURCE)\n")
    assert expected == capsys.readouterr().err


async def test_unreachable_broker_exits_1_without_a_traceback(
    settings: Settings, capsys: pytest.CaptureFixture[str],
) -> None:
    """A broker that cannot be reached exits 1 with a one-line message."""
    broker = dataclasses.replace(settings.broker, url="amqp://guest:guest@127.0.0.1:1/")

    code = await dlq_command(broker, "list", "orders", out=io.StringIO())

    assert 1 == code
    err = capsys.readouterr().err
    assert err.startswith("cannot reach the broker: ")
    assert "Traceback" not in err


async def test_control_characters_in_a_dead_letter_cannot_forge_output(
    settings: Settings, amqp: aio_pika.abc.AbstractConnection, topology: Topology,
    queue_depths: Depths,
) -> None:
    """ESC sequences, newlines, carriage returns, C1 codes and bidi overrides in a stored
    header, message id or body are printed escaped by list and show: one line per message,
    nothing a terminal would act on, and the escapes say what was there."""
    dead = topology.dead_queue("orders")
    forged = "\x1b[2J\x1b[H\nid=evt-0  reason=forged line\r\x9b31m\u202eevil\u2028"
    channel = await amqp.channel(publisher_confirms=True)
    for message_id, body in ((f"evt-x\n{forged}", forged.encode()),
                             ("evt-json", orjson.dumps({"note": forged}))):
        await channel.default_exchange.publish(
            aio_pika.Message(body, message_id=message_id, type="order.created",
                             headers={"attempt": 1, "x-dead-reason": forged,
                                      "x-dead-consumer": forged}),
            routing_key=dead)
    await channel.close()
    await wait_depths(queue_depths, {dead: 2})

    listed = await run(settings, "list")
    shown = await run(settings, "show")

    assert 0 == listed[0] == shown[0]
    assert 3 == len(listed[1].splitlines())  # the count, then one line per message
    for output in (listed[1], shown[1]):
        assert all(c.isprintable() or c == "\n" for c in output), repr(output)
    assert "reason=\\x1b[2J\\x1b[H\\nid=evt-0  reason=forged line\\r\\x9b31m\\u202eevil\\u2028" \
        in listed[1]
    assert shown[1].splitlines()[1].startswith("--- evt-x\\n\\x1b[2J")
    await wait_depths(queue_depths, {dead: 2})
