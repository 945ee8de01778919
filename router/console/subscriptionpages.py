"""The Subscriptions pages: each configured subscription's URL, events, state, failures in a
row, last success and queues, and one subscription's newest delivery attempts (everyone);
Enable, Disable, Send test notification and Replay since a time (operators), done by the
same code as the `subscriptions` and `deliveries replay` commands and each recorded in
operator_actions."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

from aiohttp import web

from consumers.outbound import subscriptions as subs
from consumers.store import Store, StoreError, open_store
from router.console import actions
from router.console.errors import (
    BadTime,
    ConsoleError,
    StoreUnavailable,
    SubscriptionOff,
    UnknownSubscription,
    broker_call,
)
from router.console.pages import after_action, notice, render
from router.console.settings import ConsoleUser
from router.console.state import MASK, SETTINGS, user_of
from router.settings import SubscriptionSettings

CONNECTION = "webhook-router-console"
REFUSALS: dict[type[subs.SubscriptionRefused], type[ConsoleError]] = {
    subs.UnknownSubscription: UnknownSubscription,
    subs.SwitchedOff: SubscriptionOff,
    subs.BadTime: BadTime,
}


@contextlib.contextmanager
def _refusals() -> Iterator[None]:
    """The shared code's refusals as the console's answers (404, 409, 400)."""
    try:
        yield
    except subs.SubscriptionRefused as exc:
        raise REFUSALS[type(exc)](str(exc)) from exc


async def _read(request: web.Request, name: str | None) -> dict[str, Any]:
    """Every subscription's status and, for `name`, its newest attempts; masked."""
    settings = request.app[SETTINGS]
    try:
        async with open_store(settings.consumers.store, create=False) as store:
            statuses = await subs.statuses(settings, store, CONNECTION)
            attempts = await subs.recent_attempts(store, name) if name else []
    except (StoreError, OSError) as exc:
        raise StoreUnavailable(f"the store cannot be read: {exc}") from exc
    return request.app[MASK].mask({"subscriptions": statuses, "attempts": attempts})


async def subscriptions_page(request: web.Request) -> web.StreamResponse:
    return render(request, "subscriptions.html", await _read(request, None))


async def _one(request: web.Request, name: str, result: dict[str, Any] | None = None,
               done: str | None = None) -> web.Response:
    with _refusals():
        subs.find(request.app[SETTINGS], name)
    found = await _read(request, name)
    [status] = [s for s in found["subscriptions"] if s["subscription"] == name]
    return render(request, "subscription.html", {
        "s": status, "attempts": found["attempts"], "result": result, "done": done})


async def subscription_page(request: web.Request) -> web.StreamResponse:
    return await _one(request, request.query.get("name", ""),
                      done=notice(request))


def _done(request: web.Request, name: str, done: str) -> web.HTTPSeeOther:
    return after_action(request, "/subscriptions/one", {"name": name}, done)


async def _form(request: web.Request) -> tuple[str, str]:
    form = await request.post()
    return str(form.get("name", "")), str(form.get("since", ""))


async def _switched_on(request: web.Request, checking: str
                       ) -> tuple[ConsoleUser, SubscriptionSettings, str]:
    """An operator's action on a subscription that is on in the config: the operator, the
    subscription and the form's `since` (refusals as their 4xx)."""
    user = user_of(request)
    name, since = await _form(request)
    with _refusals():
        sub = subs.switched_on(request.app[SETTINGS], name, checking)
    return user, sub, since


async def _switch(request: web.Request, state: str, doing: str) -> web.StreamResponse:
    user = user_of(request)
    name, _ = await _form(request)
    settings = request.app[SETTINGS]
    with _refusals():
        sub = (subs.switched_on(settings, name, "enabling it") if state == "enabled"
               else subs.find(settings, name))

    async def work(store: Store) -> None:
        await subs.switch(store, sub, state, f"{user.name} (console)")

    await actions.act(settings.consumers.store, user, doing, sub.name, [], work,
                      lambda _: state)
    raise _done(request, sub.name, state)


async def enable(request: web.Request) -> web.StreamResponse:
    return await _switch(request, "enabled", "enable")


async def disable(request: web.Request) -> web.StreamResponse:
    return await _switch(request, "disabled", "disable")


async def send_test(request: web.Request) -> web.StreamResponse:
    """POST a signed webhook.test to the subscriber now; the page shows its answer."""
    user, sub, _ = await _switched_on(request, "testing it")
    settings = request.app[SETTINGS]
    message_id = subs.new_test_id()

    async def work(_: Store) -> subs.TestSent:
        with _refusals():
            return await subs.send_test(settings, sub, message_id)

    sent = await actions.act(settings.consumers.store, user, "test-notification", sub.name,
                             [message_id], work, _answered)
    result = {"message_id": sent.message_id, "delivered": sent.answer.delivered,
              "answer": sent.answer.describe(), "latency_ms": round(sent.answer.latency * 1000)}
    return await _one(request, sub.name, result=result)


def _answered(sent: subs.TestSent) -> str:
    said = f"{sent.answer.describe()} in {sent.answer.latency * 1000:.0f} ms"
    return f"answered {said}" if sent.answer.status is not None else f"failed: {said}"


async def replay(request: web.Request) -> web.StreamResponse:
    """Queue the notifications since a time again for one subscriber."""
    user, sub, since = await _switched_on(request, "replaying to it")
    settings = request.app[SETTINGS]
    with _refusals():
        when = subs.since_time(since)

    async def work(store: Store) -> int:
        return await broker_call(subs.replay_since(settings, store, sub, when, CONNECTION))

    queued = await actions.act(settings.consumers.store, user, "replay-since", sub.name, [],
                               work, lambda queued: f"queued {queued} since {when}")
    raise _done(request, sub.name, f"queued {queued} notifications since {when} again")

