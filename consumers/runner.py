"""One runner for every consumer: take messages, apply them in the store, then ack.

For each batch of messages in hand (up to prefetch / concurrency of them):

    one transaction (on SQLite: one hop to the store's thread for the whole batch)
      mark the outbox rows confirmed since the last batch as sent
      per message: inbox claim; handler effect
      (first without savepoints: on PostgreSQL the batch's claims go in one statement and
      its order lines and outbox rows are written behind, together before COMMIT; if any
      message fails, all is rolled back and the batch runs again, each message in a
      SAVEPOINT of its own, claimed and written one statement at a time: a failing message
      rolls back to its savepoint and only it is retried)
    COMMIT
    failed messages -> NAME.retry.<delay> or NAME.dead, with the broker's confirm
    ack (only now: the effects are committed); a multiple-ack covers the longest run of
    settled messages, so batches running concurrently never ack each other's messages
    the retried and dead-lettered messages' attempts -> consumer_attempts, in a short
    transaction of their own (the others' went in with the effects, one executemany)
    the batch's outbox rows -> events exchange as notify.*, confirmed in the background;
    their ids are marked sent by the next transaction (or after a short idle pause)

A message is acked only after its effect is committed or it is safely on a retry or dead
queue; anything else (a crash, a lost connection) leaves it unacked and the broker
redelivers it, where the inbox turns the repeat into a no-op.  An outbox row is published
at least once: rows not yet marked sent are published again at start-up and after a
failed publish (receivers deduplicate by message id).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

import aio_pika
import orjson
import structlog
from aio_pika.abc import AbstractIncomingMessage
from prometheus_client import Counter, Histogram

from consumers.acking import Acker
from consumers.errors import Deferred, Permanent, Transient
from consumers.events import Event
from consumers.store import Store, StoreBusy, StoreUnavailable, Tx, mark_sent
from router.broker.connect import open_connection
from router.broker.errors import BROKER_ERRORS, PublishFailed
from router.broker.messages import (
    REPLAYED_AT,
    attempt_of,
    copy_message,
    dead_copy,
    reroute,
    retry_copy,
)
from router.broker.publisher import Publisher
from router.broker.reconnect import keep_trying
from router.broker.topology import Topology
from router.settings import BrokerSettings
from router.times import now_iso

log = structlog.get_logger("consumers.runner")

MESSAGES = Counter(
    "consumer_messages", "Messages handled, by consumer and outcome "
    "(processed, duplicate, retry, dead, or a handler's own word such as stale)",
    ["consumer", "outcome"],
)
HANDLER_LATENCY = Histogram(
    "consumer_handler_latency_seconds", "From taking a message to its ack", ["consumer"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0),
)
OUTBOX_PUBLISHED = Counter(
    "consumer_outbox_published", "Outbox rows published to the events exchange (confirmed)",
    ["consumer"],
)

# Confirmed outbox ids wait this long for a batch to mark them before a transaction of
# their own does it.
MARK_IDLE_SECONDS = 0.2


# What a consumer waits out at start, as it waits for the broker: the store busy (another
# connection holding SQLite's write lock past the busy timeout) or not reachable (yet).
STORE_AWAY: tuple[type[BaseException], ...] = (StoreBusy, StoreUnavailable)

T = TypeVar("T")


async def wait_for_store(work: Callable[[], Awaitable[T]], stop: asyncio.Event,
                         **log_fields: Any) -> T | None:
    """`await work()` until the store lets it through, and return what it returned; None once
    `stop` is set. Each failure logs `store_unavailable` (its error, `retry_in`), then waits
    with the broker's back-off (0.5 s doubling to 10 s), for as long as it takes: a consumer
    without its store can do nothing else, and exiting would only make its supervisor
    restart it into the same wait."""
    return await keep_trying(work, stop, failures=STORE_AWAY, event="store_unavailable",
                             explain=str, **log_fields)


_RECORD_ATTEMPT = (
    "INSERT INTO consumer_attempts (consumer, event_id, attempt, outcome, delay_seconds,"
    " reason, replayed_at, at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)"
)


def _replayed_at(message: AbstractIncomingMessage) -> str | None:
    """When an operator replayed this message from a dead-letter queue, if one did."""
    value = (message.headers or {}).get(REPLAYED_AT)
    return value if isinstance(value, str) else None


def rung(ladder: tuple[int, ...], attempt: int, retry_after: float | None = None,
         deferred: bool = False) -> int:
    """The retry rung (seconds) for a message failing its `attempt`-th time (0-based): the
    ladder's own, or the smallest rung at least `retry_after` long (the longest if none is)
    when that is longer: a wait the other side asked for is never shortened. A Deferred
    message without `retry_after` waits on the longest rung."""
    own = ladder[min(attempt, len(ladder) - 1)]
    if retry_after is None:
        return max(ladder) if deferred else own
    fitting = [delay for delay in ladder if delay >= retry_after]
    return max(own, min(fitting) if fitting else max(ladder))


class _Failed(Exception):
    """A message of a batch applied without savepoints failed: roll back, go carefully."""


B = TypeVar("B")  # what a consumer's prepare tells its handler about the batch


@dataclass(frozen=True)
class ConsumerSpec(Generic[B]):
    """A consumer: the queue it reads (without prefix), its handler and, optionally, a
    `prepare(tx, events)` run first in each batch's transaction (to lock, in one global
    order, the rows the batch will touch, so concurrent batches queue instead of
    deadlocking, and to look up at once what its handlers need).

    `handler(tx, event, batch)` applies one event inside the runner's transaction; `batch` is
    what prepare returned (None without one). It may return a word for the log and metrics
    (e.g. "stale" for an update older than what is stored); it raises to retry or dead-letter
    (consumers.errors).

    `tick(tx, now)`, if given, runs every `tick_every` seconds in a transaction of its own,
    for effects that come from time rather than from a message (unpaid orders expiring);
    `now` is the store's ISO form; it returns how many things it changed. Its outbox rows go
    out as a batch's do."""

    name: str
    handler: Callable[[Tx, Event, B | None], Awaitable[str | None]]
    prepare: Callable[[Tx, list[Event]], Awaitable[B]] | None = None
    tick: Callable[[Tx, str], Awaitable[int]] | None = None
    tick_every: float = 30.0


@dataclass
class Outcome:
    message: AbstractIncomingMessage
    event_id: str = "-"
    type: str = "-"
    result: str = "processed"  # processed | duplicate | retry | dead | a handler's word
    reason: str = ""
    delay: int | None = None  # seconds, when it went to a retry queue
    retry_after: float | None = None  # seconds the failure asked to wait (Transient)
    deferred: bool = False  # waiting for an operator (Deferred): no attempt used up
    started: float = field(default_factory=time.perf_counter)
    event: Event | None = None  # the parsed envelope; None if it is not one

    def __post_init__(self) -> None:
        try:
            event = orjson.loads(self.message.body)
            self.event_id, self.type = str(event["id"]), str(event["type"])
        except (orjson.JSONDecodeError, KeyError, TypeError):
            self.result, self.reason = "dead", "not an event envelope"
            return
        self.event = event


class Runner:
    """Consumes one queue with competing-consumer semantics; safe to run N processes."""

    def __init__(
        self,
        spec: ConsumerSpec[Any],
        store: Store,
        broker: BrokerSettings,
        *,
        prefetch: int = 100,
        concurrency: int = 1,
    ) -> None:
        if prefetch < 1 or concurrency < 1:
            raise ValueError("prefetch and concurrency must be at least 1")
        self.spec = spec
        self.store = store
        self.broker = broker
        self.prefetch = prefetch
        self.concurrency = concurrency
        self.batch_size = max(1, prefetch // (concurrency + 1))
        self.topology = Topology.of(broker)
        self.queue_name = self.topology.queue(spec.name)
        self.ladder = self.topology.ladder(spec.name)
        self.publisher = Publisher(broker, connection_name=f"consumer-{spec.name}-outbox")
        self._inbox: asyncio.Queue[AbstractIncomingMessage] = asyncio.Queue()
        self._acker = Acker()
        self._connection: aio_pika.abc.AbstractRobustConnection | None = None
        self._channel: aio_pika.abc.AbstractChannel | None = None
        self._to_mark: list[int] = []  # confirmed outbox ids not yet marked sent
        self._relay_needed = True  # scan for unsent outbox rows (at start, after a failure)
        self._sending: set[asyncio.Task[bool]] = set()

    async def _connect(self, stop: asyncio.Event) -> aio_pika.abc.AbstractQueue | None:
        """Connect (retrying with back-off while the broker is away) and declare the
        topology; None if `stop` is set first."""
        return await keep_trying(self._connect_once, stop, after_failure=self._disconnect,
                                 consumer=self.spec.name)

    async def _connect_once(self) -> aio_pika.abc.AbstractQueue:
        self._connection = await open_connection(
            self.broker, f"consumer-{self.spec.name}", robust=True
        )
        self._channel = await self._connection.channel(publisher_confirms=True)
        await self.topology.declare(self._channel)
        await self._channel.set_qos(prefetch_count=self.prefetch)
        await self.publisher.start()
        return await self._channel.get_queue(self.queue_name)

    async def _disconnect(self) -> None:
        await self.publisher.close()
        self.publisher = Publisher(self.broker, connection_name=f"consumer-{self.spec.name}-outbox")
        if self._connection is not None:
            connection, self._connection = self._connection, None
            await connection.close()

    async def _delivered(self, message: AbstractIncomingMessage) -> None:
        self._acker.delivered(message)
        self._inbox.put_nowait(message)

    async def run(self, stop: asyncio.Event) -> None:
        """Consume until `stop` is set, then finish and ack what is in hand and return."""
        queue = await self._connect(stop)
        if queue is None:
            return
        try:
            if await wait_for_store(self._relay_unsent, stop, consumer=self.spec.name) is None:
                return
            tag = await queue.consume(self._delivered)
            log.info("consumer_started", consumer=self.spec.name, queue=self.queue_name,
                     prefetch=self.prefetch, concurrency=self.concurrency)
            ticking = asyncio.create_task(self._ticking(stop))
            try:
                await self._consume(stop)
            finally:
                ticking.cancel()
                await asyncio.gather(ticking, return_exceptions=True)
            # Stop taking messages, then finish the ones already delivered to us.
            try:
                await queue.cancel(tag)
            except BROKER_ERRORS as exc:
                log.warning("cancel_failed", consumer=self.spec.name, error=type(exc).__name__)
            await self._finish_inbox()
            await self._drain_sending()
            await self._flush_marks()
        finally:
            await self._drain_sending()
            await self._disconnect()
        log.info("consumer_stopped", consumer=self.spec.name)

    async def _finish_inbox(self) -> None:
        """Stopping: apply and ack the messages delivered to us and not yet taken."""
        while not self._inbox.empty():
            await self._process(self._take_nowait([]))

    def _take_nowait(self, batch: list[AbstractIncomingMessage]) -> list[AbstractIncomingMessage]:
        while not self._inbox.empty() and len(batch) < self.batch_size:
            batch.append(self._inbox.get_nowait())
        return batch

    async def _consume(self, stop: asyncio.Event) -> None:
        """Take batches and process up to `concurrency` of them at once, until `stop`."""
        slots = asyncio.Semaphore(self.concurrency)
        running: set[asyncio.Task[None]] = set()
        failed: list[BaseException] = []
        stopping = asyncio.create_task(stop.wait())

        def finished(task: asyncio.Task[None]) -> None:
            running.discard(task)
            slots.release()
            if not task.cancelled() and task.exception() is not None:
                failed.append(task.exception())  # type: ignore[arg-type]
                stop.set()

        try:
            while True:
                await slots.acquire()
                if self._relay_needed and self.publisher.ready:
                    await self._try_relay()
                getting = asyncio.create_task(self._inbox.get())
                while True:
                    idle = MARK_IDLE_SECONDS if self._to_mark or self._sending else None
                    done, _ = await asyncio.wait({getting, stopping}, timeout=idle,
                                                 return_when=asyncio.FIRST_COMPLETED)
                    if done:
                        break
                    await self._flush_marks()
                if stopping in done:
                    # Stop wins even when a message is there too: while messages keep coming
                    # (a busy queue, short retries) `getting` is always done as well.
                    getting.cancel()
                    if getting in done:
                        self._inbox.put_nowait(getting.result())  # drained after the cancel
                    slots.release()
                    break
                task = asyncio.create_task(self._process(self._take_nowait([getting.result()])))
                running.add(task)
                task.add_done_callback(finished)
            if running:
                await asyncio.wait(running)
        finally:
            stopping.cancel()
        if failed:
            raise failed[0]

    async def _process(self, batch: list[AbstractIncomingMessage]) -> None:
        outcomes = [Outcome(message) for message in batch]
        marks, self._to_mark = self._to_mark, []

        def work(careful: bool) -> Callable[[Tx], Awaitable[list[dict[str, Any]]]]:
            async def apply_all(tx: Tx) -> list[dict[str, Any]]:
                if marks:
                    await mark_sent(tx, marks)
                # Careless, on PostgreSQL: inserts go together, and the batch's claims in
                # one statement (a round trip each was most of a batch's time).
                tx.write_behind = together = not careful and tx.dialect == "postgresql"
                batch = None
                if self.spec.prepare is not None:
                    # Careful or not, the same locks in the same order first: a batch run
                    # again after a failure must not take them in message order.
                    events = [outcome.event for outcome in outcomes if outcome.event]
                    try:
                        batch = await self.spec.prepare(tx, events)
                    except Exception as exc:
                        if careful:
                            raise
                        raise _Failed from exc
                claimed = None
                if together:
                    claimed = await tx.claim_all(self.spec.name, [
                        outcome.event_id for outcome in outcomes if outcome.event is not None])
                for outcome in outcomes:
                    await self._apply(tx, outcome, careful, batch, claimed)
                if together:
                    try:
                        await tx.flush()
                    except Exception as exc:  # a held insert refused: find which, carefully
                        raise _Failed from exc
                await self._record_attempts(tx, [o for o in outcomes
                                                 if o.result not in ("retry", "dead")])
                return tx.outbox
            return apply_all

        try:
            try:
                # Usually every message applies: no savepoints. If one fails, the whole
                # transaction rolls back and the batch runs again with a savepoint each.
                outbox = await self.store.run(work(careful=False))
            except _Failed as failed:
                # Usually a message that will be retried or dead-lettered; often, on
                # PostgreSQL, something the batch's views had not seen (a row stored since).
                log.info("batch_careful", consumer=self.spec.name, size=len(batch),
                         error=type(failed.__cause__).__name__)
                for outcome in outcomes:
                    if outcome.event is not None:
                        outcome.result, outcome.reason = "processed", ""
                outbox = await self.store.run(work(careful=True))
        except Exception as exc:  # the commit itself failed: nothing was applied
            self._to_mark.extend(marks)
            outbox = []
            log.warning("batch_commit_failed", consumer=self.spec.name,
                        error=type(exc).__name__, size=len(batch))
            for outcome in outcomes:
                if outcome.result not in ("retry", "dead"):
                    outcome.result, outcome.reason = "retry", f"commit failed: {type(exc).__name__}"
        nacked: set[int] = set()
        for outcome in outcomes:
            if outcome.result in ("retry", "dead") and not await self._reroute(outcome):
                nacked.add(id(outcome.message))
        await self._acker.settle([outcome.message for outcome in outcomes], nacked)
        moved = [outcome for outcome in outcomes if outcome.result in ("retry", "dead")
                 and id(outcome.message) not in nacked]
        if moved:
            await self._record_moves(moved)
        if outbox:
            task = asyncio.create_task(self._send_outbox(outbox))
            self._sending.add(task)
            task.add_done_callback(self._sending.discard)
        for outcome in outcomes:
            latency = time.perf_counter() - outcome.started
            MESSAGES.labels(self.spec.name, outcome.result).inc()
            HANDLER_LATENCY.labels(self.spec.name).observe(latency)
            # A dead letter waits for an operator: a warning, where alerts look.
            (log.warning if outcome.result == "dead" else log.info)(
                "message", consumer=self.spec.name, event_id=outcome.event_id,
                type=outcome.type, attempt=attempt_of(outcome.message),
                outcome=outcome.result, reason=outcome.reason or None,
                latency_ms=round(latency * 1000, 3))

    # -- what was done with each message --------------------------------------------------

    async def _record_attempts(self, tx: Tx, outcomes: list[Outcome]) -> None:
        """One consumer_attempts row per outcome (envelopes only), one statement for all."""
        at = now_iso()
        rows = [(self.spec.name, o.event_id, attempt_of(o.message) + 1, o.result, o.delay,
                 o.reason or None, _replayed_at(o.message), at)
                for o in outcomes if o.event is not None]
        if rows:
            await tx.executemany(_RECORD_ATTEMPT, rows)

    async def _record_moves(self, outcomes: list[Outcome]) -> None:
        """Record retries and dead letters whose copies the broker confirmed (the messages
        are acked already): a failure is logged, never raised; the copy is what counts."""
        async def work(tx: Tx) -> None:
            await self._record_attempts(tx, outcomes)

        try:
            await self.store.run(work)
        except Exception as exc:
            log.warning("attempt_record_failed", consumer=self.spec.name,
                        messages=len(outcomes), error=type(exc).__name__)

    # -- effects of time ---------------------------------------------------------------------

    async def _ticking(self, stop: asyncio.Event) -> None:
        """Run the spec's tick every tick_every seconds until `stop`; a failed tick is logged
        and tried again at the next one."""
        tick = self.spec.tick
        if tick is None:
            return

        async def work(tx: Tx) -> list[dict[str, Any]]:
            changed = await tick(tx, now_iso())
            if changed:
                log.info("tick", consumer=self.spec.name, changed=changed)
            return tx.outbox

        while not stop.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), self.spec.tick_every)
                return
            try:
                outbox = await self.store.run(work)
            except Exception as exc:  # the store is busy or away: the next tick tries again
                log.warning("tick_failed", consumer=self.spec.name, error=type(exc).__name__)
                continue
            if outbox:
                task = asyncio.create_task(self._send_outbox(outbox))
                self._sending.add(task)
                task.add_done_callback(self._sending.discard)

    # -- the outbox --------------------------------------------------------------------------

    async def _send_outbox(self, rows: list[dict[str, Any]]) -> bool:
        """Publish committed outbox rows (all in flight at once) and wait for every confirm;
        confirmed ids are queued for marking. False (and a later full relay) on failure."""
        headers = {"attempt": 0, "source": self.spec.name}
        try:
            await self.publisher.publish_all([
                {"body": row["body"], "routing_key": row["routing_key"],
                 "message_id": row["message_id"], "type": row["routing_key"],
                 "headers": headers}
                for row in rows
            ])
        except PublishFailed as exc:
            log.warning("outbox_publish_failed", consumer=self.spec.name, rows=len(rows),
                        error=exc.message)
            self._relay_needed = True
            return False
        OUTBOX_PUBLISHED.labels(self.spec.name).inc(len(rows))
        self._to_mark.extend(row["id"] for row in rows)
        return True

    async def _flush_marks(self) -> None:
        marks, self._to_mark = self._to_mark, []
        try:
            await self.store.mark_sent(marks)
        except Exception as exc:
            self._to_mark.extend(marks)
            log.warning("outbox_mark_failed", consumer=self.spec.name, error=type(exc).__name__)

    async def _drain_sending(self) -> None:
        while self._sending:
            await asyncio.gather(*list(self._sending), return_exceptions=True)

    async def _try_relay(self) -> None:
        """Relay while consuming: a store busy or away now is logged and tried again before
        a later batch (the rows wait in the outbox), never the end of the consumer."""
        try:
            await self._relay_unsent()
        except STORE_AWAY as exc:
            self._relay_needed = True
            log.warning("outbox_relay_failed", consumer=self.spec.name, error=str(exc))

    async def _relay_unsent(self) -> int:
        """Publish every outbox row not yet marked sent (left by a crash or a failed publish,
        by this process or another), oldest first, and mark them. Rows another process is
        sending right now may go out twice: receivers deduplicate by message id."""
        await self._drain_sending()
        await self._flush_marks()
        self._relay_needed = False
        sent = 0
        while rows := await self.store.pending_outbox(500):
            if not await self._send_outbox(rows):
                break
            await self._flush_marks()
            sent += len(rows)
        if sent:
            log.info("outbox_relayed", consumer=self.spec.name, rows=sent)
        return sent

    # -- one message -------------------------------------------------------------------------

    async def _apply(self, tx: Tx, outcome: Outcome, careful: bool, batch: Any,
                     claimed: set[str] | None = None) -> None:
        """Claim and apply one message in `tx` (`claimed`: the batch's event ids claimed
        already, if they were). Careless, a failure raises _Failed (the caller rolls
        everything back); careful, it rolls back to the message's savepoint and marks the
        outcome for a retry or the dead-letter queue."""
        event = outcome.event
        if event is None:  # not an envelope: dead-lettered as it is
            return
        if not careful:
            try:
                outcome.result = await self._claim_and_handle(tx, event, batch, claimed)
            except Exception as exc:
                raise _Failed from exc
            return
        added = len(tx.outbox)
        await tx.execute("SAVEPOINT message")
        try:
            outcome.result = await self._claim_and_handle(tx, event, batch)
        except Permanent as exc:
            await tx.execute("ROLLBACK TO SAVEPOINT message")
            del tx.outbox[added:]
            outcome.result, outcome.reason = "dead", str(exc) or type(exc).__name__
        except Exception as exc:
            await tx.execute("ROLLBACK TO SAVEPOINT message")
            del tx.outbox[added:]
            if isinstance(exc, Transient):
                outcome.retry_after = exc.retry_after
            outcome.deferred = isinstance(exc, Deferred)
            attempts = attempt_of(outcome.message) + 1
            exhausted = attempts > len(self.ladder) and not outcome.deferred
            outcome.result = "dead" if exhausted else "retry"
            outcome.reason = f"{type(exc).__name__}: {exc}"[:200]
        await tx.execute("RELEASE SAVEPOINT message")

    async def _claim_and_handle(self, tx: Tx, event: Event, batch: Any,
                                claimed: set[str] | None = None) -> str:
        event_id = str(event["id"])
        if claimed is not None:
            if event_id not in claimed:  # claimed before, or by a copy earlier in the batch
                return "duplicate"
            claimed.discard(event_id)
        elif not await tx.claim(self.spec.name, event_id):
            return "duplicate"
        return await self.spec.handler(tx, event, batch) or "processed"

    async def _reroute(self, outcome: Outcome) -> bool:
        """Republish a failed message (with confirm) to its retry or dead queue. If that
        fails, it is nacked back onto its queue (False): it is never acked unless moved."""
        message = outcome.message
        attempt = attempt_of(message)
        if outcome.result == "retry":
            delay = outcome.delay = rung(self.ladder, attempt, outcome.retry_after,
                                         outcome.deferred)
            routing_key = self.topology.retry_queue(self.spec.name, delay)
            # A deferred message keeps its attempt count: waiting for an operator is no try.
            copy = copy_message(message, attempt=attempt) if outcome.deferred \
                else retry_copy(message)
        else:
            routing_key = self.topology.dead_queue(self.spec.name)
            copy = dead_copy(message, attempt=attempt, reason=outcome.reason,
                             consumer=self.spec.name)
        assert self._channel is not None
        return await reroute(self._channel, message, copy, routing_key,
                             timeout=self.broker.confirm_timeout)
