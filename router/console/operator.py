"""The operators' pages: dead letters (list per queue, inspect masked, reveal one unmasked,
replay one or all, purge after a confirmation), for the operator role only (app.ROUTES),
each action recorded in the store; and the Audit page listing those records, for everyone
logged in."""

from __future__ import annotations

from typing import Any

from aiohttp import web

from router.broker.dlq import peek_dead, purge_dead, replay_dead
from router.broker.topology import Topology, delivery_queue
from router.console import actions
from router.console.errors import (
    BrokerFailed,
    MissingId,
    NotConfirmed,
    UnknownQueue,
    broker_call,
)
from router.console.overview import queues
from router.console.pages import after_action, notice, render
from router.console.state import COUNTER, MASK, SETTINGS, user_of

LISTED = 50  # dead letters listed per page


def _queue(request: web.Request, name: str) -> str:
    """`name` if it is a queue with dead letters here: a consumer's the topology declares
    (labels only while [labels] is on) or a subscription's."""
    settings = request.app[SETTINGS]
    known = [*Topology.of(settings.broker).work_queue_bases(),
             *(delivery_queue(s) for s in settings.subscriptions)]
    if name not in known:
        raise UnknownQueue(f"no dead letters are kept for {name!r}; one of {', '.join(known)}")
    return name


async def dead_letters_page(request: web.Request) -> web.StreamResponse:
    settings = request.app[SETTINGS]
    name = request.query.get("queue")
    context: dict[str, Any] = {"queues": await queues(settings, request.app[COUNTER]),
                               "queue": None, "total": 0, "messages": [],
                               "done": notice(request)}
    if name:
        context["queue"] = _queue(request, name)
        total, messages = await broker_call(peek_dead(settings.broker, name, LISTED))
        context |= {"total": total, "messages": request.app[MASK].mask(messages)}
    return render(request, "dead_letters.html", context)


async def _dead_letter(request: web.Request, name: str, ident: str) -> dict[str, Any]:
    _, found = await broker_call(peek_dead(request.app[SETTINGS].broker, name, 1, ident))
    if not found:
        raise BrokerFailed(f"no message {ident} in {name}'s dead letters")
    return found[0]


async def dead_letter_page(request: web.Request) -> web.StreamResponse:
    name = _queue(request, request.query.get("queue", ""))
    message = await _dead_letter(request, name, request.query.get("id", ""))
    return render(request, "dead_letter.html", {
        "queue": name, "message": request.app[MASK].mask(message), "revealed": False})


async def _queue_and_id(request: web.Request, doing: str) -> tuple[str, str]:
    form = await request.post()
    name = _queue(request, str(form.get("queue", "")))
    ident = str(form.get("id", ""))
    if not ident:
        raise MissingId(f"give the id of the dead letter to {doing}")
    return name, ident


async def reveal(request: web.Request) -> web.StreamResponse:
    """The dead letter with its personal data shown, the reveal recorded before it is."""
    user = user_of(request)
    name, ident = await _queue_and_id(request, "reveal")
    message = await actions.act(
        request.app[SETTINGS].consumers.store, user, "reveal", name, [ident],
        lambda _: _dead_letter(request, name, ident), lambda _: "revealed")
    return render(request, "dead_letter.html",
                  {"queue": name, "message": message, "revealed": True})


async def replay(request: web.Request) -> web.StreamResponse:
    user = user_of(request)
    name, ident = await _queue_and_id(request, "replay")
    settings = request.app[SETTINGS]
    await actions.act(settings.consumers.store, user, "replay", name, [ident],
                      lambda _: broker_call(replay_dead(settings.broker, name, ident)),
                      lambda moved: f"replayed {moved}")
    done = f"replayed {ident} to {name}"
    raise after_action(request, "/dead-letters", {"queue": name}, done)


async def replay_all(request: web.Request) -> web.StreamResponse:
    user = user_of(request)
    name = _queue(request, str((await request.post()).get("queue", "")))
    settings = request.app[SETTINGS]
    moved = await actions.act(settings.consumers.store, user, "replay-all", name, [],
                              lambda _: broker_call(replay_dead(settings.broker, name, None)),
                              lambda moved: f"replayed {moved}")
    done = f"replayed {moved} dead letters of {name} to its work queue"
    raise after_action(request, "/dead-letters", {"queue": name}, done)


async def purge_page(request: web.Request) -> web.StreamResponse:
    name = _queue(request, request.query.get("queue", ""))
    total, _ = await broker_call(peek_dead(request.app[SETTINGS].broker, name, 1))
    return render(request, "purge.html", {"queue": name, "total": total})


async def purge(request: web.Request) -> web.StreamResponse:
    user = user_of(request)
    form = await request.post()
    name = _queue(request, str(form.get("queue", "")))
    if form.get("confirm") != name:
        raise NotConfirmed(f"type the queue's name ({name}) to confirm the purge: "
                           "nothing was purged")
    settings = request.app[SETTINGS]
    purged = await actions.act(settings.consumers.store, user, "purge", name, [],
                               lambda _: broker_call(purge_dead(settings.broker, name)),
                               lambda purged: f"purged {purged}")
    done = f"purged {purged} dead letters of {name}"
    raise after_action(request, "/dead-letters", {"queue": name}, done)


async def audit_page(request: web.Request) -> web.StreamResponse:
    rows = await actions.recent(request.app[SETTINGS].consumers.store)
    return render(request, "audit.html", {"actions": request.app[MASK].mask(rows)})
