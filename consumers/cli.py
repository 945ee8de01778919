"""`python -m consumers NAME`: run one consumer in this process until SIGTERM."""

from __future__ import annotations

import argparse
import asyncio
import functools
import importlib
import os
import signal
import sys
from collections.abc import Sequence
from typing import Any

import aiohttp

from consumers.runner import ConsumerSpec, Runner, wait_for_store
from consumers.stock import Policy
from consumers.store import DEFAULT_POOL_MAX, Store, open_store, redact_url
from router.egress import UnsafeURL
from router.errors import ConfigError
from router.logs import configure_logging
from router.settings import DEFAULT_CONFIG, Settings, load_settings
from router.sources import check_sources

# consumer name (= its queue) -> module with `async def handle(tx, event, batch, *, policy)`
# and, optionally, `async def prepare(tx, events) -> batch`
CONSUMERS = {
    "orders": "consumers.orders",
    "inventory": "consumers.inventory",
    "shipping": "consumers.shipping",
    "audit": "consumers.audit",
    "labels": "consumers.labels",  # off unless [labels] enabled; calls the carrier (_runner)
    # off unless [storefront] enabled; calls the order's store (_runner)
    "storefront": "consumers.storefront",
}


def consumer_spec(name: str, settings: Settings) -> ConsumerSpec[Any]:
    """The named consumer, its handler bound to the configured allocation policy."""
    module = importlib.import_module(CONSUMERS[name])
    completing = frozenset(source for source, store in settings.storefront.stores.items()
                           if store.kind == "woocommerce" and store.complete_order)
    policy = Policy(partial_allocation=settings.consumers.partial_allocation,
                    unpaid_expiry=settings.consumers.unpaid_expiry,
                    completed_by_writeback=completing)
    tick = getattr(module, "tick", None)
    return ConsumerSpec(name, functools.partial(module.handle, policy=policy),
                        getattr(module, "prepare", None),
                        functools.partial(tick, policy=policy) if tick else None)


def _runner(name: str, settings: Settings, store: Store, session: aiohttp.ClientSession,
            prefetch: int, concurrency: int) -> Runner:
    """The named consumer's runner; the labels consumer calls its carrier on `session`, the
    storefront consumer the stores."""
    if name == "storefront":
        return _storefront_runner(settings, store, session, prefetch, concurrency)
    if name != "labels":
        return Runner(consumer_spec(name, settings), store, settings.broker,
                      prefetch=prefetch, concurrency=concurrency)
    from consumers.calling import CallingRunner
    from consumers.carriers import build_carrier
    from consumers.labels import Labels

    s = settings.labels
    carrier = build_carrier(s.carrier, s.api_key.decode(), session, base_url=s.base_url,
                            timeout=s.timeout)
    labels = Labels(s, store, carrier)
    return CallingRunner(ConsumerSpec("labels", labels.handle, labels.prepare), store,
                         settings.broker, caller=labels, prefetch=prefetch,
                         concurrency=concurrency)


def _storefront_runner(settings: Settings, store: Store, session: aiohttp.ClientSession,
                       prefetch: int, concurrency: int) -> Runner:
    from consumers.calling import CallingRunner
    from consumers.storefront import StorefrontWriter
    from consumers.storefronts import open_storefront

    s = settings.storefront
    drivers = {source: open_storefront(target.kind, session,
                                       **target.driver_config(s.timeout))
               for source, target in s.stores.items()}
    writer = StorefrontWriter(s, store, drivers)
    return CallingRunner(ConsumerSpec("storefront", writer.handle, tick=writer.tick),
                         store, settings.broker, caller=writer, prefetch=prefetch,
                         concurrency=concurrency)


def _enabled(name: str, settings: Settings) -> bool:
    if name == "storefront":
        return settings.storefront.enabled
    return name != "labels" or settings.labels.enabled


def _open(store_url: str, concurrency: int) -> Store:
    # One connection per batch in flight, one for the outbox marks. A busy SQLite is waited
    # out by wait_for_store, which logs each try, not silently inside open().
    return open_store(store_url, pool_max=max(DEFAULT_POOL_MAX, concurrency + 1), lock_wait=0)


async def _wait_open(store_url: str, concurrency: int, stop: asyncio.Event,
                     **log_fields: Any) -> Store | None:
    """The store, opened (and migrated) once it can be reached and its write lock taken,
    however long that takes; None if `stop` is set first."""
    store = _open(store_url, concurrency)

    async def opened() -> Store:
        await store.open()
        return store

    return await wait_for_store(opened, stop, store=redact_url(store_url), **log_fields)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m consumers", description=__doc__)
    parser.add_argument("name", choices=[*sorted(CONSUMERS), "notifications", "all"],
                        help="a consumer (`notifications` delivers outbound webhooks), or "
                             "`all`: the ingress and every consumer in this process (single "
                             "machine, embedded SQLite)")
    parser.add_argument("--port", type=int, default=None, help="ingress port, with `all`")
    parser.add_argument("--config", "-c", default=os.environ.get("ROUTER_CONFIG", DEFAULT_CONFIG))
    parser.add_argument("--store", default=None,
                        help="sqlite:///PATH or postgresql://... (default: env DATABASE_URL, "
                             "then [consumers] store)")
    parser.add_argument("--prefetch", type=_positive, default=None,
                        help="messages in hand at once; committed together in batches "
                             "(default: [consumers] prefetch, 100)")
    parser.add_argument("--concurrency", type=_positive, default=None,
                        help="batches (transactions) at once; more helps PostgreSQL with many "
                             "SKUs, not SQLite (default: [consumers] concurrency, 1)")
    parser.add_argument("--metrics-port", type=int, default=None,
                        help="serve Prometheus metrics on this port")
    return parser


def _positive(value: str) -> int:
    number = int(value)
    if number < 1:
        raise argparse.ArgumentTypeError("must be at least 1")
    return number


async def run(name: str, settings: Settings, store_url: str, prefetch: int,
              concurrency: int) -> None:
    _make_sqlite_dir(store_url)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    store = await _wait_open(store_url, concurrency, stop, consumer=name)
    if store is None:
        return  # stopped while waiting for the store
    async with store, aiohttp.ClientSession() as session:
        if name == "notifications":
            from consumers.outbound.fanout import Notifications

            await Notifications(settings, store).run(stop)
            return
        await _runner(name, settings, store, session, prefetch, concurrency).run(stop)


async def run_all(settings: Settings, store_url: str, prefetch: int, concurrency: int,
                  port: int | None) -> None:
    """The ingress and every consumer in one process, sharing one store.

    On SIGTERM the ingress stops first (finishing in-flight publishes), then the consumers
    finish and ack what they hold.
    """
    from aiohttp import web

    from router.app import create_app
    from router.serve import ssl_context

    _make_sqlite_dir(store_url)
    loop = asyncio.get_running_loop()
    signalled = asyncio.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, signalled.set)
    app_runner = web.AppRunner(create_app(settings), access_log=None, handle_signals=False,
                               shutdown_timeout=settings.server.shutdown_timeout)
    await app_runner.setup()
    await web.TCPSite(app_runner, settings.server.host, port or settings.server.port,
                      ssl_context=ssl_context(settings)).start()
    stop = asyncio.Event()
    store = await _wait_open(store_url, concurrency * len(CONSUMERS), signalled, consumer="all")
    if store is None:
        await app_runner.cleanup()
        return
    async with store, aiohttp.ClientSession() as session:
        consumers = [
            asyncio.create_task(
                _runner(name, settings, store, session, prefetch, concurrency).run(stop))
            for name in CONSUMERS if _enabled(name, settings)
        ]
        from consumers.outbound.fanout import Notifications

        consumers.append(asyncio.create_task(Notifications(settings, store).run(stop)))
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
        settings = load_settings(args.config, resolve_secrets=args.name == "all",
                                 resolve_subscription_secrets=args.name in ("all",
                                                                            "notifications"),
                                 resolve_carrier_secrets=args.name in ("all", "labels"),
                                 resolve_store_secrets=args.name in ("all", "storefront"))
        check_sources(settings, verifiers=args.name == "all")
    except ConfigError as exc:
        print(f"configuration error: {exc}", file=sys.stderr)
        return 2
    if not _enabled(args.name, settings):
        print(f"configuration error: {settings.file}: {args.name}.enabled: the {args.name} "
              f"consumer is off; set [{args.name}] enabled = true (and its settings) to run it",
              file=sys.stderr)
        return 2
    configure_logging(settings.logging.level, settings.logging.pii_fields)
    if args.metrics_port:
        from prometheus_client import start_http_server

        start_http_server(args.metrics_port)
    store = args.store or settings.consumers.store
    prefetch = args.prefetch or settings.consumers.prefetch
    concurrency = args.concurrency or settings.consumers.concurrency
    print(f"consumer {args.name} on {redact_url(store)}", file=sys.stderr)
    try:
        if args.name == "all":
            asyncio.run(run_all(settings, store, prefetch, concurrency, args.port))
        else:
            asyncio.run(run(args.name, settings, store, prefetch, concurrency))
    except UnsafeURL as exc:
        print(f"configuration error: {settings.file}: {exc}", file=sys.stderr)
        return 2
    return 0
