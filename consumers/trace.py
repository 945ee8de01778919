"""`webhook-router trace ID`: one answer for one id, from the store.

ID is an event id (the provider's delivery id), an order id, a tracking code, a SKU, or a
notification id. An order's events include those of its shipments' and its label's tracking
codes (a carrier's tracker update names no order). For each event it names, oldest first:

    received     by the ingress (source, type, received_at, occurred_at)  audit_events
    recorded     by the audit consumer (recorded_at)                      audit_events
    attempts     each consumer's, with its outcome, retry delay, dead-letter reason and
                 whether it was a replay                                  consumer_attempts
    notifications the event caused (the outbox row's `cause`) and each delivery attempt
                 (subscription, HTTP status or error, latency)            outbox, deliveries

For an order id, its label (the labels row: state, carrier, service, tracking code, label URL)
and each write-back of a tracking number to its store (the writebacks row: state, store, the
store's id for what it wrote) take their places in time, and the trace ends with the order's
current status.

Events are found by id in audit_events, event_keys, consumer_attempts and deliveries, so
an event the audit consumer never saw still shows what the other consumers did with it.
The store is opened without creating one.

A delivery the ingress refused is no event: with the ingress's base URL given, its
/rejections is asked too, and the refusals of a delivery by that id are shown first
(`refused`: time, status, reason, source, client), as long as the ingress still keeps them.
"""

from __future__ import annotations

import sys
from typing import Any, TextIO

import aiohttp
import orjson

from consumers.audit import KEY_KINDS
from consumers.store import Tx, open_store, placeholders
from router.rejections import RejectionsUnavailable, fetch, of_delivery
from router.terminal import printable

DEFAULT_LIMIT = 50

# The tracking codes of the order `ident` names, if it is one: its shipments' and its label's.
_ORDER_CODES = (
    "SELECT tracking_code FROM shipments WHERE order_id = $1"
    " UNION SELECT tracking_code FROM labels WHERE order_id = $1 AND tracking_code IS NOT NULL"
)
_MATCHES = (
    "SELECT m.event_id FROM ("
    " SELECT event_id FROM audit_events WHERE event_id = $1"
    f" UNION SELECT event_id FROM event_keys WHERE kind IN ({placeholders(3, first=3)})"
    " AND value = $1"
    f" UNION SELECT event_id FROM event_keys WHERE kind = 'tracking_code'"
    f" AND value IN ({_ORDER_CODES})"
    " UNION SELECT event_id FROM shipment_events WHERE event_id IS NOT NULL"
    f" AND tracking_code IN ({_ORDER_CODES})"
    " UNION SELECT event_id FROM consumer_attempts WHERE event_id = $1"
    " UNION SELECT cause FROM outbox WHERE message_id = $1 AND cause IS NOT NULL"
    " UNION SELECT event_id FROM deliveries WHERE message_id = $1 AND event_id IS NOT NULL"
    ") m LEFT JOIN audit_events a ON a.event_id = m.event_id"
    " ORDER BY COALESCE(a.received_at, '') DESC, m.event_id DESC LIMIT $2"
)


async def find_events(tx: Tx, ident: str, limit: int = DEFAULT_LIMIT) -> tuple[list[str], bool]:
    """The ids of the newest `limit` events `ident` names, oldest first, and whether there
    were more."""
    rows = await tx.fetch(_MATCHES, ident, limit + 1, *KEY_KINDS)
    ids = [row["event_id"] for row in rows]
    return ids[:limit][::-1], len(ids) > limit


async def event_trace(tx: Tx, event_id: str) -> dict[str, Any]:
    """What the store knows of one event: its audit record (None where the audit consumer
    has not recorded it), its keys, each consumer's attempts and its notifications with
    their delivery attempts."""
    audit = await tx.fetchrow(
        "SELECT source, type, schema, received_at, occurred_at, recorded_at FROM audit_events"
        " WHERE event_id = $1", event_id)
    keys = await tx.fetch("SELECT kind, value FROM event_keys WHERE event_id = $1"
                          " ORDER BY kind, value", event_id)
    attempts = await tx.fetch(
        "SELECT consumer, attempt, outcome, delay_seconds, reason, replayed_at, at"
        " FROM consumer_attempts WHERE event_id = $1 ORDER BY at, id", event_id)
    outbox = await tx.fetch(
        "SELECT message_id, kind, created_at, sent_at FROM outbox WHERE cause = $1 ORDER BY id",
        event_id)
    deliveries = await tx.fetch(
        "SELECT message_id, type, subscription, attempt, status_code, error, latency_ms, at"
        " FROM deliveries WHERE event_id = $1 ORDER BY at, id", event_id)
    notifications = {row["message_id"]: {**row, "deliveries": []} for row in outbox}
    for row in deliveries:
        # Delivered notifications the outbox no longer names (written before it kept causes).
        notification = notifications.setdefault(row["message_id"], {
            "message_id": row["message_id"], "kind": row["type"], "created_at": None,
            "sent_at": None, "deliveries": []})
        notification["deliveries"].append({k: row[k] for k in (
            "subscription", "attempt", "status_code", "error", "latency_ms", "at")})
    received = dict.fromkeys(("source", "type", "schema", "received_at", "occurred_at",
                              "recorded_at"))
    return {"event_id": event_id, **received, **(audit or {}), "audit": audit is not None,
            "keys": [[row["kind"], row["value"]] for row in keys], "attempts": attempts,
            "notifications": list(notifications.values())}


_LABEL = ("SELECT state, carrier, service, tracking_code, label_url, tracking_url, hold_reason,"
          " message, refund_status, created_at, updated_at FROM labels WHERE order_id = $1")


async def order_label(tx: Tx, order_id: str) -> dict[str, Any] | None:
    """The order's label as the labels consumer keeps it (None: it has none)."""
    return await tx.fetchrow(_LABEL, order_id)


async def order_writebacks(tx: Tx, order_id: str) -> list[dict[str, Any]]:
    """What the storefront consumer told (or is telling) the order's store, oldest first."""
    return await tx.fetch(
        "SELECT source, tracking_code, state, external_id, already_done, attempts, created_at,"
        " updated_at FROM writebacks WHERE order_id = $1 ORDER BY updated_at",
        order_id)


async def trace(store_url: str, ident: str, limit: int = DEFAULT_LIMIT, *,
                http: aiohttp.ClientSession | None = None, ingress: str | None = None
                ) -> dict[str, Any]:
    """The trace of `ident`: {"id", "events": [event_trace, ...] oldest first, "more",
    "order": where the order `ident` names stands now ({"status", "hold_reason",
    "updated_at"}; None: no such order), "label": its order_label, "writebacks": its
    order_writebacks ([] when none or no such order), "refused": the ingress's
    refusals of a delivery by that id (None where not asked or not answered, and then
    "refused_error" says why)}. `http` is needed with `ingress`."""
    async with open_store(store_url, create=False) as store, store.transaction() as tx:
        ids, more = await find_events(tx, ident, limit)
        order = await tx.fetchrow(
            "SELECT status, hold_reason, updated_at FROM orders WHERE order_id = $1", ident)
        result = {"id": ident, "events": [await event_trace(tx, i) for i in ids],
                  "more": more, "order": order,
                  "label": await order_label(tx, ident) if order else None,
                  "writebacks": await order_writebacks(tx, ident) if order else [],
                  "refused": None, "refused_error": None}
    if ingress is not None and http is not None:
        try:
            result["refused"] = of_delivery(await fetch(http, ingress), ident)
        except RejectionsUnavailable as exc:
            result["refused_error"] = f"{ingress}/rejections: {exc}"
    return result


def _attempt(row: dict[str, Any]) -> str:
    outcome = row["outcome"]
    if outcome == "retry":
        said = f"retry in {row['delay_seconds']} s: {row['reason']}"
    elif outcome == "dead":
        said = f"dead-lettered: {row['reason']}"
    else:
        said = outcome
    replay = f" (replayed at {row['replayed_at']})" if row["replayed_at"] else ""
    return f"{row['at']}  {row['consumer']:<13} attempt {row['attempt']}: {said}{replay}"


def _delivery(row: dict[str, Any]) -> str:
    answer = f"HTTP {row['status_code']}" if row["status_code"] is not None else row["error"]
    latency = f"{row['latency_ms']:.0f} ms" if row["latency_ms"] is not None else "-"
    return (f"{row['at']}    -> {row['subscription']} attempt {row['attempt']}: {answer}"
            f" in {latency}")


def label_said(label: dict[str, Any]) -> str:
    """What a labels row says, in a few words: its state and what it holds."""
    said = f"{label['state']}: {label['carrier'] or '-'} {label['service'] or '-'}, tracking " \
           f"{label['tracking_code'] or '-'}, label {label['label_url'] or '-'}"
    if label["hold_reason"]:
        said += f" (held: {label['hold_reason']}: {label['message'] or '-'})"
    if label["refund_status"]:
        said += f" (refund {label['refund_status']})"
    return said


def writeback_said(row: dict[str, Any]) -> str:
    """What a writebacks row says: the store, the tracking number and what became of it."""
    said = f"{row['source']} {row['state']}: tracking {row['tracking_code']}"
    if row["external_id"]:
        said += f", {row['external_id']}"
    if row["already_done"]:
        said += " (found at the store: written by an earlier attempt)"
    if row["state"] != "done":
        said += f" (attempt {row['attempts']})"
    return said


def _began(event: dict[str, Any]) -> str:
    """When an event first shows: received, else its first attempt ('' if neither)."""
    return event["received_at"] or min((row["at"] for row in event["attempts"]), default="")


def placed_asides(result: dict[str, Any]) -> list[list[dict[str, Any]]]:
    """The order's label and write-backs, each placed before the first event that began
    after its last change: one list per event, and a last one for those after every event.
    Each aside is {"kind": "label" | "writeback", "row": the stored row}. `render` and the
    console's Search show them so."""
    asides = [{"kind": "label", "row": result["label"]}] if result.get("label") else []
    asides += [{"kind": "writeback", "row": row} for row in result.get("writebacks") or []]
    asides.sort(key=lambda aside: aside["row"].get("updated_at") or "")
    events = result.get("events") or []
    places: list[list[dict[str, Any]]] = [[] for _ in range(len(events) + 1)]
    for aside in asides:
        at = aside["row"].get("updated_at") or ""
        index = next((i for i, event in enumerate(events) if _began(event) > at), len(events))
        places[index].append(aside)
    return places


def render(result: dict[str, Any], out: TextIO) -> None:
    """The trace as text: one block per event, each line a moment, oldest first. Each line
    is escaped whole (router.terminal): ids, SKUs, reasons and URLs are stored or sent by
    others, and must not move the operator's cursor or forge lines."""

    def say(line: str) -> None:
        print(printable(line), file=out)

    if result["refused"]:
        say(f"delivery {result['id']} refused by the ingress")
        for row in result["refused"]:
            say(f"  {row['at']}  refused       {row['status']} {row['reason']} "
                f"(source {row['source']}, client {row['client'] or '-'})")
    places = placed_asides(result)  # the order's label and write-backs, in time

    def say_asides(place: list[dict[str, Any]]) -> None:
        for aside in place:
            row = aside["row"]
            if aside["kind"] == "label":
                say(f"label of order {result['id']}")
                say(f"  {row['updated_at']}  label         {label_said(row)}")
            else:
                say(f"write-back of order {result['id']}")
                say(f"  {row['updated_at']}  write-back    {writeback_said(row)}")

    for event, place in zip(result["events"], places, strict=False):
        say_asides(place)
        say(f"event {event['event_id']}")
        if event["audit"]:
            occurred = f", occurred {event['occurred_at']}" if event["occurred_at"] else ""
            say(f"  {event['received_at'] or '-'}  received      {event['type']} from "
                f"{event['source'] or '-'} ({event['schema'] or 'no schema'}{occurred})")
            keys = ", ".join(f"{kind} {value}" for kind, value in event["keys"]) or "no keys"
            say(f"  {event['recorded_at']}  recorded      by audit ({keys})")
        else:
            say("  not recorded by audit (was the audit consumer running?)")
        # The audit consumer's own "recorded" is the line above; its retries are shown.
        attempts = [row for row in event["attempts"]
                    if (row["consumer"], row["outcome"]) != ("audit", "recorded")]
        for row in attempts:
            say(f"  {_attempt(row)}")
        if not attempts:
            say("  no consumer has taken it yet")
        for note in event["notifications"]:
            sent = f"sent {note['sent_at']}" if note["sent_at"] else "not yet sent"
            say(f"  {note['created_at'] or '-'}  notification  {note['kind']} "
                f"{note['message_id']} ({sent})")
            for row in note["deliveries"]:
                say(f"  {_delivery(row)}")
    say_asides(places[-1])
    if result["more"]:
        say(f"(only the newest {len(result['events'])} events; --limit shows more)")
    if result["order"]:
        order = result["order"]
        why = f" ({order['hold_reason']})" if order["hold_reason"] else ""
        say(f"order {result['id']} is now {order['status']}{why}")


async def trace_command(store_url: str, ident: str, *, as_json: bool = False,
                        limit: int = DEFAULT_LIMIT, ingress: str | None = None,
                        out: TextIO = sys.stdout, err: TextIO = sys.stderr) -> int:
    """Run `trace`: 0 with the timeline, 1 when nothing in the store (nor in the ingress's
    kept refusals, when `ingress` is given) matches `ident`."""
    async with aiohttp.ClientSession() as http:
        result = await trace(store_url, ident, limit, http=http, ingress=ingress)
    if as_json:
        # orjson leaves C1 codes and bidi overrides raw in strings: escaped the JSON way.
        text = orjson.dumps(result, option=orjson.OPT_INDENT_2).decode()
        out.write(printable(text, "\n", json=True) + "\n")
    else:
        render(result, out)
    if result["refused_error"]:
        print(printable(f"the ingress's refusals were not read: {result['refused_error']}"),
              file=err)
    if not result["events"] and not result["refused"]:
        print(f"nothing matches {ident!r}: no event, order id, tracking code, SKU or "
              "notification by that id in the store"
              + ("" if ingress is None else ", and no refused delivery by that id at the ingress"),
              file=err)
        return 1
    return 0
