"""End-to-end benchmark: ours against a naive pipeline under steady load at rising rates.

    python bench/e2e.py [--step-seconds 20] [--rates 250 500 1000 2000] [--growth 1.5]
                        [--rounds 1] [--connections 256] [--store sqlite|postgresql]
                        [--chart docs/e2e.svg]
    python bench/e2e.py --smoke     # a few seconds: does it still run and verify? (CI)

From the provider's signed POST to the effect committed in the store, on this machine.
Two pipelines, each as separate processes on the same RabbitMQ, under the same load:

    ours   `python -m router serve` (1 worker; HMAC, JSON Schema, mapping, JSON access log,
           metrics, confirmed publish) and `python -m consumers orders` (one process, prefetch
           100: inbox + order + lines + stock reservation + outbox in one transaction per
           batch, committed before the ack, outbox relayed with confirms) on a fresh SQLite
           store (WAL, synchronous=FULL) or PostgreSQL database (bench_<uuid>, the consumer's
           default pool of 4), with a config of its own: config/router.toml with a
           unique broker prefix, absolute paths and the Shopify per-client rate limit lifted
           (all the load comes from one address).  The two SKUs of the orders are seeded with
           a huge stock, so every order is `allocated`.
    naive  the plain aiohttp handler of bench/ingress.py (HMAC check, one confirmed aio-pika
           publish) and a plain aio-pika consumer (prefetch 100) that INSERTs the order row
           into its own SQLite file (WAL, synchronous=FULL; one at a time) or PostgreSQL
           database (an asyncpg pool of 4, as many INSERTs at once), one commit per message,
           then acks; no inbox, no outbox, no reservation.  Both under uvloop.

Each `--store` (default: SQLite, then PostgreSQL) is a run of its own: both pipelines on
that store, fresh processes, topology and stores.

Both publish to a topic exchange bound to a quorum `orders` queue of the same arguments
(router.broker.topology.Topology; ours under the prefix `e2e-<uuid6>.`, naive under
`e2e-<uuid6>.naive.`).

Load: open loop.  Every request is a Shopify `orders/create` (the ~700-byte order of
bench/ingress.py with a unique "id"), signed with HMAC-SHA256 and carrying a unique
X-Shopify-Event-Id / X-Shopify-Webhook-Id.  All requests of a step are built (and signed)
before it starts; request i is due at start + i/rate whatever the answers, sent from this
process (uvloop) over up to `--connections` keep-alive HTTP/1.1 connections by a minimal
client (a request waits for a free connection only when all are busy).  Latency counts from
the time a request was due, so a late generator or a full pool shows as latency, never as
a lower rate.  Each step reports the generator's own lateness (p99 of sent - due) and CPU.

Steps: `--rates` (default 250, 500, 1000, 2000 events/s), then the last rate times `--growth`
until neither pipeline sustains it.  A pipeline sustains a rate when its accepted rate
(2xx answered within the step, per second) is at least 95% of the offered rate and its
orders queue is not growing at the end of the step (least-squares slope of the depth,
sampled every second, over the step's second half above 2% of the offered rate while
the final depth exceeds 100 ms of load).  A pipeline that did not sustain a rate is not
run at higher ones; the highest sustained rate is its "max".

Per step and pipeline: offered rate, accepted rate, 2xx latency p50/p99, accept->effect
p50/p99, orders queue depth at the end of the step, time to drain after the step, and the
CPU (% of one core, from /proc) of the generator (this process), the HTTP server, the
consumer, RabbitMQ (beam.smp) and everything else on the machine; for ours also the
ingress's publish->confirm wait (p50/p99 as the upper bound of the bucket of its
webhook_publish_latency_seconds histogram, read from /metrics before and after the step),
the broker's share of the 2xx latency.  accept->effect is the effect time minus the
wall-clock time (time.time()) at which the client received the 2xx, same machine, same
clock.  The effect time is, for ours, the timestamp of the `message` log
line the Runner writes for the event once its batch is committed and acked (the time to the
store's inbox.processed_at of (consumer 'orders', the event id sent), which is stamped
inside the transaction at the claim, up to a batch before the COMMIT, is printed too); for
naive, the time.time() its consumer writes into the order row, just before the COMMIT of
that one-row transaction.  It can be negative: the consumer may commit before the 202
reaches the client.  After each step the script waits until the orders queue is empty and
every accepted event has its effect (the "drain" time, from the end of the step, polled
every 0.1 s; it includes waiting for the last answers), purges the notify.* messages ours
relays (no notifications consumer runs), checks that nothing went to a retry or dead queue,
and pauses `--settle` seconds.  With `--rounds N` every step runs N times per pipeline and
the medians are reported.  The machine and the broker may be shared: before each step the
script waits until other processes (RabbitMQ included) use less than `--quiet-threshold`%
of a core, and a step during which they used more, or during which the broker went away
(another test restarting it; then after 30 s), is run again, at most 3 times.  Prints a
table with the ratios ours/naive and writes the chart with `--chart PATH` (SVG, drawn
here).  Deletes every queue, exchange, process, file and database it created, also on
failure.  `--smoke` is for CI: one 1 s step at 50/s per store, and exit 1 unless every
request was answered 2xx, had its effect and nothing was left on a queue.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import hashlib
import hmac
import logging
import math
import os
import shutil
import signal
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
import urllib.request
import uuid
from array import array
from collections import deque
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import aio_pika
import asyncpg
import orjson
import uvloop

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.consumers import create_pg_database, drop_pg_database  # noqa: E402
from bench.ingress import ORDER, PLAIN_SERVER, free_port, wait_http, wait_port  # noqa: E402
from bench.ingress import SOURCES as SHIPPED_SOURCES  # noqa: E402
from bench.ingress import write_config as write_ingress_config  # noqa: E402
from consumers.store import open_store  # noqa: E402
from router.broker.topology import Topology  # noqa: E402

AMQP_URL = os.environ.get("AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/")
SECRET = "bench-secret-0123456789"
HOST = "127.0.0.1"
SKUS = ("PEP-BPC157-5MG", "BAC-WATER-10ML")  # the two SKUs of ORDER
LOCATION = "austin-1"
STOCK_ON_HAND = 2_000_000_000  # PostgreSQL stores it in an integer
ORDER_ID = b'"id":5820982911946154508'
ORDER_ID_BASE = 6_000_000_000_000_000_000  # + a run-wide sequence: unique, above 2^53
PIPELINES = ("ours", "naive")
STORES = ("sqlite", "postgresql")
STORE_NAMES = {"sqlite": "SQLite", "postgresql": "PostgreSQL"}
BROKER_RETRY_PAUSE = 30.0
STEP_ATTEMPTS = 3
SAMPLE_EVERY = 1.0  # seconds between queue depth samples
TICK = 0.001  # the scheduler's sleep between batches of due requests

NAIVE_CONSUMER = r'''
import asyncio, json, sqlite3, sys, time
import aio_pika, uvloop

URL, QUEUE, DB, PREFETCH = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])

db = sqlite3.connect(DB, isolation_level=None)  # autocommit: one transaction per INSERT
db.execute("PRAGMA journal_mode = WAL")
db.execute("PRAGMA synchronous = FULL")
db.execute("CREATE TABLE IF NOT EXISTS orders (order_id TEXT PRIMARY KEY, event_id TEXT,"
           " source TEXT, status TEXT, shipping_address TEXT, note TEXT, created_at TEXT,"
           " stored_at REAL NOT NULL)")

async def main():
    connection = await aio_pika.connect_robust(URL)
    channel = await connection.channel()
    await channel.set_qos(prefetch_count=PREFETCH)
    queue = await channel.get_queue(QUEUE)

    async def on_message(message):
        order = json.loads(message.body)
        db.execute(
            "INSERT OR IGNORE INTO orders (order_id, event_id, source, status,"
            " shipping_address, note, created_at, stored_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            (str(order["id"]), message.message_id, "shopify", "received",
             json.dumps(order.get("shipping_address")), order.get("note"),
             order["created_at"], time.time()),
        )
        await message.ack()

    await queue.consume(on_message)
    await asyncio.Event().wait()

uvloop.run(main())
'''

# The same on PostgreSQL: an asyncpg pool as large as ours' (4), aio-pika's callbacks run
# concurrently, each INSERT its own transaction.
NAIVE_CONSUMER_PG = r'''
import asyncio, json, sys, time
import aio_pika, asyncpg, uvloop

URL, QUEUE, DSN, PREFETCH = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])

async def main():
    pool = await asyncpg.create_pool(DSN, min_size=1, max_size=4)
    await pool.execute("CREATE TABLE IF NOT EXISTS orders (order_id TEXT PRIMARY KEY,"
                       " event_id TEXT, source TEXT, status TEXT, shipping_address TEXT,"
                       " note TEXT, created_at TEXT, stored_at DOUBLE PRECISION NOT NULL)")
    connection = await aio_pika.connect_robust(URL)
    channel = await connection.channel()
    await channel.set_qos(prefetch_count=PREFETCH)
    queue = await channel.get_queue(QUEUE)

    async def on_message(message):
        order = json.loads(message.body)
        await pool.execute(
            "INSERT INTO orders (order_id, event_id, source, status, shipping_address, note,"
            " created_at, stored_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)"
            " ON CONFLICT DO NOTHING",
            str(order["id"]), message.message_id, "shopify", "received",
            json.dumps(order.get("shipping_address")), order.get("note"),
            order["created_at"], time.time(),
        )
        await message.ack()

    await queue.consume(on_message)
    await asyncio.Event().wait()

uvloop.run(main())
'''

HEAD = (
    "POST /webhooks/shopify HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\n"
    "Content-Length: {length}\r\nX-Shopify-Topic: orders/create\r\n"
    "X-Shopify-Hmac-Sha256: {signature}\r\nX-Shopify-Webhook-Id: {id}\r\n"
    "X-Shopify-Event-Id: {id}\r\nX-Shopify-Triggered-At: {at}\r\n\r\n"
)


# --- the load generator ------------------------------------------------------------------


class _Connection(asyncio.Protocol):
    """One keep-alive HTTP/1.1 connection, one request at a time (no pipelining)."""

    __slots__ = ("load", "transport", "current", "buffer", "need", "status")

    def __init__(self, load: Load) -> None:
        self.load = load
        self.transport: asyncio.Transport | None = None
        self.current = -1
        self.buffer = bytearray()
        self.need = -1
        self.status = 0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self.load.connected(self)

    def send(self, index: int) -> None:
        self.current = index
        self.load.sent_at[index] = time.time()
        self.transport.write(self.load.requests[index])  # type: ignore[union-attr]

    def data_received(self, data: bytes) -> None:
        buffer = self.buffer
        buffer += data
        if self.need < 0:
            end = buffer.find(b"\r\n\r\n")
            if end < 0:
                return
            head = bytes(buffer[:end]).lower()
            at = head.find(b"\r\ncontent-length:")
            stop = head.find(b"\r\n", at + 2)
            length = int(head[at + 17:stop if stop > 0 else None]) if at >= 0 else 0
            self.need = end + 4 + length
            self.status = int(buffer[9:12])
        if len(buffer) < self.need:
            return
        del buffer[:self.need]
        self.need = -1
        index, self.current = self.current, -1
        self.load.answered(self, index, self.status)

    def connection_lost(self, exc: Exception | None) -> None:
        self.load.lost(self, self.current)
        self.current = -1


class Load:
    """Open-loop load: request i is written at start + i/rate (or as soon as a connection
    is free after that), whatever happened to the earlier ones."""

    def __init__(self, port: int, requests: list[bytes], rate: float, limit: int) -> None:
        self.port = port
        self.requests = requests
        self.rate = rate
        self.limit = limit
        n = len(requests)
        self.sent_at = array("d", bytes(8 * n))
        self.done_at = array("d", bytes(8 * n))
        self.status = array("H", bytes(2 * n))  # 0: no answer (connection error, timeout)
        self.late = array("d", bytes(8 * n))  # when the scheduler took it, after it was due
        self.idle: list[_Connection] = []
        self.all: set[_Connection] = set()
        self.backlog: deque[int] = deque()
        self.opening = 0
        self.connect_errors = 0
        self.finished = 0
        self.done = asyncio.Event()
        self.start = 0.0
        self.max_connections = 0

    def connected(self, connection: _Connection) -> None:
        self.opening -= 1
        self.all.add(connection)
        self.max_connections = max(self.max_connections, len(self.all))
        self.free(connection)

    def free(self, connection: _Connection) -> None:
        if self.backlog:
            connection.send(self.backlog.popleft())
        else:
            self.idle.append(connection)

    def answered(self, connection: _Connection, index: int, status: int) -> None:
        self.done_at[index] = time.time()
        self.status[index] = status
        self._finish()
        self.free(connection)

    def lost(self, connection: _Connection, index: int) -> None:
        self.all.discard(connection)
        if connection in self.idle:
            self.idle.remove(connection)
        if index >= 0:
            self.done_at[index] = time.time()
            self._finish()
        if self.backlog:
            self._open()

    def _finish(self) -> None:
        self.finished += 1
        if self.finished == len(self.requests):
            self.done.set()

    def _open(self) -> None:
        if len(self.all) + self.opening < self.limit:
            self.opening += 1
            asyncio.get_running_loop().create_task(self._connect())

    async def _connect(self) -> None:
        loop = asyncio.get_running_loop()
        try:
            await loop.create_connection(lambda: _Connection(self), HOST, self.port)
        except OSError:
            self.opening -= 1
            self.connect_errors += 1
            await asyncio.sleep(0.05)
            if self.backlog:
                self._open()

    def submit(self, index: int) -> None:
        if self.idle:
            self.idle.pop().send(index)
        else:
            self.backlog.append(index)
            self._open()

    async def run(self, timeout: float) -> None:
        """Send every request on schedule, then wait up to `timeout` s for the answers."""
        n, rate = len(self.requests), self.rate
        self.start = start = time.time()
        late = self.late
        i = 0
        while i < n:
            now = time.time()
            due = min(n, int((now - start) * rate) + 1)
            while i < due:
                late[i] = now - (start + i / rate)
                self.submit(i)
                i += 1
            await asyncio.sleep(TICK)
        try:
            await asyncio.wait_for(self.done.wait(), timeout)
        except TimeoutError:
            pass
        self.close()

    def close(self) -> None:
        self.backlog.clear()
        for connection in list(self.all):
            if connection.transport is not None:
                connection.transport.abort()
        self.idle.clear()


# --- processes, broker, store --------------------------------------------------------------


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of a process, 0 if it is gone."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def machine_busy_seconds() -> float:
    with open("/proc/stat") as f:
        values = [int(v) for v in f.readline().split()[1:]]
    idle = values[3] + values[4]  # idle + iowait
    return (sum(values[:8]) - idle) / os.sysconf("SC_CLK_TCK")


def broker_pids() -> list[int]:
    """RabbitMQ's Erlang VM (beam.smp), for its CPU share."""
    pids = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/comm") as f:
                    if f.read().strip() == "beam.smp":
                        pids.append(int(entry))
            except OSError:
                continue
    return pids


class CpuMeter:
    """CPU % of one core per role over an interval, and of everything else on the machine."""

    def __init__(self, roles: dict[str, list[int]]) -> None:
        self.roles = roles
        self.started = 0.0
        self.before: dict[str, float] = {}
        self.busy = 0.0

    def _read(self) -> dict[str, float]:
        return {role: sum(cpu_seconds(pid) for pid in pids) for role, pids in self.roles.items()}

    def begin(self) -> None:
        self.started, self.before = time.monotonic(), self._read()
        self.busy = machine_busy_seconds()

    def end(self) -> dict[str, float]:
        elapsed = time.monotonic() - self.started
        after = self._read()
        shares = {role: 100 * (after[role] - self.before[role]) / elapsed for role in after}
        total = 100 * (machine_busy_seconds() - self.busy) / elapsed
        shares["other"] = max(0.0, total - sum(shares.values()))
        return shares


class Broker:
    """A monitoring connection: queue depths, purges; notices the broker going away."""

    def __init__(self) -> None:
        self.connection: aio_pika.abc.AbstractConnection | None = None
        self.channel: aio_pika.abc.AbstractChannel | None = None
        self.disturbed = False

    async def connect(self, patience: float = 300.0) -> None:
        deadline = time.monotonic() + patience
        while True:
            try:
                self.connection = await aio_pika.connect(AMQP_URL, timeout=10)
                self.channel = await self.connection.channel()
                self.connection.close_callbacks.add(self._closed)
                return
            except (OSError, aio_pika.exceptions.AMQPException, TimeoutError):
                if time.monotonic() > deadline:
                    raise
                print("  (broker unreachable, waiting)", flush=True)
                await asyncio.sleep(5)

    def _closed(self, *_: object) -> None:
        self.disturbed = True

    async def _call(self, fn):
        for _ in range(3):
            try:
                if self.connection is None or self.connection.is_closed:
                    self.disturbed = True
                    await self.connect()
                return await fn(self.channel)
            except Exception as exc:  # noqa: BLE001 - whatever the client raises: retry
                print(f"  (broker call failed: {type(exc).__name__}: {exc})", flush=True)
                self.disturbed = True
                await asyncio.sleep(2)
                with_closed = self.connection
                self.connection = None
                if with_closed is not None and not with_closed.is_closed:
                    await with_closed.close()
        raise RuntimeError("the broker does not answer")

    async def queue_info(self, name: str) -> tuple[int, int]:
        """(ready messages, consumers) of a queue."""
        async def get(channel):
            result = (await channel.declare_queue(name, passive=True)).declaration_result
            return result.message_count, result.consumer_count
        return await self._call(get)

    async def depth(self, name: str) -> int:
        return (await self.queue_info(name))[0]

    async def purge(self, name: str) -> int:
        async def purge(channel):
            queue = await channel.declare_queue(name, passive=True)
            count = queue.declaration_result.message_count
            await queue.purge()
            return count
        return await self._call(purge)

    async def declare(self, topology: Topology) -> None:
        await self._call(topology.declare)

    async def close(self) -> None:
        if self.connection is not None and not self.connection.is_closed:
            self.connection.close_callbacks.discard(self._closed)
            await self.connection.close()


async def delete_topology(topology: Topology) -> None:
    connection = await aio_pika.connect(AMQP_URL, timeout=10)
    async with connection:
        # With the hold queues our ingress declared for the shipped config's sources.
        await topology.delete(await connection.channel(), SHIPPED_SOURCES)


def confirm_buckets(port: int) -> dict[float, float]:
    """Ours: the ingress's webhook_publish_latency_seconds histogram (cumulative counts by
    upper bound) from its /metrics."""
    with urllib.request.urlopen(f"http://{HOST}:{port}/metrics", timeout=10) as response:
        text = response.read().decode()
    buckets: dict[float, float] = {}
    for line in text.splitlines():
        if line.startswith("webhook_publish_latency_seconds_bucket{"):
            labels, _, value = line.rpartition(" ")
            bound = labels.split('le="', 1)[1].split('"', 1)[0]
            le = math.inf if bound == "+Inf" else float(bound)
            buckets[le] = buckets.get(le, 0.0) + float(value)
    return buckets


def bucket_quantile(before: dict[float, float], after: dict[float, float], q: float) -> float:
    """The upper bound (ms) of the histogram bucket holding quantile q of the increments."""
    bounds = sorted(after)
    counts = [after[b] - before.get(b, 0.0) for b in bounds]
    if not counts or counts[-1] <= 0:
        return math.nan
    for bound, count in zip(bounds, counts, strict=True):
        if count >= q * counts[-1]:
            return bound * 1e3
    return math.inf


def iso_to_epoch(value: str) -> float:
    return datetime.fromisoformat(value).timestamp()


@dataclass
class Pipeline:
    name: str
    port: int
    topology: Topology
    store_url: str  # sqlite:///path, or postgresql://.../database (made in Bench.start)
    server: subprocess.Popen | None = None
    consumer: subprocess.Popen | None = None
    consumer_log: Path | None = None
    last_rowid: int = 0
    log_offset: int = 0
    pg: asyncpg.Connection | None = None

    @property
    def queue(self) -> str:
        return self.topology.queue("orders")

    @property
    def table(self) -> str:
        return "inbox" if self.name == "ours" else "orders"

    async def _fetch(self, sql: str, *args: object) -> list[tuple]:
        """Rows of `sql` ($1-style parameters) from the pipeline's store."""
        if self.pg is not None:
            return [tuple(row) for row in await self.pg.fetch(sql, *args)]

        def query() -> list[tuple]:
            path = self.store_url[len("sqlite:///"):]
            with contextlib.closing(sqlite3.connect(path, isolation_level=None,
                                                    timeout=30)) as db:
                return db.execute(sql.replace("$1", "?"), args).fetchall()
        return await asyncio.to_thread(query)

    def _this_step(self, tag: str) -> tuple[str, object]:
        """A condition on the table's rows that picks this step's: on SQLite the rows after
        `mark` (cheap: rowid), on PostgreSQL those with the step's event ids."""
        if self.pg is not None:
            return "event_id LIKE $1", tag + "-%"
        return "rowid > $1", self.last_rowid

    async def mark(self) -> None:
        """Remember where the store is: effects after this belong to the next step."""
        if self.pg is None:
            rows = await self._fetch(f"SELECT coalesce(max(rowid), 0) FROM {self.table}")
            self.last_rowid = rows[0][0]
        if self.consumer_log is not None:
            self.log_offset = self.consumer_log.stat().st_size

    async def effect_count(self, tag: str) -> int:
        where, arg = self._this_step(tag)
        return (await self._fetch(f"SELECT count(*) FROM {self.table} WHERE {where}", arg))[0][0]

    async def effects(self, tag: str) -> dict[int, float]:
        """Request index -> effect time (epoch seconds), for this step's event ids."""
        where, arg = self._this_step(tag)
        at_column = "processed_at" if self.name == "ours" else "stored_at"
        orders_only = " AND consumer = 'orders'" if self.name == "ours" else ""
        rows = await self._fetch(
            f"SELECT event_id, {at_column} FROM {self.table} WHERE {where}{orders_only}", arg)
        prefix = tag + "-"
        out: dict[int, float] = {}
        for event_id, at in rows:
            if event_id and event_id.startswith(prefix):
                index = int(event_id[len(prefix):])
                out[index] = iso_to_epoch(at) if isinstance(at, str) else float(at)
        return out

    def logged(self, tag: str) -> dict[int, float]:
        """Ours: request index -> time of the consumer's `message` log line, which the Runner
        writes after the batch's COMMIT and ack."""
        prefix = f'"event_id":"{tag}-'.encode()
        out: dict[int, float] = {}
        assert self.consumer_log is not None
        with self.consumer_log.open("rb") as f:
            f.seek(self.log_offset)
            for line in f:
                if prefix in line and b'"event":"message"' in line:
                    entry = orjson.loads(line)
                    index = int(entry["event_id"].rpartition("-")[2])
                    out[index] = iso_to_epoch(entry["timestamp"])
        return out


# --- one step ----------------------------------------------------------------------------


@dataclass
class StepResult:
    offered: float
    accepted_rate: float = 0.0
    answered_2xx: int = 0
    not_2xx: dict[int, int] = field(default_factory=dict)
    no_answer: int = 0
    http_p50: float = math.nan
    http_p99: float = math.nan
    e2e_p50: float = math.nan
    e2e_p99: float = math.nan
    missing: int = 0
    claim_p50: float = math.nan  # ours: to inbox.processed_at (in the transaction)
    claim_p99: float = math.nan
    unlogged: int = 0  # ours: effects without a log line (their processed_at is used)
    confirm_p50: float = math.nan  # ours: the ingress's publish -> confirm wait (bucket bound)
    confirm_p99: float = math.nan
    depth_end: int = 0
    slope: float = 0.0
    drain: float = math.nan
    late_p99: float = math.nan  # the generator's own lateness: taken after it was due
    wait_p99: float = math.nan  # then waiting for a free connection
    connections: int = 0
    cpu: dict[str, float] = field(default_factory=dict)
    stuck: int = 0
    undrained: int = 0  # left on the queue or without an effect when the drain timed out
    disturbed: bool = False

    @property
    def growing(self) -> bool:
        return self.slope > 0.02 * self.offered and self.depth_end > 0.1 * self.offered

    @property
    def sustained(self) -> bool:
        return self.accepted_rate >= 0.95 * self.offered and not self.growing

    @property
    def verdict(self) -> str:
        if self.sustained:
            return "yes"
        reasons = []
        if self.accepted_rate < 0.95 * self.offered:
            reasons.append(f"accepted {100 * self.accepted_rate / self.offered:.0f}%")
        if self.growing:
            reasons.append(f"queue +{self.slope:.0f}/s")
        return "NO: " + ", ".join(reasons)


def pct(values: list[float], q: float) -> float:
    """Nearest-rank percentile of sorted `values`."""
    if not values:
        return math.nan
    return values[min(len(values) - 1, max(0, math.ceil(q * len(values)) - 1))]


def slope(samples: list[tuple[float, int]]) -> float:
    if len(samples) < 2:
        return 0.0
    xs = [t for t, _ in samples]
    ys = [d for _, d in samples]
    mx, my = statistics.fmean(xs), statistics.fmean(ys)
    den = sum((x - mx) ** 2 for x in xs)
    return sum((x - mx) * (y - my) for x, y in zip(xs, ys, strict=True)) / den if den else 0.0


class Bench:
    def __init__(self, args: argparse.Namespace, store: str) -> None:
        self.args = args
        self.store = store
        self.run = uuid.uuid4().hex[:6]
        self.prefix = f"e2e-{self.run}."
        self.tmp = Path(tempfile.mkdtemp(prefix="bench-e2e-"))
        self.broker = Broker()
        self.sequence = 0
        self.databases: list[str] = []  # PostgreSQL: made in start, dropped in cleanup
        self.pipelines = {
            "ours": Pipeline("ours", free_port(), Topology(self.prefix),
                             f"sqlite:///{self.tmp / 'ours.sqlite3'}"),
            "naive": Pipeline("naive", free_port(), Topology(f"{self.prefix}naive."),
                              f"sqlite:///{self.tmp / 'naive.sqlite3'}"),
        }
        self.logs: list[Path] = []
        self.signing = hmac.new(SECRET.encode(), digestmod=hashlib.sha256)

    # --- set-up ---

    def _popen(self, name: str, command: list[str], env: dict[str, str]) -> subprocess.Popen:
        log = self.tmp / f"{name}.log"
        self.logs.append(log)
        with log.open("ab") as out:
            return subprocess.Popen(command, cwd=ROOT, env=env, stdout=out, stderr=out)

    async def start(self) -> None:
        await self.broker.connect()
        for pipeline in self.pipelines.values():
            await self.broker.declare(pipeline.topology)
        env = {**os.environ, "SHOPIFY_WEBHOOK_SECRET": SECRET, "AMQP_URL": AMQP_URL,
               **{k: "unused-" + k for k in ("WOOCOMMERCE_WEBHOOK_SECRET", "PORTAL_WEBHOOK_TOKEN",
                                             "INVENTORY_WEBHOOK_SECRET", "EASYPOST_WEBHOOK_SECRET",
                                             "AFTERSHIP_WEBHOOK_SECRET")}}
        env.pop("DATABASE_URL", None)
        if self.store == "postgresql":
            for pipeline in self.pipelines.values():
                database = await create_pg_database()
                self.databases.append(database)
                pipeline.store_url = f"postgresql://root@127.0.0.1:5432/{database}"

        ours = self.pipelines["ours"]
        config = write_ingress_config(self.tmp, self.prefix, ours.port, 1)
        store_url = ours.store_url
        # The schema, as the consumer creates it at start, then the stock its orders take.
        store = open_store(store_url)
        await store.open()
        try:
            async with store.transaction() as tx:
                for sku in SKUS:
                    await tx.execute(
                        "INSERT INTO stock (sku, location, on_hand, reserved, as_of)"
                        " VALUES ($1, $2, $3, 0, $4)",
                        sku, LOCATION, STOCK_ON_HAND, "2026-11-20T00:00:00+00:00")
        finally:
            await store.close()
        ours.server = self._popen("ours-server", [
            sys.executable, "-m", "router", "--config", str(config), "serve", "--host", HOST,
        ], env)
        consumer = [sys.executable, "-m", "consumers", "orders", "--config", str(config),
                    "--store", store_url]
        if self.args.consumer_uvloop:
            consumer[1:3] = ["-c", "import asyncio, sys, uvloop; "
                             "asyncio.set_event_loop_policy(uvloop.EventLoopPolicy()); "
                             "from consumers.cli import main; sys.exit(main(sys.argv[1:]))"]
        ours.consumer = self._popen("ours-consumer", consumer, env)
        ours.consumer_log = self.logs[-1]

        naive = self.pipelines["naive"]
        # bench/ingress.py's plain server without an envelope: it publishes the raw body
        (self.tmp / "naive_server.py").write_text(PLAIN_SERVER)
        if self.store == "postgresql":
            (self.tmp / "naive_consumer.py").write_text(NAIVE_CONSUMER_PG)
            target = naive.store_url
        else:
            (self.tmp / "naive_consumer.py").write_text(NAIVE_CONSUMER)
            target = naive.store_url[len("sqlite:///"):]
        naive.server = self._popen("naive-server", [
            sys.executable, str(self.tmp / "naive_server.py"), SECRET, AMQP_URL,
            naive.topology.exchange, str(naive.port)], env)
        naive.consumer = self._popen("naive-consumer", [
            sys.executable, str(self.tmp / "naive_consumer.py"), AMQP_URL, naive.queue,
            target, "100"], env)

        await asyncio.to_thread(wait_http, f"http://{HOST}:{ours.port}/readyz", 60.0)
        await asyncio.to_thread(wait_port, naive.port, 60.0)
        for pipeline in self.pipelines.values():
            await self._wait_consuming(pipeline)
            if self.store == "postgresql":
                pipeline.pg = await asyncpg.connect(pipeline.store_url)

    async def _wait_consuming(self, pipeline: Pipeline, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while (await self.broker.queue_info(pipeline.queue))[1] < 1:
            for proc in (pipeline.server, pipeline.consumer):
                if proc is not None and proc.poll() is not None:
                    raise RuntimeError(f"{pipeline.name}: a process exited ({proc.args[:4]})")
            if time.monotonic() > deadline:
                raise RuntimeError(f"{pipeline.name}: no consumer on {pipeline.queue}")
            await asyncio.sleep(0.2)

    async def stop(self) -> None:
        for pipeline in self.pipelines.values():
            for proc in (pipeline.server, pipeline.consumer):
                if proc is not None and proc.poll() is None:
                    proc.send_signal(signal.SIGTERM)
        for pipeline in self.pipelines.values():
            for proc in (pipeline.server, pipeline.consumer):
                if proc is None:
                    continue
                try:
                    await asyncio.to_thread(proc.wait, 30)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    await asyncio.to_thread(proc.wait, 10)

    async def cleanup(self) -> None:
        try:
            await self.stop()
        finally:
            try:
                await self.broker.close()
                for pipeline in self.pipelines.values():
                    if pipeline.pg is not None:
                        await pipeline.pg.close()
                    await delete_topology(pipeline.topology)
            finally:
                shutil.rmtree(self.tmp, ignore_errors=True)
                for database in self.databases:
                    await drop_pg_database(database)

    def tail_logs(self, lines: int = 15) -> None:
        for log in self.logs:
            if log.exists():
                text = log.read_text(errors="replace").splitlines()[-lines:]
                print(f"--- {log.name} (last {len(text)} lines)", file=sys.stderr)
                print("\n".join(text), file=sys.stderr)

    # --- requests ---

    def build(self, pipeline: Pipeline, tag: str, count: int) -> list[bytes]:
        """`count` signed orders/create requests, event ids `<tag>-<i>`."""
        host = f"{HOST}:{pipeline.port}"
        before, after = ORDER.split(ORDER_ID)
        at = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
        sign = self.signing.copy
        requests = []
        for i in range(count):
            self.sequence += 1
            body = b'%s"id":%d%s' % (before, ORDER_ID_BASE + self.sequence, after)
            mac = sign()
            mac.update(body)
            signature = base64.b64encode(mac.digest()).decode()
            head = HEAD.format(host=host, length=len(body), signature=signature,
                               id=f"{tag}-{i}", at=at)
            requests.append(head.encode() + body)
        return requests

    # --- steps ---

    async def step(self, pipeline: Pipeline, rate: float, tag: str,
                   seconds: float) -> StepResult:
        count = max(1, int(rate * seconds))
        requests = self.build(pipeline, tag, count)
        await pipeline.mark()
        result = StepResult(offered=rate)
        load = Load(pipeline.port, requests, rate, self.args.connections)
        meter = CpuMeter({"gen": [os.getpid()], "http": [pipeline.server.pid],
                          "consumer": [pipeline.consumer.pid], "rabbit": broker_pids()})
        self.broker.disturbed = False
        samples: list[tuple[float, int]] = []
        confirms = (await asyncio.to_thread(confirm_buckets, pipeline.port)
                    if pipeline.name == "ours" else None)
        sending = asyncio.create_task(load.run(self.args.request_timeout))
        meter.begin()
        started = time.monotonic()
        end = started + count / rate
        while True:
            now = time.monotonic()
            if now >= end:
                break
            await asyncio.sleep(min(SAMPLE_EVERY, end - now))
            if time.monotonic() < end - 0.05:
                samples.append((time.monotonic() - started,
                                await self.broker.depth(pipeline.queue)))
        result.cpu = meter.end()
        result.depth_end = await self.broker.depth(pipeline.queue)
        samples.append((time.monotonic() - started, result.depth_end))
        step_end = time.monotonic()
        half = (end - started) / 2
        result.slope = slope([s for s in samples if s[0] >= half])
        await sending
        result.connections = load.max_connections
        if confirms is not None:
            after = await asyncio.to_thread(confirm_buckets, pipeline.port)
            result.confirm_p50 = bucket_quantile(confirms, after, 0.5)
            result.confirm_p99 = bucket_quantile(confirms, after, 0.99)

        # Answers.
        window_end = load.start + count / rate
        latencies, late, waits = [], [], []
        accepted: dict[int, float] = {}
        for i in range(count):
            status = load.status[i]
            due = load.start + i / rate
            late.append(load.late[i])
            if load.sent_at[i]:
                waits.append(load.sent_at[i] - due - load.late[i])
            if 200 <= status < 300:
                accepted[i] = load.done_at[i]
                latencies.append(load.done_at[i] - due)
                if load.done_at[i] <= window_end:
                    result.accepted_rate += 1
            elif status:
                result.not_2xx[status] = result.not_2xx.get(status, 0) + 1
            else:
                result.no_answer += 1
        result.accepted_rate /= count / rate
        result.answered_2xx = len(accepted)
        latencies.sort()
        late.sort()
        waits.sort()
        result.http_p50, result.http_p99 = pct(latencies, 0.5) * 1e3, pct(latencies, 0.99) * 1e3
        result.late_p99 = pct(late, 0.99) * 1e3
        result.wait_p99 = pct(waits, 0.99) * 1e3

        # Drain: the queue empty and every accepted event applied.
        deadline = time.monotonic() + self.args.drain_timeout
        while True:
            depth = await self.broker.depth(pipeline.queue)
            applied = await pipeline.effect_count(tag)
            if depth == 0 and applied >= len(accepted):
                drained = time.monotonic()
                await asyncio.sleep(0.5)  # and nothing more arrives
                if await pipeline.effect_count(tag) == applied:
                    break
            elif time.monotonic() > deadline:
                print(f"  {pipeline.name}: not drained after {self.args.drain_timeout:.0f} s "
                      f"(queue {depth}, applied {applied} of {len(accepted)})", flush=True)
                result.undrained = max(depth, len(accepted) - applied)
                drained = time.monotonic()
                break
            await asyncio.sleep(0.1)
        result.drain = drained - step_end
        effects = await pipeline.effects(tag)
        result.missing = sum(1 for i in accepted if i not in effects)
        if pipeline.consumer_log is not None:
            await asyncio.sleep(0.5)  # the consumer flushes its log lines every 0.1 s
            claimed = sorted((effects[i] - at) * 1e3 for i, at in accepted.items()
                             if i in effects)
            result.claim_p50, result.claim_p99 = pct(claimed, 0.5), pct(claimed, 0.99)
            logged = await asyncio.to_thread(pipeline.logged, tag)
            result.unlogged = sum(1 for i in effects if i not in logged)
            effects = {i: logged.get(i, at) for i, at in effects.items()}
        e2e = sorted((effects[i] - at) * 1e3 for i, at in accepted.items() if i in effects)
        result.e2e_p50, result.e2e_p99 = pct(e2e, 0.5), pct(e2e, 0.99)
        result.stuck = await self._clear_side_queues(pipeline)
        result.disturbed = self.broker.disturbed
        return result

    async def _clear_side_queues(self, pipeline: Pipeline) -> int:
        """Purge what ours relays to `notifications`; count retry and dead letters."""
        topology = pipeline.topology
        stuck = 0
        for name in topology.names():
            if name == pipeline.queue:
                continue
            if name.endswith(".dead") or ".retry." in name:
                if name.startswith(pipeline.queue + "."):
                    stuck += await self.broker.depth(name)
            elif name == topology.queue("notifications"):
                await self.broker.purge(name)
        return stuck

    def _own_pids(self) -> list[int]:
        pids = [os.getpid()]
        for pipeline in self.pipelines.values():
            pids += [p.pid for p in (pipeline.server, pipeline.consumer) if p is not None]
        return pids

    async def other_load(self, seconds: float = 1.0) -> float:
        """CPU % (of one core) used by anything but this benchmark's processes while they
        idle, RabbitMQ included (another user of the broker shows there)."""
        meter = CpuMeter({"bench": self._own_pids()})
        meter.begin()
        await asyncio.sleep(seconds)
        return meter.end()["other"]

    async def wait_quiet(self) -> None:
        """Before a step: wait (up to --quiet-wait s) until the machine is otherwise idle."""
        if math.isinf(self.args.quiet_threshold):
            return
        deadline = time.monotonic() + self.args.quiet_wait
        told = False
        while (load := await self.other_load()) > self.args.quiet_threshold:
            if time.monotonic() > deadline:
                print(f"  (still {load:.0f}% other load after {self.args.quiet_wait:.0f} s: "
                      f"measuring anyway)", flush=True)
                return
            if not told:
                print(f"  (other load on the machine: {load:.0f}% of a core; waiting until it "
                      f"ends)", flush=True)
                told = True
            await asyncio.sleep(2)

    async def measure(self, pipeline: Pipeline, rate: float, step_no: int,
                      round_no: int) -> StepResult:
        """One step, run again if the broker went away or other load took the CPU."""
        for attempt in range(1, STEP_ATTEMPTS + 1):
            await self.wait_quiet()
            tag = f"{self.run}-{pipeline.name[0]}{step_no}r{round_no}a{attempt}"
            result = await self.step(pipeline, rate, tag, self.args.step_seconds)
            other = result.cpu.get("other", 0.0)
            if not result.disturbed and other <= self.args.quiet_threshold:
                return result
            if attempt == STEP_ATTEMPTS:
                break
            if result.disturbed:
                print(f"  {pipeline.name} at {rate:.0f}/s: the broker went away during the "
                      f"step; again in {BROKER_RETRY_PAUSE:.0f} s", flush=True)
                await asyncio.sleep(BROKER_RETRY_PAUSE)
                await self._wait_consuming(pipeline, timeout=300)
            else:
                print(f"  {pipeline.name} at {rate:.0f}/s: {other:.0f}% of a core went to other "
                      f"processes during the step; again", flush=True)
        return result

    async def warm_up(self) -> None:
        for pipeline in self.pipelines.values():
            result = await self.step(pipeline, self.args.rates[0], f"{self.run}-w{pipeline.name}",
                                     self.args.warmup)
            print(f"warm-up {pipeline.name}: {result.answered_2xx} accepted, "
                  f"e2e p99 {result.e2e_p99:.1f} ms, drained in {result.drain:.1f} s",
                  flush=True)
            await asyncio.sleep(self.args.settle)


# --- output --------------------------------------------------------------------------------

COLUMNS = (f"{'offered/s':>9} {'pipeline':>8} {'acc/s':>7} {'2xx p50':>8} {'2xx p99':>8} "
           f"{'e2e p50':>8} {'e2e p99':>8} {'q end':>6} {'drain s':>7} "
           f"{'cpu% gen/http/cons/rabbit/other':>31}  sustained")


def row(name: str, r: StepResult) -> str:
    cpu = "/".join(f"{r.cpu.get(k, math.nan):.0f}"
                   for k in ("gen", "http", "consumer", "rabbit", "other"))
    return (f"{r.offered:9.0f} {name:>8} {r.accepted_rate:7.0f} {r.http_p50:8.1f} "
            f"{r.http_p99:8.1f} {r.e2e_p50:8.1f} {r.e2e_p99:8.1f} {r.depth_end:6d} "
            f"{r.drain:7.1f} {cpu:>31}  {r.verdict}")


def median_result(results: list[StepResult]) -> StepResult:
    if len(results) == 1:
        return results[0]
    m = StepResult(offered=results[0].offered)
    for name in ("accepted_rate", "http_p50", "http_p99", "e2e_p50", "e2e_p99", "slope",
                 "drain", "late_p99", "wait_p99", "claim_p50", "claim_p99", "confirm_p50",
                 "confirm_p99"):
        setattr(m, name, statistics.median(getattr(r, name) for r in results))
    m.depth_end = int(statistics.median(r.depth_end for r in results))
    m.cpu = {k: statistics.median(r.cpu[k] for r in results) for k in results[0].cpu}
    m.answered_2xx = sum(r.answered_2xx for r in results)
    m.missing = sum(r.missing for r in results)
    m.unlogged = sum(r.unlogged for r in results)
    m.no_answer = sum(r.no_answer for r in results)
    m.stuck = sum(r.stuck for r in results)
    m.undrained = sum(r.undrained for r in results)
    for r in results:
        for status, n in r.not_2xx.items():
            m.not_2xx[status] = m.not_2xx.get(status, 0) + n
    m.connections = max(r.connections for r in results)
    m.disturbed = any(r.disturbed for r in results)
    return m


def ratio(a: float, b: float) -> str:
    return f"{a / b:.2f}" if b and not math.isnan(a) and not math.isnan(b) else "-"


def write_chart(path: Path, table: dict[float, dict[str, StepResult]], title: str) -> None:
    """Two panels: accepted rate and accept->effect p99 against the offered rate (log axes)."""
    colours = {"ours": "#1f77b4", "naive": "#ff7f0e"}
    rates = sorted(table)
    width, height, pad_l, pad_r, pad_t, pad_b, gap = 960, 420, 70, 20, 60, 70, 80
    panel_w = (width - pad_l - pad_r - gap) / 2
    panel_h = height - pad_t - pad_b
    lo_x, hi_x = math.log10(min(rates) / 1.2), math.log10(max(rates) * 1.2)

    def x_of(left: float, rate: float) -> float:
        return left + (math.log10(rate) - lo_x) / (hi_x - lo_x) * panel_w

    accepted = [r.accepted_rate for v in table.values() for r in v.values()] + rates
    p99s = [r.e2e_p99 for v in table.values() for r in v.values()
            if not math.isnan(r.e2e_p99) and r.e2e_p99 > 0] or [1.0]
    lo_a, hi_a = math.log10(min(accepted) / 1.2), math.log10(max(accepted) * 1.2)
    lo_p = math.floor(math.log10(min(min(p99s), 250) / 1.5))
    hi_p = math.ceil(math.log10(max(max(p99s), 250) * 1.5))

    def y_log(value: float, lo: float, hi: float) -> float:
        return pad_t + panel_h - (math.log10(value) - lo) / (hi - lo) * panel_h

    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
           f'viewBox="0 0 {width} {height}" font-family="sans-serif" font-size="12">',
           f'<rect width="{width}" height="{height}" fill="white"/>',
           f'<text x="{width / 2}" y="22" text-anchor="middle" font-size="15" '
           f'font-weight="bold">{title}</text>']

    def ticks_1_2_5(lo: float, hi: float) -> list[float]:
        values = []
        for exp in range(math.floor(lo), math.ceil(hi) + 1):
            for m in (1, 2, 5):
                v = m * 10 ** exp
                if lo <= math.log10(v) <= hi:
                    values.append(v)
        return values

    def panel(left: float, heading: str, ylabel: str, lo: float, hi: float,
              value_of, reference, ticks: list[float]) -> None:
        top, bottom = pad_t, pad_t + panel_h
        out.append(f'<text x="{left + panel_w / 2}" y="{top - 10}" text-anchor="middle" '
                   f'font-size="13">{heading}</text>')
        out.append(f'<rect x="{left}" y="{top}" width="{panel_w}" height="{panel_h}" '
                   f'fill="none" stroke="#888"/>')
        for v in ticks:
            y = y_log(v, lo, hi)
            out.append(f'<line x1="{left}" x2="{left + panel_w}" y1="{y:.1f}" y2="{y:.1f}" '
                       f'stroke="#eee"/>')
            out.append(f'<text x="{left - 6}" y="{y + 4:.1f}" text-anchor="end">{v:g}</text>')
        for rate in rates:
            x = x_of(left, rate)
            out.append(f'<line x1="{x:.1f}" x2="{x:.1f}" y1="{top}" y2="{bottom}" '
                       f'stroke="#eee"/>')
            out.append(f'<text x="{x:.1f}" y="{bottom + 16}" text-anchor="middle">'
                       f'{rate:.0f}</text>')
        out.append(f'<text x="{left + panel_w / 2}" y="{bottom + 36}" text-anchor="middle">'
                   f'offered events/s</text>')
        out.append(f'<text transform="translate({left - 52},{top + panel_h / 2}) rotate(-90)" '
                   f'text-anchor="middle">{ylabel}</text>')
        reference(left)
        for name in PIPELINES:
            points = [(x_of(left, rate), y_log(max(value_of(table[rate][name]), 10 ** lo),
                                               lo, hi), table[rate][name].sustained)
                      for rate in rates if name in table[rate]
                      and not math.isnan(value_of(table[rate][name]))]
            if not points:
                continue
            path_d = " ".join(f"{x:.1f},{y:.1f}" for x, y, _ in points)
            out.append(f'<polyline points="{path_d}" fill="none" stroke="{colours[name]}" '
                       f'stroke-width="2"/>')
            for x, y, sustained in points:
                fill = colours[name] if sustained else "white"
                out.append(f'<circle cx="{x:.1f}" cy="{y:.1f}" r="4" fill="{fill}" '
                           f'stroke="{colours[name]}" stroke-width="2"/>')

    def offered_line(left: float) -> None:
        a = (x_of(left, rates[0]), y_log(rates[0], lo_a, hi_a))
        b = (x_of(left, rates[-1]), y_log(rates[-1], lo_a, hi_a))
        out.append(f'<line x1="{a[0]:.1f}" y1="{a[1]:.1f}" x2="{b[0]:.1f}" y2="{b[1]:.1f}" '
                   f'stroke="#999" stroke-dasharray="4 4"/>')
        out.append(f'<text x="{left + 8}" y="{pad_t + 16}" fill="#666">dashed: accepted = '
                   f'offered</text>')

    def goal_line(left: float) -> None:
        y = y_log(250, lo_p, hi_p)
        out.append(f'<line x1="{left}" x2="{left + panel_w}" y1="{y:.1f}" y2="{y:.1f}" '
                   f'stroke="#c00" stroke-dasharray="6 4"/>')
        out.append(f'<text x="{left + 6}" y="{y - 5:.1f}" fill="#c00">goal 250 ms</text>')

    panel(pad_l, "accepted rate (2xx/s)", "accepted events/s", lo_a, hi_a,
          lambda r: r.accepted_rate, offered_line, rates)
    panel(pad_l + panel_w + gap, "accept \u2192 effect p99", "ms (log)", lo_p, hi_p,
          lambda r: r.e2e_p99, goal_line, ticks_1_2_5(lo_p, hi_p))
    legend_x = pad_l
    for name in PIPELINES:
        label = {"ours": "ours (router serve + consumers orders)",
                 "naive": "naive (aiohttp + aio-pika, a commit each)"}[name]
        out.append(f'<line x1="{legend_x}" x2="{legend_x + 24}" y1="{height - 14}" '
                   f'y2="{height - 14}" stroke="{colours[name]}" stroke-width="3"/>')
        out.append(f'<text x="{legend_x + 30}" y="{height - 10}">{label}</text>')
        legend_x += 360
    out.append(f'<circle cx="{legend_x + 8}" cy="{height - 14}" r="4" fill="white" '
               f'stroke="#555" stroke-width="2"/>')
    out.append(f'<text x="{legend_x + 18}" y="{height - 10}">not sustained</text>')
    out.append("</svg>")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(out) + "\n")


# --- main --------------------------------------------------------------------------------


def chart_path(args: argparse.Namespace, store: str) -> Path:
    """--chart as given for the first store, with `-<store>` in its name for the others."""
    path = Path(args.chart)
    return path if store == args.store[0] else path.with_stem(f"{path.stem}-{store}")


def failed_checks(result: StepResult) -> list[str]:
    """--smoke: what is wrong with a step at a rate both pipelines must keep up with."""
    found = {"not 2xx": sum(result.not_2xx.values()), "no answer": result.no_answer,
             "accepted without effect": result.missing, "retry/dead": result.stuck,
             "not drained": result.undrained, "steps without a 2xx": int(not result.answered_2xx)}
    return [f"{what} {n}" for what, n in found.items() if n]


async def run_store(args: argparse.Namespace, store: str) -> int:
    """The steps for one store, ours and naive; the number of failures (accepted events
    without an effect; with --smoke, anything not as it should be)."""
    bench = Bench(args, store)
    table: dict[float, dict[str, StepResult]] = {}
    maxima: dict[str, float] = {}
    failed_at: dict[str, StepResult] = {}
    print(f"\n{STORE_NAMES[store]}: {args.step_seconds:g} s per step, {args.rounds} round(s), "
          f"open loop, up to {args.connections} connections, {os.cpu_count()} cores, uvloop, "
          f"prefix {bench.prefix}", flush=True)
    lost = 0
    try:
        await bench.start()
        await bench.warm_up()
        print("\n" + COLUMNS, flush=True)
        rates = list(args.rates)
        step_no = 0
        while step_no < len(rates):
            rate = rates[step_no]
            step_no += 1
            active = [name for name in PIPELINES if name not in failed_at]
            table[rate] = {}
            for name in active:
                rounds = []
                for round_no in range(1, args.rounds + 1):
                    result = await bench.measure(bench.pipelines[name], rate, step_no, round_no)
                    rounds.append(result)
                    await asyncio.sleep(args.settle)
                result = median_result(rounds)
                table[rate][name] = result
                lost += result.missing
                if args.smoke and (wrong := failed_checks(result)):
                    lost += 1
                    print(f"{'':>19}SMOKE FAILED ({name}): {', '.join(wrong)}", flush=True)
                print(row(name, result), flush=True)
                notes = []
                if result.not_2xx:
                    notes.append("non-2xx " + ", ".join(f"{s}: {n}" for s, n
                                                        in sorted(result.not_2xx.items())))
                if result.no_answer:
                    notes.append(f"no answer {result.no_answer}")
                if result.missing:
                    notes.append(f"ACCEPTED WITHOUT EFFECT {result.missing}")
                if not math.isnan(result.claim_p99):
                    notes.append(f"to inbox.processed_at p50 {result.claim_p50:.1f} "
                                 f"p99 {result.claim_p99:.1f} ms")
                if not math.isnan(result.confirm_p99):
                    notes.append(f"ingress publish->confirm p50 <= {result.confirm_p50:g}, "
                                 f"p99 <= {result.confirm_p99:g} ms")
                if result.unlogged:
                    notes.append(f"{result.unlogged} without a log line")
                if result.stuck:
                    notes.append(f"retry/dead {result.stuck}")
                notes.append(f"generator: p99 late {result.late_p99:.1f} ms, p99 wait for a "
                             f"connection {result.wait_p99:.1f} ms, {result.connections} "
                             f"connections")
                if result.cpu.get("other", 0) > args.quiet_threshold:
                    notes.append("OTHER LOAD ON THE MACHINE")
                if result.disturbed:
                    notes.append("THE BROKER WENT AWAY DURING THE STEP")
                print(textwrap.fill("; ".join(notes), 100, initial_indent=" " * 19,
                                    subsequent_indent=" " * 21), flush=True)
                if result.sustained:
                    maxima[name] = rate
                else:
                    failed_at[name] = result
            if "ours" in table[rate] and "naive" in table[rate]:
                o, n = table[rate]["ours"], table[rate]["naive"]
                print(f"{'':>19}ours/naive: accepted {ratio(o.accepted_rate, n.accepted_rate)}, "
                      f"2xx p99 {ratio(o.http_p99, n.http_p99)}, "
                      f"e2e p99 {ratio(o.e2e_p99, n.e2e_p99)}", flush=True)
            if step_no == len(rates) and len(failed_at) < len(PIPELINES) \
                    and rate * args.growth <= args.max_rate:
                rates.append(round(rate * args.growth / 50) * 50)
    except Exception:
        bench.tail_logs()
        raise
    finally:
        await bench.cleanup()

    print("\nmax sustained (accepted >= 95% of offered, orders queue not growing):")
    for name in PIPELINES:
        after = (f"; {failed_at[name].offered:.0f}/s was not ({failed_at[name].verdict[4:]})"
                 if name in failed_at else " (not reached: raise --max-rate)")
        best = f"{maxima[name]:.0f} events/s" if name in maxima else "no rate sustained"
        print(f"{name:>8}: {best}{after}")
    good = [rate for rate, r in table.items() if "ours" in r and rate >= 1000
            and r["ours"].sustained and r["ours"].e2e_p99 < 250]
    tried = any(rate >= 1000 and "ours" in r for rate, r in table.items())
    verdict = (f"met, up to {max(good):.0f}/s" if good
               else "NOT met" if tried else "not measured (no step at 1,000/s or more)")
    print(f"\ngoal (ours sustains >= 1,000 events/s with accept->effect p99 < 250 ms and no "
          f"queue growth): {verdict}")
    if args.chart:
        title = (f"webhook-router end to end on {STORE_NAMES[store]}, {args.step_seconds:g} s "
                 f"steps, {os.cpu_count()} cores, ours vs naive")
        write_chart(chart_path(args, store), table, title)
        print(f"chart: {chart_path(args, store)}")
    return lost


async def main_async(args: argparse.Namespace) -> int:
    failures = {store: await run_store(args, store) for store in args.store}
    for store, n in failures.items():
        if n:
            print(f"{STORE_NAMES[store]}: {n} accepted event(s) had no effect"
                  + (" or step(s) failed the smoke's checks" if args.smoke else ""),
                  file=sys.stderr)
    return 1 if any(failures.values()) else 0




def main() -> int:
    # Broker losses are reported (and the step run again) by the script itself.
    for name in ("aiormq", "aio_pika"):
        logging.getLogger(name).setLevel(logging.CRITICAL)
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--step-seconds", type=float, default=20.0)
    parser.add_argument("--rates", type=float, nargs="+", default=[250, 500, 1000, 2000],
                        help="offered events/s of the first steps (default: 250 500 1000 2000)")
    parser.add_argument("--growth", type=float, default=1.5,
                        help="factor between the steps after --rates (default 1.5)")
    parser.add_argument("--max-rate", type=float, default=20_000,
                        help="never offer more than this (default 20000)")
    parser.add_argument("--rounds", type=int, default=1,
                        help="runs of each step per pipeline; medians are reported")
    parser.add_argument("--connections", type=int, default=256,
                        help="most keep-alive connections the generator opens (default 256)")
    parser.add_argument("--warmup", type=float, default=3.0,
                        help="seconds of load at the first rate before measuring (default 3)")
    parser.add_argument("--settle", type=float, default=2.0,
                        help="idle seconds after each step (default 2)")
    parser.add_argument("--drain-timeout", type=float, default=300.0)
    parser.add_argument("--request-timeout", type=float, default=30.0,
                        help="seconds to wait for the last answers after a step")
    parser.add_argument("--quiet-threshold", type=float, default=25.0,
                        help="CPU %% of a core other processes may use; a step with more is "
                             "run again, and steps wait for less (default 25)")
    parser.add_argument("--quiet-wait", type=float, default=600.0,
                        help="most seconds to wait for that before a step (default 600)")
    parser.add_argument("--consumer-uvloop", action="store_true",
                        help="run ours' consumer under uvloop (python -m consumers uses the "
                             "default asyncio loop)")
    parser.add_argument("--store", action="append", choices=STORES,
                        help="the store of both pipelines' consumers; repeatable (default: "
                             "sqlite, then postgresql)")
    parser.add_argument("--chart", help="write an SVG chart here, e.g. docs/e2e.svg (the "
                                        "second store's gets -<store> in its name)")
    parser.add_argument("--smoke", action="store_true",
                        help="check that the benchmark works, not what it measures: one 1 s "
                             "step at 50/s per store, a warm-up of one request, no waiting "
                             "for a quiet machine; exit 1 unless every request was accepted, "
                             "applied and drained")
    args = parser.parse_args()
    args.store = args.store or list(STORES)
    if args.smoke:
        args.step_seconds, args.rates, args.max_rate, args.rounds = 1.0, [50.0], 50.0, 1
        args.warmup, args.settle, args.quiet_wait = 0.0, 0.0, 0.0
        args.quiet_threshold = math.inf  # measure whatever else runs; never run a step again
        args.drain_timeout, args.request_timeout = 30.0, 10.0
    return uvloop.run(main_async(args))


if __name__ == "__main__":
    raise SystemExit(main())
