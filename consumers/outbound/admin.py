"""Operator commands for outbound webhooks (run through `python -m router`):

    subscriptions list                 each subscription: config, state, failures, queue depths
    subscriptions enable NAME          resume a paused or disabled one (its parked messages flow)
    subscriptions disable NAME         stop delivering; messages wait in deliver.NAME
    subscriptions test NAME            POST a signed `webhook.test` event now and print the answer
    deliveries EVENT_ID                every attempt for an event (its id or a notification id)
    deliveries replay --subscription NAME --since TIME
                                       send past notifications again to one subscriber

The store is the consumers' ([consumers] store, DATABASE_URL), opened without creating it
(StoreMissing where there is none). Exit codes: 0 done, 1 failed (receiver said no, broker
away), 2 usage (unknown subscription, one that is off in config, bad time).
"""

from __future__ import annotations

import asyncio
import sys
import time
import uuid
from typing import TextIO
from urllib.parse import urlsplit

import aio_pika

from consumers.errors import Permanent
from consumers.events import iso
from consumers.outbound.guard import check_addresses
from consumers.outbound.notification import delivery_queue, notification_body
from consumers.outbound.sender import Sender
from consumers.outbound.state import set_state, subscription_state
from consumers.store import Store, open_store
from router.broker.connect import open_connection
from router.broker.counts import BrokerAway, queue_counts
from router.broker.errors import BROKER_ERRORS, describe
from router.broker.topology import Topology
from router.egress import UnsafeURL
from router.settings import Settings, SubscriptionSettings


class Usage(Exception):
    """A mistake in the command line: exit 2 with the message."""


def _subscription(settings: Settings, name: str) -> SubscriptionSettings:
    sub = settings.subscriptions.get(name)
    if sub is None:
        known = ", ".join(sorted(settings.subscriptions)) or "none configured"
        raise Usage(f"unknown subscription {name!r} (known: {known})")
    return sub


def _switched_on(settings: Settings, name: str, action: str) -> SubscriptionSettings:
    """The subscription, if the config has it on: enabling or replaying to one that is off
    would only queue messages no deliverer takes."""
    sub = _subscription(settings, name)
    if not sub.enabled:
        raise Usage(f"{name} is off in config (enabled = false in {settings.file}): "
                    f"{action} would deliver nothing; switch it on there first")
    return sub


async def _depths(settings: Settings, names: list[str]) -> dict[str, int | None]:
    """Messages waiting per queue; None where the broker or the queue is not there."""
    try:
        counts = await queue_counts(settings.broker, names, "router-subscriptions")
    except BrokerAway:
        return dict.fromkeys(names)
    return {name: None if count is None else count.messages for name, count in counts.items()}


async def subscriptions_command(settings: Settings, action: str, name: str | None,
                                out: TextIO = sys.stdout) -> int:
    if action == "list":
        async with open_store(settings.consumers.store, create=False) as store:
            return await _list(settings, store, out)
    if not name:
        raise Usage(f"subscriptions {action} needs a subscription NAME")
    if action == "test":
        return await _test(settings, _subscription(settings, name), out)
    if action == "enable":
        sub = _switched_on(settings, name, "enabling it")
        state, said = "enabled", "enabled; parked messages flow again"
    else:
        sub = _subscription(settings, name)
        state, said = "disabled", "disabled; its messages wait in its queue"
    async with open_store(settings.consumers.store, create=False) as store:
        await set_state(store, sub.name, state, f"{state} by an operator")
    print(f"{sub.name}: {said}", file=out)
    return 0


async def _list(settings: Settings, store: Store, out: TextIO) -> int:
    topology = Topology.of(settings.broker)
    queues = {}
    for name in settings.subscriptions:
        base = delivery_queue(name)
        queues[name] = (topology.queue(base), topology.dead_queue(base))
    depths = await _depths(settings, [q for pair in queues.values() for q in pair])
    if not settings.subscriptions:
        print("no subscriptions configured", file=out)
    for name, sub in settings.subscriptions.items():
        row = await subscription_state(store, name)
        state = "off in config" if not sub.enabled else (row["state"] if row else "enabled")
        waiting, dead = (depths[q] for q in queues[name])
        print(f"{name}: {state}", file=out)
        print(f"  url      {urlsplit(sub.url).scheme}://{urlsplit(sub.url).netloc}"
              f"{urlsplit(sub.url).path}", file=out)
        print(f"  events   {', '.join(sub.events)}", file=out)
        print(f"  queue    {_count(waiting)} waiting, {_count(dead)} dead", file=out)
        if row and (row["failures"] or row["reason"]):
            print(f"  failures {row['failures']} in a row; {row['reason'] or '-'}", file=out)
    return 0


def _count(value: int | None) -> str:
    return "?" if value is None else str(value)


async def _test(settings: Settings, sub: SubscriptionSettings, out: TextIO) -> int:
    if not sub.secrets:
        raise Usage(f"{sub.name} has no secret resolved (is it enabled in the config?)")
    try:
        await check_addresses(settings)
    except UnsafeURL as exc:
        print(f"refused: {exc}", file=out)
        return 1
    message_id = f"test_{uuid.uuid4().hex}"
    body = notification_body(message_id, "webhook.test", {"subscription": sub.name})
    sender = Sender(sub, settings.notifications)
    await sender.open()
    try:
        result = await sender.send(message_id, body)
    finally:
        await sender.close()
    print(f"{sub.name}: {result.describe()} in {result.latency * 1000:.0f} ms "
          f"(webhook-id {message_id})", file=out)
    return 0 if result.delivered else 1


async def deliveries_command(settings: Settings, target: str, *, subscription: str | None,
                             since: str | None, out: TextIO = sys.stdout) -> int:
    if target == "replay":
        if not subscription or not since:
            raise Usage("deliveries replay needs --subscription NAME and --since TIME")
        sub = _switched_on(settings, subscription, "replaying to it")
        when = _since(since)
    async with open_store(settings.consumers.store, create=False) as store:
        if target == "replay":
            return await _replay(settings, store, sub, when, out)
        async with store.transaction() as tx:
            rows = await tx.fetch(
                "SELECT at, subscription, message_id, type, attempt, status_code, error,"
                " latency_ms FROM deliveries WHERE message_id = $1 OR event_id = $1"
                " ORDER BY at, id",
                target,
            )
    if not rows:
        print(f"no delivery attempts for {target}", file=out)
        return 1
    for row in rows:
        answer = (f"HTTP {row['status_code']}" if row["status_code"] is not None
                  else row["error"])
        print(f"{row['at']}  {row['subscription']}  {row['type']}  attempt {row['attempt']}  "
              f"{answer}  {row['latency_ms']:.0f} ms  {row['message_id']}", file=out)
    return 0


def _since(text: str) -> str:
    """The store's UTC form of --since (naive means UTC), as events' times are kept."""
    try:
        return iso(text, "--since")
    except Permanent as exc:
        raise Usage(str(exc)) from exc


async def _replay(settings: Settings, store: Store, sub: SubscriptionSettings, since: str,
                  out: TextIO) -> int:
    async with store.transaction() as tx:
        rows = await tx.fetch(
            "SELECT kind, routing_key, body, message_id FROM outbox WHERE created_at >= $1"
            " ORDER BY id",
            since,
        )
    rows = [row for row in rows if sub.wants(row["kind"])]
    queue = Topology.of(settings.broker).queue(delivery_queue(sub.name))
    started = time.perf_counter()
    try:
        connection = await open_connection(settings.broker, "router-deliveries", timeout=10)
    except BROKER_ERRORS as exc:
        print(f"cannot reach the broker: {describe(exc)}", file=out)
        return 1
    async with connection:
        channel = await connection.channel(publisher_confirms=True)
        await channel.declare_queue(queue, passive=True)
        await asyncio.gather(*(
            channel.default_exchange.publish(
                aio_pika.Message(
                    bytes(row["body"]), content_type="application/json",
                    delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
                    message_id=row["message_id"], type=row["routing_key"],
                    headers={"attempt": 0, "subscription": sub.name, "replayed": True},
                ),
                routing_key=queue,
            )
            for row in rows
        ))
    print(f"{sub.name}: {len(rows)} notifications since {since} queued again "
          f"({time.perf_counter() - started:.1f} s); same webhook-ids, so the receiver can "
          "tell repeats", file=out)
    return 0
