"""The console lists the queues the topology declares for its settings, against the real
RabbitMQ and both stores: with [labels] on, the Overview shows the labels queue and Dead
letters lists labels.dead, replayed and purged by an operator as the others are; with
[labels] off, nothing about labels appears and its dead letters cannot be asked for."""

from __future__ import annotations

import dataclasses

import aio_pika
import orjson
import pytest
from test_console_actions import actions, csrf, depth
from test_console_server import CSRF, console_settings, login
from test_runner import wait_for

from router.broker.topology import Topology
from router.settings import Settings

pytestmark = pytest.mark.integration

READY = {"id": "ready-1", "type": "notify.order.ready_to_ship", "source": "orders",
         "data": {"order_id": "1042", "status": "ready_to_ship"}}


async def bury_label(amqp: aio_pika.abc.AbstractConnection, topology: Topology,
                     ident: str) -> None:
    """A dead letter on labels.dead, as the runner leaves it after the carrier refused."""
    channel = await amqp.channel(publisher_confirms=True)
    await channel.default_exchange.publish(
        aio_pika.Message(orjson.dumps({**READY, "id": ident}), message_id=ident,
                         type=READY["type"],
                         headers={"attempt": 3, "x-dead-consumer": "labels",
                                  "x-dead-at": "2026-12-07T10:00:00Z",
                                  "x-dead-reason": "carrier refused the shipment"}),
        routing_key=topology.dead_queue("labels"))
    await channel.close()


async def overview_queues(console) -> list[str]:
    answer = await (await console.get("/api/overview")).json()
    return [row["queue"] for row in answer["broker"]["queues"]]


class TestLabelsOn:
    @pytest.fixture
    def settings(self, settings: Settings) -> Settings:
        """[labels] on, as the loader leaves it (its queue switched on): the conftest
        topology declares the labels queues and deletes them after."""
        return dataclasses.replace(
            settings, labels=dataclasses.replace(settings.labels, enabled=True),
            broker=dataclasses.replace(settings.broker, optional_queues=("labels",)))

    async def test_the_overview_shows_the_labels_queue(self, make_console, settings, store,
                                                       store_url, amqp, topology):
        """The Overview's queues are the topology's, labels among them, with its depth."""
        console = await make_console(console_settings(settings, store_url))
        await bury_label(amqp, topology, "label-dead-1")
        assert 303 == (await login(console)).status
        answer = await (await console.get("/api/overview")).json()
        rows = {row["queue"]: row for row in answer["broker"]["queues"]}
        bases = Topology.of(settings.broker).work_queue_bases()
        assert "labels" in bases and bases == list(rows)[:len(bases)]
        assert (0, 1) == (rows["labels"]["depth"], rows["labels"]["dead"])
        assert 'data-queue="labels"' in await (await console.get("/")).text()

    async def test_a_labels_dead_letter_is_listed_and_replayed_to_labels(
            self, make_console, settings, store, store_url, amqp, topology):
        """An operator finds labels.dead on Dead letters, sees the message, and replays it
        to the labels queue; the action is recorded."""
        console = await make_console(console_settings(settings, store_url))
        await bury_label(amqp, topology, "label-dead-1")
        assert 303 == (await login(console)).status
        page = await (await console.get("/dead-letters")).text()
        assert 'href="/dead-letters?queue=labels"' in page
        page = await (await console.get("/dead-letters", params={"queue": "labels"})).text()
        assert "labels: 1 dead letter" in page and "label-dead-1" in page
        assert "carrier refused the shipment" in page
        response = await console.post("/dead-letters/replay", allow_redirects=False, data={
            "csrf": CSRF.search(page)[1], "queue": "labels", "id": "label-dead-1"})
        assert 303 == response.status

        async def moved() -> bool:
            return (1, 0) == (await depth(amqp, topology.queue("labels")),
                              await depth(amqp, topology.dead_queue("labels")))

        await wait_for(moved)
        assert [("ana", "replay", "labels", '["label-dead-1"]', "replayed 1")] == \
            await actions(store)

    async def test_an_operator_purges_labels_dead(self, make_console, settings, store,
                                                  store_url, amqp, topology):
        """Purge of labels.dead works after its confirmation, as for the other queues."""
        console = await make_console(console_settings(settings, store_url))
        await bury_label(amqp, topology, "label-dead-1")
        assert 303 == (await login(console)).status
        page = await (await console.get("/dead-letters/purge",
                                        params={"queue": "labels"})).text()
        response = await console.post("/dead-letters/purge", allow_redirects=False, data={
            "csrf": CSRF.search(page)[1], "queue": "labels", "confirm": "labels"})
        assert 303 == response.status
        assert 0 == await depth(amqp, topology.dead_queue("labels"))
        assert [("ana", "purge", "labels", "[]", "purged 1")] == await actions(store)

    async def test_a_viewer_may_not_replay_labels(self, make_console, settings, store,
                                                  store_url, amqp, topology):
        """The role check is the same: a viewer's replay of labels.dead is 403, nothing
        moved and nothing recorded."""
        console = await make_console(console_settings(settings, store_url))
        await bury_label(amqp, topology, "label-dead-1")
        assert 303 == (await login(console, name="", password="", token="bo-token-0123")).status
        assert 403 == (await console.get("/dead-letters?queue=labels")).status
        response = await console.post("/dead-letters/replay", data={
            "csrf": await csrf(console), "queue": "labels", "id": "label-dead-1"})
        assert 403 == response.status
        assert (0, 1) == (await depth(amqp, topology.queue("labels")),
                          await depth(amqp, topology.dead_queue("labels")))
        assert [] == await actions(store)


class TestLabelsOff:
    async def test_no_labels_row_anywhere(self, make_console, settings, store, store_url,
                                          amqp, topology):
        """With [labels] off, neither the Overview nor Dead letters has a labels row, and
        asking for its dead letters is unknown_queue with nothing done."""
        console = await make_console(console_settings(settings, store_url))
        assert 303 == (await login(console)).status
        assert "labels" not in await overview_queues(console)
        assert "orders" in await overview_queues(console)
        assert 'data-queue="labels"' not in await (await console.get("/")).text()
        page = await (await console.get("/dead-letters")).text()
        assert "queue=orders" in page and "labels" not in page
        response = await console.get("/dead-letters", params={"queue": "labels"})
        assert 404 == response.status and "unknown_queue" in await response.text()
        response = await console.post("/dead-letters/replay", data={
            "csrf": CSRF.search(page)[1], "queue": "labels", "id": "label-dead-1"})
        assert 404 == response.status and "unknown_queue" in await response.text()
        assert [] == await actions(store)
