"""The command line, run as a user runs it."""

from __future__ import annotations

import asyncio
import os
import shutil
import sys
import uuid
from pathlib import Path
from urllib.parse import unquote, urlsplit

import asyncpg
import pytest
from aiohttp.test_utils import TestServer
from conftest import AMQP_URL, PG_HOST, PG_PORT, _admin
from multidict import CIMultiDict

from consumers.store import open_store
from router.app import create_app
from router.verify import build_verifier

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[2]
CONFIG = ROOT / "config" / "router.toml"


async def run_cli(*args: str, env: dict[str, str], stdin: bytes | None = None
                  ) -> tuple[int, str, str]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "router", *args, cwd=ROOT, env={**os.environ, **env},
        stdin=asyncio.subprocess.PIPE if stdin is not None else None,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(stdin), 60)
    return proc.returncode, out.decode(), err.decode()


class TestSign:
    async def test_printed_headers_verify(self, test_env, settings):
        """`sign` prints headers that the source's own verifier accepts."""
        sample = ROOT / "config" / "samples" / "shopify-orders-create.json"
        code, out, _ = await run_cli("--config", str(CONFIG), "sign", "shopify", "-f",
                                     str(sample), env=test_env)
        assert 0 == code
        headers = CIMultiDict(line.split(": ", 1) for line in out.splitlines())
        assert "orders/create" == headers["X-Shopify-Topic"]
        s = settings.sources["shopify"]
        verifier = build_verifier(s.scheme, s.secrets, s.options, file="f", key="k")
        verifier.verify(sample.read_bytes(), headers, __import__("time").time())

    async def test_unknown_source_is_named(self, test_env):
        """`sign` for a source that is not configured says so."""
        code, _, err = await run_cli("--config", str(CONFIG), "sign", "nope", "-f",
                                     str(CONFIG), env=test_env)
        assert 0 != code
        assert "unknown source 'nope'" in err


class TestSendTest:
    @pytest.mark.parametrize("source", ["shopify", "woocommerce", "portal", "inventory",
                                        "easypost", "aftership"])
    async def test_sample_is_accepted(self, test_env, settings, topology, source):
        """`send-test` posts the source's signed sample and prints the 202 answer."""
        server = TestServer(create_app(settings), host="127.0.0.1")
        await server.start_server()
        try:
            code, out, err = await run_cli(
                "--config", str(CONFIG), "send-test", source, "--url",
                str(server.make_url("")), env=test_env,
            )
        finally:
            await server.close()
        assert 0 == code, out + err
        assert out.startswith("202 Accepted")

    async def test_body_from_stdin_and_topic(self, test_env, settings, topology, amqp):
        """`send-test -f -` reads the body from stdin; `--topic` picks the event type."""
        server = TestServer(create_app(settings), host="127.0.0.1")
        await server.start_server()
        body = (ROOT / "config" / "samples" / "shopify-fulfillments-create.json").read_bytes()
        try:
            code, out, err = await run_cli(
                "--config", str(CONFIG), "send-test", "shopify", "--topic",
                "fulfillments/create", "-f", "-", "--url", str(server.make_url("")),
                env=test_env, stdin=body,
            )
        finally:
            await server.close()
        assert 0 == code, out + err
        assert out.startswith("202 Accepted")
        channel = await amqp.channel()
        queue = await channel.get_queue(topology.queue("shipping"))
        message = await queue.get(no_ack=True, timeout=5)
        assert "shipment.updated" == message.type


class TestConfigErrors:
    async def test_missing_secret_stops_start_up(self, test_env):
        """A missing secret stops `serve` with exit 2 and names the file, key and variable."""
        env = {k: v for k, v in test_env.items() if k != "SHOPIFY_WEBHOOK_SECRET"}
        env["SHOPIFY_WEBHOOK_SECRET"] = ""
        code, _, err = await run_cli("--config", str(CONFIG), "serve", env=env)
        assert 2 == code
        assert ("config/router.toml: sources.shopify.secrets[0]: environment variable "
                "SHOPIFY_WEBHOOK_SECRET is not set") in err


class TestSubscriptionCommands:
    async def test_list_and_unknown_name(self, test_env, tmp_path):
        """`subscriptions list` shows the shipped examples; an unknown name is exit 2."""
        url = f"sqlite:///{tmp_path}/s.sqlite3"
        await open_store(url).open()  # a store a consumer made
        env = {**test_env, "DATABASE_URL": url}
        code, out, err = await run_cli("--config", str(CONFIG), "subscriptions", "list", env=env)
        assert 0 == code, err
        assert "customer-portal: off in config" in out
        assert "storefront-stock: off in config" in out
        code, _, err = await run_cli("--config", str(CONFIG), "subscriptions", "enable", "nope",
                                     env=env)
        assert 2 == code
        assert "unknown subscription 'nope'" in err
        code, out, _ = await run_cli("--config", str(CONFIG), "deliveries", "evt-none", env=env)
        assert 1 == code
        assert "no delivery attempts for evt-none" in out


async def queues_named(prefix: str) -> list[str]:
    """Every queue in AMQP_URL's virtual host whose name starts with `prefix`."""
    vhost = unquote(urlsplit(AMQP_URL).path[1:]) or "/"
    proc = await asyncio.create_subprocess_exec(
        "rabbitmqctl", "-q", "list_queues", "-p", vhost, "name", stdout=asyncio.subprocess.PIPE)
    out, _ = await asyncio.wait_for(proc.communicate(), 60)
    return sorted(name for name in out.decode().split() if name.startswith(prefix))


class TestTopology:
    async def test_delete_removes_the_subscriptions_delivery_queues_too(
        self, test_env, prefix, tmp_path
    ):
        """`topology --delete` leaves nothing of the prefix behind: the work, retry, dead and
        hold queues, and each subscription's deliver.NAME queues the notifications consumer
        declared (enabled or not)."""
        import aio_pika

        from consumers.outbound.notification import delivery_queues
        from router.broker.topology import Topology
        from router.settings import load_settings

        shutil.copytree(ROOT / "config", tmp_path / "config")
        config = tmp_path / "config" / "router.toml"
        config.write_text(config.read_text().replace('prefix = ""', f'prefix = "{prefix}"'))
        code, _, err = await run_cli("--config", str(config), "topology", env=test_env)
        assert 0 == code, err
        settings = load_settings(config, environ=test_env, resolve_secrets=False)
        topology = Topology.of(settings.broker)
        deliveries = delivery_queues(topology, settings)
        # per subscription: its delivery queue, its dead-letter queue, one retry queue per
        # distinct delay of the ladder (36000 twice in the shipped one: one queue)
        assert len(deliveries) == 2 * (2 + len(set(settings.notifications.retry_ladder)))
        async with await aio_pika.connect(settings.broker.url) as connection:
            await topology.declare_queues(await connection.channel(), deliveries)
            try:
                assert {spec.name for spec in deliveries} <= set(await queues_named(prefix))
                code, out, err = await run_cli("--config", str(config), "topology", "--delete",
                                               env=test_env)
                assert (0, "deleted") == (code, out.strip()), err
                assert [] == await queues_named(prefix)
            finally:  # whatever the command left
                channel = await connection.channel()
                for name in await queues_named(prefix):
                    await channel.queue_delete(name)


class TestStoreCommands:
    """orders, subscriptions and deliveries read the consumers' store: they name it first,
    without its password, and never create one."""

    COMMANDS = [("orders", "list"), ("orders", "show", "o-1"), ("subscriptions", "list"),
                ("subscriptions", "disable", "customer-portal"), ("deliveries", "evt-1")]

    async def test_no_store_is_an_error_and_nothing_is_created(self, test_env, store_url):
        """Pointed at a SQLite file that is not there, or a PostgreSQL database without our
        tables, each command says so on stderr and exits 2: no file, no tables."""
        env = {**test_env, "DATABASE_URL": store_url}
        for command in self.COMMANDS:
            code, out, err = await run_cli("--config", str(CONFIG), *command, env=env)
            lines = err.splitlines()
            assert (2, f"store: {store_url}") == (code, lines[0]), (command, err)
            assert "no store there" in lines[1] and "nothing was created" in lines[1], err
            assert "" == out
        if store_url.startswith("sqlite"):
            assert not os.path.exists(store_url.removeprefix("sqlite:///"))  # noqa: ASYNC240
        else:
            connection = await asyncpg.connect(store_url)
            try:
                assert [] == await connection.fetch(
                    "SELECT tablename FROM pg_tables WHERE schemaname = 'public'")
            finally:
                await connection.close()

    async def test_a_database_that_does_not_exist_is_not_created(self, test_env):
        """A PostgreSQL URL naming a database that does not exist: exit 2, the password never
        shown, and no database made."""
        admin, user = await _admin()
        name = f"store_{uuid.uuid4().hex}"
        url = f"postgresql://{user}:hunter2@{PG_HOST}:{PG_PORT}/{name}"
        try:
            code, _, err = await run_cli("--config", str(CONFIG), "orders", "list",
                                         env={**test_env, "DATABASE_URL": url})
            assert 2 == code
            assert err.startswith(f"store: postgresql://{user}:***@{PG_HOST}:{PG_PORT}/{name}\n")
            assert "the database does not exist" in err and "hunter2" not in err
            assert None is await admin.fetchval(
                "SELECT datname FROM pg_database WHERE datname = $1", name)
        finally:
            await admin.close()

    async def test_an_existing_store_is_read_and_named(self, test_env, store_url):
        """Where a consumer made the store, the commands read it; stderr names it first."""
        store = open_store(store_url)
        await store.open()
        await store.close()
        code, out, err = await run_cli("--config", str(CONFIG), "orders", "list",
                                       env={**test_env, "DATABASE_URL": store_url})
        assert (0, "no orders", f"store: {store_url}") == (code, out.strip(), err.strip())

    @pytest.mark.parametrize("command", [
        ("subscriptions", "enable", "customer-portal"),
        ("deliveries", "replay", "--subscription", "customer-portal", "--since", "2026-01-01"),
    ])
    async def test_enable_and_replay_refuse_a_subscription_off_in_config(
        self, test_env, store_url, command
    ):
        """The shipped customer-portal is `enabled = false`: enabling it in the store or
        replaying to it would queue what nobody delivers, so both refuse (exit 2) and
        say where to switch it on; the store is not touched."""
        store = open_store(store_url)
        await store.open()
        try:
            code, _, err = await run_cli("--config", str(CONFIG), *command,
                                         env={**test_env, "DATABASE_URL": store_url})
            assert 2 == code
            assert (f"error: customer-portal is off in config (enabled = false in {CONFIG})"
                    in err), err
            async with store.transaction() as tx:
                assert [] == await tx.fetch("SELECT name FROM subscription_state")
        finally:
            await store.close()


class TestCommandLine:
    async def test_config_goes_before_or_after_the_command_or_in_the_environment(
        self, test_env
    ):
        """`--config FILE` works where users type it, before or after the command, and
        ROUTER_CONFIG works without it; a wrong path is named whichever way it came."""
        sample = str(ROOT / "config" / "samples" / "shopify-orders-create.json")
        for args, env in (
            (("--config", str(CONFIG), "sign", "shopify", "-f", sample), test_env),
            (("sign", "--config", str(CONFIG), "shopify", "-f", sample), test_env),
            (("sign", "shopify", "-f", sample), {**test_env, "ROUTER_CONFIG": str(CONFIG)}),
        ):
            code, out, err = await run_cli(*args, env=env)
            assert (0, True) == (code, "\nX-Shopify-Hmac-Sha256: " in out), err
        code, _, err = await run_cli("sign", "--config", "/nonexistent/router.toml", "shopify",
                                     "-f", sample, env={**test_env, "ROUTER_CONFIG": str(CONFIG)})
        assert (2, "configuration error: /nonexistent/router.toml: -: file not found") == (
            code, err.strip())

    async def test_help_lists_every_command(self, test_env):
        """`--help` names every command the CLI has."""
        from router.cli import build_parser

        code, out, _ = await run_cli("--help", env=test_env)
        commands = build_parser()._subparsers._group_actions[0].choices  # type: ignore[union-attr]
        assert 0 == code
        assert [] == [name for name in commands if f"    {name} " not in out]
        assert {"serve", "topology", "sign", "send-test", "dlq", "subscriptions", "orders",
                "labels", "storefront", "deliveries", "openapi", "trace",
                "console"} == set(commands)

    @pytest.mark.parametrize(("args", "expected"), [
        (("sign", "shopify", "-f", str(ROOT / "config" / "samples" / "shopify-orders-create.json")),
         141),
        (("--help",), 0),  # argparse itself ignores a failed write of the help
    ])
    async def test_output_to_a_closed_pipe_ends_quietly(self, test_env, settings, args, expected):
        """Output into a pipe nobody reads any more (`... | head`) ends the command without a
        traceback: exit 141 (128 + SIGPIPE, as a shell reports it), nothing on stderr."""
        reader, writer = os.pipe()
        os.close(reader)  # the reader is gone before the first write
        env = {**os.environ, **test_env, "AMQP_URL": settings.broker.url}
        try:
            proc = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "router", "--config", str(CONFIG), *args, cwd=ROOT,
                env=env, stdout=writer, stderr=asyncio.subprocess.PIPE,
            )
        finally:
            os.close(writer)
        _, err = await asyncio.wait_for(proc.communicate(), 60)
        assert (expected, "") == (proc.returncode, err.decode())
