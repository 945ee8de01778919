"""What operators do to subscriptions, as data: the `subscriptions` and `deliveries replay`
commands (admin.py) print it, the console's Subscriptions pages render it.

    find, switched_on, since_time   the checks, before anything is done (SubscriptionRefused)
    states                          each configured one's state, failure streak, last success
    statuses                        the same with its URL, events and queues (the broker)
    recent_attempts                 a subscription's newest delivery attempts
    switch                          enable or disable it (in the store, for every process)
    send_test                       POST a signed `webhook.test` now: the receiver's answer
    replay_since                    queue the notifications since a time again: how many

    SubscriptionRefused
    ├── UnknownSubscription   no such subscription in the config
    ├── SwitchedOff           off in the config (or its secrets not resolved)
    └── BadTime               not an ISO-8601 date-time
"""

from __future__ import annotations

import asyncio
import uuid
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import aio_pika

from consumers.errors import Permanent
from consumers.events import iso
from consumers.outbound.guard import check_addresses
from consumers.outbound.notification import delivery_queue, notification_body
from consumers.outbound.sender import Attempt, Sender
from consumers.outbound.state import set_state, subscription_state
from consumers.store import Store
from router.broker.connect import open_connection
from router.broker.counts import BrokerAway, queue_counts
from router.broker.errors import BROKER_ERRORS, describe
from router.broker.topology import Topology
from router.egress import UnsafeURL
from router.settings import Settings, SubscriptionSettings

RECENT = 20  # delivery attempts shown per subscription


class SubscriptionRefused(Exception):
    """What cannot be done to a subscription, and why (the CLI exits 2, the console 4xx)."""


class UnknownSubscription(SubscriptionRefused):
    pass


class SwitchedOff(SubscriptionRefused):
    pass


class BadTime(SubscriptionRefused):
    pass


def find(settings: Settings, name: str) -> SubscriptionSettings:
    sub = settings.subscriptions.get(name)
    if sub is None:
        known = ", ".join(sorted(settings.subscriptions)) or "none configured"
        raise UnknownSubscription(f"unknown subscription {name!r} (known: {known})")
    return sub


def switched_on(settings: Settings, name: str, doing: str) -> SubscriptionSettings:
    """The subscription, if the config has it on: enabling or replaying to one that is off
    would only queue messages no deliverer takes."""
    sub = find(settings, name)
    if not sub.enabled:
        raise SwitchedOff(f"{name} is off in config (enabled = false in {settings.file}): "
                          f"{doing} would deliver nothing; switch it on there first")
    return sub


def since_time(text: str) -> str:
    """The store's UTC form of an ISO-8601 time (naive means UTC), as events' times are kept."""
    try:
        return iso(text, "since")
    except Permanent as exc:
        raise BadTime(str(exc)) from exc


def display_url(url: str) -> str:
    """scheme://host/path: no user or password, no query."""
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc.rpartition('@')[2]}{parts.path}"


async def states(settings: Settings, store: Store) -> list[dict[str, Any]]:
    """Per configured subscription: its state (enabled, paused, disabled, off in config),
    the reason, its failures in a row and its last successful delivery."""
    async with store.transaction() as tx:
        last_success = {name: await tx.fetchval(  # each through deliveries_succeeded
            "SELECT MAX(at) FROM deliveries WHERE subscription = $1"
            " AND status_code >= 200 AND status_code < 300", name)
            for name in settings.subscriptions}
    found = []
    for name, sub in settings.subscriptions.items():
        row = await subscription_state(store, name)
        found.append({
            "subscription": name,
            "state": "off in config" if not sub.enabled else (row["state"] if row else "enabled"),
            "reason": row["reason"] if row else None,
            "failures": row["failures"] if row else 0,
            "last_success": last_success.get(name)})
    return found


async def statuses(settings: Settings, store: Store, connection_name: str
                   ) -> list[dict[str, Any]]:
    """states, each with the subscription's URL (display_url), events, and messages waiting
    and dead in its queues (None where the broker or the queue is not there)."""
    topology = Topology.of(settings.broker)
    queues = {name: (topology.queue(delivery_queue(name)),
                     topology.dead_queue(delivery_queue(name)))
              for name in settings.subscriptions}
    try:
        counts = await queue_counts(settings.broker, [q for pair in queues.values()
                                                      for q in pair], connection_name)
    except BrokerAway:
        counts = {}

    def messages(queue: str) -> int | None:
        count = counts.get(queue)
        return None if count is None else count.messages

    found = []
    for row in await states(settings, store):
        sub = settings.subscriptions[row["subscription"]]
        work, dead = queues[sub.name]
        found.append({**row, "url": display_url(sub.url), "events": list(sub.events),
                      "waiting": messages(work), "dead": messages(dead)})
    return found


async def recent_attempts(store: Store, name: str, limit: int = RECENT
                          ) -> list[dict[str, Any]]:
    """Subscription `name`'s newest `limit` delivery attempts, newest first."""
    async with store.transaction() as tx:
        return await tx.fetch(
            "SELECT at, type, attempt, status_code, error, latency_ms, message_id"
            " FROM deliveries WHERE subscription = $1 ORDER BY id DESC LIMIT $2",
            name, limit)


async def switch(store: Store, sub: SubscriptionSettings, state: str, by: str) -> None:
    """`enabled` (its parked messages flow again) or `disabled` (they wait in its queue)."""
    await set_state(store, sub.name, state, f"{state} by {by}")


@dataclass(frozen=True)
class TestSent:
    message_id: str  # the webhook-id
    answer: Attempt


def new_test_id() -> str:
    """A fresh webhook-id for a test notification."""
    return f"test_{uuid.uuid4().hex}"


async def send_test(settings: Settings, sub: SubscriptionSettings, message_id: str
                    ) -> TestSent:
    """POST a signed `webhook.test` event with webhook-id `message_id` to `sub` now; its
    answer, or `refused: why` unsent where a subscription's address may not be reached."""
    if not sub.secrets:
        raise SwitchedOff(f"{sub.name} has no secret resolved (is it enabled in the config?)")
    try:
        await check_addresses(settings)
    except UnsafeURL as exc:
        return TestSent(message_id, Attempt(error=f"refused: {exc}"))
    body = notification_body(message_id, "webhook.test", {"subscription": sub.name})
    sender = Sender(sub, settings.notifications)
    await sender.open()
    try:
        return TestSent(message_id, await sender.send(message_id, body))
    finally:
        await sender.close()


async def replay_since(settings: Settings, store: Store, sub: SubscriptionSettings,
                       since: str, connection_name: str) -> int:
    """Queue the outbox's notifications since `since` that `sub` wants on its delivery queue
    again, each confirmed by the broker, with their webhook-ids (so the receiver can tell
    repeats); how many. BrokerAway if the broker or the queue is not there."""
    async with store.transaction() as tx:
        rows = await tx.fetch(
            "SELECT kind, routing_key, body, message_id FROM outbox WHERE created_at >= $1"
            " ORDER BY id",
            since,
        )
    rows = [row for row in rows if sub.wants(row["kind"])]
    queue = Topology.of(settings.broker).queue(delivery_queue(sub.name))
    try:
        connection = await open_connection(settings.broker, connection_name, timeout=10)
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
    except BROKER_ERRORS as exc:
        raise BrokerAway(f"cannot queue to {queue}: {describe(exc)}") from exc
    return len(rows)
