"""Confirmed-publish benchmark: aio-pika, aiormq and our ConfirmingPublisher, in one run.

    python bench/publish.py [--count 20000] [--rounds 3] [--in-flight 256]

Each client publishes `count` persistent ~700-byte messages with headers {source, schema,
attempt}, message_id, type, correlation_id and timestamp, mandatory, to a direct exchange bound
to a quorum queue, with publisher confirms and at most `in-flight` unconfirmed (a semaphore,
one task per message as in the ingress), under uvloop.  Prints msgs/s and the Python process's
CPU time per message (time.process_time, user + system) per round, then the medians and the
ratios against aio-pika.  Declares its own exchange and queue, checks that the queue holds
every confirmed message (fails otherwise), purges between runs and deletes them at the end.
A smoke (CI) is `--count 200 --rounds 1`.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import time
import uuid
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path

import aio_pika
import aiormq
import uvloop
from aiormq import spec

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from router.broker.protocol import ConfirmingPublisher  # noqa: E402

AMQP_URL = os.environ.get("AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/")
KEY = "order.created"
BODY = (
    b'{"id":5820982911946154508,"name":"#1042","email":"jane.doe@example.com",'
    b'"created_at":"2026-11-20T10:15:31-05:00","currency":"USD","total_price":"98.00",'
    b'"line_items":[{"id":866550311766439020,"sku":"PEP-BPC157-5MG","name":"BPC-157 5 mg",'
    b'"quantity":2,"price":"39.00"},{"id":141249953214522974,"sku":"BAC-WATER-10ML",'
    b'"name":"Bacteriostatic water 10 ml","quantity":1,"price":"20.00"}],'
    b'"shipping_address":{"name":"Jane Doe","address1":"123 Main Street","address2":"Suite 4",'
    b'"city":"Austin","province_code":"TX","zip":"78701","country_code":"US",'
    b'"phone":"555-555-0100"},"note":"Leave at the side door, ring twice, thanks!",'
    b'"tags":"wholesale,repeat-customer,priority","source_name":"web",'
    b'"gateway":"shopify_payments","financial_status":"paid"}'
)
HEADERS = {"source": "shopify", "schema": "order.v1", "attempt": 1}

# publish(i) -> awaitable confirm; made per run by a client's setup, undone by its teardown.
Publish = Callable[[int], Awaitable[object]]


async def run(publish: Publish, count: int, in_flight: int) -> tuple[float, float]:
    """Publish `count` messages with at most `in_flight` unconfirmed; (seconds, CPU seconds)."""
    semaphore = asyncio.Semaphore(in_flight)
    failures: list[BaseException] = []

    async def one(i: int) -> None:
        try:
            await publish(i)
        except Exception as exc:
            failures.append(exc)
        finally:
            semaphore.release()

    tasks = set()
    wall, cpu = time.perf_counter(), time.process_time()
    for i in range(count):
        await semaphore.acquire()
        task = asyncio.create_task(one(i))
        tasks.add(task)
        task.add_done_callback(tasks.discard)
    for _ in range(in_flight):  # wait for the last confirms
        await semaphore.acquire()
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    if failures:
        raise RuntimeError(f"{len(failures)} publishes failed, first: {failures[0]!r}")
    return wall, cpu


def message_id(run_id: str, i: int) -> str:
    return f"{run_id}-{i}"


async def aio_pika_client(exchange: str, run_id: str) -> tuple[Publish, Callable[[], Awaitable]]:
    connection = await aio_pika.connect(AMQP_URL)
    channel = await connection.channel(publisher_confirms=True)
    target = await channel.get_exchange(exchange, ensure=False)

    def publish(i: int) -> Awaitable[object]:
        return target.publish(
            aio_pika.Message(
                BODY,
                headers=HEADERS,
                content_type="application/json",
                delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
                message_id=message_id(run_id, i),
                type="order.created",
                correlation_id=f"corr-{i}",
                timestamp=datetime.now(UTC),
            ),
            routing_key=KEY,
            mandatory=True,
        )

    return publish, connection.close


async def aiormq_client(exchange: str, run_id: str) -> tuple[Publish, Callable[[], Awaitable]]:
    connection = await aiormq.connect(AMQP_URL)
    channel = await connection.channel(publisher_confirms=True)

    async def publish(i: int) -> object:
        # As router/broker/publisher.py does it: wait for the confirm, not for the socket write.
        result = await channel.basic_publish(
            BODY,
            exchange=exchange,
            routing_key=KEY,
            properties=spec.Basic.Properties(
                content_type="application/json",
                delivery_mode=2,
                message_id=message_id(run_id, i),
                message_type="order.created",
                correlation_id=f"corr-{i}",
                headers=HEADERS,
                timestamp=datetime.now(UTC),
            ),
            mandatory=True,
            wait=False,
        )
        if not isinstance(result, spec.Basic.Ack):
            raise RuntimeError(f"not acked: {result!r}")
        return result

    return publish, connection.close


async def confirming_client(exchange: str, run_id: str) -> tuple[Publish, Callable[[], Awaitable]]:
    publisher = ConfirmingPublisher(AMQP_URL, connection_name="bench-publish")
    await publisher.connect()

    def publish(i: int) -> Awaitable[object]:
        return publisher.publish(
            exchange,
            KEY,
            BODY,
            message_id=message_id(run_id, i),
            message_type="order.created",
            correlation_id=f"corr-{i}",
            headers=HEADERS,
            timestamp=int(time.time()),
        )

    return publish, publisher.close


CLIENTS = {
    "aio-pika": aio_pika_client,
    "aiormq": aiormq_client,
    "ConfirmingPublisher": confirming_client,
}


async def main(count: int, rounds: int, in_flight: int) -> None:
    prefix = f"bench-publish-{uuid.uuid4().hex[:6]}."
    admin = await aio_pika.connect(AMQP_URL)
    channel = await admin.channel()
    exchange = await channel.declare_exchange(f"{prefix}events", aio_pika.ExchangeType.DIRECT)
    queue = await channel.declare_queue(
        f"{prefix}orders", durable=True, arguments={"x-queue-type": "quorum"}
    )
    await queue.bind(exchange, KEY)
    print(
        f"{count} messages of {len(BODY)} bytes per run, {in_flight} in flight, {rounds} rounds, "
        f"quorum queue, uvloop, {os.cpu_count()} cores, prefix {prefix}",
        flush=True,
    )
    results: dict[str, list[tuple[float, float]]] = {name: [] for name in CLIENTS}
    try:
        for round_no in range(1, rounds + 1):
            for name, make in CLIENTS.items():
                run_id = f"{name}-{round_no}"
                publish, close = await make(exchange.name, run_id)
                warm_up = min(count, 1000)
                try:
                    await run(publish, warm_up, in_flight)
                    wall, cpu = await run(publish, count, in_flight)
                finally:
                    await close()
                # Every confirmed message is on the queue, once.
                purged = (await queue.purge()).message_count
                if purged != warm_up + count:
                    raise RuntimeError(f"{name}: {warm_up + count} messages confirmed but the "
                                       f"queue held {purged}")
                results[name].append((count / wall, cpu / count * 1e6))
                print(
                    f"round {round_no} {name:>19}: {count / wall:8.0f} msgs/s  "
                    f"{cpu / count * 1e6:6.1f} us CPU/msg",
                    flush=True,
                )
    finally:
        await queue.delete(if_unused=False, if_empty=False)
        await exchange.delete()
        await admin.close()

    base_rate = statistics.median(r for r, _ in results["aio-pika"])
    base_cpu = statistics.median(c for _, c in results["aio-pika"])
    print("\nmedians")
    print(f"{'client':>19} {'msgs/s':>8} {'us CPU/msg':>10} {'x msgs/s':>9} {'x CPU':>7}")
    for name, rows in results.items():
        rate = statistics.median(r for r, _ in rows)
        cpu = statistics.median(c for _, c in rows)
        print(f"{name:>19} {rate:8.0f} {cpu:10.1f} {rate / base_rate:9.2f} {cpu / base_cpu:7.2f}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=20000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--in-flight", type=int, default=256)
    args = parser.parse_args()
    uvloop.run(main(args.count, args.rounds, args.in_flight))
