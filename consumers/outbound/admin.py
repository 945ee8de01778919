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

import contextlib
import sys
import time
from collections.abc import Iterator
from typing import Any, TextIO

from consumers.outbound import subscriptions as subs
from consumers.store import open_store
from router.broker.counts import BrokerAway
from router.settings import Settings, SubscriptionSettings

CONNECTION = "router-subscriptions"


class Usage(Exception):
    """A mistake in the command line: exit 2 with the message."""


@contextlib.contextmanager
def _usage() -> Iterator[None]:
    """A refused subscription request is a usage mistake here."""
    try:
        yield
    except subs.SubscriptionRefused as exc:
        raise Usage(str(exc)) from exc


async def subscriptions_command(settings: Settings, action: str, name: str | None,
                                out: TextIO = sys.stdout) -> int:
    if action == "list":
        async with open_store(settings.consumers.store, create=False) as store:
            return _list(settings, await subs.statuses(settings, store, CONNECTION), out)
    if not name:
        raise Usage(f"subscriptions {action} needs a subscription NAME")
    if action == "test":
        with _usage():
            return await _test(settings, subs.find(settings, name), out)
    with _usage():
        if action == "enable":
            sub = subs.switched_on(settings, name, "enabling it")
            state, said = "enabled", "enabled; parked messages flow again"
        else:
            sub = subs.find(settings, name)
            state, said = "disabled", "disabled; its messages wait in its queue"
    async with open_store(settings.consumers.store, create=False) as store:
        await subs.switch(store, sub, state, "an operator")
    print(f"{sub.name}: {said}", file=out)
    return 0


def _list(settings: Settings, statuses: list[dict[str, Any]], out: TextIO) -> int:
    if not settings.subscriptions:
        print("no subscriptions configured", file=out)
    for row in statuses:
        print(f"{row['subscription']}: {row['state']}", file=out)
        print(f"  url      {row['url']}", file=out)
        print(f"  events   {', '.join(row['events'])}", file=out)
        print(f"  queue    {_count(row['waiting'])} waiting, {_count(row['dead'])} dead",
              file=out)
        if row["failures"] or row["reason"]:
            print(f"  failures {row['failures']} in a row; {row['reason'] or '-'}", file=out)
    return 0


def _count(value: int | None) -> str:
    return "?" if value is None else str(value)


async def _test(settings: Settings, sub: SubscriptionSettings, out: TextIO) -> int:
    sent = await subs.send_test(settings, sub, subs.new_test_id())
    print(f"{sub.name}: {sent.answer.describe()} in {sent.answer.latency * 1000:.0f} ms "
          f"(webhook-id {sent.message_id})", file=out)
    return 0 if sent.answer.delivered else 1


async def deliveries_command(settings: Settings, target: str, *, subscription: str | None,
                             since: str | None, out: TextIO = sys.stdout) -> int:
    if target == "replay":
        if not subscription or not since:
            raise Usage("deliveries replay needs --subscription NAME and --since TIME")
        with _usage():
            sub = subs.switched_on(settings, subscription, "replaying to it")
            when = subs.since_time(since)
    async with open_store(settings.consumers.store, create=False) as store:
        if target == "replay":
            started = time.perf_counter()
            try:
                queued = await subs.replay_since(settings, store, sub, when,
                                                 "router-deliveries")
            except BrokerAway as exc:
                print(str(exc), file=out)
                return 1
            print(f"{sub.name}: {queued} notifications since {when} queued again "
                  f"({time.perf_counter() - started:.1f} s); same webhook-ids, so the "
                  "receiver can tell repeats", file=out)
            return 0
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
