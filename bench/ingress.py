"""Ingress benchmark: our ingress against a plain aiohttp + aio-pika handler, same run, same load.

    python bench/ingress.py [--duration 15] [--connections 64] [--rounds 3]
                            [--compare LABEL=CHECKOUT ...] [--with-consumer audit]

Both servers run in their own process with uvloop, publish with confirms to a quorum queue on
the same RabbitMQ, and are loaded in turn by wrk (Debian package `wrk`) with signed Shopify
orders (~640 bytes) carrying a fresh X-Shopify-Event-Id each, so nothing is a duplicate.
The plain handler checks the HMAC and awaits one confirmed publish of the envelope our ingress
would publish for that order (made once at start-up; it only writes the event id in); ours also
checks the rate limit, parses, validates against the JSON Schema, maps to the canonical order,
builds the envelope, logs a JSON line and counts metrics.  The servers take turns in the opposite
order every other round (ABBA).  Prints requests/s, p50, p99 and each server's own CPU per
request per round, the medians, and per round the ratios ours/plain.  Fails (exit 1) when
the orders queue did not hold every 2xx of a run (or held more than the 2xx and the requests
in flight).  A smoke (CI): `--duration 1 --warmup 1 --rounds 1 --workers 1 --connections 8`.

A before/after in one run: `--compare before=../wt-old` also serves the ingress of another
checkout of this repository (say `git worktree add ../wt-old <commit>`) with the same
interpreter, in the same rounds, and prints each ratio to plain and to it.

`--with-consumer audit` runs that consumer for the whole benchmark (as production does: the
audit queue takes a copy of every event, the plain handler's included, and records both alike),
so its cost to the broker and the machine shows in both servers' figures. Before each measured
run and after it the benchmark waits until the consumer has handled everything published so far
(never purging its queue under it, unless --drain-timeout runs out, which it prints), and prints
what the consumer handled per second during the run, its CPU per message, its queue's backlog
when wrk stopped and how long the drain took. "queued" counts the orders queue, which no
consumer reads: what the server published.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import hashlib
import hmac
import os
import re
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import tomllib
import urllib.request
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from tests.ports import free_port  # noqa: E402  (bench.e2e and the others take it from here)

AMQP_URL = os.environ.get("AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/")
SECRET = "bench-secret-0123456789"
# The shipped config's sources: the ingress declares a hold queue for each provider's.
SOURCES = tuple(tomllib.loads((ROOT / "config" / "router.toml").read_text())["sources"])

ORDER = (
    b'{"id":5820982911946154508,"name":"#1042","email":"jane.doe@example.com",'
    b'"created_at":"2026-11-20T10:15:31-05:00","updated_at":"2026-11-20T10:15:31-05:00",'
    b'"currency":"USD","total_price":"98.00","note":"Leave at the side door",'
    b'"line_items":[{"id":866550311766439020,"sku":"PEP-BPC157-5MG","name":"BPC-157 5 mg",'
    b'"quantity":2,"price":"39.00"},{"id":141249953214522974,"sku":"BAC-WATER-10ML",'
    b'"name":"Bacteriostatic water 10 ml","quantity":1,"price":"20.00"}],'
    b'"shipping_address":{"name":"Jane Doe","address1":"123 Main Street","address2":"Suite 4",'
    b'"city":"Austin","province_code":"TX","zip":"78701","country_code":"US",'
    b'"phone":"555-555-0100"}}'
)

PLAIN_SERVER = r'''
import asyncio, base64, hashlib, hmac, sys
import aio_pika, uvloop
from aiohttp import web

SECRET, URL, EXCHANGE, PORT = sys.argv[1].encode(), sys.argv[2], sys.argv[3], int(sys.argv[4])
# With ENVELOPE MARKER: our ingress's envelope for the benchmark's order, split around its
# event id, is what it publishes (bench/ingress.py, so the audit consumer behind both reads
# the same). Without: the raw body, no envelope, no mapping (bench/e2e.py's naive pipeline).
ENVELOPED = len(sys.argv) > 5
if ENVELOPED:
    PREFIX, _, SUFFIX = open(sys.argv[5], "rb").read().partition(sys.argv[6].encode())

async def main():
    connection = await aio_pika.connect_robust(URL)
    channel = await connection.channel(publisher_confirms=True)
    exchange = await channel.get_exchange(EXCHANGE)

    async def webhook(request):
        body = await request.read()
        digest = base64.b64encode(hmac.new(SECRET, body, hashlib.sha256).digest()).decode()
        if not hmac.compare_digest(digest, request.headers.get("X-Shopify-Hmac-Sha256", "")):
            return web.json_response({"error": "invalid_signature"}, status=401)
        event_id = request.headers.get("X-Shopify-Event-Id", "")
        published = PREFIX + event_id.encode() + SUFFIX if ENVELOPED else body
        await exchange.publish(
            aio_pika.Message(published, message_id=event_id,
                             delivery_mode=aio_pika.DeliveryMode.PERSISTENT),
            routing_key="order.created",
        )
        return web.json_response({"status": "accepted"}, status=202)

    app = web.Application()
    app.router.add_post("/webhooks/shopify", webhook)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", PORT).start()
    await asyncio.Event().wait()

uvloop.run(main())
'''

WRK_SCRIPT = r"""
local counter = 0
local thread_id = 0
function setup(thread)
  thread_id = thread_id + 1
  thread:set("tid", thread_id)
end
function init(args)
  counter = 0
end
local bodies = {%(bodies)s}
local signatures = {%(signatures)s}
request = function()
  counter = counter + 1
  -- Each thread starts half the pool away from the other: no body twice at once.
  local i = (tid * %(half)d + counter) %% #bodies + 1
  local headers = {}
  headers["Content-Type"] = "application/json"
  headers["X-Shopify-Topic"] = "orders/create"
  headers["X-Shopify-Hmac-Sha256"] = signatures[i]
  headers["X-Shopify-Event-Id"] = "%(run)s-" .. tid .. "-" .. counter
  return wrk.format("POST", "/webhooks/shopify", headers, bodies[i])
end
"""
# Shopify signs the body alone, so the ingress answers the same body under a new event id
# as a duplicate (router.dedup): wrk cycles through this many signed orders, each its own,
# and the config remembers them for less time than a body takes to come round again.
POOL = 2048
DEDUP_WINDOW = 0.05


def signed_order(n: int) -> tuple[bytes, str]:
    """ORDER as order number n (a body of its own) and its X-Shopify-Hmac-Sha256."""
    body = ORDER.replace(b'"name":"#1042"', b'"name":"#1042-%d"' % n)
    return body, base64.b64encode(hmac.new(SECRET.encode(), body, hashlib.sha256).digest()).decode()


def wrk_script(run: str) -> str:
    """The wrk script posting POOL signed variants of ORDER under fresh event ids."""
    bodies, signatures = zip(*(signed_order(n) for n in range(POOL)), strict=True)
    return WRK_SCRIPT % {"bodies": ",".join(lua_string(body) for body in bodies),
                         "signatures": ",".join(f'"{sig}"' for sig in signatures),
                         "half": POOL // 2, "run": run}


def wait_http(url: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=1):
                return
        except OSError:
            time.sleep(0.1)
    raise RuntimeError(f"{url} did not come up")


def wait_port(port: int, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.1)
    raise RuntimeError(f"port {port} did not open")


def tree_cpu_seconds(pid: int) -> float:
    """CPU seconds (user + system) used so far by process `pid` and its live descendants."""
    total, todo = 0.0, [pid]
    while todo:
        current = todo.pop()
        try:
            stat = Path(f"/proc/{current}/stat").read_text()
            for task in Path(f"/proc/{current}/task").iterdir():
                todo.extend(int(c) for c in (task / "children").read_text().split())
        except OSError:
            continue  # gone meanwhile
        fields = stat.rpartition(")")[2].split()
        total += (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    return total


def lua_string(data: bytes) -> str:
    return '"' + "".join(f"\\{b:03d}" if b < 32 or b in (34, 92) or b > 126 else chr(b)
                         for b in data) + '"'


def run_wrk(port: int, script: Path, duration: int, connections: int) -> dict[str, float]:
    out = subprocess.run(
        ["wrk", "-t2", f"-c{connections}", f"-d{duration}s", "--latency", "-s", str(script),
         f"http://127.0.0.1:{port}"],
        check=True, capture_output=True, text=True,
    ).stdout
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
    requests = int(re.search(r"(\d+) requests in", out).group(1))
    non2xx = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", out)
    errors = re.search(r"Socket errors:.*", out)

    def pct(p: str) -> float:
        m = re.search(rf"\s{p}%\s+([\d.]+)(us|ms|s)", out)
        value, unit = float(m.group(1)), m.group(2)
        return value * {"us": 0.001, "ms": 1.0, "s": 1000.0}[unit]

    return {
        "rps": rps, "requests": float(requests), "p50": pct("50"), "p99": pct("99"),
        "non2xx": float(non2xx.group(1)) if non2xx else 0.0,
        "errors": 1.0 if errors else 0.0,
    }


async def declare(prefix: str) -> None:
    import aio_pika

    from router.broker.topology import Topology

    connection = await aio_pika.connect(AMQP_URL)
    async with connection:
        await Topology(prefix).declare(await connection.channel())


async def purge(prefix: str, delete: bool = False) -> int:
    """Empty every queue of the topology; returns how many orders were on the orders queue
    (the audit queue holds a copy of each, unless an audit consumer took them)."""
    import aio_pika

    from router.broker.topology import Topology

    connection = await aio_pika.connect(AMQP_URL)
    total = 0
    async with connection:
        channel = await connection.channel()
        topology = Topology(prefix)
        for name in topology.names():
            queue = await channel.declare_queue(name, passive=True)
            if name == topology.queue("orders"):
                total = queue.declaration_result.message_count
            await queue.purge()
        if delete:  # with the hold queues the ingress declared for the config's sources
            await topology.delete(channel, SOURCES)
    return total


async def depths(names: list[str]) -> dict[str, int]:
    """Messages ready on each queue of `names` (not those a consumer holds unacked)."""
    import aio_pika

    connection = await aio_pika.connect(AMQP_URL)
    async with connection:
        channel = await connection.channel()
        return {name: (await channel.declare_queue(name, passive=True))
                .declaration_result.message_count for name in names}


def envelope_template(config: Path, env: dict[str, str], marker: str) -> bytes:
    """The envelope our ingress publishes for ORDER, with `marker` as its event id."""
    from multidict import CIMultiDict

    from router.envelope import build_event, parse_delivery
    from router.schemas import SchemaRegistry
    from router.settings import load_settings
    from router.sources import build_sources

    settings = load_settings(config, env)
    registry = SchemaRegistry.load(settings.server.schemas)
    source = build_sources(settings, registry)["shopify"]
    headers = CIMultiDict({"X-Shopify-Topic": "orders/create", "X-Shopify-Event-Id": marker})
    delivery = parse_delivery(source, ORDER, headers, "application/json", time.time(),
                              max_depth=settings.server.max_depth)
    return build_event(source, registry, delivery).body


class Consumer:
    """A consumer process (`python -m consumers NAME`) and what its metrics say it handled."""

    def __init__(self, name: str, tmp: Path, prefix: str, env: dict[str, str]) -> None:
        from router.broker.topology import Topology

        self.name, self.queue = name, Topology(prefix).queue(name)
        self.metrics_port = free_port()
        config = write_config(tmp, prefix, free_port(), 1)
        log = (tmp / f"consumer-{name}.log").open("ab")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "consumers", name, "--config", str(config),
             "--store", f"sqlite:///{tmp / f'{name}.sqlite3'}",
             "--metrics-port", str(self.metrics_port)],
            cwd=ROOT, env=env, stdout=log, stderr=log)
        wait_port(self.metrics_port)

    def outcomes(self) -> dict[str, float]:
        """Messages handled so far, by outcome (recorded, duplicate, dead, ...)."""
        url = f"http://127.0.0.1:{self.metrics_port}/metrics"
        with urllib.request.urlopen(url, timeout=5) as response:
            text = response.read().decode()
        pattern = rf'^consumer_messages_total{{consumer="{self.name}",outcome="(\w+)"}} (\S+)$'
        return {m.group(1): float(m.group(2)) for m in re.finditer(pattern, text, re.M)}

    def handled(self) -> float:
        return sum(self.outcomes().values())

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(timeout=60)


def drain(consumers: list[Consumer], orders: str, published: float,
          timeout: float) -> tuple[float, float]:
    """Wait until every consumer has handled as many messages as were published in all
    (`published` before the orders queue's count now); (seconds waited, messages still not
    handled when `timeout` ran out, else 0)."""
    started = time.monotonic()
    while True:
        expected = published + asyncio.run(depths([orders]))[orders]
        left = sum(max(0.0, expected - consumer.handled()) for consumer in consumers)
        waited = time.monotonic() - started
        if not left or waited > timeout:
            return waited, left
        time.sleep(0.2)


def write_config(tmp: Path, prefix: str, port: int, workers: int, root: Path = ROOT) -> Path:
    text = (root / "config" / "router.toml").read_text()
    text = text.replace('prefix = ""', f'prefix = "{prefix}"')
    text = text.replace("port = 8080", f"port = {port}")
    text = text.replace("workers = 1 ", f"workers = {workers} ")
    text = text.replace('schemas = "schemas"', f'schemas = "{root / "config" / "schemas"}"')
    text = re.sub(r'(mapping|sample) = "((mappings|samples)/[^"]+)"',
                  lambda m: f'{m.group(1)} = "{root / "config" / m.group(2)}"', text)
    # One provider and one wrk host: lift the per-client rate limit out of the way.
    text = text.replace("rate_limit = { rate = 200, burst = 400 }",
                        "rate_limit = { rate = 1000000, burst = 1000000 }")
    text = text.replace("dedup_window = 86400 ", f"dedup_window = {DEDUP_WINDOW} ")
    path = tmp / "router.toml"
    path.write_text(text)
    return path


def checkouts(parser: argparse.ArgumentParser, items: list[str]) -> dict[str, Path]:
    """{label: checkout} from --compare LABEL=CHECKOUT arguments (a usage error otherwise)."""
    found: dict[str, Path] = {}
    for item in items:
        label, _, path = item.partition("=")
        root = Path(path).resolve()
        if not label or not (root / "router" / "__main__.py").is_file():
            parser.error(f"--compare {item!r}: want LABEL=CHECKOUT of this repository")
        found[label] = root
    return found


def ratios(ours: list[dict[str, float]], theirs: list[dict[str, float]]) -> str:
    """Per round (the same minutes of the machine) ours / theirs, and the median of those."""
    pairs = list(zip(ours, theirs, strict=True))
    rps = [a["rps"] / b["rps"] for a, b in pairs]
    cpu = [a["cpu_us"] / b["cpu_us"] for a, b in pairs]
    return (f"req/s ratio per round {' '.join(f'{r:.2f}' for r in rps)}, median "
            f"{statistics.median(rps):.2f}; cpu per request ratio per round "
            f"{' '.join(f'{r:.2f}' for r in cpu)}, median {statistics.median(cpu):.2f}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=int, default=15)
    parser.add_argument("--warmup", type=int, default=2,
                        help="seconds of wrk load before each measured run (default 2)")
    parser.add_argument("--connections", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2],
                        help="ingress worker counts to measure (default: 1 2)")
    parser.add_argument("--compare", action="append", default=[], metavar="LABEL=CHECKOUT",
                        help="also serve another checkout's ingress (a before/after)")
    # Only audit: the orders queue, which no consumer may read, counts what was published,
    # and every order must reach the consumer for the drain to know when it is done.
    parser.add_argument("--with-consumer", action="append", default=[], choices=["audit"],
                        help="run this consumer (`python -m consumers NAME`) on a SQLite store "
                             "for the whole benchmark, as in production")
    parser.add_argument("--drain-timeout", type=float, default=120.0,
                        help="seconds to wait for the consumers to catch up between runs")
    args = parser.parse_args()
    compare = checkouts(parser, args.compare)
    if shutil.which("wrk") is None:
        print("wrk is needed: apt-get install wrk", file=sys.stderr)
        return 2

    prefix = f"bench-{uuid.uuid4().hex[:6]}."
    asyncio.run(declare(prefix))
    orders = f"{prefix}orders"
    tmp = Path(tempfile.mkdtemp(prefix="bench-ingress-"))
    failed = False
    failures = 0
    env = {**os.environ, "SHOPIFY_WEBHOOK_SECRET": SECRET, "AMQP_URL": AMQP_URL,
           **{k: "unused-" + k for k in ("WOOCOMMERCE_WEBHOOK_SECRET", "PORTAL_WEBHOOK_TOKEN",
                                         "INVENTORY_WEBHOOK_SECRET", "EASYPOST_WEBHOOK_SECRET",
                                         "AFTERSHIP_WEBHOOK_SECRET")}}

    # name -> (command, port, the checkout it runs from)
    servers: dict[str, tuple[list[str], int, Path]] = {}
    port = free_port()
    marker = f"event-id-{uuid.uuid4().hex}"
    (tmp / "envelope.json").write_bytes(
        envelope_template(write_config(tmp, prefix, port, 1), env, marker))
    (tmp / "plain.py").write_text(PLAIN_SERVER)
    servers["plain"] = ([sys.executable, str(tmp / "plain.py"), SECRET, AMQP_URL,
                         f"{prefix}events", str(port), str(tmp / "envelope.json"), marker],
                        port, ROOT)
    for label, root in {"ours": ROOT, **compare}.items():
        for workers in args.workers:
            port = free_port()
            (tmp / f"{label}{workers}").mkdir()
            config = write_config(tmp / f"{label}{workers}", prefix, port, workers, root)
            servers[f"{label} x{workers}"] = (
                [sys.executable, "-m", "router", "--config", str(config), "serve"], port, root)

    results: dict[str, list[dict[str, float]]] = {name: [] for name in servers}
    consumers: list[Consumer] = []
    published = 0.0  # messages the servers published in all (every one reaches the consumers)

    def settle() -> tuple[float, int]:
        """Wait for the consumers, then empty the queues; (seconds waited, messages that
        were on the orders queue)."""
        nonlocal published
        waited, left = drain(consumers, orders, published, args.drain_timeout)
        queued = asyncio.run(purge(prefix))
        published += queued
        if left:  # purged from under the consumers: count from what they handled now
            print(f"  drain timed out after {waited:.0f} s with {left:.0f} messages "
                  "not handled: purged", flush=True)
            published = min(consumer.handled() for consumer in consumers)
        return waited, queued

    print(f"payload {len(ORDER)} bytes, {args.connections} connections, {args.duration} s "
          f"per run, {args.rounds} rounds, {os.cpu_count()} cores, prefix {prefix}"
          + (f", consumers running: {' '.join(args.with_consumer)}" if args.with_consumer
             else ""))
    try:
        for name in args.with_consumer:
            consumers.append(Consumer(name, tmp, prefix, env))
        for round_no in range(1, args.rounds + 1):
            order = list(servers.items())
            if round_no % 2 == 0:  # ABBA: neither server always meets the machine first
                order.reverse()
            for name, (command, port, root) in order:
                tag = name.replace(" ", "")
                script = tmp / f"{tag}-{round_no}.lua"
                script.write_text(wrk_script(f"{tag}{round_no}"))
                log = (tmp / f"{tag}.log").open("ab")
                proc = subprocess.Popen(command, cwd=root, env={**env, "PYTHONPATH": str(root)},
                                        stdout=log, stderr=log)
                try:
                    if name == "plain":
                        wait_port(port)
                    else:
                        wait_http(f"http://127.0.0.1:{port}/readyz")
                    warmup = tmp / f"warmup-{tag}-{round_no}.lua"
                    warmup.write_text(wrk_script(f"warmup-{tag}{round_no}"))
                    run_wrk(port, warmup, args.warmup, args.connections)
                    settle()
                    cpu = tree_cpu_seconds(proc.pid)
                    before = [(c.handled(), tree_cpu_seconds(c.proc.pid)) for c in consumers]
                    result = run_wrk(port, script, args.duration, args.connections)
                    # The server's own CPU per request: steadier than req/s when the
                    # machine's other load (wrk, the broker) varies between runs.
                    cpu = tree_cpu_seconds(proc.pid) - cpu
                    result["cpu_us"] = cpu / max(result["requests"], 1.0) * 1e6
                    after = [(c.handled(), tree_cpu_seconds(c.proc.pid)) for c in consumers]
                    backlog = asyncio.run(depths([c.queue for c in consumers]))
                finally:
                    proc.terminate()
                    proc.wait(timeout=60)
                drained, queued = settle()
                result["queued"] = queued
                results[name].append(result)
                # Every 2xx is on the queue; beyond those only what was in flight when wrk
                # stopped (answered after it counted).
                accepted = result["requests"] - result["non2xx"]
                if not accepted <= queued <= accepted + args.connections:
                    failures += 1
                    print(f"round {round_no} {name}: {accepted:.0f} accepted but {queued} "
                          f"queued: VERIFY FAILED", flush=True)
                line = (f"round {round_no} {name:>10}: {result['rps']:8.0f} req/s  "
                        f"p50 {result['p50']:6.2f} ms  p99 {result['p99']:6.2f} ms  "
                        f"cpu {result['cpu_us']:5.0f} us/req  accepted "
                        f"{result['requests'] - result['non2xx']:.0f}  queued {queued}")
                for consumer, (n0, cpu0), (n1, cpu1) in zip(consumers, before, after,
                                                            strict=True):
                    handled = n1 - n0
                    line += (f"\n  {consumer.name}: {handled / args.duration:6.0f} msg/s  "
                             f"cpu {(cpu1 - cpu0) / max(handled, 1.0) * 1e6:5.0f} us/msg  "
                             f"backlog {backlog[consumer.queue]} when wrk stopped  "
                             f"drained in {drained:.1f} s")
                print(line, flush=True)
        for consumer in consumers:
            outcomes = sorted(consumer.outcomes().items())
            print(f"{consumer.name} handled in all: "
                  + ", ".join(f"{count:.0f} {outcome}" for outcome, count in outcomes))
    except BaseException:
        failed = True  # the servers' logs are kept, to read them
        print(f"the servers' logs are in {tmp}", file=sys.stderr)
        raise
    finally:
        for consumer in consumers:
            consumer.stop()
        asyncio.run(purge(prefix, delete=True))
        if not failed:  # configs, logs and the consumer's store: tens of MB a run
            shutil.rmtree(tmp, ignore_errors=True)

    plain_rps = statistics.median(r["rps"] for r in results["plain"])
    plain_p99 = statistics.median(r["p99"] for r in results["plain"])
    print("\nmedians")
    plain_cpu = statistics.median(r["cpu_us"] for r in results["plain"])
    print(f"{'server':>10} {'req/s':>8} {'p50 ms':>7} {'p99 ms':>7} {'rps ratio':>9} "
          f"{'p99 ratio':>9} {'cpu us/req':>10} {'cpu ratio':>9}")
    for name, rows in results.items():
        rps = statistics.median(r["rps"] for r in rows)
        p50 = statistics.median(r["p50"] for r in rows)
        p99 = statistics.median(r["p99"] for r in rows)
        cpu = statistics.median(r["cpu_us"] for r in rows)
        print(f"{name:>10} {rps:8.0f} {p50:7.2f} {p99:7.2f} {rps / plain_rps:9.2f} "
              f"{p99 / plain_p99:9.2f} {cpu:10.0f} {cpu / plain_cpu:9.2f}")
    for workers in args.workers:
        for other in ["plain", *(f"{label} x{workers}" for label in compare)]:
            print(f"ours x{workers} / {other}: "
                  + ratios(results[f"ours x{workers}"], results[other]))
    if failures:
        print(f"{failures} run(s) failed verification", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
