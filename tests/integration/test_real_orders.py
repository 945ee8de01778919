"""Real orders as providers send them, through the real thing: `python -m consumers all`
(the ingress and every consumer) on SQLite, and the operator's `webhook-router` commands.

WooCommerce's documentation order 727 (a product without SKU) and a Shopify order with empty
SKUs and no shipping address are accepted and stored as fulfillment should see them, which
`orders show` makes visible; a Shopify delivery of a topic not wired yet is held, and once
the config wires it `dlq release` puts it through, and the order it brings an address for
leaves its hold."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from pathlib import Path

import aiohttp
import orjson
import pytest
from ports import free_port
from test_consumer_process import Ingress, wait_until, write_test_config

ROOT = Path(__file__).resolve().parents[2]
PROVIDERS = ROOT / "tests" / "fixtures" / "providers"
WOO_727 = (PROVIDERS / "woocommerce" / "order-727.json").read_bytes()
NO_ADDRESS = (PROVIDERS / "shopify" / "variant-empty-skus-no-address.json").read_bytes()
SHOPIFY_ID = "5820982911946150001"

pytestmark = pytest.mark.integration


async def cli(config: Path, env: dict[str, str], *args: str) -> tuple[int, str]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "router", "--config", str(config), *args, cwd=ROOT, env=env,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
    )
    out, _ = await asyncio.wait_for(proc.communicate(), 60)
    return proc.returncode or 0, out.decode()


async def test_real_orders_are_accepted_stored_and_shown_and_a_held_one_released(
    tmp_path, settings, test_env, topology
):
    """The Done-when of real orders, end to end."""
    config = write_test_config(settings)
    store_url = f"sqlite:///{tmp_path}/real.sqlite3"
    env = {**os.environ, **test_env, "DATABASE_URL": store_url}
    port = free_port()
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "consumers", "all", "--config", str(config), "--port", str(port),
        cwd=ROOT, env=env, stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        async with aiohttp.ClientSession() as session:
            ingress = Ingress(session, base, settings)
            ready, post = ingress.ready, ingress.post

            async def shown(order_id: str, text: str) -> bool:
                code, out = await cli(config, env, "orders", "show", order_id)
                return code == 0 and text in out

            await wait_until(ready)
            stock = [("product:93", 5), ("Bar3", 5), ("variant:39072856", 3),
                     ("variant:49148385", 3), ("variant:457924702", 3)]
            for sku, on_hand in stock:
                await post("inventory", orjson.dumps({
                    "event_id": f"stock-{sku}", "sku": sku, "location": "default",
                    "on_hand": on_hand, "as_of": "2026-11-28T00:00:00Z"}))

            assert "accepted" == (await post("woocommerce", WOO_727, "order.created"))["status"]
            assert "accepted" == (await post("shopify", NO_ADDRESS, "orders/create"))["status"]
            await wait_until(lambda: shown("727", "order 727 from woocommerce: ready_to_ship"),
                             timeout=60)
            _, out = await cli(config, env, "orders", "show", "727")
            assert "product:93                   x2    reserved 2 at default" in out, out
            assert "Bar3                         x1    reserved 1 at default" in out, out
            await wait_until(lambda: shown(SHOPIFY_ID, "on_hold (no_address)"), timeout=60)
            _, out = await cli(config, env, "orders", "list", "--status", "on_hold")
            assert SHOPIFY_ID in out and "paid" in out, out

            # The customer adds an address; the store edits the order. orders/edited is not
            # wired here: the delivery is held, not refused.
            edited = orjson.loads(NO_ADDRESS)
            edited["updated_at"] = "2024-04-03T10:00:00-05:00"
            edited["shipping_address"] = {
                "name": "Bob Norman", "address1": "Chestnut Street 92", "city": "Louisville",
                "province_code": "KY", "zip": "40202", "country_code": "US"}
            held = await post("shopify", orjson.dumps(edited), "orders/edited")
            assert ("held", "unknown_event") == (held["status"], held["reason"])
            code, out = await cli(config, env, "dlq", "list", "held.shopify")
            assert 0 == code and held["id"] in out, out

            wired = tmp_path / "wired.toml"
            wired.write_text(config.read_text().replace(
                '"orders/paid" = "order.updated"',
                '"orders/paid" = "order.updated"\n"orders/edited" = "order.updated"'))
            code, out = await cli(wired, env, "dlq", "release", "held.shopify")
            assert (0, "released 1 of 1") == (code, out.strip()[:15]), out
            await wait_until(lambda: shown(SHOPIFY_ID, "ready_to_ship"), timeout=60)
    finally:
        proc.send_signal(signal.SIGTERM)
        assert 0 == await asyncio.wait_for(proc.wait(), 30)
