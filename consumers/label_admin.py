"""`webhook-router labels show|void|buy ORDER_ID`: an order's shipping label (consumers.labels),
for operators. The store is opened without creating it.

    show   the label: its state (creating, bought, held, voided), carrier, service, rate,
           tracking code and URLs, the carrier's message of a hold
    void   ask the carrier for the postage back (EasyPost's refund); the label is `voided`,
           its unmoved shipment row removed, and a label_purchased order is ready_to_ship
           again (no new label is bought until `labels buy`)
    buy    ask the labels consumer to buy one for an order it held (address_invalid, no_rate:
           after the address or the rule was fixed) or whose label was voided: a
           `label.requested` message on its queue

void and buy are recorded in operator_actions (actor: the user running the command, role
`cli`), as the console records what operators do there.
"""

from __future__ import annotations

import getpass
import sys
import uuid
from typing import Any, TextIO

import aiohttp
import orjson

from consumers.carriers import build_carrier
from consumers.carriers.base import CarrierError
from consumers.labels import LABEL_HOLDS, REQUESTED
from consumers.order_admin import Usage
from consumers.store import Store, Tx, open_store
from router.settings import Settings
from router.times import now_iso

ACTIONS = ("show", "void", "buy")


async def labels_command(settings: Settings, action: str, order_id: str | None, *,
                         out: TextIO = sys.stdout) -> int:
    """Run `labels show|void|buy ORDER_ID` against the consumers' store; the exit code."""
    if not order_id:
        raise Usage(f"labels {action} needs an ORDER_ID")
    if action != "show" and not settings.labels.enabled:
        raise Usage(f"{settings.file}: labels.enabled is false: there is no labels consumer "
                    "to buy or void with")
    async with open_store(settings.consumers.store, create=False) as store:
        async with store.transaction() as tx:
            order, label = await _look(tx, order_id)
        if order is None:
            print(f"no order {order_id}", file=out)
            return 1
        if action == "show":
            _show(order, label, out)
            return 0
        if action == "void":
            return await _void(settings, store, order, label, out)
        return await _buy(settings, store, order, label, out)


async def _look(tx: Tx, order_id: str) -> tuple[dict[str, Any] | None, dict[str, Any] | None]:
    order = await tx.fetchrow(
        "SELECT order_id, status, hold_reason FROM orders WHERE order_id = $1", order_id)
    label = await tx.fetchrow("SELECT * FROM labels WHERE order_id = $1", order_id)
    return order, label


def _show(order: dict[str, Any], label: dict[str, Any] | None, out: TextIO) -> None:
    why = f" ({order['hold_reason']})" if order["hold_reason"] else ""
    print(f"order {order['order_id']}: {order['status']}{why}", file=out)
    if label is None:
        print("  no label", file=out)
        return
    print(f"  label {label['state']}: purchase {label['purchase']}, reference "
          f"{label['reference']}, {label['carrier_api']} shipment {label['shipment_id'] or '-'}"
          f"; updated {label['updated_at']}", file=out)
    if label["tracking_code"]:
        print(f"  {label['carrier']} {label['service']} {label['rate_amount']} "
              f"{label['rate_currency']}; tracking {label['tracking_code']}", file=out)
        print(f"  label {label['label_url']}", file=out)
        if label["tracking_url"]:
            print(f"  track {label['tracking_url']}", file=out)
    if label["hold_reason"]:
        print(f"  held {label['hold_reason']}: {label['message']}", file=out)
    if label["refund_status"]:
        print(f"  refund {label['refund_status']}", file=out)


async def _void(settings: Settings, store: Store, order: dict[str, Any],
                label: dict[str, Any] | None, out: TextIO) -> int:
    order_id = order["order_id"]
    if label is None or label["state"] != "bought":
        state = "no label" if label is None else f"its label is {label['state']}"
        return await _refused(store, "labels void", order_id, f"{state}: nothing to void", out)
    if order["status"] in ("shipped", "delivered", "exception"):
        return await _refused(store, "labels void", order_id,
                              f"the order is {order['status']}: too late to void", out)
    s = settings.labels
    async with aiohttp.ClientSession() as session:
        carrier = build_carrier(label["carrier_api"], s.api_key.decode(), session,
                                base_url=s.base_url, timeout=s.timeout)
        try:
            refund = await carrier.refund(label["shipment_id"])
        except CarrierError as exc:
            return await _refused(store, "labels void", order_id,
                                  f"the carrier refused: {exc}", out, code=1)

    async def voided(tx: Tx) -> None:
        await tx.execute(
            "UPDATE labels SET state = 'voided', refund_status = $3, updated_at = $4"
            " WHERE order_id = $1 AND purchase = $2 AND state = 'bought'",
            order_id, label["purchase"], refund.status, now_iso())
        # The voided label never travels: its shipment row goes unless it already moved.
        await tx.execute(
            "DELETE FROM shipments WHERE tracking_code = $1 AND order_id = $2 AND rank <= 1",
            label["tracking_code"], order_id)
        await tx.execute("UPDATE orders SET status = 'ready_to_ship' WHERE order_id = $1"
                         " AND status = 'label_purchased'", order_id)
        await record_cli_action(tx, "labels void", order_id, f"voided: refund {refund.status}")

    await store.run(voided)
    print(f"voided the label of order {order_id} (tracking {label['tracking_code']}): refund "
          f"{refund.status}; `labels buy {order_id}` buys another", file=out)
    return 0


async def _buy(settings: Settings, store: Store, order: dict[str, Any],
               label: dict[str, Any] | None, out: TextIO) -> int:
    from router.broker.errors import PublishFailed
    from router.broker.publisher import Publisher

    order_id = order["order_id"]
    if label is not None and label["state"] == "bought":
        return await _refused(store, "labels buy", order_id, "it has a label (tracking "
                              f"{label['tracking_code']}); `labels void` it first", out)
    held = order["status"] == "on_hold" and order["hold_reason"] in LABEL_HOLDS
    if not held and order["status"] != "ready_to_ship":
        return await _refused(store, "labels buy", order_id, f"the order is "
                              f"{order['status']}, neither ready_to_ship nor held for its "
                              "label", out)
    now = now_iso()
    message_id = f"labels-buy:{order_id}:{uuid.uuid4().hex}"
    body = orjson.dumps({"id": message_id, "type": REQUESTED, "source": "operator",
                         "received_at": now, "occurred_at": now,
                         "data": {"order_id": order_id, "requested_by": getpass.getuser()}})
    publisher = Publisher(settings.broker, connection_name="webhook-router-labels")
    try:
        await publisher.start()
        await publisher.publish_all([{"body": body, "routing_key": REQUESTED,
                                      "message_id": message_id, "type": REQUESTED,
                                      "headers": {"attempt": 0, "source": "operator"}}])
    except PublishFailed as exc:
        return await _refused(store, "labels buy", order_id,
                              f"the broker did not take the request: {exc.message}", out,
                              code=1)
    finally:
        await publisher.close()

    async def requested(tx: Tx) -> None:
        await record_cli_action(tx, "labels buy", order_id, f"requested ({message_id})")

    await store.run(requested)
    print(f"asked the labels consumer to buy a label for order {order_id}; "
          f"`labels show {order_id}` tells how it went", file=out)
    return 0


async def _refused(store: Store, action: str, order_id: str, why: str, out: TextIO,
                   code: int = 2) -> int:
    async def refused(tx: Tx) -> None:
        await record_cli_action(tx, action, order_id, f"failed: {why}")

    await store.run(refused)
    print(f"error: order {order_id}: {why}", file=out)
    return code


async def record_cli_action(tx: Tx, action: str, target: str, outcome: str) -> None:
    """One row in operator_actions for an operator's command (actor: the user running it,
    role `cli`; the console's Audit page shows it)."""
    await tx.execute(
        "INSERT INTO operator_actions (at, actor, role, action, target, ids, outcome)"
        " VALUES ($1, $2, 'cli', $3, $4, $5, $6)",
        now_iso(), getpass.getuser(), action, target, orjson.dumps([target]).decode(),
        outcome)
