"""`webhook-router trace ID` against both stores (and the real RabbitMQ where consumers run):
one id's story from the ingress to the subscriber's answer."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import io
import re
from collections.abc import AsyncIterator
from pathlib import Path

import aio_pika
import orjson
import pytest
from ports import free_port
from test_cli import run_cli
from test_consumer_process import wait_until
from test_ingress import SHOPIFY_ORDER
from test_labels import SHOPIFY_ORDER as SHOPIFY_FIXTURE_ORDER
from test_labels import (  # noqa: F401 (fixtures)
    becomes,
    carrier,
    on,
    one,
    running,
    stock_shopify_order,
)
from test_notifications import notifying, receivers, subscription  # noqa: F401 (fixtures)
from test_rejected_requests import forged
from test_runner import DOWNSTREAM, count_effect, wait_for

from consumers.cli import consumer_spec
from consumers.order_admin import orders_command
from consumers.runner import ConsumerSpec, Runner
from consumers.store import open_store
from consumers.trace import trace
from router.broker.dlq import dlq_command
from router.providers import signed_headers

pytestmark = pytest.mark.integration

ORDER = {"id": "shopify-delivery-1042", "type": "order.created", "source": "shopify",
         "received_at": "2026-11-29T10:00:00.000Z", "occurred_at": "2026-11-29T09:59:58Z",
         "schema": "order.created/v1",
         "data": {"order_id": "1042", "status": "received", "created_at": "2026-11-29T09:59:58Z",
                  "lines": [{"sku": "MUG-1", "quantity": 1}],
                  "shipping_address": {"name": "Jane Doe", "line1": "1 Main St",
                                       "city": "Austin", "country": "US"}}}


async def publish(amqp, topology, event: dict) -> None:
    channel = await amqp.channel(publisher_confirms=True)
    exchange = await channel.get_exchange(topology.exchange)
    await exchange.publish(
        aio_pika.Message(orjson.dumps(event), delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
                         message_id=event["id"], type=event["type"], headers={"attempt": 0}),
        routing_key=event["type"])
    await channel.close()


@contextlib.asynccontextmanager
async def consumers(store, settings, *specs: ConsumerSpec) -> AsyncIterator[None]:
    """Runners for `specs` on `store` until the block ends."""
    stop = asyncio.Event()
    tasks = [asyncio.create_task(Runner(spec, store, settings.broker, prefetch=10).run(stop))
             for spec in specs]
    try:
        yield
    finally:
        stop.set()
        await asyncio.wait_for(asyncio.gather(*tasks), 10)


async def outcomes(store, event_id: str) -> list[tuple[str, str]]:
    async with store.transaction() as tx:
        rows = await tx.fetch("SELECT consumer, outcome FROM consumer_attempts"
                              " WHERE event_id = $1 ORDER BY id", event_id)
    return [(row["consumer"], row["outcome"]) for row in rows]


async def trace_cli(store_url: str, ident: str, test_env, *more: str) -> tuple[int, str, str]:
    return await run_cli("trace", ident, "--store", store_url, *more, env=test_env)


def moments(text: str) -> list[str]:
    """The trace's lines without their times: what happened, in order."""
    return [line.split("  ", 2)[-1].strip() if line.startswith("  20") else line.strip()
            for line in text.splitlines()]


class TestTraceOfStoredRows:
    async def test_every_table_joins_into_one_timeline(self, store, store_url):
        """An event recorded by audit, its attempts, its notification and the delivery are
        found by its id, its SKU, its order id and the notification's id."""
        async with store.transaction() as tx:
            await tx.execute(
                "INSERT INTO audit_events VALUES ($1, $2, $3, $4, $5, $6, $7)", "e-1", "shopify",
                "order.created", "order.created/v1", "2026-11-29T10:00:00Z", None,
                "2026-11-29T10:00:01Z")
            await tx.executemany("INSERT INTO event_keys VALUES ($1, $2, $3)",
                                 [("e-1", "order_id", "1042"), ("e-1", "sku", "MUG-1")])
            await tx.executemany(
                "INSERT INTO consumer_attempts (consumer, event_id, attempt, outcome,"
                " delay_seconds, reason, replayed_at, at) VALUES ($1, $2, $3, $4, $5, $6, $7,"
                " $8)", [("orders", "e-1", 1, "retry", 5, "StoreBusy: locked", None,
                          "2026-11-29T10:00:02Z"),
                         ("orders", "e-1", 2, "allocated", None, None, None,
                          "2026-11-29T10:00:07Z")])
            await tx.add_outbox("order.allocated", "notify.order.allocated", b"{}",
                                "e-1:order.allocated:1042", cause="e-1")
            await tx.execute(
                "INSERT INTO deliveries (subscription, message_id, event_id, type, attempt,"
                " status_code, error, latency_ms, at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8,"
                " $9)", "portal", "e-1:order.allocated:1042", "e-1", "order.allocated", 1, 200,
                None, 12.5, "2026-11-29T10:00:08Z")
        for ident in ("e-1", "MUG-1", "1042", "e-1:order.allocated:1042"):
            result = await trace(store_url, ident)
            assert ["e-1"] == [event["event_id"] for event in result["events"]], ident
        event = (await trace(store_url, "1042"))["events"][0]
        assert ("shopify", "order.created", True) == (event["source"], event["type"],
                                                      event["audit"])
        assert [["order_id", "1042"], ["sku", "MUG-1"]] == event["keys"]
        assert ["retry", "allocated"] == [row["outcome"] for row in event["attempts"]]
        [note] = event["notifications"]
        assert ("order.allocated", [("portal", 200)]) == (
            note["kind"], [(d["subscription"], d["status_code"]) for d in note["deliveries"]])

    async def test_the_orders_write_backs_take_their_places_in_time(
            self, store, store_url, test_env, settings, make_console):
        """An order's write-backs to its store (the storefront consumer's writebacks rows)
        show where they happened among the order's events, in `trace` and in the console's
        Search: one done, with the store's id for it, between the order and the carrier's
        update; one still pending after them."""
        async with store.transaction() as tx:
            await tx.execute("INSERT INTO orders (order_id, source, status) VALUES ($1, $2, $3)",
                             "1042", "shopify", "shipped")
            for event_id, kind, at in (("e-1", "order.created", "2026-11-29T10:00:00Z"),
                                       ("e-2", "shipment.updated", "2026-11-29T10:00:20Z")):
                await tx.execute(
                    "INSERT INTO audit_events VALUES ($1, $2, $3, $4, $5, $6, $7)", event_id,
                    "shopify", kind, f"{kind}/v1", at, None, at)
                await tx.execute("INSERT INTO event_keys VALUES ($1, $2, $3)", event_id,
                                 "order_id", "1042")
            await tx.executemany(
                "INSERT INTO writebacks (order_id, tracking_code, source, state, external_id,"
                " already_done, attempts, created_at, updated_at) VALUES ($1, $2, $3, $4, $5,"
                " $6, $7, $8, $8)",
                [("1042", "9400TRACK1", "shopify", "done", "gid://shopify/Fulfillment/7", 0, 1,
                  "2026-11-29T10:00:10Z"),
                 ("1042", "9400TRACK2", "shopify", "pending", None, None, 3,
                  "2026-11-29T10:00:30Z")])
        status, out, err = await trace_cli(store_url, "1042", test_env)
        assert 0 == status, err
        lines = [line for line in moments(out) if not line.startswith(("recorded", "no "))]
        assert ["event e-1", "received      order.created from shopify (order.created/v1)",
                "write-back of order 1042",
                "write-back    shopify done: tracking 9400TRACK1, gid://shopify/Fulfillment/7",
                "event e-2", "received      shipment.updated from shopify (shipment.updated/v1)",
                "write-back of order 1042",
                "write-back    shopify pending: tracking 9400TRACK2 (attempt 3)",
                "order 1042 is now shipped"] == lines
        result = (await trace(store_url, "1042"))["writebacks"]
        assert [("9400TRACK1", "done"), ("9400TRACK2", "pending")] == [
            (row["tracking_code"], row["state"]) for row in result]
        from test_console_server import console_settings, login  # it imports this module

        console = await make_console(console_settings(settings, store_url))
        assert 303 == (await login(console)).status
        page = await (await console.get("/search", params={"id": "1042"})).text()
        places = [page.index(said) for said in (
            "Event <code>e-1</code>",
            "Write-back to shopify <small>tracking <code>9400TRACK1</code>",
            "<strong>done</strong>: <code>gid://shopify/Fulfillment/7</code>",
            "Event <code>e-2</code>",
            "Write-back to shopify <small>tracking <code>9400TRACK2</code>",
            "<strong>pending</strong> (attempt 3)",
            "Order <code>1042</code> is now <strong>shipped</strong>")]
        assert places == sorted(places), page

    async def test_an_unknown_id_exits_1_saying_so(self, store, store_url, test_env):
        """Nothing matches: exit 1 with a clear message, which says too when the ingress's
        refusals could not be read; --json gives an empty list."""
        ingress = f"http://127.0.0.1:{free_port()}"  # nobody listens
        code, out, err = await trace_cli(store_url, "no-such-id", test_env, "--ingress", ingress)
        assert (1, "") == (code, out)
        assert "nothing matches 'no-such-id'" in err
        assert f"the ingress's refusals were not read: {ingress}/rejections: " in err
        code, out, err = await trace_cli(store_url, "no-such-id", test_env, "--json",
                                         "--ingress", "-")
        assert (1, {"id": "no-such-id", "events": [], "more": False, "order": None,
                    "label": None, "writebacks": [], "refused": None, "refused_error": None}) == (
                        code, orjson.loads(out))
        assert "no refused delivery" not in err

    async def test_a_delivery_refused_at_the_ingress(self, store, store_url, test_env,
                                                     client, settings, queue_depths):
        """A forged Shopify order refused by a live ingress: its delivery id traces to the
        refusal (time, 401 invalid_signature, source, client), exit 0; nothing reached a
        queue."""
        headers = forged(settings)
        response = await client.post("/webhooks/shopify", data=SHOPIFY_ORDER, headers=headers)
        assert (401, "invalid_signature") == (response.status, (await response.json())["error"])
        ingress = str(client.make_url("")).rstrip("/")
        delivery = headers["X-Shopify-Event-Id"]
        code, out, err = await trace_cli(store_url, delivery, test_env, "--ingress", ingress)
        assert 0 == code, err
        lines = moments(out)
        assert [f"delivery {delivery} refused by the ingress",
                "refused       401 invalid_signature (source shopify, client 127.0.0.1)"
                ] == lines
        code, out, _ = await trace_cli(store_url, delivery, test_env, "--ingress", ingress,
                                       "--json")
        [refusal] = orjson.loads(out)["refused"]
        assert ("shopify", 401, "invalid_signature", delivery) == (
            refusal["source"], refusal["status"], refusal["reason"], refusal["delivery_id"])
        assert 0 == sum((await queue_depths()).values())

    async def test_stored_control_characters_are_printed_escaped(self, store, store_url,
                                                                 test_env):
        """An order whose SKU, note and every other stored text carry ESC, CR, BEL, a C1 CSI
        and a bidi override: the text and the --json output hold none of them raw, only
        their escapes, one line per moment (nothing forged); --json still reads back."""
        forged = "\x1b[2J\r\x07\x9b31m\u202eevil"
        escaped = "\\x1b[2J\\r\\x07\\x9b31m\\u202eevil"
        sku, event_id = f"MUG-{forged}", f"e-{forged}"
        async with store.transaction() as tx:
            await tx.execute(
                "INSERT INTO audit_events VALUES ($1, $2, $3, $4, $5, $6, $7)", event_id,
                f"shop{forged}", f"order.created{forged}", f"schema{forged}",
                "2026-11-29T10:00:00Z", None, "2026-11-29T10:00:01Z")
            await tx.executemany("INSERT INTO event_keys VALUES ($1, $2, $3)",
                                 [(event_id, "order_id", f"1042{forged}"),
                                  (event_id, "sku", sku)])
            await tx.execute(
                "INSERT INTO consumer_attempts (consumer, event_id, attempt, outcome,"
                " delay_seconds, reason, replayed_at, at) VALUES ($1, $2, $3, $4, $5, $6, $7,"
                " $8)", "orders", event_id, 1, "dead", None,
                f"Permanent: note {forged}\nforged line", None, "2026-11-29T10:00:02Z")
            await tx.add_outbox(f"order.held{forged}", "notify.order.held", b"{}",
                                f"n-{forged}", cause=event_id)
            await tx.execute(
                "INSERT INTO deliveries (subscription, message_id, event_id, type, attempt,"
                " status_code, error, latency_ms, at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8,"
                " $9)", f"portal{forged}", f"n-{forged}", event_id, "order.held", 1, None,
                f"https://portal.example/{forged}: refused", 3.5, "2026-11-29T10:00:03Z")
        code, text, err = await trace_cli(store_url, sku, test_env)
        assert 0 == code, err
        code, as_json, err = await trace_cli(store_url, sku, test_env, "--json")
        assert 0 == code, err
        for out in (text, as_json):
            assert all(c.isprintable() or c == "\n" for c in out), repr(out)
        # event, received, recorded, dead-lettered, notification, its delivery
        assert 6 == len(text.splitlines())
        for said in (f"event e-{escaped}", f"from shop{escaped}", f"sku MUG-{escaped}",
                     f"note {escaped}\\nforged line", f"order.held{escaped} n-{escaped}",
                     f"-> portal{escaped}", f"portal.example/{escaped}: refused"):
            assert said in text, said
        [event] = orjson.loads(as_json)["events"]
        [delivery] = event["notifications"][0]["deliveries"]
        assert (event_id, ["order_id", f"1042{forged}"], f"portal{forged}") == (
            event["event_id"], event["keys"][0], delivery["subscription"])
        assert "\\u001b[2J\\r\\u0007\\u009b31m\\u202eevil" in as_json

    async def test_no_store_there_exits_2_and_creates_none(self, tmp_path: Path, test_env):
        """Pointed where no store is, it names the store, says so, and creates nothing."""
        path = tmp_path / "none.sqlite3"
        code, _, err = await trace_cli(f"sqlite:///{path}", "1042", test_env)
        assert 2 == code
        assert f"store: sqlite:///{path}" in err and "nothing was created" in err
        assert not path.exists()


class TestTraceOfConsumedEvents:
    async def test_an_applied_order_by_its_order_id(self, amqp, topology, store, store_url,
                                                    settings, test_env):
        """An order taken by audit and orders: received, recorded, the orders consumer's
        outcome and the notification it produced; --json says the same."""
        await publish(amqp, topology, ORDER)
        async with consumers(store, settings, consumer_spec("audit", settings),
                             consumer_spec("orders", settings)):
            await wait_for(lambda: _has(store, ORDER["id"], [("audit", "recorded"),
                                                              ("orders", "backordered")]))
        code, out, _ = await trace_cli(store_url, "1042", test_env)
        assert 0 == code, out
        lines = moments(out)
        assert lines[0] == f"event {ORDER['id']}"
        assert lines[1].startswith("received      order.created from shopify")
        assert lines[2] == "recorded      by audit (order_id 1042, sku MUG-1)"
        assert "orders        attempt 1: backordered" in lines
        assert any(line.startswith("notification  order.backordered") for line in lines)
        code, out, _ = await trace_cli(store_url, "1042", test_env, "--json")
        [event] = orjson.loads(out)["events"]
        assert ("shopify", "2026-11-29T10:00:00.000Z") == (event["source"],
                                                            event["received_at"])
        assert ("orders", "backordered") in [(a["consumer"], a["outcome"])
                                             for a in event["attempts"]]
        assert ["order.backordered"] == [n["kind"] for n in event["notifications"]]

    async def test_a_notification_failed_then_delivered(
            self, amqp, topology, store, store_url, settings, test_env,
            receivers, notifying):  # noqa: F811 (the fixtures imported above)
        """An order whose notification the portal refused twice (503) and then took: the
        trace shows the order applied and the notification's three delivery attempts, each
        with its status and latency."""
        receivers.mode["portal"] = "flaky"
        await notifying([subscription("portal", receivers.url("portal"))])
        await publish(amqp, topology, ORDER)
        async with consumers(store, settings, consumer_spec("audit", settings),
                             consumer_spec("orders", settings)):
            async def delivered() -> bool:
                async with store.transaction() as tx:
                    return 204 == await tx.fetchval(
                        "SELECT status_code FROM deliveries WHERE event_id = $1"
                        " AND status_code = 204", ORDER["id"])

            await wait_for(delivered, 30)
        code, out, err = await trace_cli(store_url, "1042", test_env, "--ingress", "-")
        assert 0 == code, err
        lines = moments(out)
        assert "orders        attempt 1: backordered" in lines
        notes = [line for line in lines if line.startswith("notification")]
        assert 1 == len(notes) and notes[0].startswith("notification  order.backordered")
        deliveries = [re.sub(r" in \d+ ms$", " in N ms", "->" + line.split("->", 1)[-1])
                      for line in out.splitlines() if "-> portal" in line]
        assert ["-> portal attempt 1: HTTP 503 in N ms", "-> portal attempt 2: HTTP 503 in N ms",
                "-> portal attempt 3: HTTP 204 in N ms"] == deliveries

    async def test_retries_dead_letter_and_replay(self, amqp, topology, store, store_url,
                                                  settings, test_env):
        """A message failing on every rung: the trace shows each retry with its delay, the
        dead-lettering with its reason, and after `dlq replay`, the applied outcome."""
        event = {**ORDER, "id": "flaky-1", "data": {"quantity": 1, "flaky": True}}
        DOWNSTREAM["up"] = False
        try:
            await publish(amqp, topology, event)
            async with consumers(store, settings, consumer_spec("audit", settings),
                                 ConsumerSpec("orders", count_effect)):
                await wait_for(lambda: _has(store, "flaky-1", [("orders", "dead")]), 30)
                DOWNSTREAM["up"] = True
                assert 0 == await dlq_command(settings.broker, "replay", "orders",
                                              out=io.StringIO())
                await wait_for(lambda: _has(store, "flaky-1", [("orders", "processed")]))
        finally:
            DOWNSTREAM["up"] = True
        code, out, _ = await trace_cli(store_url, "flaky-1", test_env)
        assert 0 == code, out
        reason = "ConnectionError: downstream is down"
        attempts = [line for line in moments(out) if line.startswith("orders ")]
        assert [f"orders        attempt 1: retry in 1 s: {reason}",
                f"orders        attempt 2: retry in 2 s: {reason}",
                f"orders        attempt 3: dead-lettered: {reason}"] == attempts[:3]
        assert attempts[3].startswith("orders        attempt 1: processed (replayed at ")
        assert 4 == len(attempts)


async def _has(store, event_id: str, expected: list[tuple[str, str]]) -> bool:
    found = await outcomes(store, event_id)
    return all(item in found for item in expected)


TRACKER_FIXTURE = (Path(__file__).parents[1] / "fixtures" / "providers" / "easypost"
                   / "tracker-updated.json").read_bytes()


async def ship_the_fixture_order(store_url, settings, make_client) -> tuple[dict, str]:
    """Shopify's documented order 450789469, stocked and signed through the ingress, gets its
    label (audit, orders, labels and shipping consumers running), and EasyPost's documented
    tracker.updated for the label's tracking code (it names no order) ships it. (the label
    row, its tracking code)"""
    client = await make_client(settings)
    async with open_store(store_url) as store, \
            running(settings, store, "audit", "orders", "labels", "shipping"):
        await stock_shopify_order(store)
        response = await client.post("/webhooks/shopify", data=SHOPIFY_FIXTURE_ORDER,
                                     headers=signed_headers(settings, "shopify",
                                                            SHOPIFY_FIXTURE_ORDER,
                                                            "orders/create"))
        assert 202 == response.status, await response.text()
        await wait_until(becomes(store, "450789469", "label_purchased"))
        label = await one(store, "SELECT * FROM labels WHERE order_id = $1", "450789469")
        assert label is not None
        code = label["tracking_code"]
        tracker = orjson.loads(TRACKER_FIXTURE)
        tracker["id"] = f"evt_{code}"
        tracker["result"]["tracking_code"] = code
        body = orjson.dumps(tracker)
        response = await client.post("/webhooks/easypost", data=body, headers=signed_headers(
            settings, "easypost", body, None))
        assert 202 == response.status, await response.text()
        await wait_until(becomes(store, "450789469", "shipped"))
        await wait_until(lambda: _has(store, f"evt_{code}", [("audit", "recorded")]))
    return label, code


class TestTraceOfAnOrderToTheDoor:
    async def test_the_carriers_tracker_update_is_in_the_orders_trace(
            self, store_url, on, carrier, make_client, make_console,  # noqa: F811 (fixtures)
            test_env):
        """A stocked Shopify order gets its label, and EasyPost's documented tracker.updated
        for the label's tracking code (it names no order) ships it: traced by the order id,
        the order's event, its label and the tracker event come in time order, and the
        trace ends with the order's status; --json and the console's Search say the same."""
        label, code = await ship_the_fixture_order(store_url, on, make_client)
        status, out, err = await trace_cli(store_url, "450789469", test_env)
        assert 0 == status, err
        lines = moments(out)
        blocks = [line for line in lines if line.startswith(("event ", "label of "))]
        assert ["label of order 450789469", f"event evt_{code}"] == blocks[-2:]
        assert blocks[0].startswith("event ") and len(blocks) == 3
        assert f"bought: USPS GroundAdvantage, tracking {code}, label {label['label_url']}" \
            in out
        assert any(line.startswith("received      shipment.updated from easypost")
                   for line in lines)
        assert "shipping      attempt 1: advanced" in lines
        assert "order 450789469 is now shipped" == lines[-1]
        status, out, err = await trace_cli(store_url, "450789469", test_env, "--json")
        assert 0 == status, err
        result = orjson.loads(out)
        assert ["order.created", "shipment.updated"] == [e["type"] for e in result["events"]]
        assert f"evt_{code}" == result["events"][-1]["event_id"]
        assert ("shipped", "bought", code) == (result["order"]["status"],
                                               result["label"]["state"],
                                               result["label"]["tracking_code"])
        from test_console_server import console_settings, login  # it imports this module

        console = await make_console(console_settings(on, store_url))
        assert 303 == (await login(console)).status
        page = await (await console.get("/search", params={"id": "450789469"})).text()
        order_event, label_block, tracker_event, final = (page.index(said) for said in (
            f"Event <code>{result['events'][0]['event_id']}</code>",
            '<section class="event" id="label">', f"Event <code>evt_{code}</code>",
            "Order <code>450789469</code> is now <strong>shipped</strong>"))
        assert order_event < label_block < tracker_event < final
        assert "received <strong>shipment.updated</strong> from easypost" in page

    async def test_orders_show_of_the_shipped_order_says_what_became_of_it(
            self, store_url, on, carrier, make_client):  # noqa: F811 (fixtures)
        """`orders show` of that shipped order: each line shipped from where it was reserved
        (not waiting for stock), no allocation, its label and tracking code, its shipments,
        and the tracker event as the last change."""
        label, code = await ship_the_fixture_order(store_url, on, make_client)
        settings = dataclasses.replace(
            on, consumers=dataclasses.replace(on.consumers, store=store_url))
        out = io.StringIO()
        assert 0 == await orders_command(settings, "show", order_id="450789469", out=out)
        text = out.getvalue()
        lines = [line for line in text.splitlines() if line.startswith("  line ")]
        assert lines and all(line.endswith("shipped from default") for line in lines), text
        assert "waiting for stock" not in text and "allocation" not in text
        assert f"  label bought: USPS GroundAdvantage, tracking {code}, label " \
               f"{label['label_url']}" in text
        assert f"  shipment {code} (fedex): in_transit at " in text
        assert re.search(rf"\n  last change \S+: event evt_{code} \(shipment\.updated\),"
                         r" shipping: advanced\n", text), text

    async def test_orders_show_prints_stored_text_escaped(self, store, store_url, settings):
        """An order whose SKU, source, label and shipment carry ESC, CR and a bidi override:
        `orders show` prints only their escapes, one line per thing (nothing forged)."""
        forged = "\x1b[2J\r\u202eevil"
        async with store.transaction() as tx:
            await tx.execute("INSERT INTO orders (order_id, source, status, created_at)"
                             " VALUES ('o-esc', $1, 'shipped', '2026-12-07T10:00:00Z')",
                             f"shop{forged}")
            await tx.execute("INSERT INTO order_lines (order_id, line_no, sku, quantity,"
                             " reserved, location) VALUES ('o-esc', 1, $1, 1, 0, $2)",
                             f"MUG-{forged}", f"wh{forged}")
            await tx.execute(
                "INSERT INTO labels (order_id, purchase, reference, carrier_api, state,"
                " tracking_code, carrier, label_url, created_at, updated_at) VALUES ('o-esc',"
                " 1, 'o-esc', 'easypost', 'bought', $1, 'USPS', $2, '2026-12-07T10:01:00Z',"
                " '2026-12-07T10:01:00Z')", f"T{forged}", f"https://l.example/{forged}")
            await tx.execute("INSERT INTO shipments (tracking_code, carrier, order_id, status,"
                             " rank, occurred_at) VALUES ($1, 'usps', 'o-esc', 'in_transit', 2,"
                             " '2026-12-07T11:00:00Z')", f"T{forged}")
        out = io.StringIO()
        shown = dataclasses.replace(
            settings, consumers=dataclasses.replace(settings.consumers, store=store_url))
        assert 0 == await orders_command(shown, "show", order_id="o-esc", out=out)
        text = out.getvalue()
        assert all(c.isprintable() or c == "\n" for c in text), repr(text)
        escaped = "\\x1b[2J\\r\\u202eevil"
        for said in (f"from shop{escaped}", f"MUG-{escaped}", f"shipped from wh{escaped}",
                     f"tracking T{escaped}", f"shipment T{escaped} (usps): in_transit"):
            assert said in text, said
        # order, payment, created, the line, label, shipment, last change (the label's)
        assert 7 == len(text.splitlines()), text
