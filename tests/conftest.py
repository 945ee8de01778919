"""Shared fixtures: settings with test secrets, and a real broker with names unique per test."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import os
import re
import sqlite3
import time
import uuid
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import aio_pika
import asyncpg
import pytest
from aiohttp.test_utils import TestClient, TestServer

from consumers.outbound.notification import delivery_queues
from consumers.store import Store, open_store
from router.app import create_app
from router.broker.dlq import queue_depth
from router.broker.topology import Topology
from router.console.app import create_console_app
from router.settings import Settings, load_settings

ROOT = Path(__file__).resolve().parents[1]
CONFIG = ROOT / "config" / "router.toml"
AMQP_URL = os.environ.get("AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/")

# Test-only secrets for the shipped config's references.
TEST_ENV = {
    "SHOPIFY_WEBHOOK_SECRET": "shpss_test_0123456789abcdef",
    "WOOCOMMERCE_WEBHOOK_SECRET": "wc-test-secret",
    "PORTAL_WEBHOOK_TOKEN": "portal-test-token",
    "INVENTORY_WEBHOOK_SECRET": "inventory-test-secret",
    "EASYPOST_WEBHOOK_SECRET": "sécret",
    "AFTERSHIP_WEBHOOK_SECRET": "aftership-test-secret",
    "AMQP_URL": AMQP_URL,
}


@pytest.fixture
def test_env() -> dict[str, str]:
    return dict(TEST_ENV)


@pytest.fixture
def prefix(request: pytest.FixtureRequest) -> str:
    """A broker name prefix unique to this test."""
    name = re.sub(r"[^A-Za-z0-9_-]", "-", request.node.name)[:40]
    return f"test-{name}-{uuid.uuid4().hex[:8]}."


@pytest.fixture
def settings(prefix: str, test_env: dict[str, str]) -> Settings:
    """The shipped config/router.toml, with test secrets and this test's broker prefix."""
    loaded = load_settings(CONFIG, environ=test_env)
    broker = dataclasses.replace(
        loaded.broker, url=AMQP_URL, prefix=prefix, retry_ladder=(1, 2), confirm_timeout=5.0
    )
    return dataclasses.replace(loaded, broker=broker)


@pytest.fixture
async def amqp(request: pytest.FixtureRequest) -> AsyncIterator[aio_pika.abc.AbstractConnection]:
    """A connection named after the test, so it shows in the management UI."""
    connection = await aio_pika.connect(
        AMQP_URL, client_properties={"connection_name": f"test:{request.node.nodeid}"}
    )
    async with connection:
        yield connection


@pytest.fixture
async def topology(
    settings: Settings, amqp: aio_pika.abc.AbstractConnection
) -> AsyncIterator[Topology]:
    """This test's topology, declared, and deleted after the test."""
    b = settings.broker
    topo = Topology.of(b)
    try:
        await topo.declare(await amqp.channel())
        yield topo
    finally:  # also when declaring failed half-way (a broker restart): it left queues
        await _delete(topo, settings)


async def _delete(topo: Topology, settings: Settings) -> None:
    """Delete the test's topology on a fresh connection, tried again for a while: a test
    (this one, or another run on the same broker) may have restarted the broker."""
    deadline = time.monotonic() + 60
    while True:
        try:
            async with await aio_pika.connect(AMQP_URL) as connection:
                channel = await connection.channel()
                # And the outbound queues a notifications consumer declared.
                await topo.delete(channel, settings.sources, delivery_queues(topo, settings))
            return
        except (aio_pika.exceptions.AMQPError, ConnectionError, OSError):
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.5)


@pytest.fixture
def queue_depths(topology: Topology, settings: Settings) -> Callable[[], object]:
    """Returns {queue: message count} for every queue of this test's topology and every
    source's hold queue (0 where an ingress has not declared it yet)."""
    holds = [spec.name for spec in topology.hold_queues(settings.sources)]

    async def depths() -> dict[str, int]:
        async with await aio_pika.connect(AMQP_URL) as connection:
            channel = await connection.channel()
            counts = {}
            for name in topology.names():
                queue = await channel.declare_queue(name, passive=True)
                counts[name] = queue.declaration_result.message_count
            for name in holds:
                depth = await queue_depth(channel, name)
                if depth is None:  # the broker closed the channel on the missing queue
                    channel = await connection.channel()
                counts[name] = depth or 0
            return counts

    return depths


# --- stores: a SQLite file, or a PostgreSQL database of the test's own ---------------

PG_HOST = os.environ.get("STORE_TEST_PG_HOST", "127.0.0.1")
PG_PORT = int(os.environ.get("STORE_TEST_PG_PORT", "5432"))
PG_USERS = ("root", "postgres")
TIMEOUT = 30.0


async def _admin() -> tuple[asyncpg.Connection, str]:
    """A connection to the `postgres` database as the first user that works."""
    last: Exception | None = None
    for user in PG_USERS:
        try:
            conn = await asyncpg.connect(
                host=PG_HOST, port=PG_PORT, user=user, database="postgres", timeout=10
            )
        except (OSError, asyncpg.PostgresError) as exc:
            last = exc
            continue
        return conn, user
    raise RuntimeError(f"no PostgreSQL at {PG_HOST}:{PG_PORT} as {PG_USERS}: {last!r}")


@contextlib.asynccontextmanager
async def sqlite_write_locked(store_url: str) -> AsyncIterator[None]:
    """Another connection holds the SQLite store's write lock (BEGIN IMMEDIATE) until the
    block ends: past any busy timeout, every other writer gets SQLITE_BUSY."""
    locker = sqlite3.connect(store_url.removeprefix("sqlite:///"), isolation_level=None,
                             check_same_thread=False)
    try:
        await asyncio.to_thread(locker.execute, "BEGIN IMMEDIATE")
        yield
    finally:
        locker.execute("ROLLBACK")
        locker.close()


@pytest.fixture(params=["sqlite", "postgresql"])
async def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[str]:
    """A fresh, empty database: a file in tmp_path, or a PostgreSQL database of its own."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path}/store-{uuid.uuid4().hex[:8]}.sqlite3"
        return
    admin, user = await _admin()
    name = f"store_{uuid.uuid4().hex}"
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
        yield f"postgresql://{user}@{PG_HOST}:{PG_PORT}/{name}"
    finally:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await admin.close()


@pytest.fixture
async def store(store_url: str) -> AsyncIterator[Store]:
    async with open_store(store_url) as opened:
        yield opened


# --- an ingress on loopback for this test's topology ---------------------------------


async def wait_ready(client: TestClient, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        response = await client.get("/readyz")
        if response.status == 200:
            return
        await asyncio.sleep(0.05)
    raise AssertionError("the ingress did not become ready")


@pytest.fixture
async def make_client(topology) -> AsyncIterator[Callable[..., Any]]:
    """Starts ingresses on loopback for this test's topology; closes them afterwards."""
    clients: list[TestClient] = []

    async def make(settings: Settings, ready: bool = True) -> TestClient:
        client = TestClient(TestServer(create_app(settings)))
        await client.start_server()
        clients.append(client)
        if ready:
            await wait_ready(client)
        return client

    yield make
    for client in clients:
        await client.close()


@pytest.fixture
async def client(settings: Settings, make_client) -> TestClient:
    return await make_client(settings)


@pytest.fixture
async def make_console() -> AsyncIterator[Callable[..., Any]]:
    """Starts operator consoles on loopback (settings with [console]); closes them after."""
    consoles: list[TestClient] = []

    async def make(settings: Settings) -> TestClient:
        console = TestClient(TestServer(create_console_app(settings)))
        await console.start_server()
        consoles.append(console)
        return console

    yield make
    for console in consoles:
        await console.close()
