"""`python -m consumers NAME`: run one consumer in this process until SIGTERM."""

from __future__ import annotations

import argparse
import asyncio
import importlib
import os
import signal
import sys
from collections.abc import Sequence

from consumers.runner import ConsumerSpec, Runner
from consumers.store import open_store, redact_url
from router.errors import ConfigError
from router.logs import configure_logging
from router.settings import DEFAULT_CONFIG, load_settings

# consumer name (= its queue) -> module with `async def handle(tx, event)`
CONSUMERS = {
    "orders": "consumers.orders",
    "inventory": "consumers.inventory",
    "shipping": "consumers.shipping",
}
DEFAULT_STORE = "sqlite:///data/router.sqlite3"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m consumers", description=__doc__)
    parser.add_argument("name", choices=[*sorted(CONSUMERS), "all"],
                        help="a consumer, or `all`: the ingress and every consumer in this "
                             "process (single machine, embedded SQLite)")
    parser.add_argument("--port", type=int, default=None, help="ingress port, with `all`")
    parser.add_argument("--config", "-c", default=os.environ.get("ROUTER_CONFIG", DEFAULT_CONFIG))
    parser.add_argument("--store", default=os.environ.get("DATABASE_URL", DEFAULT_STORE),
                        help="sqlite:///PATH or postgresql://... (env DATABASE_URL)")
    parser.add_argument("--prefetch", type=int, default=100,
                        help="messages in hand at once; they are committed together")
    parser.add_argument("--metrics-port", type=int, default=None,
                        help="serve Prometheus metrics on this port")
    return parser


async def run(name: str, settings, store_url: str, prefetch: int) -> None:
    handler = importlib.import_module(CONSUMERS[name]).handle
    _make_sqlite_dir(store_url)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    async with open_store(store_url) as store:
        runner = Runner(ConsumerSpec(name, handler), store, settings.broker, prefetch=prefetch)
        await runner.run(stop)


async def run_all(settings, store_url: str, prefetch: int, port: int | None) -> None:
    """The ingress and every consumer in one process, sharing one store.

    On SIGTERM the ingress stops first (finishing in-flight publishes), then the consumers
    finish and ack what they hold.
    """
    from aiohttp import web

    from router.app import create_app
    from router.cli import _ssl_context

    _make_sqlite_dir(store_url)
    loop = asyncio.get_running_loop()
    signalled = asyncio.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, signalled.set)
    app_runner = web.AppRunner(create_app(settings), access_log=None, handle_signals=False,
                               shutdown_timeout=settings.server.shutdown_timeout)
    await app_runner.setup()
    await web.TCPSite(app_runner, settings.server.host, port or settings.server.port,
                      ssl_context=_ssl_context(settings)).start()
    stop = asyncio.Event()
    async with open_store(store_url) as store:
        consumers = [
            asyncio.create_task(Runner(
                ConsumerSpec(name, importlib.import_module(module).handle), store,
                settings.broker, prefetch=prefetch,
            ).run(stop))
            for name, module in CONSUMERS.items()
        ]
        waiting = asyncio.create_task(signalled.wait())
        await asyncio.wait([waiting, *consumers], return_when=asyncio.FIRST_COMPLETED)
        await app_runner.cleanup()
        stop.set()
        waiting.cancel()
        await asyncio.gather(*consumers)


def _make_sqlite_dir(store_url: str) -> None:
    if store_url.startswith("sqlite:///") and not store_url.endswith(":memory:"):
        os.makedirs(os.path.dirname(store_url.removeprefix("sqlite:///")) or ".", exist_ok=True)


def _exit_quietly(signum: int, frame: object) -> None:
    raise SystemExit(0)


def main(argv: Sequence[str] | None = None) -> int:
    # Until the runner takes over SIGTERM, nothing is in hand: stopping is just exiting.
    signal.signal(signal.SIGTERM, _exit_quietly)
    args = build_parser().parse_args(argv)
    try:
        settings = load_settings(args.config, resolve_secrets=args.name == "all")
    except ConfigError as exc:
        print(f"configuration error: {exc}", file=sys.stderr)
        return 2
    configure_logging(settings.logging.level, settings.logging.pii_fields)
    if args.metrics_port:
        from prometheus_client import start_http_server

        start_http_server(args.metrics_port)
    print(f"consumer {args.name} on {redact_url(args.store)}", file=sys.stderr)
    if args.name == "all":
        asyncio.run(run_all(settings, args.store, args.prefetch, args.port))
    else:
        asyncio.run(run(args.name, settings, args.store, args.prefetch))
    return 0
