"""`python -m router serve` as a real process: shutdown, broker outages, TLS, logs, workers."""

from __future__ import annotations

import asyncio
import datetime as dt
import os
import re
import signal
import socket
import ssl
import sys
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import aiohttp
import pytest
from test_ingress import SHOPIFY_ORDER, rabbitmqctl

from router.providers import signed_headers
from router.serve import ssl_context as _ssl_context
from router.settings import Settings, load_settings

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """A `python -m router serve` process on its own port and broker prefix."""

    def __init__(self, config: Path, port: int, env: dict[str, str], scheme: str = "http"):
        self.config = config
        self.port = port
        self.env = env
        self.base = f"{scheme}://127.0.0.1:{port}"
        self.proc: asyncio.subprocess.Process | None = None
        self.output = b""

    async def start(self, *extra: str) -> None:
        self.proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "router", "--config", str(self.config), "serve",
            "--port", str(self.port), *extra,
            cwd=ROOT, env=self.env,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
        )

    async def wait_for_line(self, text: bytes, timeout: float = 30.0) -> None:
        """Read the output until a line containing `text` (kept in `output` with the rest)."""
        assert self.proc is not None and self.proc.stdout is not None
        async with asyncio.timeout(timeout):
            while True:
                line = await self.proc.stdout.readline()
                self.output += line
                if text in line:
                    return
                if not line:
                    raise AssertionError(f"exited without printing {text!r}: {self.output!r}")

    async def wait_exit(self, timeout: float = 30.0) -> int:
        assert self.proc is not None
        out, _ = await asyncio.wait_for(self.proc.communicate(), timeout)
        self.output += out
        return self.proc.returncode

    async def stop(self) -> None:
        if self.proc is not None and self.proc.returncode is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                await self.wait_exit(30)
            except TimeoutError:
                self.proc.kill()
                await self.proc.wait()


async def wait_status(session, url: str, status: int, timeout: float = 30.0, **kw) -> None:
    """Poll `url` until it answers `status` (connection errors count as not yet)."""
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        try:
            async with session.get(url, **kw) as response:
                last = response.status
                if response.status == status:
                    return
        except aiohttp.ClientError as exc:
            last = exc
        await asyncio.sleep(0.1)
    raise AssertionError(f"{url} did not answer {status} (last: {last})")


@pytest.fixture
def server_config(tmp_path: Path, settings: Settings, topology) -> Callable[..., Path]:
    """Writes a copy of the shipped router.toml using this test's broker prefix."""

    def write(extra_server: str = "", confirm_timeout: float = 5.0,
              broker_url: str | None = None) -> Path:
        text = (ROOT / "config" / "router.toml").read_text()
        if broker_url is not None:
            text = text.replace("[broker]\n", f'[broker]\nurl = "{broker_url}"\n', 1)
        text = text.replace('prefix = ""', f'prefix = "{settings.broker.prefix}"')
        text = text.replace("confirm_timeout = 5.0", f"confirm_timeout = {confirm_timeout}")
        text = text.replace("retry_ladder = [5, 15, 45]", "retry_ladder = [1, 2]")
        text = text.replace("[server]\n", f"[server]\n{extra_server}\n", 1)
        text = re.sub(r'= "((?:mappings|samples|schemas)[^"]*)"',
                      lambda m: f'= "{ROOT / "config" / m.group(1)}"', text)
        path = tmp_path / "router.toml"
        path.write_text(text)
        return path

    return write


@pytest.fixture
async def make_server(test_env) -> AsyncIterator[Callable[..., Server]]:
    servers: list[Server] = []

    def make(config: Path, scheme: str = "http") -> Server:
        server = Server(config, free_port(), {**os.environ, **test_env}, scheme)
        servers.append(server)
        return server

    yield make
    for server in servers:
        await server.stop()


async def post_order(session, server: Server, settings: Settings, **kw):
    headers = signed_headers(settings, "shopify", SHOPIFY_ORDER, "orders/create")
    async with session.post(
        f"{server.base}/webhooks/shopify", data=SHOPIFY_ORDER, headers=headers, **kw
    ) as response:
        return response.status, await response.json(), headers


class TestGracefulShutdown:
    async def test_sigterm_finishes_in_flight_publishes(
        self, server_config, make_server, settings, queue_depths, topology
    ):
        """Requests waiting for the broker's confirm when SIGTERM arrives still get their 202,
        every 202 is on the queue, and the process exits 0."""
        server = make_server(server_config(confirm_timeout=30.0))
        await server.start()
        async with aiohttp.ClientSession() as session:
            await wait_status(session, f"{server.base}/readyz", 200)
            await rabbitmqctl("set_vm_memory_high_watermark", "0")  # publishers now block
            try:
                in_flight = [
                    asyncio.create_task(post_order(session, server, settings)) for _ in range(10)
                ]
                done, _ = await asyncio.wait(in_flight, timeout=1.0)
                assert not done  # all waiting for a confirm
                server.proc.send_signal(signal.SIGTERM)
                await asyncio.sleep(0.5)  # the server is now draining
            finally:
                await rabbitmqctl("set_vm_memory_high_watermark", "0.4")
            results = await asyncio.wait_for(asyncio.gather(*in_flight), 30)
        assert [202] * 10 == [status for status, _, _ in results]
        assert 0 == await server.wait_exit()
        assert 10 == (await queue_depths())[topology.queue("orders")]


class TestBrokerOutage:
    async def test_broker_restart_gives_503_then_recovers(
        self, server_config, make_server, settings, queue_depths, topology
    ):
        """While RabbitMQ is stopped, /readyz and webhooks answer 503; after it returns the
        ingress reconnects by itself and accepts again."""
        server = make_server(server_config(confirm_timeout=2.0))
        await server.start()
        async with aiohttp.ClientSession() as session:
            await wait_status(session, f"{server.base}/readyz", 200)
            await rabbitmqctl("stop_app")
            try:
                await wait_status(session, f"{server.base}/readyz", 503)
                status, body, _ = await post_order(session, server, settings)
                assert (503, "broker_unavailable") == (status, body["error"])
            finally:
                await rabbitmqctl("start_app")
                await rabbitmqctl("await_startup")
            await wait_status(session, f"{server.base}/readyz", 200, timeout=60)
            status, body, headers = await post_order(session, server, settings)
            assert (202, headers["X-Shopify-Event-Id"]) == (status, body["id"])
        assert 1 == (await queue_depths())[topology.queue("orders")]


class TestLogs:
    async def test_one_json_line_per_request_without_secrets_or_pii(
        self, server_config, make_server, settings, test_env
    ):
        """Each request logs one JSON line with its id, source, event, status and latency,
        and neither secrets, Authorization values nor customer details appear anywhere."""
        import orjson

        server = make_server(server_config())
        await server.start()
        async with aiohttp.ClientSession() as session:
            await wait_status(session, f"{server.base}/readyz", 200)
            status, body, _ = await post_order(session, server, settings)
            assert 202 == status
            async with session.post(
                f"{server.base}/webhooks/portal", data=b"{}",
                headers={"Authorization": "Bearer wrong-token-xyz",
                         "Content-Type": "application/json"},
            ) as response:
                assert 401 == response.status
        await server.stop()
        lines = [orjson.loads(line) for line in server.output.splitlines() if line.startswith(b"{")]
        requests = [line for line in lines if line["event"] == "request"
                    and line["path"].startswith("/webhooks/")]
        assert [("shopify", 202, body["id"], "order.created"), ("portal", 401, None, None)] == [
            (r["source"], r["status"], r["event_id"], r["type"]) for r in requests
        ]
        assert all(r["request_id"] and r["latency_ms"] >= 0 for r in requests)
        for secret in (*test_env.values(), "wrong-token-xyz", "jane.doe@example.com",
                       "123 Main Street", "555-555-0100"):
            if secret.startswith("amqp://"):
                continue
            assert secret.encode() not in server.output


def self_signed(tmp_path: Path) -> tuple[Path, Path]:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder().subject_name(name).issuer_name(name)
        .public_key(key.public_key()).serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=1))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost")]), critical=False)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = tmp_path / "tls.crt", tmp_path / "tls.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ))
    return cert_path, key_path


class TestTls:
    async def test_https_with_tls_1_2_minimum(self, tmp_path, server_config, make_server,
                                              settings):
        """With tls_cert/tls_key the ingress speaks HTTPS, TLS 1.2 at the least."""
        cert, key = self_signed(tmp_path)
        server = make_server(
            server_config(f'tls_cert = "{cert}"\ntls_key = "{key}"'), scheme="https"
        )
        await server.start()
        trusting = ssl.create_default_context(cafile=str(cert))
        trusting.check_hostname = False
        async with aiohttp.ClientSession() as session:
            await wait_status(session, f"{server.base}/readyz", 200, ssl=trusting)
            status, _, _ = await post_order(session, server, settings, ssl=trusting)
            assert 202 == status
            # A client that stops at TLS 1.2 gets in (the minimum is 1.2, not 1.3)...
            tls12 = ssl.create_default_context(cafile=str(cert))
            tls12.check_hostname = False
            tls12.maximum_version = ssl.TLSVersion.TLSv1_2
            await wait_status(session, f"{server.base}/healthz", 200, ssl=tls12)
        # ...and the server's context refuses anything older.
        config = load_settings(server.config, environ=server.env)
        assert ssl.TLSVersion.TLSv1_2 == _ssl_context(config).minimum_version


class TestWorkers:
    async def test_two_workers_share_the_port_and_metrics(
        self, server_config, make_server, settings, queue_depths, topology
    ):
        """With --workers 2 both processes serve the port and /metrics adds up their counts."""
        server = make_server(server_config())
        await server.start("--workers", "2")
        async with aiohttp.ClientSession() as session:
            await wait_status(session, f"{server.base}/readyz", 200)
            statuses = []
            for _ in range(20):
                # A new connection each time, so the kernel spreads them over the workers.
                async with aiohttp.ClientSession() as fresh:
                    status, _, _ = await post_order(fresh, server, settings)
                    statuses.append(status)
            assert [202] * 20 == statuses
            async with session.get(f"{server.base}/metrics") as response:
                text = await response.text()
        assert 'webhook_requests_total{source="shopify",status="202"} 20.0' in text
        assert 20 == (await queue_depths())[topology.queue("orders")]
        await server.stop()
        assert 0 == server.proc.returncode

    async def test_workers_listen_only_once_they_can_publish(
        self, server_config, make_server, settings
    ):
        """While the broker cannot be reached no worker takes connections (a provider gets
        no 503 from a worker that cannot publish), and a SIGTERM that comes while the
        workers are still starting stops them all cleanly: exit 0."""
        server = make_server(server_config(broker_url=f"amqp://guest:guest@127.0.0.1:{free_port()}/"))
        await server.start("--workers", "2")
        # Sent as soon as the workers exist: they are still importing, or waiting for the
        # broker, and neither may end them by the signal (exit 15).
        await server.wait_for_line(b'"workers_started"')
        server.proc.send_signal(signal.SIGTERM)
        assert 0 == await server.wait_exit()
        assert b'"broker_connected"' not in server.output

    async def test_a_worker_waiting_for_the_broker_refuses_connections(
        self, server_config, make_server, settings
    ):
        """A worker that has not reached the broker does not listen: connections are refused,
        not answered 503, until the broker is there."""
        server = make_server(server_config(broker_url=f"amqp://guest:guest@127.0.0.1:{free_port()}/"))
        await server.start("--workers", "2")
        await server.wait_for_line(b'"broker_unavailable"')
        with pytest.raises(OSError):
            socket.create_connection(("127.0.0.1", server.port), timeout=2).close()
        await server.stop()
        assert 0 == server.proc.returncode
