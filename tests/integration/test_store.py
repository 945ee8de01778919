"""The consumers' store against real SQLite files and a real PostgreSQL, same tests for both."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest
import structlog
from broker_proxy import Proxy
from conftest import PG_HOST, PG_PORT, TIMEOUT, _admin  # noqa: F401

from consumers.stock import Policy, new_lines, reserve_lines
from consumers.store import (
    MIGRATIONS,
    IntegrityViolation,
    SqliteStore,
    Store,
    StoreBusy,
    StoreError,
    StoreUnavailable,
    Tx,
    open_store,
)


async def _versions(store: Store) -> list[int]:
    async with store.transaction() as tx:
        rows = await tx.fetch("SELECT version FROM schema_migrations ORDER BY version")
    return [row["version"] for row in rows]


async def _put_stock(store: Store, sku: str, on_hand: int, reserved: int = 0) -> None:
    async with store.transaction() as tx:
        await tx.execute(
            "INSERT INTO stock (sku, location, on_hand, reserved, as_of)"
            " VALUES ($1, $2, $3, $4, $5)",
            sku,
            "main",
            on_hand,
            reserved,
            "2024-01-01T00:00:00+00:00",
        )


class Boom(Exception):
    pass


async def test_migrating_again_is_a_no_op(store: Store, store_url: str) -> None:
    expected = [version for version, _ in MIGRATIONS]
    assert await _versions(store) == expected
    await store.open()  # already open: nothing happens
    async with open_store(store_url) as again:
        assert await _versions(again) == expected
    assert await _versions(store) == expected


async def test_concurrent_starters_both_migrate_once(store_url: str) -> None:
    first, second = open_store(store_url), open_store(store_url)
    try:
        async with asyncio.timeout(TIMEOUT):
            await asyncio.gather(first.open(), second.open())
        assert await _versions(first) == [version for version, _ in MIGRATIONS]
        async with second.transaction() as tx:
            assert await tx.claim("orders", "evt-1")
        async with first.transaction() as tx:
            assert not await tx.claim("orders", "evt-1")
    finally:
        await first.close()
        await second.close()


async def test_claim_once_then_recognised(store: Store) -> None:
    async with store.transaction() as tx:
        assert await tx.claim("orders", "evt-1") is True
    async with store.transaction() as tx:
        assert await tx.claim("orders", "evt-1") is False
        assert await tx.claim("inventory", "evt-1") is True  # per consumer
    async with store.transaction() as tx:
        row = await tx.fetchrow(
            "SELECT processed_at FROM inbox WHERE consumer = $1 AND event_id = $2",
            "orders",
            "evt-1",
        )
    assert row is not None and row["processed_at"].startswith("20")


async def test_exception_rolls_back_claim_and_effect(store: Store) -> None:
    with pytest.raises(Boom):
        async with store.transaction() as tx:
            assert await tx.claim("orders", "evt-2")
            affected = await tx.execute(
                "INSERT INTO orders (order_id, source, status, version) VALUES ($1, $2, $3, $4)",
                "o-1",
                "shopify",
                "open",
                1,
            )
            assert affected == 1
            await tx.add_outbox("notify", "notify.order.created", b"{}", "msg-o-1")
            raise Boom
    async with store.transaction() as tx:
        assert await tx.fetchval("SELECT count(*) FROM orders") == 0
        assert await tx.fetchval("SELECT count(*) FROM outbox") == 0
        assert await tx.claim("orders", "evt-2") is True  # the claim was rolled back too


async def test_fetch_helpers_and_returning(store: Store) -> None:
    async with store.transaction() as tx:
        rows = await tx.fetch(
            "INSERT INTO orders (order_id, status, version) VALUES ($1, $2, 1), ($3, $2, 1)"
            " RETURNING order_id",
            "o-a",
            "open",
            "o-b",
        )
        assert sorted(row["order_id"] for row in rows) == ["o-a", "o-b"]
        upserted = await tx.execute(
            "INSERT INTO orders (order_id, status, version) VALUES ($1, $2, 1)"
            " ON CONFLICT (order_id) DO UPDATE SET status = excluded.status,"
            " version = orders.version + 1",
            "o-a",
            "cancelled",
        )
        assert upserted == 1
        assert await tx.fetchrow("SELECT * FROM orders WHERE order_id = $1", "nope") is None
        assert await tx.fetchval("SELECT status FROM orders WHERE order_id = $1", "nope") is None
        row = await tx.fetchrow("SELECT status, version FROM orders WHERE order_id = $1", "o-a")
        assert row == {"status": "cancelled", "version": 2}
        assert await tx.execute("UPDATE orders SET status = $1", "held") == 2


async def test_stock_checks_refuse_negative_and_over_reservation(store: Store) -> None:
    with pytest.raises(IntegrityViolation):
        await _put_stock(store, "SKU-NEG", on_hand=-1)
    with pytest.raises(IntegrityViolation):
        await _put_stock(store, "SKU-OVER", on_hand=2, reserved=3)
    await _put_stock(store, "SKU-OK", on_hand=2, reserved=2)
    with pytest.raises(IntegrityViolation):
        async with store.transaction() as tx:
            await tx.execute("UPDATE stock SET on_hand = on_hand - 1 WHERE sku = $1", "SKU-OK")
    async with store.transaction() as tx:
        row = await tx.fetchrow("SELECT on_hand, reserved FROM stock WHERE sku = $1", "SKU-OK")
        assert row == {"on_hand": 2, "reserved": 2}
        assert await tx.fetchval("SELECT count(*) FROM stock") == 1
    assert issubclass(IntegrityViolation, StoreError)


async def test_foreign_keys_and_primary_keys_are_enforced(store: Store) -> None:
    with pytest.raises(IntegrityViolation):
        async with store.transaction() as tx:
            await tx.execute(
                "INSERT INTO order_lines (order_id, line_no, sku, quantity) VALUES ($1, 1, $2, 1)",
                "missing-order",
                "SKU",
            )
    await _put_stock(store, "SKU-PK", on_hand=1)
    with pytest.raises(IntegrityViolation):
        await _put_stock(store, "SKU-PK", on_hand=1)


async def test_bad_sql_is_a_store_error(store: Store) -> None:
    with pytest.raises(StoreError) as caught:
        async with store.transaction() as tx:
            await tx.execute("SELECT * FROM no_such_table")
    assert not isinstance(caught.value, IntegrityViolation)


async def test_outbox_pending_then_sent(store: Store) -> None:
    async with store.transaction() as tx:
        await tx.add_outbox("notify", "notify.order.created", b"\x00first", "m-1")
        await tx.add_outbox("notify", "notify.order.created", b"second", "m-2")
        await tx.add_outbox("notify", "notify.order.created", b"again", "m-1")  # ignored
    pending = await store.pending_outbox(10)
    assert [row["message_id"] for row in pending] == ["m-1", "m-2"]
    assert pending[0]["body"] == b"\x00first" and isinstance(pending[0]["body"], bytes)
    assert pending[0]["routing_key"] == "notify.order.created"
    assert pending[0]["kind"] == "notify"
    assert [row["message_id"] for row in await store.pending_outbox(1)] == ["m-1"]
    await store.mark_sent([pending[0]["id"]])
    assert [row["message_id"] for row in await store.pending_outbox(10)] == ["m-2"]
    await store.mark_sent([pending[1]["id"]])
    await store.mark_sent([])
    assert await store.pending_outbox(10) == []
    async with store.transaction() as tx:
        assert await tx.fetchval("SELECT count(*) FROM outbox WHERE sent_at IS NOT NULL") == 2


async def test_claim_all_claims_each_event_once(store: Store) -> None:
    """claim_all returns the ids this transaction claimed first: not one claimed before, a
    repeated id once; another consumer's claims are its own."""
    async with store.transaction() as tx:
        assert await tx.claim("orders", "e-1")
    async with store.transaction() as tx:
        assert {"e-2", "e-3"} == await tx.claim_all("orders", ["e-1", "e-2", "e-3", "e-2"])
        assert {"e-1"} == await tx.claim_all("audit", ["e-1"])
    async with store.transaction() as tx:
        assert not await tx.claim("orders", "e-3")


_LINE = ("INSERT INTO order_lines (order_id, line_no, sku, quantity, reserved, location, ships)"
         " VALUES ($1, $2, $3, $4, $5, $6, $7)")


async def test_write_behind_holds_inserts_until_their_table_is_named(store: Store) -> None:
    """With write_behind, PostgreSQL holds write_later's rows back: a statement on another
    table runs without them, and one naming their table sends them first (here a row whose
    order does not exist, so the foreign key refuses it there). SQLite inserts at once."""
    reached = []
    with pytest.raises(IntegrityViolation):
        async with store.transaction() as tx:
            tx.write_behind = True
            await tx.write_later("order_lines", _LINE, [("no-such-order", 1, "S", 1, 0, None, 1)])
            reached.append("held")
            await tx.fetchval("SELECT count(*) FROM stock")
            reached.append("another table")
            await tx.fetchval("SELECT count(*) FROM order_lines")
            reached.append("its table")
    assert reached == (["held", "another table"] if store.dialect == "postgresql" else [])


async def test_a_savepoint_takes_what_write_behind_holds(store: Store) -> None:
    """A savepoint is taken after held rows are sent, so rolling back to it keeps them; rows
    held after it go with the rollback, and what a view said is forgotten (PostgreSQL; SQLite
    holds and keeps nothing)."""
    async with store.transaction() as tx:
        await tx.execute("INSERT INTO orders (order_id, source, status) VALUES ('o-1', 't', 'x')")
    async with store.transaction() as tx:
        tx.write_behind = True
        tx.views["orders"] = {"o-2"}
        await tx.write_later("order_lines", _LINE, [("o-1", 1, "S", 1, 0, None, 1)])
        await tx.execute("SAVEPOINT message")
        assert tx.views == ({} if store.dialect == "postgresql" else {"orders": {"o-2"}})
        await tx.write_later("order_lines", _LINE, [("o-1", 2, "S", 1, 0, None, 1)])
        await tx.execute("ROLLBACK TO SAVEPOINT message")
        await tx.execute("RELEASE SAVEPOINT message")
    async with store.transaction() as tx:
        kept = await tx.fetch("SELECT line_no FROM order_lines WHERE order_id = 'o-1'")
    assert [row["line_no"] for row in kept] == [1]


async def test_write_behind_outbox_rows_once_each_in_order(store: Store) -> None:
    """Outbox rows held by write-behind go out at flush(): tx.outbox then lists the new ones
    in the order they were added, each message_id once (a repeat, in this transaction or from
    an earlier one, is ignored as add_outbox always did)."""
    async with store.transaction() as tx:
        await tx.add_outbox("order.allocated", "notify.order.allocated", b"0", "m-0")
    async with store.transaction() as tx:
        tx.write_behind = True
        for body, message_id in [(b"1", "m-1"), (b"again", "m-0"), (b"2", "m-2"),
                                 (b"1 again", "m-1")]:
            await tx.add_outbox("order.allocated", "notify.order.allocated", body, message_id,
                                cause="evt-1")
        await tx.flush()
        added = [(row["message_id"], row["body"]) for row in tx.outbox]
        ids = [row["id"] for row in tx.outbox]
    assert added == [("m-1", b"1"), ("m-2", b"2")]
    assert ids == sorted(ids)
    pending = await store.pending_outbox(10)
    assert [(row["message_id"], bytes(row["body"])) for row in pending] == [
        ("m-0", b"0"), ("m-1", b"1"), ("m-2", b"2")]


async def _reserve_one(target: Store, sku: str) -> str:
    """consumers.stock's reservation of one unit of `sku`, in a transaction of its own."""
    async with target.transaction() as tx:
        return await reserve_lines(tx, new_lines([(sku, 1, True)]))


async def _reserved(store: Store, sku: str) -> int:
    async with store.transaction() as tx:
        return await tx.fetchval("SELECT reserved FROM stock WHERE sku = $1", sku)


async def test_concurrent_reservations_never_oversell(store: Store) -> None:
    """Twenty reservations of one unit at once, through consumers.stock, with five on hand:
    five are allocated, the rest backordered."""
    await _put_stock(store, "SKU-HOT", on_hand=5)
    async with asyncio.timeout(TIMEOUT):
        results = await asyncio.gather(*(_reserve_one(store, "SKU-HOT") for _ in range(20)))
    assert sorted(results) == ["allocated"] * 5 + ["backordered"] * 15
    assert await _reserved(store, "SKU-HOT") == 5


async def test_concurrent_reservations_across_two_stores(store: Store, store_url: str) -> None:
    """Two stores on one database (as two processes would be): still exactly on_hand succeed."""
    await _put_stock(store, "SKU-SHARED", on_hand=5)
    async with open_store(store_url) as other, asyncio.timeout(TIMEOUT):
        results = await asyncio.gather(
            *(_reserve_one(store if i % 2 else other, "SKU-SHARED") for i in range(20)))
    assert results.count("allocated") == 5
    assert await _reserved(store, "SKU-SHARED") == 5


async def wait_until_blocked(tx: Tx, task: asyncio.Task[Any]) -> None:
    """Poll pg_locks from `tx` (the transaction holding the lock) until a session on this
    database waits for a lock: the overlap a race test needs. Fails if `task` (the one that
    should wait) ends first. Callers bound it with a timeout."""
    while not await tx.fetchval(
        "SELECT COUNT(*) FROM pg_locks WHERE NOT granted AND pid IN"
        " (SELECT pid FROM pg_stat_activity WHERE datname = current_database())"
    ):
        assert not task.done(), task
        await asyncio.sleep(0.01)


@pytest.mark.parametrize("partial", [False, True], ids=["all_or_nothing", "partial"])
async def test_overlapping_reservations_wait_and_never_oversell(
    store_url: str, partial: bool
) -> None:
    """On PostgreSQL, consumers.stock.reserve_lines in two transactions at once: B asks for
    the units A holds while A has not committed, waits on A's row lock, and once A commits
    sees A's reservation: B is backordered (or, with partial allocation, gets only its other
    line), and the SKU never has more reserved than on hand."""
    if not store_url.startswith("postgresql"):
        pytest.skip("SQLite has one writer at a time: the two cannot overlap")
    policy = Policy(partial_allocation=partial)
    async with open_store(store_url) as store, open_store(store_url) as other:
        await _put_stock(store, "SKU-RACE", on_hand=3)
        await _put_stock(store, "SKU-SPARE", on_hand=5)
        a_lines = new_lines([("SKU-RACE", 2, True)])
        b_lines = new_lines([("SKU-RACE", 2, True), ("SKU-SPARE", 1, True)])

        async def reserve_b() -> str:
            async with other.transaction() as tx:
                return await reserve_lines(tx, b_lines, policy)

        async with asyncio.timeout(TIMEOUT):
            async with store.transaction() as tx:
                assert await reserve_lines(tx, a_lines, policy) == "allocated"
                b = asyncio.create_task(reserve_b())
                await wait_until_blocked(tx, b)
            b_status = await b
        assert await _reserved(store, "SKU-RACE") == 2  # A's two; 2 + 2 would oversell 3
        assert [line["reserved"] for line in b_lines] == [0, 1 if partial else 0]
        assert b_status == ("partially_allocated" if partial else "backordered")
        assert await _reserved(store, "SKU-SPARE") == (1 if partial else 0)


async def test_sqlite_settings_and_durability(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/nested/dir/durable.sqlite3"
    async with open_store(url) as store:
        assert isinstance(store, SqliteStore)
        async with store.transaction() as tx:
            assert await tx.fetchval("PRAGMA journal_mode") == "wal"
            assert await tx.fetchval("PRAGMA synchronous") == 2  # FULL
            assert await tx.fetchval("PRAGMA foreign_keys") == 1
            assert await tx.fetchval("PRAGMA busy_timeout") == 5000
            assert await tx.claim("orders", "evt-durable")
            await tx.execute(
                "INSERT INTO orders (order_id, status, version) VALUES ($1, $2, 1)", "o-d", "open"
            )
    async with open_store(url) as reopened, reopened.transaction() as tx:
        assert await tx.fetchval("SELECT status FROM orders WHERE order_id = $1", "o-d") == "open"
        assert not await tx.claim("orders", "evt-durable")


async def test_a_held_write_lock_is_store_busy_and_a_restart_outwaits_it(tmp_path: Path) -> None:
    """While one connection holds SQLite's write lock past the other's busy_timeout, the
    other's transaction fails with StoreBusy (nothing applied, worth retrying), not a bare
    StoreError; and a store opening meanwhile keeps trying and opens once the lock is let
    go."""
    url = f"sqlite:///{tmp_path}/busy.sqlite3"
    async with open_store(url) as holder:
        impatient = SqliteStore(str(tmp_path / "busy.sqlite3"), busy_timeout_ms=50)
        await impatient.open()
        try:
            async with holder.transaction() as held:
                await held.claim("orders", "evt-held")
                with pytest.raises(StoreBusy):
                    async with impatient.transaction() as tx:
                        await tx.claim("orders", "evt-waiting")
                late = SqliteStore(str(tmp_path / "busy.sqlite3"), busy_timeout_ms=50)
                opening = asyncio.create_task(late.open())
                await asyncio.sleep(0.3)  # several busy_timeouts pass while the lock is held
                assert not opening.done()
            async with asyncio.timeout(TIMEOUT):
                await opening
            await late.close()
            async with impatient.transaction() as tx:
                assert await tx.claim("orders", "evt-waiting")
        finally:
            await impatient.close()


async def test_postgresql_deadlock_is_store_busy(store: Store, store_url: str) -> None:
    """Two transactions that lock the same two rows in opposite orders: the one PostgreSQL
    picks as the deadlock victim fails with StoreBusy and applied nothing."""
    if not store_url.startswith("postgresql"):
        pytest.skip("PostgreSQL detects deadlocks; SQLite has one writer")
    await _put_stock(store, "A", 1)
    await _put_stock(store, "B", 1)
    other = open_store(store_url)
    await other.open()
    first_locked, second_locked = asyncio.Event(), asyncio.Event()

    async def lock(s: Store, mine: str, theirs: str, locked: asyncio.Event,
                   wait: asyncio.Event) -> None:
        async with s.transaction() as tx:
            await tx.execute("UPDATE stock SET on_hand = on_hand + 1 WHERE sku = $1", mine)
            locked.set()
            await wait.wait()
            await tx.execute("UPDATE stock SET on_hand = on_hand + 1 WHERE sku = $1", theirs)

    try:
        async with asyncio.timeout(TIMEOUT):
            results = await asyncio.gather(
                lock(store, "A", "B", first_locked, second_locked),
                lock(other, "B", "A", second_locked, first_locked),
                return_exceptions=True)
    finally:
        await other.close()
    failed = [r for r in results if isinstance(r, BaseException)]
    assert len(failed) == 1 and isinstance(failed[0], StoreBusy), results
    async with store.transaction() as tx:
        assert await tx.fetchval("SELECT SUM(on_hand) FROM stock") == 4  # 1 + 1 + the winner's 2


async def test_sqlite_in_memory(tmp_path: Path) -> None:
    async with open_store("sqlite:///:memory:") as store, store.transaction() as tx:
        assert await tx.claim("orders", "evt-mem")
        assert await tx.fetchval("SELECT count(*) FROM inbox") == 1


async def test_a_transaction_cancelled_at_any_step_leaves_the_store_usable(store: Store) -> None:
    """A task cancelled anywhere in a transaction (before BEGIN ran, while it runs, between
    statements, at COMMIT) leaves nothing half-open: the next transaction starts, and each
    cancelled one is either wholly committed or wholly absent. A broker channel that closes
    cancels its consumers' callbacks like this."""

    async def claim_and_insert(n: int) -> None:
        async with store.transaction() as tx:
            await tx.claim("orders", f"evt-c{n}")
            await tx.execute(
                "INSERT INTO orders (order_id, source, status, version) VALUES ($1, $2, $3, $4)",
                f"o-c{n}", "shopify", "open", 1)

    for n in range(12):
        task = asyncio.create_task(claim_and_insert(n))
        for _ in range(n):  # let it get n steps in
            await asyncio.sleep(0)
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        async with asyncio.timeout(TIMEOUT), store.transaction() as tx:
            claimed = not await tx.claim("orders", f"evt-c{n}")
            stored = await tx.fetchval(
                "SELECT count(*) FROM orders WHERE order_id = $1", f"o-c{n}")
        assert stored == (1 if claimed else 0), n


async def test_postgresql_connection_lost_as_the_pool_resets_it_keeps_the_commit(
    store_url: str,
) -> None:
    """The connection drops while the pool resets it after COMMIT (the server ended the
    session, or the network did), as it did once under the soak's pg_terminate_backend: the
    transaction committed and says so; no driver error escapes it (one did, from the pool's
    release, and ended the notifications consumer); the next one gets a new connection."""
    if not store_url.startswith("postgresql"):
        pytest.skip("a pooled PostgreSQL connection's reset")
    proxy = await Proxy(upstream=(PG_HOST, PG_PORT)).start()
    through_proxy = store_url.replace(f"@{PG_HOST}:{PG_PORT}/", f"@127.0.0.1:{proxy.port}/")
    assert through_proxy != store_url
    try:
        async with open_store(through_proxy) as store:
            proxy.cut_when_sent(b"pg_advisory_unlock_all")  # the first words of the reset
            with structlog.testing.capture_logs() as logs:
                async with asyncio.timeout(TIMEOUT), store.transaction() as tx:
                    assert await tx.claim("orders", "evt-reset")
            assert proxy.cuts == 1
            assert [e["error"] for e in logs if e["event"] == "store_connection_dropped"] \
                == ["ConnectionDoesNotExistError"]
            proxy.cut_when_sent(None)
            async with asyncio.timeout(TIMEOUT), store.transaction() as tx:
                assert not await tx.claim("orders", "evt-reset")  # it was committed
    finally:
        await proxy.close()


@pytest.mark.parametrize("step", ["statement", "commit"])
async def test_postgresql_session_ended_inside_a_transaction_is_store_unavailable(
    store_url: str, step: str,
) -> None:
    """The server ends the session inside a transaction and its FATAL reaches us before the
    close does (the soak's pg_terminate_backend; here the close is held back): the next
    statement, or the COMMIT, raises StoreUnavailable, which every caller waits out (asyncpg's
    InternalClientError escaped once and ended the notifications consumer); nothing was
    committed, and the next transaction runs on a new connection."""
    if not store_url.startswith("postgresql"):
        pytest.skip("a PostgreSQL session ended by the server")
    admin, _ = await _admin()
    proxy = await Proxy(upstream=(PG_HOST, PG_PORT)).start()
    proxy.late_close = True
    through_proxy = store_url.replace(f"@{PG_HOST}:{PG_PORT}/", f"@127.0.0.1:{proxy.port}/")
    try:
        async with open_store(through_proxy, pool_max=1) as store:
            with pytest.raises(StoreUnavailable):
                async with asyncio.timeout(TIMEOUT), store.transaction() as tx:
                    assert await tx.claim("orders", "evt-fatal")
                    pid = await tx.fetchval("SELECT pg_backend_pid()")
                    await admin.execute("SELECT pg_terminate_backend($1, 5000)", pid)
                    await proxy.open_links()[-1].server_gone.wait()
                    # The FATAL is on our socket: a few turns of the loop read it.
                    for _ in range(3):
                        await asyncio.sleep(0)
                    if step == "statement":
                        await tx.fetchval("SELECT 1")
            proxy.late_close = False  # closing the store waits for the server's close
            async with asyncio.timeout(TIMEOUT), store.transaction() as tx:
                assert await tx.claim("orders", "evt-fatal")  # the first was not committed
    finally:
        await proxy.close()
        await admin.close()


async def test_closed_store_refuses_transactions(store_url: str) -> None:
    store = open_store(store_url)
    with pytest.raises(StoreError):
        async with store.transaction():
            pass
    await store.open()
    await store.close()
    await store.close()  # twice is fine
    with pytest.raises(StoreError):
        async with store.transaction():
            pass


async def test_postgresql_unreachable_is_a_store_error_without_password() -> None:
    store = open_store("postgresql://app:hunter2@127.0.0.1:1/nothing")
    with pytest.raises(StoreError) as caught:
        async with asyncio.timeout(TIMEOUT):
            await store.open()
    assert "hunter2" not in str(caught.value)
