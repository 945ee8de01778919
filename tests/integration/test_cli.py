"""The command line, run as a user runs it."""

from __future__ import annotations

import asyncio
import os
import shutil
import sys
from pathlib import Path
from urllib.parse import unquote, urlsplit

import pytest
from aiohttp.test_utils import TestServer
from conftest import AMQP_URL
from multidict import CIMultiDict

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
        env = {**test_env, "DATABASE_URL": f"sqlite:///{tmp_path}/s.sqlite3"}
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
        assert len(deliveries) == 2 * (2 + len(settings.notifications.retry_ladder))
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
                "deliveries"} == set(commands)

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
