"""Who may do what in the console, against the real RabbitMQ, both stores, a live ingress and
an HTTP receiver: a viewer walks every operator route of app.ROUTES (every POST but logging
in and out and the mapping preview, and every dead-letters page) with a valid CSRF token and
a form an operator's request would act on, and is refused each time, with nothing moved,
changed or recorded. The list comes from ROUTES, so a route added later is walked too."""

from __future__ import annotations

import dataclasses

import pytest
from test_console_actions import actions, bury, csrf
from test_console_server import login
from test_console_subscriptions import config, state_of  # noqa: F401 (a fixture)
from test_notifications import receivers  # noqa: F401 (a fixture)

from router.console.app import ROUTES
from router.hold import hold_queues

pytestmark = pytest.mark.integration

VIEWER = {"name": "", "password": "", "token": "bo-token-0123"}
# The POSTs a viewer may make; every other POST acts, and is an operator's.
VIEWERS_POSTS = {"/login", "/logout", "/sources/preview"}


def operator_routes() -> list[tuple[str, str]]:
    """What only an operator may do, by the rule above: not read from ROUTES' role column,
    so a route whose role was left out or mistyped is still walked (and fails)."""
    return [(method, path) for method, path, _, _ in ROUTES
            if (method == "POST" and path not in VIEWERS_POSTS)
            or path.startswith("/dead-letters")]


async def depths(amqp, names: list[str]) -> dict[str, int]:
    channel = await amqp.channel()
    counts = {}
    for name in names:
        queue = await channel.declare_queue(name, passive=True)
        counts[name] = queue.declaration_result.message_count
    await channel.close()
    return counts


@pytest.fixture
async def console(make_console, make_client, settings, config, store):  # noqa: F811
    """The console with the subscriptions `hooks` (on) and `off`, sending test payloads to a
    live ingress (which declares the held.* queues)."""
    ingress = await make_client(settings)
    url = str(ingress.make_url("")).rstrip("/")
    return await make_console(dataclasses.replace(
        config, console=dataclasses.replace(config.console, ingress_url=url)))


class TestOperatorRoutes:
    def test_the_walk_covers_the_operator_routes_and_each_declares_its_role(self):
        """Every action named in the issue is in the walk, and each route walked says
        "operator" in ROUTES."""
        walked = operator_routes()
        assert {("POST", "/dead-letters/purge"), ("POST", "/sources/send"),
                ("GET", "/dead-letters"), ("POST", "/subscriptions/enable")} <= set(walked)
        roles = {(method, path): role for method, path, _, role in ROUTES}
        assert {route: "operator" for route in walked} == {route: roles[route]
                                                           for route in walked}

    async def test_a_viewer_is_refused_every_operator_route(
            self, console, amqp, topology, settings, config, store):  # noqa: F811
        """As a logged-in viewer with this session's CSRF token: 403 forbidden as JSON on
        every operator route; no queue's depth moved (work, retry, dead, unrouted, held.*
        and the subscriptions' delivery queues), no subscription's state changed, and
        nothing recorded in operator_actions."""
        await bury(amqp, topology, "dead-1")
        assert 303 == (await login(console, **VIEWER)).status
        token = await csrf(console)
        names = [*topology.names(),
                 *(spec.name for spec in hold_queues(settings)),
                 *(spec.name for spec in topology.delivery_queues(
                     config.subscriptions, config.notifications.retry_ladder))]
        assert topology.hold_queue("shopify") in names  # held.* listed explicitly
        before = await depths(amqp, names)
        states = {name: await state_of(store, name) for name in config.subscriptions}
        # One form that every action would act on: a dead letter there, a purge confirmed,
        # a subscription that is on, a source's sample with a topic it has.
        form = {"csrf": token, "queue": "orders", "id": "dead-1", "confirm": "orders",
                "name": "hooks", "since": "2026-01-01T00:00:00Z", "source": "shopify",
                "topic": "orders/create",
                "payload": settings.sources["shopify"].sample.read_text()}
        json = {"Accept": "application/json"}
        refused = {}
        for method, path in operator_routes():
            if method == "GET":
                response = await console.get(path, params={"queue": "orders", "id": "dead-1"},
                                             headers=json, allow_redirects=False)
            else:
                response = await console.post(path, data=form, headers=json,
                                              allow_redirects=False)
            answer = await response.json() if response.content_type == "application/json" \
                else await response.text()
            refused[f"{method} {path}"] = (response.status, answer.get("error")
                                           if isinstance(answer, dict) else answer[:200])
        assert {route: (403, "forbidden") for route in refused} == refused
        assert before == await depths(amqp, names)
        assert states == {name: await state_of(store, name) for name in config.subscriptions}
        assert [] == await actions(store)
        assert 1 == before[topology.dead_queue("orders")]  # there to be acted on

