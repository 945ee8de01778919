"""The consumer runner against the real RabbitMQ and both stores: effects once, acks after
commit, retries on the ladder, dead letters with their reason, drain on stop."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import io
import threading
import time
from collections.abc import Awaitable, Callable
from typing import Any

import aio_pika
import orjson
import pytest
import structlog
from conftest import TIMEOUT, _admin, sqlite_write_locked

from consumers.errors import Permanent
from consumers.runner import ConsumerSpec, Runner
from consumers.store import StoreError
from router.broker.dlq import dlq_command

pytestmark = pytest.mark.integration


DOWNSTREAM = {"up": True}  # the test flips it to make "flaky" events fail for a while


async def count_effect(tx: Any, event: dict[str, Any], batch: None = None) -> None:
    """A test consumer: each event adds its quantity to one stock row; some events fail."""
    data = event["data"]
    if data.get("flaky") and not DOWNSTREAM["up"]:
        raise ConnectionError("downstream is down")
    if data.get("permanent"):
        raise Permanent("cannot apply this payload")
    if data.get("transient"):
        raise TimeoutError("downstream timed out")
    if data.get("slow"):
        time.sleep(data["slow"])  # noqa: ASYNC251 - SQLite runs handlers on its own thread
    await tx.execute(
        "UPDATE stock SET on_hand = on_hand + $1 WHERE sku = $2 AND location = $3",
        data["quantity"], "SKU-1", "main",
    )
    if data.get("notify"):
        body = orjson.dumps({"id": f"{event['id']}:stock", "type": "notify.stock.changed"})
        await tx.add_outbox("stock.changed", "notify.stock.changed", body, f"{event['id']}:stock")


async def wait_for(check: Callable[[], Awaitable[bool]], timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if await check():
            return
        await asyncio.sleep(0.05)
    raise AssertionError("condition not met in time")


def envelope(event_id: str, **data: Any) -> bytes:
    return orjson.dumps({"id": event_id, "type": "order.created", "data": data})


@pytest.fixture
async def stocked(store):
    async with store.transaction() as tx:
        await tx.execute(
            "INSERT INTO stock (sku, location, on_hand, reserved, as_of) "
            "VALUES ($1, $2, $3, $4, $5)", "SKU-1", "main", 0, 0, "2026-01-01T00:00:00Z",
        )
    return store


async def on_hand(store) -> int:
    async with store.transaction() as tx:
        return await tx.fetchval(
            "SELECT on_hand FROM stock WHERE sku = $1 AND location = $2", "SKU-1", "main"
        )


async def publish(amqp, topology, bodies: list[bytes]) -> None:
    channel = await amqp.channel(publisher_confirms=True)
    exchange = await channel.get_exchange(topology.exchange)
    for body in bodies:
        await exchange.publish(
            aio_pika.Message(body, delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
                             headers={"attempt": 0}),
            routing_key="order.created",
        )
    await channel.close()


class Gate:
    """Holds a handler inside its transaction until the test opens it. On PostgreSQL the
    handler awaits an asyncio.Event; on SQLite it runs on the store's thread, where it may
    await nothing but its transaction, so it waits on a threading.Event there."""

    def __init__(self) -> None:
        self._loop = asyncio.get_running_loop()
        self.entered = asyncio.Event()  # a handler is held
        self._opened = asyncio.Event()
        self._opened_thread = threading.Event()

    def open(self) -> None:
        self._opened.set()
        self._opened_thread.set()

    async def hold(self, tx: Any) -> None:
        if self._opened_thread.is_set():
            return
        self._loop.call_soon_threadsafe(self.entered.set)
        if tx.dialect == "sqlite":
            if not self._opened_thread.wait(TIMEOUT):
                raise TimeoutError("the test never opened the gate")
        else:
            await asyncio.wait_for(self._opened.wait(), TIMEOUT)

    def handler(self) -> Callable[..., Awaitable[None]]:
        """count_effect, held at the gate (while it is closed) for events with `hold`."""
        async def held_effect(tx: Any, event: dict[str, Any], batch: None = None) -> None:
            if event["data"].get("hold"):
                await self.hold(tx)
            await count_effect(tx, event, batch)
        return held_effect


@pytest.fixture
async def start_runner(stocked, settings):
    tasks: list[tuple[asyncio.Event, asyncio.Task[None]]] = []

    def start(prefetch: int = 10, concurrency: int = 1, *,
              handler: Callable[..., Awaitable[None]] = count_effect,
              broker: Any = None) -> tuple[asyncio.Event, asyncio.Task[None]]:
        stop = asyncio.Event()
        runner = Runner(ConsumerSpec("orders", handler), stocked, broker or settings.broker,
                        prefetch=prefetch, concurrency=concurrency)
        task = asyncio.create_task(runner.run(stop))
        tasks.append((stop, task))
        return stop, task

    yield start
    for stop, task in tasks:
        stop.set()
        await asyncio.wait_for(task, 10)


class TestRunner:
    async def test_duplicates_have_one_effect(self, amqp, topology, stocked, start_runner,
                                              queue_depths):
        """The same event delivered three times is applied once; everything is acked."""
        await publish(amqp, topology, [envelope("e1", quantity=5)] * 3
                      + [envelope("e2", quantity=1)])
        stop, task = start_runner()
        await wait_for(lambda: _eq(on_hand(stocked), 6))

        async def drained() -> bool:
            return 0 == (await queue_depths())[topology.queue("orders")]

        await wait_for(drained)
        stop.set()
        await asyncio.wait_for(task, 10)
        assert 6 == await on_hand(stocked)

    async def test_concurrent_batches_apply_once_and_ack_everything(
        self, amqp, topology, stocked, start_runner, queue_depths
    ):
        """Three batches at once, with duplicates and failures among them: every event is
        applied once, every message is acked or moved, nothing is left unacked."""
        bodies = [envelope(f"c{i}", quantity=1) for i in range(200)]
        bodies += bodies[:50]  # redelivered duplicates
        bodies += [envelope("perm", quantity=100, permanent=True)]
        await publish(amqp, topology, bodies)
        stop, task = start_runner(prefetch=40, concurrency=3)
        await wait_for(lambda: _eq(on_hand(stocked), 200))

        async def settled() -> bool:
            depths = await queue_depths()
            return (0, 1) == (depths[topology.queue("orders")],
                              depths[topology.dead_queue("orders")])

        await wait_for(settled)
        stop.set()
        await asyncio.wait_for(task, 10)
        channel = await amqp.channel()
        queue = await channel.declare_queue(topology.queue("orders"), passive=True)
        # Nothing came back unacked when the runner's connection closed.
        assert 0 == queue.declaration_result.message_count
        assert 200 == await on_hand(stocked)

    async def test_poison_is_retried_on_the_ladder_then_dead_lettered(
        self, amqp, topology, stocked, start_runner, queue_depths
    ):
        """A transient failure goes through every retry queue, then to NAME.dead with its
        reason, while later messages are applied."""
        await publish(amqp, topology, [envelope("bad", quantity=1, transient=True),
                                       envelope("good", quantity=2)])
        stop, task = start_runner()
        await wait_for(lambda: _eq(on_hand(stocked), 2))

        async def dead() -> bool:
            return 1 == (await queue_depths())[topology.dead_queue("orders")]

        await wait_for(dead, timeout=30)  # ladder (1 s, 2 s) in tests
        stop.set()
        await asyncio.wait_for(task, 10)
        channel = await amqp.channel()
        queue = await channel.get_queue(topology.dead_queue("orders"))
        message = await queue.get(no_ack=True)
        assert "bad" == orjson.loads(message.body)["id"]
        assert 2 == message.headers["attempt"]
        assert "orders" == message.headers["x-dead-consumer"]
        assert message.headers["x-dead-reason"].startswith("TimeoutError")
        assert 2 == await on_hand(stocked)

    async def test_permanent_failure_goes_straight_to_dead(
        self, amqp, topology, stocked, start_runner, queue_depths
    ):
        """A payload that can never be applied is dead-lettered at once, not retried, and
        logged at warning (a dead letter waits for an operator)."""
        await publish(amqp, topology, [envelope("p", quantity=1, permanent=True),
                                       b"not json"])
        with structlog.testing.capture_logs() as logs:
            stop, task = start_runner()

            async def dead() -> bool:
                return 2 == (await queue_depths())[topology.dead_queue("orders")]

            await wait_for(dead, timeout=10)
            stop.set()
            await asyncio.wait_for(task, 10)
        assert [("dead", "warning")] * 2 == [(e["outcome"], e["log_level"]) for e in logs
                                             if e["event"] == "message"]
        depths = await queue_depths()
        assert 0 == sum(v for k, v in depths.items() if ".retry." in k)

    async def test_stop_finishes_messages_in_hand(self, amqp, topology, stocked, start_runner,
                                                  queue_depths):
        """Stopping right after start still applies and acks what was delivered: nothing is
        lost and nothing is left unacked."""
        await publish(amqp, topology, [envelope(f"s{i}", quantity=1) for i in range(50)])
        stop, task = start_runner(prefetch=50)
        await wait_for(lambda: _gt(on_hand(stocked), 0))
        stop.set()
        await asyncio.wait_for(task, 10)
        applied = await on_hand(stocked)
        left = (await queue_depths())[topology.queue("orders")]
        assert 50 == applied + left


class TestBrokerRestart:
    async def test_broker_restart_while_consuming_loses_and_doubles_nothing(
        self, amqp, topology, stocked, store_url, start_runner, queue_depths
    ):
        """RabbitMQ stopped and started while a batch is in hand (its handler held inside
        the transaction, so the stop always comes mid-stream): the batch commits while the
        broker is away, the runner reconnects by itself, what it had not acked comes back and
        is recognised, every event is applied exactly once and the queue ends empty."""
        from test_ingress import broker_started, rabbitmqctl

        count, held = 500, 100
        await publish(amqp, topology, [envelope(f"r{i}", quantity=1, hold=i == held)
                                       for i in range(count)])
        gate = Gate()
        try:
            stop, task = start_runner(prefetch=20, handler=gate.handler())
            await asyncio.wait_for(gate.entered.wait(), TIMEOUT)
            await rabbitmqctl("stop_app")
            try:
                applied_while_down = await committed_on_hand(stocked, store_url)
                gate.open()  # the held batch commits now; its ack cannot reach the broker
            finally:
                await broker_started()
        finally:
            gate.open()
        assert applied_while_down <= held  # the held event and those after it were not

        async def drained() -> bool:
            try:
                return 0 == (await queue_depths())[topology.queue("orders")]
            except (aio_pika.exceptions.AMQPException, ConnectionError):
                return False

        await wait_for(lambda: _eq(on_hand(stocked), count), timeout=90)
        await wait_for(drained, timeout=30)
        stop.set()
        await asyncio.wait_for(task, 10)
        assert count == await on_hand(stocked)
        assert count == await inbox_count(stocked)
        # The held batch committed while the broker was away: it came back, recognised.
        assert "duplicate" in {row[3] for row in await attempts(stocked)}
        depths = await queue_depths()
        assert 0 == depths[topology.queue("orders")] + depths[topology.dead_queue("orders")]


async def inbox_count(store) -> int:
    async with store.transaction() as tx:
        return await tx.fetchval("SELECT COUNT(*) FROM inbox")


async def nothing_queued(queue_depths, topology) -> bool:
    """No message ready on the orders queue, its retry queues or its dead-letter queue."""
    names = {topology.queue("orders"), topology.dead_queue("orders")} | {
        topology.retry_queue("orders", delay) for delay in topology.retry_ladder}
    try:
        depths = await queue_depths()
    except (aio_pika.exceptions.AMQPException, ConnectionError):
        return False
    return 0 == sum(depths[name] for name in names)


def logged(logs: list[dict[str, Any]], event: str) -> Callable[[], Awaitable[bool]]:
    async def check() -> bool:
        return any(entry["event"] == event for entry in logs)
    return check


async def unacked(queue: str) -> int:
    """The broker's own count of messages delivered on `queue` and not yet acked."""
    from test_amqp import rabbitmqctl

    listing = await rabbitmqctl("list_queues", "name", "messages_unacknowledged")
    for line in listing.splitlines():
        name, _, count = line.partition("\t")
        if name == queue:
            return int(count)
    raise AssertionError(f"no queue {queue}")


async def committed_on_hand(store, store_url: str) -> int:
    """on_hand as committed, read beside a transaction the runner holds open (on SQLite
    that one holds the store's only connection: read through another)."""
    if not store_url.startswith("sqlite"):
        return await on_hand(store)
    import sqlite3

    with contextlib.closing(sqlite3.connect(store_url[len("sqlite:///"):])) as reader:
        (value,) = reader.execute(
            "SELECT on_hand FROM stock WHERE sku = 'SKU-1' AND location = 'main'").fetchone()
    return int(value)


async def fail_next_commit(store, store_url: str) -> None:
    """Make the next COMMIT of a transaction that claimed an event fail, once. PostgreSQL: a
    deferred constraint trigger on the inbox raises at COMMIT (a sequence, which no rollback
    undoes, lets it fire once). SQLite: the store's own commit step rolls back and raises."""
    if store_url.startswith("postgresql"):
        async with store.transaction() as tx:
            await tx.execute("CREATE SEQUENCE commit_fault")
            await tx.execute(
                "CREATE FUNCTION commit_fault() RETURNS trigger LANGUAGE plpgsql AS $$"
                " BEGIN IF nextval('commit_fault') = 1 THEN"
                " RAISE EXCEPTION 'injected: COMMIT failed'; END IF; RETURN NULL; END $$")
            await tx.execute(
                "CREATE CONSTRAINT TRIGGER commit_fault AFTER INSERT ON inbox"
                " DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION commit_fault()")
        return
    armed, real_end = [True], store._end

    def end(commit: bool) -> None:  # on the store's thread
        conn = store._require_conn()
        if (commit and armed and conn.in_transaction
                and conn.execute("SELECT COUNT(*) AS n FROM inbox").fetchone()["n"]):
            armed.clear()
            real_end(False)
            raise StoreError("sqlite: injected: COMMIT failed")
        real_end(commit)

    store._end = end


class TestStoreFaults:
    """The store fails under the runner: nothing is acked that is not committed, so every
    message comes back (from a retry queue, or redelivered) and is applied exactly once."""

    async def test_a_failed_commit_is_retried_and_applied_once(
        self, amqp, topology, stocked, store_url, start_runner, queue_depths
    ):
        """The COMMIT of the first batch raises: its messages go to the retry queue, not
        acked as processed, and every event ends applied once."""
        await fail_next_commit(stocked, store_url)
        count = 20
        await publish(amqp, topology, [envelope(f"f{i}", quantity=1) for i in range(count)])
        with structlog.testing.capture_logs() as logs:
            stop, task = start_runner()
            await wait_for(logged(logs, "batch_commit_failed"), timeout=TIMEOUT)
            await wait_for(lambda: _eq(on_hand(stocked), count), timeout=TIMEOUT)
            await wait_for(lambda: nothing_queued(queue_depths, topology))
            stop.set()
            await asyncio.wait_for(task, 10)
        assert count == await on_hand(stocked)
        assert count == await inbox_count(stocked)
        retried = [row for row in await attempts(stocked) if row[3] == "retry"]
        assert retried and all(row[5].startswith("commit failed") for row in retried)
        assert await nothing_queued(queue_depths, topology)

    async def test_postgresql_backend_terminated_mid_batch(
        self, amqp, topology, stocked, store_url, start_runner, queue_depths
    ):
        """A batch is inside its transaction when PostgreSQL ends the runner's connections
        (pg_terminate_backend) and refuses new ones for a while: nothing is acked as
        processed, and once the database is back every event is applied once."""
        if not store_url.startswith("postgresql"):
            pytest.skip("PostgreSQL's backends; SQLite's fault is a lock (the next test)")
        database = store_url.rpartition("/")[2]
        count = 10
        await publish(amqp, topology, [envelope("t0", quantity=1, hold=True)]
                      + [envelope(f"t{i}", quantity=1) for i in range(1, count)])
        gate = Gate()
        admin, _ = await _admin()
        try:
            with structlog.testing.capture_logs() as logs:
                stop, task = start_runner(handler=gate.handler())
                await asyncio.wait_for(gate.entered.wait(), TIMEOUT)
                await admin.execute(f'ALTER DATABASE "{database}" ALLOW_CONNECTIONS false')
                await admin.execute(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                    " WHERE datname = $1", database)

                async def gone() -> bool:
                    return 0 == await admin.fetchval(
                        "SELECT COUNT(*) FROM pg_stat_activity WHERE datname = $1", database)

                await wait_for(gone, timeout=TIMEOUT)
                gate.open()
                await wait_for(logged(logs, "batch_commit_failed"), timeout=TIMEOUT)
                await admin.execute(f'ALTER DATABASE "{database}" ALLOW_CONNECTIONS true')
                await wait_for(lambda: _eq(on_hand(stocked), count), timeout=TIMEOUT)
                await wait_for(lambda: nothing_queued(queue_depths, topology))
                stop.set()
                await asyncio.wait_for(task, 10)
        finally:
            gate.open()
            await admin.execute(f'ALTER DATABASE "{database}" ALLOW_CONNECTIONS true')
            await admin.close()
        assert count == await on_hand(stocked)
        assert count == await inbox_count(stocked)
        assert await nothing_queued(queue_depths, topology)

    async def test_sqlite_locked_by_another_connection_for_seconds(
        self, amqp, topology, stocked, store_url, start_runner, queue_depths
    ):
        """Another connection holds SQLite's write lock past the store's busy timeout while
        messages arrive: the batch fails, nothing is acked as processed, and once the lock
        is gone every event is applied once."""
        if not store_url.startswith("sqlite"):
            pytest.skip("SQLite's write lock; PostgreSQL's fault is the test before")
        import sqlite3

        count = 10
        with structlog.testing.capture_logs() as logs:
            stop, task = start_runner()
            await wait_for(logged(logs, "consumer_started"), timeout=TIMEOUT)
            locker = sqlite3.connect(store_url[len("sqlite:///"):], isolation_level=None,
                                     timeout=TIMEOUT, check_same_thread=False)
            try:
                await asyncio.to_thread(locker.execute, "BEGIN IMMEDIATE")
                await publish(amqp, topology,
                              [envelope(f"l{i}", quantity=1) for i in range(count)])
                await wait_for(logged(logs, "batch_commit_failed"), timeout=TIMEOUT)
                assert (0,) == locker.execute("SELECT COUNT(*) FROM inbox").fetchone()
            finally:
                locker.rollback()
                locker.close()
            await wait_for(lambda: _eq(on_hand(stocked), count), timeout=TIMEOUT)
            await wait_for(lambda: nothing_queued(queue_depths, topology))
            stop.set()
            await asyncio.wait_for(task, 10)
        assert count == await inbox_count(stocked)

    async def test_a_store_away_when_consuming_starts_is_waited_for(
        self, amqp, topology, stocked, store_url, start_runner, queue_depths
    ):
        """The store goes away between its opening and the runner's start-up outbox relay
        (SQLite: another connection holds the write lock past the busy timeout; PostgreSQL:
        its connections ended and new ones refused): the runner logs `store_unavailable`,
        keeps trying instead of ending, and once the store is back consumes and applies
        every event once."""
        count = 5
        await publish(amqp, topology, [envelope(f"s{i}", quantity=1) for i in range(count)])
        with structlog.testing.capture_logs() as logs:
            async with _store_away(store_url):
                stop, task = start_runner()
                await wait_for(logged(logs, "store_unavailable"), timeout=TIMEOUT)
                assert not task.done()
            await wait_for(lambda: _eq(on_hand(stocked), count), timeout=TIMEOUT)
            await wait_for(lambda: nothing_queued(queue_depths, topology))
            stop.set()
            await asyncio.wait_for(task, 10)
        assert count == await inbox_count(stocked)

    async def test_a_held_transaction_keeps_its_message_unacked_until_the_commit(
        self, amqp, topology, stocked, store_url, settings, start_runner, queue_depths
    ):
        """While the handler is held inside its transaction the broker counts the message
        unacked; the runner's connection is then cut: the message is redelivered, and the
        two deliveries make one effect (the held one commits, the redelivery is a
        duplicate)."""
        from broker_proxy import Proxy

        proxy = await Proxy().start()
        gate = Gate()
        try:
            await publish(amqp, topology, [envelope("h1", quantity=3, hold=True)])
            broker = dataclasses.replace(settings.broker, url=proxy.url())
            stop, task = start_runner(handler=gate.handler(), broker=broker)
            await asyncio.wait_for(gate.entered.wait(), TIMEOUT)
            queue = topology.queue("orders")
            await wait_for(lambda: _eq(unacked(queue), 1), timeout=TIMEOUT)
            assert 0 == await committed_on_hand(stocked, store_url)
            proxy.cut()
            gate.open()

            async def twice() -> bool:
                return ["duplicate", "processed"] == sorted(row[3]
                                                           for row in await attempts(stocked))

            await wait_for(twice, timeout=TIMEOUT)
            await wait_for(lambda: _eq(unacked(queue), 0), timeout=TIMEOUT)
            stop.set()
            await asyncio.wait_for(task, 10)
        finally:
            gate.open()
            await proxy.close()
        assert 3 == await on_hand(stocked)
        assert 1 == await inbox_count(stocked)
        assert await nothing_queued(queue_depths, topology)


class TestReplay:
    async def test_dead_letter_replayed_is_processed(
        self, amqp, topology, stocked, start_runner, queue_depths, settings
    ):
        """A message that died while a dependency was down is applied once it is replayed
        from the dead-letter queue."""
        from router.broker.dlq import dlq_command

        DOWNSTREAM["up"] = False
        try:
            await publish(amqp, topology, [envelope("f1", quantity=7, flaky=True)])
            stop, task = start_runner()

            async def dead() -> bool:
                return 1 == (await queue_depths())[topology.dead_queue("orders")]

            await wait_for(dead, timeout=30)
            assert 0 == await on_hand(stocked)
            DOWNSTREAM["up"] = True
            assert 0 == await dlq_command(settings.broker, "replay", "orders",
                                          out=__import__("io").StringIO())
            await wait_for(lambda: _eq(on_hand(stocked), 7))
            stop.set()
            await asyncio.wait_for(task, 10)
        finally:
            DOWNSTREAM["up"] = True
        assert 0 == (await queue_depths())[topology.dead_queue("orders")]


class TestOutbox:
    async def test_outbox_rows_are_published_after_commit(
        self, amqp, topology, stocked, start_runner, queue_depths
    ):
        """An effect's outbox row reaches the notifications queue once, and is marked sent."""
        await publish(amqp, topology, [envelope("n1", quantity=1, notify=True)] * 2)
        stop, task = start_runner()

        async def notified() -> bool:
            return 1 == (await queue_depths())[topology.queue("notifications")]

        await wait_for(notified)
        stop.set()
        await asyncio.wait_for(task, 10)
        assert [] == await stocked.pending_outbox(10)
        channel = await amqp.channel()
        queue = await channel.get_queue(topology.queue("notifications"))
        message = await queue.get(no_ack=True)
        assert ("n1:stock", "notify.stock.changed") == (message.message_id, message.type)


class TestTick:
    async def test_a_tick_runs_on_its_own_and_its_outbox_goes_out(
        self, stocked, settings, topology, queue_depths
    ):
        """A consumer's tick runs every tick_every seconds in a transaction of its own, with
        no message arriving; what it writes to the outbox is published and marked sent."""
        ticks: list[str] = []

        async def tick(tx: Any, now: str) -> int:
            ticks.append(now)
            if len(ticks) == 2:  # the second tick has something to announce
                body = orjson.dumps({"id": "tick-2", "type": "stock.changed"})
                await tx.add_outbox("stock.changed", "notify.stock.changed", body, "tick-2")
                return 1
            return 0

        spec = ConsumerSpec("orders", count_effect, tick=tick, tick_every=0.1)
        stop = asyncio.Event()
        task = asyncio.create_task(Runner(spec, stocked, settings.broker).run(stop))

        async def announced() -> bool:
            return 1 == (await queue_depths())[topology.queue("notifications")]

        await wait_for(announced)
        stop.set()
        await asyncio.wait_for(task, 10)
        assert len(ticks) >= 2 and ticks == sorted(ticks)
        assert [] == await stocked.pending_outbox(10)


async def attempts(store) -> list[tuple]:
    async with store.transaction() as tx:
        rows = await tx.fetch(
            "SELECT consumer, event_id, attempt, outcome, delay_seconds, reason, replayed_at"
            " FROM consumer_attempts ORDER BY id")
    return [(row["consumer"], row["event_id"], row["attempt"], row["outcome"],
             row["delay_seconds"], row["reason"], row["replayed_at"] is not None)
            for row in rows]


async def _count(store, expected: int) -> bool:
    return expected == len(await attempts(store))


class TestAttemptRecord:
    """consumer_attempts: what the consumer did with each message, attempt by attempt."""

    async def test_applied_duplicate_and_permanent_failure(self, amqp, topology, stocked,
                                                           start_runner):
        """An applied event, its repeat and a payload that can never apply: one row each,
        the dead letter's with its reason."""
        await publish(amqp, topology, [envelope("a1", quantity=2), envelope("a1", quantity=2),
                                       envelope("p1", permanent=True)])
        start_runner()
        await wait_for(lambda: _count(stocked, 3))
        assert sorted([
            ("orders", "a1", 1, "processed", None, None, False),
            ("orders", "a1", 1, "duplicate", None, None, False),
            ("orders", "p1", 1, "dead", None, "cannot apply this payload", False),
        ]) == sorted(await attempts(stocked))

    async def test_retries_dead_letter_and_replay(self, amqp, topology, stocked, start_runner,
                                                  settings):
        """A message failing every time: a row per retry with its delay, then the dead
        letter with the reason; replayed once the dependency is back, it is processed and
        the row says it was a replay."""
        DOWNSTREAM["up"] = False
        try:
            await publish(amqp, topology, [envelope("f1", quantity=7, flaky=True)])
            start_runner()
            await wait_for(lambda: _count(stocked, 3), timeout=30)
            DOWNSTREAM["up"] = True
            assert 0 == await dlq_command(settings.broker, "replay", "orders", out=io.StringIO())
            await wait_for(lambda: _eq(on_hand(stocked), 7))
            await wait_for(lambda: _count(stocked, 4))
        finally:
            DOWNSTREAM["up"] = True
        reason = "ConnectionError: downstream is down"
        assert [
            ("orders", "f1", 1, "retry", 1, reason, False),
            ("orders", "f1", 2, "retry", 2, reason, False),
            ("orders", "f1", 3, "dead", None, reason, False),
            ("orders", "f1", 1, "processed", None, None, True),
        ] == await attempts(stocked)

    async def test_a_failed_record_never_holds_the_message(self, amqp, topology, stocked,
                                                           start_runner, queue_depths):
        """With consumer_attempts gone, a dead letter still reaches the dead-letter queue
        and is acked (its record is only logged as failed)."""
        async with stocked.transaction() as tx:
            await tx.execute("ALTER TABLE consumer_attempts RENAME TO consumer_attempts_gone")
        await publish(amqp, topology, [envelope("p2", permanent=True)])
        start_runner()

        async def dead() -> bool:
            depths = await queue_depths()
            return (1, 0) == (depths[topology.dead_queue("orders")],
                              depths[topology.queue("orders")])

        await wait_for(dead)


@contextlib.asynccontextmanager
async def _store_away(store_url: str) -> Any:
    """The store unusable until the block ends: SQLite's write lock held by another
    connection; PostgreSQL's database refusing connections, those it had ended."""
    if store_url.startswith("sqlite"):
        async with sqlite_write_locked(store_url):
            yield
        return
    database = store_url.rpartition("/")[2]
    admin, _ = await _admin()
    try:
        await admin.execute(f'ALTER DATABASE "{database}" ALLOW_CONNECTIONS false')
        await admin.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                            " WHERE datname = $1", database)
        yield
    finally:
        await admin.execute(f'ALTER DATABASE "{database}" ALLOW_CONNECTIONS true')
        await admin.close()


async def _eq(value: Awaitable[int], expected: int) -> bool:
    return expected == await value


async def _gt(value: Awaitable[int], floor: int) -> bool:
    return await value > floor
