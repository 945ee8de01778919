"""The console's operator pages against the real RabbitMQ and both stores: dead letters
listed, inspected (PII masked) or revealed, replayed one at a time or all, and purged after
a confirmation, each action recorded in operator_actions and listed on the Audit page;
viewers get 403."""

from __future__ import annotations

import aio_pika
import orjson
import pytest
from test_console_server import CSRF, console_settings, login
from test_runner import wait_for
from test_trace import ORDER

pytestmark = pytest.mark.integration


@pytest.fixture
async def console(make_console, settings, store, store_url):
    return await make_console(console_settings(settings, store_url))


async def bury(amqp, topology, *ids: str) -> None:
    """Dead letters on orders.dead, as the runner leaves them."""
    channel = await amqp.channel(publisher_confirms=True)
    for ident in ids:
        await channel.default_exchange.publish(
            aio_pika.Message(orjson.dumps({**ORDER, "id": ident}), message_id=ident,
                             type=ORDER["type"],
                             headers={"attempt": 3, "x-dead-consumer": "orders",
                                      "x-dead-at": "2026-11-29T10:00:00Z",
                                      "x-dead-reason": "downstream refused"}),
            routing_key=topology.dead_queue("orders"))
    await channel.close()


async def depth(amqp, queue: str) -> int:
    channel = await amqp.channel()
    declared = await channel.declare_queue(queue, passive=True)
    await channel.close()
    return declared.declaration_result.message_count


async def csrf(client) -> str:
    return CSRF.search(await (await client.get("/")).text())[1]


async def actions(store) -> list[tuple[str, str, str, str, str]]:
    async with store.transaction() as tx:
        rows = await tx.fetch("SELECT actor, action, target, ids, outcome FROM operator_actions"
                              " ORDER BY id")
    return [tuple(row.values()) for row in rows]


class TestViewer:
    async def test_a_viewer_gets_403(self, console, amqp, topology):
        """A viewer has no Dead letters link, and its pages and actions are 403."""
        await bury(amqp, topology, "dead-1")
        assert 303 == (await login(console, name="", password="", token="bo-token-0123")).status
        assert "/dead-letters" not in await (await console.get("/")).text()
        assert 403 == (await console.get("/dead-letters?queue=orders")).status
        token = await csrf(console)
        response = await console.post("/dead-letters/replay", data={
            "csrf": token, "queue": "orders", "id": "dead-1"})
        assert 403 == response.status
        assert "forbidden" in await response.text()
        assert 1 == await depth(amqp, topology.dead_queue("orders"))

    @pytest.mark.parametrize("path", ["/dead-letters/replay-all", "/dead-letters/reveal"])
    async def test_a_viewer_may_neither_replay_all_nor_reveal(self, console, amqp, topology,
                                                              store, path):
        """Replay all and Reveal are 403 for a viewer: nothing moved, shown or recorded."""
        await bury(amqp, topology, "dead-1")
        assert 303 == (await login(console, name="", password="", token="bo-token-0123")).status
        response = await console.post(path, data={
            "csrf": await csrf(console), "queue": "orders", "id": "dead-1"})
        assert 403 == response.status
        page = await response.text()
        assert "forbidden" in page and "Jane Doe" not in page
        assert 1 == await depth(amqp, topology.dead_queue("orders"))
        assert [] == await actions(store)


class TestCsrf:
    @pytest.mark.parametrize("path", ["/dead-letters/replay", "/dead-letters/replay-all",
                                      "/dead-letters/reveal", "/dead-letters/purge"])
    async def test_each_action_needs_the_token(self, console, amqp, topology, store, path):
        """Without the session's CSRF token: 403 csrf_token_invalid, nothing done."""
        await bury(amqp, topology, "dead-1")
        assert 303 == (await login(console)).status
        response = await console.post(path, data={
            "queue": "orders", "id": "dead-1", "confirm": "orders"})
        assert 403 == response.status
        page = await response.text()
        assert "csrf_token_invalid" in page and "Jane Doe" not in page
        assert 1 == await depth(amqp, topology.dead_queue("orders"))
        assert [] == await actions(store)


class TestDeadLetters:
    async def test_list_inspect_and_replay_one(self, console, amqp, topology, store):
        """An operator sees the dead letters, inspects one with the customer's details
        masked, replays it alone to the work queue, and the action is recorded."""
        await bury(amqp, topology, "dead-1", "dead-2")
        assert 303 == (await login(console)).status
        page = await (await console.get("/dead-letters", params={"queue": "orders"})).text()
        assert "orders: 2 dead letters" in page and "dead-1" in page and "dead-2" in page
        page = await (await console.get("/dead-letters/message",
                                        params={"queue": "orders", "id": "dead-1"})).text()
        assert "downstream refused" in page and "1042" in page
        assert "Jane Doe" not in page and "[redacted]" in page
        response = await console.post("/dead-letters/replay", allow_redirects=False, data={
            "csrf": CSRF.search(page)[1], "queue": "orders", "id": "dead-1"})
        assert 303 == response.status

        async def moved() -> bool:
            return (1, 1) == (await depth(amqp, topology.queue("orders")),
                              await depth(amqp, topology.dead_queue("orders")))

        await wait_for(moved)
        assert [("ana", "replay", "orders", '["dead-1"]', "replayed 1")] == await actions(store)
        page = await (await console.get("/audit")).text()
        assert "replay" in page and "dead-1" in page and "ana (operator)" in page

    async def test_the_note_after_an_action_is_the_consoles_own(self, console, amqp,
                                                               topology):
        """After a replay the page says what was done; the same words in a link made
        elsewhere, or that link in another session, show nothing."""
        await bury(amqp, topology, "dead-1")
        assert 303 == (await login(console)).status
        response = await console.post("/dead-letters/replay", allow_redirects=False, data={
            "csrf": await csrf(console), "queue": "orders", "id": "dead-1"})
        location = response.headers["Location"]
        said = '<p class="ok">replayed dead-1 to orders</p>'
        assert said in await (await console.get(location)).text()
        crafted = await console.get("/dead-letters", params={
            "queue": "orders", "done": "your session expired: call +1 555 0100"})
        assert "+1 555 0100" not in await crafted.text()
        assert 303 == (await login(console)).status  # a new session
        assert said not in await (await console.get(location)).text()

    async def test_a_store_failing_during_an_action_is_503_not_500(self, console, amqp,
                                                                   topology, store):
        """The store answers when the action starts but fails to record it: 503
        store_unavailable, saying the action may have been done and was not recorded."""
        await bury(amqp, topology, "dead-1")
        assert 303 == (await login(console)).status
        token = await csrf(console)
        async with store.transaction() as tx:
            await tx.execute("DROP TABLE operator_actions")
        response = await console.post("/dead-letters/replay", data={
            "csrf": token, "queue": "orders", "id": "dead-1"},
            headers={"Accept": "application/json"})
        answer = await response.json()
        assert (503, "store_unavailable") == (response.status, answer["error"])
        assert "may or may not have been done and was not recorded" in answer["message"]

    async def test_purge_needs_its_confirmation(self, console, amqp, topology, store):
        """A purge without the queue's name typed is refused (409, nothing purged); with it,
        every dead letter goes and the purge is recorded."""
        await bury(amqp, topology, "dead-1", "dead-2")
        assert 303 == (await login(console)).status
        page = await (await console.get("/dead-letters/purge", params={"queue": "orders"})).text()
        assert "drops all 2 dead letters of orders" in page
        token = CSRF.search(page)[1]
        response = await console.post("/dead-letters/purge", data={
            "csrf": token, "queue": "orders", "confirm": "yes"})
        assert 409 == response.status
        assert 2 == await depth(amqp, topology.dead_queue("orders"))
        response = await console.post("/dead-letters/purge", allow_redirects=False, data={
            "csrf": token, "queue": "orders", "confirm": "orders"})
        assert 303 == response.status
        assert 0 == await depth(amqp, topology.dead_queue("orders"))
        assert [("ana", "purge", "orders", "[]", "purged 2")] == await actions(store)

    async def test_unknown_queue_and_missing_id(self, console, topology):
        """Only the consumers' and subscriptions' queues; a replay names its message."""
        assert 303 == (await login(console)).status
        response = await console.get("/dead-letters", params={"queue": "nope"},
                                     headers={"Accept": "application/json"})
        assert (404, "unknown_queue") == (response.status, (await response.json())["error"])
        response = await console.post("/dead-letters/replay", data={
            "csrf": await csrf(console), "queue": "orders"})
        assert 400 == response.status

    async def test_replay_all_moves_every_dead_letter(self, console, amqp, topology, store):
        """Replay all: every dead letter of the queue goes back to its work queue, recorded
        as one action with the count."""
        await bury(amqp, topology, "dead-1", "dead-2", "dead-3")
        assert 303 == (await login(console)).status
        page = await (await console.get("/dead-letters", params={"queue": "orders"})).text()
        assert "Replay all 3 to orders" in page
        response = await console.post("/dead-letters/replay-all", data={
            "csrf": CSRF.search(page)[1], "queue": "orders"})
        assert "replayed 3 dead letters of orders" in await response.text()

        async def moved() -> bool:
            return (3, 0) == (await depth(amqp, topology.queue("orders")),
                              await depth(amqp, topology.dead_queue("orders")))

        await wait_for(moved)
        assert [("ana", "replay-all", "orders", "[]", "replayed 3")] == await actions(store)

    async def test_reveal_shows_the_personal_data_and_is_recorded(self, console, amqp,
                                                                   topology, store):
        """Reveal shows the body and headers unmasked, once recorded; the message stays."""
        await bury(amqp, topology, "dead-1")
        assert 303 == (await login(console)).status
        page = await (await console.get("/dead-letters/message",
                                        params={"queue": "orders", "id": "dead-1"})).text()
        assert "Jane Doe" not in page
        response = await console.post("/dead-letters/reveal", data={
            "csrf": CSRF.search(page)[1], "queue": "orders", "id": "dead-1"})
        assert 200 == response.status
        page = await response.text()
        assert "Jane Doe" in page and "[redacted]" not in page
        assert [("ana", "reveal", "orders", '["dead-1"]', "revealed")] == await actions(store)
        assert 1 == await depth(amqp, topology.dead_queue("orders"))

    async def test_nothing_is_revealed_without_the_store(self, make_console, settings,
                                                         amqp, topology, tmp_path):
        """Where the store cannot be opened the reveal would go unrecorded: 503, no data."""
        await bury(amqp, topology, "dead-1")
        console = await make_console(console_settings(
            settings, f"sqlite:///{tmp_path}/none.sqlite3"))
        assert 303 == (await login(console)).status
        response = await console.post("/dead-letters/reveal", data={
            "csrf": await csrf(console), "queue": "orders", "id": "dead-1"})
        assert 503 == response.status
        page = await response.text()
        assert "store_unavailable" in page and "Jane Doe" not in page


class TestMaskedByShape:
    async def test_emails_and_phones_in_a_dead_letter_are_masked_until_revealed(
            self, console, amqp, topology, store):
        """An e-mail in the dead-letter reason and in a note, a phone under a key no list
        names: masked on the list and the message page, shown by Reveal; the ids and
        the order's numbers stay readable."""
        body = {**ORDER, "id": "dead-pii", "data": {
            **ORDER["data"], "order_id": "5820982911946154508",
            "customer_note": "ring me", "comment": "call jane.doe@example.com",
            "contact_number": "+44 20 7946 0958"}}
        channel = await amqp.channel(publisher_confirms=True)
        await channel.default_exchange.publish(
            aio_pika.Message(orjson.dumps(body), message_id="dead-pii", type=ORDER["type"],
                             headers={"attempt": 3, "x-dead-consumer": "orders",
                                      "x-dead-at": "2026-11-29T10:00:00Z",
                                      "x-dead-reason": "Permanent: portal refused "
                                                       "jane.doe@example.com"}),
            routing_key=topology.dead_queue("orders"))
        await channel.close()
        assert 303 == (await login(console)).status
        listed = await (await console.get("/dead-letters", params={"queue": "orders"})).text()
        page = await (await console.get("/dead-letters/message",
                                        params={"queue": "orders", "id": "dead-pii"})).text()
        for shown in (listed, page):
            assert "jane.doe@example.com" not in shown and "7946" not in shown
            assert "Permanent: portal refused [redacted]" in shown and "dead-pii" in shown
        assert '"call [redacted]"' in page and "5820982911946154508" in page
        response = await console.post("/dead-letters/reveal", data={
            "csrf": CSRF.search(page)[1], "queue": "orders", "id": "dead-pii"})
        revealed = await response.text()
        assert "jane.doe@example.com" in revealed and "+44 20 7946 0958" in revealed

    async def test_trace_json_masks_emails_and_phones_in_reasons_and_errors(
            self, console, store):
        """/api/trace: a consumer's reason naming an e-mail and a delivery error naming a
        phone come masked; the event id, SKU, order id and times do not."""
        async with store.transaction() as tx:
            await tx.execute(
                "INSERT INTO audit_events VALUES ($1, $2, $3, $4, $5, $6, $7)", "e-pii",
                "shopify", "order.created", "order.created/v1", "2026-11-29T10:00:00Z", None,
                "2026-11-29T10:00:01Z")
            await tx.executemany("INSERT INTO event_keys VALUES ($1, $2, $3)",
                                 [("e-pii", "order_id", "5820982911946154508"),
                                  ("e-pii", "sku", "MUG-555-123-4567")])
            await tx.execute(
                "INSERT INTO consumer_attempts (consumer, event_id, attempt, outcome,"
                " delay_seconds, reason, replayed_at, at) VALUES ($1, $2, $3, $4, $5, $6, $7,"
                " $8)", "orders", "e-pii", 1, "dead", None,
                "Permanent: no address for jane.doe@example.com", None, "2026-11-29T10:00:02Z")
            await tx.execute(
                "INSERT INTO deliveries (subscription, message_id, event_id, type, attempt,"
                " status_code, error, latency_ms, at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8,"
                " $9)", "portal", "n-pii", "e-pii", "order.held", 1, None,
                "refused: customer phone (555) 123-4567 unknown", 3.5, "2026-11-29T10:00:03Z")
        assert 303 == (await login(console)).status
        response = await console.get("/api/trace", params={"id": "5820982911946154508"})
        assert 200 == response.status
        text = await response.text()
        assert "jane.doe@example.com" not in text and "123-4567 unknown" not in text
        [event] = orjson.loads(text)["events"]
        assert ("e-pii", [["order_id", "5820982911946154508"], ["sku", "MUG-555-123-4567"]],
                "2026-11-29T10:00:00Z") == (event["event_id"], event["keys"],
                                            event["received_at"])
        assert "Permanent: no address for [redacted]" == event["attempts"][0]["reason"]
        [note] = event["notifications"]
        assert "refused: customer phone [redacted] unknown" == note["deliveries"][0]["error"]
