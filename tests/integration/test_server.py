"""`python -m router serve` as a real process: shutdown, broker outages, TLS, logs, workers."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import datetime as dt
import os
import re
import shutil
import signal
import ssl
import sys
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path

import aiohttp
import pytest
import yarl
from broker_proxy import Proxy
from ports import free_port
from test_ingress import SHOPIFY_ORDER, broker_started, rabbitmqctl
from test_runner import wait_for

from router.logs import REDACTED
from router.providers import signed_headers
from router.serve import METRICS_DIR_PREFIX
from router.serve import ssl_context as _ssl_context
from router.settings import Settings, load_settings

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[2]


def child_pids(pid: int) -> list[int]:
    return [int(child) for task in Path(f"/proc/{pid}/task").iterdir()
            for child in (task / "children").read_text().split()]


def metrics_directories() -> set[Path]:
    """The serve commands' metrics directories now in the temporary directory."""
    return set(Path(tempfile.gettempdir()).glob(f"{METRICS_DIR_PREFIX}*"))


def running(pid: int) -> bool:
    """The process exists and is not a zombie."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    return stat.rpartition(")")[2].split()[0] != "Z"


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
              broker_url: str | None = None, shutdown_timeout: int = 30) -> Path:
        text = (ROOT / "config" / "router.toml").read_text()
        text = text.replace("shutdown_timeout = 30 ", f"shutdown_timeout = {shutdown_timeout} ")
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
    # An order of its own each time: one signed body sent again is a duplicate (router.dedup).
    body = SHOPIFY_ORDER.replace(b'"#1042"', f'"#1042-{uuid.uuid4().hex}"'.encode())
    headers = signed_headers(settings, "shopify", body, "orders/create")
    async with session.post(
        f"{server.base}/webhooks/shopify", data=body, headers=headers, **kw
    ) as response:
        return response.status, await response.json(), headers


class TestGracefulShutdown:
    @pytest.mark.parametrize("workers", [1, 2])
    async def test_sigterm_finishes_in_flight_publishes(
        self, server_config, make_server, settings, queue_depths, topology, workers
    ):
        """Requests waiting for the broker's confirm when SIGTERM arrives still get their 202,
        every 202 is on the queue, and the process exits 0 (one process, or the master of
        two workers). The confirms are held back by a proxy that delays the path to the
        broker (nothing is lost, only late)."""
        proxy = await Proxy().start()
        try:
            server = make_server(server_config(confirm_timeout=30.0, broker_url=proxy.url()))
            await server.start("--workers", str(workers))
            async with aiohttp.ClientSession() as session:
                await wait_status(session, f"{server.base}/readyz", 200)
                proxy.hold()  # publishes go out, their confirms come back late
                try:
                    in_flight = [asyncio.create_task(post_order(session, server, settings))
                                 for _ in range(10)]
                    done, _ = await asyncio.wait(in_flight, timeout=1.0)
                    assert not done  # all waiting for a confirm
                    server.proc.send_signal(signal.SIGTERM)
                    await server.wait_for_line(b'"shutting_down"')  # the server is draining
                finally:
                    proxy.release()
                results = await asyncio.wait_for(asyncio.gather(*in_flight), 30)
            assert [202] * 10 == [status for status, _, _ in results]
            assert 0 == await server.wait_exit()
            assert 10 == (await queue_depths())[topology.queue("orders")]
        finally:
            await proxy.close()


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
                await broker_started()
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


    async def test_personal_data_a_refused_request_sends_is_masked(
        self, server_config, make_server, settings
    ):
        """A forged delivery whose id header is an e-mail (kept as the line's event_id before
        it is verified) and a request to a path holding a phone: both lines are written,
        with the e-mail and the phone as [redacted]."""
        import orjson

        server = make_server(server_config())
        await server.start()
        headers = signed_headers(settings, "shopify", SHOPIFY_ORDER, "orders/create")
        headers["X-Shopify-Hmac-Sha256"] = "Zm9yZ2Vk"
        headers["X-Shopify-Event-Id"] = "jane.doe@example.com"
        async with aiohttp.ClientSession() as session:
            await wait_status(session, f"{server.base}/readyz", 200)
            async with session.post(f"{server.base}/webhooks/shopify", data=SHOPIFY_ORDER,
                                    headers=headers) as response:
                assert 401 == response.status
            async with session.post(f"{server.base}/webhooks/555-123-4567",
                                    data=b"{}") as response:
                assert 404 == response.status
        await server.stop()
        lines = [orjson.loads(line) for line in server.output.splitlines() if line.startswith(b"{")]
        requests = [(r["status"], r["path"], r["event_id"], r["reason"]) for r in lines
                    if r["event"] == "request" and r["path"].startswith("/webhooks/")]
        assert [(401, "/webhooks/shopify", REDACTED, "invalid_signature"),
                (404, f"/webhooks/{REDACTED}", None, "unknown_source")] == requests
        assert b"jane.doe@example.com" not in server.output
        assert b"555-123-4567" not in server.output


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
    @pytest.mark.parametrize("workers", [1, 2])
    async def test_https_with_tls_1_2_minimum(self, tmp_path, server_config, make_server,
                                              settings, workers):
        """With tls_cert/tls_key the ingress speaks HTTPS, TLS 1.2 at the least (one process,
        or gunicorn's workers)."""
        cert, key = self_signed(tmp_path)
        server = make_server(
            server_config(f'tls_cert = "{cert}"\ntls_key = "{key}"'), scheme="https"
        )
        await server.start("--workers", str(workers))
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




def worker_pids(output: bytes) -> list[int]:
    """The workers gunicorn's master started, in order (from its "Booting worker" lines)."""
    return [int(pid) for pid in re.findall(rb"Booting worker with pid: (\d+)", output)]


def children(pid: int) -> set[int]:
    text = Path(f"/proc/{pid}/task/{pid}/children").read_text()
    return {int(child) for child in text.split()}


def is_dir(path: Path) -> bool:
    return path.is_dir()


@contextlib.contextmanager
def paused(pid: int) -> Iterator[None]:
    """The process stopped (SIGSTOP) inside the block: it accepts no connection."""
    os.kill(pid, signal.SIGSTOP)
    try:
        yield
    finally:
        os.kill(pid, signal.SIGCONT)


def metric(text: str, sample: str) -> float:
    for line in text.splitlines():
        if line.startswith(sample + " "):
            return float(line.split()[-1])
    return 0.0


SHOPIFY_202 = 'webhook_requests_total{source="shopify",status="202"}'


async def post_fresh(server: Server, settings: Settings, count: int) -> list[int]:
    """`count` orders, each on a new connection (so they spread over the workers)."""
    statuses = []
    for _ in range(count):
        async with aiohttp.ClientSession() as fresh:
            status, _, _ = await post_order(fresh, server, settings)
            statuses.append(status)
    return statuses


async def shopify_202s(server: Server) -> float:
    """What /metrics says of Shopify's 202s, asked on a new connection."""
    async with aiohttp.ClientSession() as fresh, fresh.get(f"{server.base}/metrics") as response:
        return metric(await response.text(), SHOPIFY_202)


def socket_owner(port: int, pids: set[int]) -> int | None:
    """Which of `pids` has the TCP socket whose local port is `port` (from /proc)."""
    inodes = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            if int(fields[1].rsplit(":", 1)[1], 16) == port:
                inodes.add(f"socket:[{fields[9]}]")
    for pid in pids:
        with contextlib.suppress(OSError):
            if any(os.readlink(fd) in inodes for fd in Path(f"/proc/{pid}/fd").iterdir()):
                return pid
    return None


class OneWorkersBroker:
    """A TCP proxy to RabbitMQ that forwards the connections of the first worker to connect
    and holds every other worker's open without a word: a broker that one worker reached
    and the other is still trying to."""

    def __init__(self, upstream: str):
        url = yarl.URL(upstream)
        self.upstream = (url.host, url.port)
        self.master: int | None = None  # the server's pid, once started
        self.chosen: int | None = None
        self.held: list[asyncio.StreamWriter] = []
        self.tasks: set[asyncio.Task] = set()

    async def __aenter__(self) -> OneWorkersBroker:
        self.server = await asyncio.start_server(self._connection, "127.0.0.1", 0)
        self.port = self.server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.server.close()
        for writer in self.held:
            writer.close()
        for task in self.tasks:
            task.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)

    async def _connection(self, reader, writer) -> None:
        client_port = writer.get_extra_info("peername")[1]
        worker = socket_owner(client_port, children(self.master)) if self.master else None
        if self.chosen is None:
            self.chosen = worker
        if worker is None or worker != self.chosen:
            self.held.append(writer)
            return
        up_reader, up_writer = await asyncio.open_connection(*self.upstream)
        for src, dst in ((reader, up_writer), (up_reader, writer)):
            task = asyncio.create_task(self._pipe(src, dst))
            self.tasks.add(task)

    @staticmethod
    async def _pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
        try:
            while data := await src.read(65536):
                dst.write(data)
                await dst.drain()
        except OSError:
            pass
        finally:
            dst.close()


class TestWorkers:
    async def test_two_workers_share_the_port_and_metrics(
        self, server_config, make_server, settings, queue_depths, topology
    ):
        """With --workers 2 both processes serve the port (each takes the requests while the
        other is paused), /metrics answered by either adds up both, and the run's metrics
        directory is gone after exit."""
        server = make_server(server_config())
        await server.start("--workers", "2")
        await server.wait_for_line(b'"workers_starting"')
        metrics_dir = Path(re.search(rb'"metrics_dir":"([^"]+)"', server.output)[1].decode())
        for _ in range(2):
            await server.wait_for_line(b'"broker_connected"')
        pids = worker_pids(server.output)
        assert set(pids) == children(server.proc.pid)
        served = 0
        for pid in pids:
            with paused(pid):  # the other worker answers all of these
                assert [202] * 5 == await post_fresh(server, settings, 5)
                served += 5
                assert served == await shopify_202s(server)
        assert 10 == (await queue_depths())[topology.queue("orders")]
        await server.stop()
        assert 0 == server.proc.returncode
        assert not is_dir(metrics_dir)

    async def test_a_killed_worker_is_replaced(
        self, server_config, make_server, settings, queue_depths, topology
    ):
        """A worker killed with SIGKILL is replaced by the master, the port keeps answering,
        and what the dead worker counted still counts in /metrics."""
        server = make_server(server_config())
        await server.start("--workers", "2")
        for _ in range(2):
            await server.wait_for_line(b'"broker_connected"')
        first, second = worker_pids(server.output)
        assert [202] * 10 == await post_fresh(server, settings, 10)
        os.kill(first, signal.SIGKILL)
        await server.wait_for_line(b"Booting worker")
        await server.wait_for_line(b'"broker_connected"')
        replacement = worker_pids(server.output)[-1]
        assert {second, replacement} == children(server.proc.pid)
        assert [202] * 10 == await post_fresh(server, settings, 10)
        assert 20 == await shopify_202s(server)
        assert 20 == (await queue_depths())[topology.queue("orders")]
        await server.stop()
        assert 0 == server.proc.returncode

    @pytest.mark.parametrize("moment", [
        b'"workers_starting"',  # the master listens, no worker yet
        b"Booting worker",  # the first worker is forked and importing
        b"Booting worker with pid",  # (the same, a second time: the race is narrow)
        b'"broker_connected"',  # one worker reached the broker, the other may not have
    ])
    async def test_sigterm_while_workers_start_exits_0(
        self, server_config, make_server, settings, moment
    ):
        """A SIGTERM at any moment of start-up stops everything cleanly and promptly: exit 0,
        no worker left to be killed when shutdown_timeout runs out."""
        server = make_server(server_config(shutdown_timeout=120))
        await server.start("--workers", "2")
        await server.wait_for_line(moment)
        server.proc.send_signal(signal.SIGTERM)
        assert 0 == await server.wait_exit(timeout=60)
        assert b"Traceback" not in server.output

    async def test_sigterm_while_workers_wait_for_the_broker_exits_0(
        self, server_config, make_server, settings
    ):
        """Workers that cannot reach the broker keep trying without listening, and a SIGTERM
        then stops them at once: exit 0, and none ever connected."""
        server = make_server(server_config(
            broker_url=f"amqp://guest:guest@127.0.0.1:{free_port()}/", shutdown_timeout=120))
        await server.start("--workers", "2")
        await server.wait_for_line(b'"broker_unavailable"')
        server.proc.send_signal(signal.SIGTERM)
        assert 0 == await server.wait_exit(timeout=60)
        assert b'"broker_connected"' not in server.output

    async def test_workers_waiting_for_the_broker_stop_when_their_master_is_killed(
        self, server_config, make_server
    ):
        """A worker still waiting for the broker notices that its master is gone (SIGKILL:
        nobody sends it a SIGTERM) and exits, rather than waiting for the broker forever."""
        server = make_server(server_config(
            broker_url=f"amqp://guest:guest@127.0.0.1:{free_port()}/"))
        metrics_dirs = metrics_directories()
        await server.start("--workers", "2")
        await server.wait_for_line(b'"broker_unavailable"')
        # The master removes its metrics directory on the way out; killed, it cannot.
        metrics_dirs = metrics_directories() - metrics_dirs
        assert 1 == len(metrics_dirs)
        master = server.proc.pid
        workers = child_pids(master)
        assert 2 == len(workers)
        server.proc.kill()

        async def workers_gone() -> bool:
            return not any(running(pid) for pid in workers)

        try:
            await wait_for(workers_gone, timeout=15)
        finally:
            for pid in workers:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
            for path in metrics_dirs:
                shutil.rmtree(path, ignore_errors=True)
        assert server.proc.stdout is not None
        server.output += await asyncio.wait_for(server.proc.stdout.read(), 10)  # EOF: all gone
        assert 2 == server.output.count(b'"master_gone"')

    async def test_a_worker_still_connecting_takes_no_requests(
        self, server_config, make_server, settings, test_env, queue_depths, topology
    ):
        """While one worker has reached the broker and the other is still connecting, every
        request is answered by the one that can publish: 202, never 503."""
        async with OneWorkersBroker(test_env["AMQP_URL"]) as proxy:
            server = make_server(server_config(
                broker_url=f"amqp://guest:guest@127.0.0.1:{proxy.port}/"))
            await server.start("--workers", "2")
            proxy.master = server.proc.pid
            await server.wait_for_line(b'"broker_connected"')
            assert [202] * 20 == await post_fresh(server, settings, 20)
            assert proxy.held  # the other worker is still trying
            assert 1 == server.output.count(b'"broker_connected"')
            await server.stop()
        assert 0 == server.proc.returncode
        assert 20 == (await queue_depths())[topology.queue("orders")]


class TestMetricsAccess:
    @pytest.mark.parametrize("workers", [1, 2])
    async def test_metrics_on_their_own_port(
        self, server_config, make_server, settings, workers
    ):
        """With metrics_port, /metrics is served there and only there: the webhook port
        answers 404 for it, and the metrics port serves nothing else."""
        metrics_port = free_port()
        server = make_server(server_config(f"metrics_port = {metrics_port}"))
        await server.start("--workers", str(workers))
        metrics_url = f"http://127.0.0.1:{metrics_port}/metrics"
        async with aiohttp.ClientSession() as session:
            await wait_status(session, f"{server.base}/readyz", 200)
            status, _, _ = await post_order(session, server, settings)
            assert 202 == status
            await wait_status(session, metrics_url, 200)
            async with session.get(metrics_url) as response:
                assert 1.0 == metric(await response.text(), SHOPIFY_202)
            async with session.get(f"{server.base}/metrics") as response:
                assert (404, "unknown_source") == (response.status,
                                                   (await response.json())["error"])
            for method, path in (("GET", "/readyz"), ("POST", "/webhooks/shopify")):
                async with session.request(
                    method, f"http://127.0.0.1:{metrics_port}{path}", data=b"{}"
                ) as response:
                    assert 404 == response.status
        await server.stop()
        assert 0 == server.proc.returncode

    @pytest.mark.parametrize(("allow", "forwarded", "status"), [
        (["127.0.0.0/8"], None, 200),
        (["10.0.0.0/8", "::1"], None, 403),
        (["10.0.0.0/8"], "10.1.2.3", 200),  # behind a trusted proxy: the client counts
        (["10.0.0.0/8"], "192.0.2.1", 403),
    ])
    async def test_metrics_allowlist(self, settings, make_client, allow, forwarded, status):
        """With metrics_allow, only those addresses read /metrics (the client behind a trusted
        proxy); others get 403 with a JSON reason."""
        server = dataclasses.replace(settings.server, metrics_allow=tuple(allow),
                                     trusted_proxies=("127.0.0.1",))
        client = await make_client(dataclasses.replace(settings, server=server))
        headers = {"X-Forwarded-For": forwarded} if forwarded else {}
        response = await client.get("/metrics", headers=headers)
        assert status == response.status
        if status == 403:
            assert "address_not_allowed" == (await response.json())["error"]
        else:
            assert "webhook_requests_total" in await response.text()


async def trickle(writer: asyncio.StreamWriter, data: bytes, every: float) -> None:
    """Send `data` one byte at a time, `every` seconds apart, until done or closed."""
    for byte in data:
        writer.write(bytes([byte]))
        try:
            await writer.drain()
        except ConnectionError:
            return
        await asyncio.sleep(every)


class TestHeaderTimeout:
    @pytest.mark.parametrize("workers", [1, 2])
    async def test_headers_sent_byte_by_byte_past_the_deadline_are_cut_off(
        self, server_config, make_server, workers
    ):
        """A client that sends its request line and headers slower than header_timeout is
        answered 408 header_timeout and its connection closed (one process, and gunicorn's
        workers); a client that sends them at once is served."""
        config = server_config()
        config.write_text(config.read_text().replace("header_timeout = 10 ",
                                                      "header_timeout = 0.5 "))
        server = make_server(config)
        await server.start("--workers", str(workers))
        async with aiohttp.ClientSession() as session:
            await wait_status(session, f"{server.base}/readyz", 200)
        reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
        slow = asyncio.create_task(trickle(
            writer, b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Slow: " + b"a" * 200 + b"\r\n\r\n",
            every=0.1))
        try:
            answer = await asyncio.wait_for(reader.read(), 30)  # until the server closes
        finally:
            slow.cancel()
            writer.close()
        assert answer.startswith(b"HTTP/1.1 408 "), answer[:100]
        assert b'"error":"header_timeout"' in answer
        async with aiohttp.ClientSession() as session, session.get(
                f"{server.base}/healthz") as response:
            assert 200 == response.status
