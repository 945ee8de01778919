"""A three-node RabbitMQ cluster on this machine (scripts/cluster), beside the default broker:
quorum queues on every node, and the ingress's publisher and a consumer carrying on on
another node when theirs stops, with nothing confirmed lost.

The cluster is started once for the module (its own node names, ports and directory, so a
developer's `scripts/cluster up` is left alone) and removed after it.
"""

from __future__ import annotations

import asyncio
import dataclasses
import os
import socket
import subprocess
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from typing import Any

import orjson
import pytest
from conftest import ROOT

from consumers.runner import ConsumerSpec, Runner
from consumers.store import open_store
from router.broker.connect import open_connection
from router.broker.errors import PublishFailed, PublishInDoubt
from router.broker.publisher import Publisher
from router.broker.topology import Topology
from router.settings import BrokerSettings, Settings

pytestmark = pytest.mark.integration

SCRIPT = ROOT / "scripts" / "cluster"
FIRST_PORT = 5711  # AMQP 5711-5713, distribution 25711-25713
NODE = "wr-test"
TIMEOUT = 30.0


class Cluster:
    """The running cluster: its addresses, and its nodes' apps to stop and start."""

    def __init__(self, env: dict[str, str]) -> None:
        self.env = env
        self.urls = [f"amqp://guest:guest@127.0.0.1:{FIRST_PORT + i}/" for i in range(3)]

    def node_of(self, url: str | None) -> int:
        """1, 2 or 3: the node at `url`."""
        assert url is not None, "not connected"
        return self.urls.index(url) + 1

    async def run(self, *args: str) -> str:
        """`scripts/cluster ARGS` (ctl N ..., queues N ...); its output."""
        process = await asyncio.create_subprocess_exec(
            str(SCRIPT), *args, env=self.env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        out, err = await asyncio.wait_for(process.communicate(), TIMEOUT)
        assert 0 == process.returncode, err.decode()
        return out.decode()

    async def members(self, queue: str) -> list[str]:
        """The nodes holding a replica of the quorum queue `queue`."""
        listed = orjson.loads(await self.run("ctl", "1", "list_queues", "name", "members",
                                             "--formatter", "json"))
        return next(sorted(row["members"]) for row in listed if row["name"] == queue)


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    """`scripts/cluster up` in a directory of the module's own; down (processes stopped,
    files deleted) afterwards, also when up failed half-way."""
    for port in (FIRST_PORT + i + offset for i in range(3) for offset in (0, 20000)):
        with socket.socket() as probe:
            if probe.connect_ex(("127.0.0.1", port)) == 0:
                pytest.fail(f"port {port}, which the test cluster needs, is taken")
    directory = tmp_path_factory.mktemp("cluster")
    env = {**os.environ, "CLUSTER_DIR": str(directory), "CLUSTER_PORT": str(FIRST_PORT),
           "CLUSTER_NODE": NODE}
    try:
        started = time.monotonic()
        try:
            subprocess.run([SCRIPT, "up"], env=env, check=True, timeout=120)
        except subprocess.SubprocessError:
            for log in sorted(directory.glob("*/log/*.log")):  # before `down` deletes them
                print(f"--- {log.name}", *log.read_text().splitlines()[-40:], sep="\n")
            raise
        print(f"cluster up in {time.monotonic() - started:.1f}s")
        yield Cluster(env)
    finally:
        subprocess.run([SCRIPT, "down"], env=env, check=True, timeout=60)
    assert not directory.exists() or not any(directory.iterdir())  # nothing left behind


@pytest.fixture
async def broker(settings: Settings, cluster: Cluster) -> AsyncIterator[BrokerSettings]:
    """This test's [broker] settings on the cluster's three addresses; its topology is
    deleted afterwards."""
    broker = dataclasses.replace(settings.broker, url=cluster.urls[0],
                                 other_urls=tuple(cluster.urls[1:]))
    yield broker
    connection = await open_connection(broker, "test-cluster-cleanup")
    async with connection:
        await Topology.of(broker).delete(await connection.channel())


async def until(check: Callable[[], bool], what: str, timeout: float = TIMEOUT) -> None:
    """Wait until `check()` holds, at most `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {timeout}s: {what}")
        await asyncio.sleep(0.02)


async def stopped(cluster: Cluster, node: int) -> Callable[[], Awaitable[str]]:
    """Stop node's app; returns what starts it again."""
    await cluster.run("ctl", str(node), "stop_app")
    return lambda: cluster.run("ctl", str(node), "start_app")


async def queued_ids(broker: BrokerSettings, queue: str) -> list[str]:
    """The message ids on `queue` (taken off it)."""
    connection = await open_connection(broker, "test-cluster-count")
    async with connection:
        channel = await connection.channel()
        await channel.set_qos(prefetch_count=1000)
        declared = await channel.declare_queue(queue, passive=True)
        count = declared.declaration_result.message_count or 0
        ids: list[str] = []
        if count:
            async with declared.iterator(no_ack=True) as messages:
                async for message in messages:
                    ids.append(str(message.message_id))
                    if len(ids) == count:
                        break
        return ids


async def test_quorum_queues_have_a_member_on_every_node(broker, cluster):
    """A work queue our topology declares on the cluster is replicated on all three nodes."""
    publisher = Publisher(broker, connection_name="test-cluster-members")
    await publisher.start()
    await publisher.close()
    assert [f"{NODE}{n}@localhost" for n in (1, 2, 3)] == await cluster.members(
        Topology.of(broker).queue("orders"))


async def test_publisher_fails_over_and_loses_nothing_confirmed(broker, cluster):
    """Publishing with confirms while the publisher's node stops: it carries on on another
    node, every message it confirmed is on the queue (with that node still away), and
    nothing it reported as not published (PublishFailed, not in doubt) is."""
    publisher = Publisher(broker, connection_name="test-cluster-publisher")
    await publisher.start()
    node = cluster.node_of(publisher.address)
    confirmed: list[str] = []
    in_doubt: list[str] = []
    refused: list[str] = []
    stop = asyncio.Event()

    async def publish(worker: int) -> None:
        for n in range(1_000_000):
            if stop.is_set():
                return
            message_id = f"{worker}-{n}"
            try:
                await publisher.publish(b"{}", routing_key="order.created",
                                        message_id=message_id, type="order.created",
                                        correlation_id=None, headers={"attempt": 0})
            except PublishInDoubt:
                in_doubt.append(message_id)
            except PublishFailed:
                refused.append(message_id)
                await asyncio.sleep(0.01)  # as a provider backs off after a 503
            else:
                confirmed.append(message_id)

    workers = [asyncio.create_task(publish(worker)) for worker in range(8)]
    start_again = None
    try:
        await until(lambda: len(confirmed) >= 200, "200 confirmed before the stop")
        start_again = await stopped(cluster, node)
        before = len(confirmed)
        await until(lambda: publisher.address not in (None, cluster.urls[node - 1]),
                    "connected to another node")
        await until(lambda: len(confirmed) >= before + 200, "200 confirmed after the stop")
        stop.set()
        await asyncio.gather(*workers)
        # Counted while the node is still away: the other two hold every confirmed message.
        on_queue = await queued_ids(broker, Topology.of(broker).queue("orders"))
    finally:
        stop.set()
        await asyncio.gather(*workers)
        await publisher.close()
        if start_again is not None:
            await start_again()
    print(f"confirmed {len(confirmed)}, in doubt {len(in_doubt)}, refused {len(refused)}, "
          f"on the queue {len(on_queue)}")
    assert set() == set(confirmed) - set(on_queue), "confirmed but lost"
    assert set() == set(on_queue) & set(refused), "reported as not published, but queued"
    assert len(on_queue) == len(set(on_queue))


async def test_consumer_carries_on_when_its_node_stops(broker, cluster, tmp_path):
    """A consumer connected through the cluster's addresses keeps consuming on another node
    once its node stops: every event published before and after is handled."""
    handled: set[str] = set()
    loop = asyncio.get_running_loop()
    progress = asyncio.Event()
    lock = threading.Lock()

    async def record(tx: Any, event: dict[str, Any], batch: None = None) -> None:
        with lock:  # SQLite runs handlers on its own thread
            handled.add(event["id"])
        loop.call_soon_threadsafe(progress.set)

    async def all_handled(ids: list[str]) -> None:
        deadline = time.monotonic() + TIMEOUT
        while not handled.issuperset(ids):
            progress.clear()
            try:
                await asyncio.wait_for(progress.wait(), deadline - time.monotonic())
            except TimeoutError:
                missing = len(set(ids) - handled)
                raise AssertionError(f"{missing} of {len(ids)} not handled") from None

    publisher = Publisher(broker, connection_name="test-cluster-feed")
    await publisher.start()

    async def publish(ids: list[str]) -> None:
        for event_id in ids:
            body = orjson.dumps({"id": event_id, "type": "order.created", "data": {}})
            while True:
                try:
                    await publisher.publish(body, routing_key="order.created",
                                            message_id=event_id, type="order.created",
                                            correlation_id=None, headers={"attempt": 0})
                    break
                except PublishFailed:  # the publisher's own node may be the one stopped
                    await asyncio.sleep(0.05)

    stop = asyncio.Event()
    start_again = None
    async with open_store(f"sqlite:///{tmp_path}/store.sqlite3") as store:
        runner = Runner(ConsumerSpec("orders", record), store, broker, prefetch=20)
        running = asyncio.create_task(runner.run(stop))
        try:
            first = [f"before-{n}" for n in range(100)]
            await publish(first)
            await all_handled(first)
            node = cluster.node_of(runner._connection.address)  # type: ignore[union-attr]
            start_again = await stopped(cluster, node)
            second = [f"after-{n}" for n in range(100)]
            await publish(second)
            await all_handled(second)
        finally:
            if start_again is not None:  # first: a consumer stuck on it stops no sooner
                await start_again()
            stop.set()
            await asyncio.wait_for(running, TIMEOUT)
            await publisher.close()
