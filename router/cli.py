"""`python -m router` / `webhook-router`: serve, topology, sign, send-test."""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import signal
import ssl
import sys
import tempfile
import time
import uuid
from collections.abc import Sequence
from pathlib import Path

import structlog

from router.errors import BrokerUnavailable, ConfigError
from router.settings import DEFAULT_CONFIG, Settings, SourceSettings, load_settings


def _new_loop() -> asyncio.AbstractEventLoop:
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop is a dependency on every supported OS
        return asyncio.new_event_loop()
    return uvloop.new_event_loop()


def _ssl_context(settings: Settings) -> ssl.SSLContext | None:
    server = settings.server
    if server.tls_cert is None or server.tls_key is None:
        return None
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.load_cert_chain(server.tls_cert, server.tls_key)
    return context


STOP_SIGNALS = {signal.SIGTERM, signal.SIGINT}


def _stop_while_starting(signum: int, frame: object) -> None:
    raise SystemExit(0)  # nothing is listening yet: there is nothing to finish


def _serve_one(settings: Settings, host: str, port: int, reuse_port: bool) -> None:
    from aiohttp import web

    from router.app import create_app
    from router.logs import configure_logging

    if reuse_port:
        # The supervisor started us with the stop signals blocked, so one sent while we were
        # still starting is pending, not fatal: from here on it ends the process cleanly, and
        # once the server runs, aiohttp's own handlers take over.
        signal.signal(signal.SIGTERM, _stop_while_starting)
        signal.signal(signal.SIGINT, _stop_while_starting)
        signal.pthread_sigmask(signal.SIG_UNBLOCK, STOP_SIGNALS)
    configure_logging(settings.logging.level, settings.logging.pii_fields)
    # A worker sharing the port listens only once it can publish: the kernel hands
    # connections to any listening worker, and /readyz answered by one worker says nothing
    # of the others.  A single process listens at once and answers 503 until connected.
    app = create_app(settings, wait_for_broker=reuse_port)
    web.run_app(
        app,
        host=host,
        port=port,
        ssl_context=_ssl_context(settings),
        reuse_port=reuse_port or None,
        shutdown_timeout=settings.server.shutdown_timeout,
        access_log=None,
        print=None,
        loop=_new_loop(),
    )


def serve(settings: Settings, host: str, port: int, workers: int) -> int:
    """Run the ingress; with workers > 1, that many processes share the port (SO_REUSEPORT)."""
    if workers == 1:
        _serve_one(settings, host, port, reuse_port=False)
        return 0
    import multiprocessing

    from router.logs import configure_logging

    configure_logging(settings.logging.level, settings.logging.pii_fields)
    # Each worker counts on its own; /metrics adds up every worker's files.
    metrics_dir = tempfile.mkdtemp(prefix="webhook-router-metrics-")
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = metrics_dir
    # Forked, not spawned: a child keeps the parent's signal mask (see below) from its first
    # instruction; this process has no threads or event loop to carry over.
    context = multiprocessing.get_context("fork")
    processes = [
        context.Process(target=_serve_one, args=(settings, host, port, True), daemon=False)
        for _ in range(workers)
    ]

    def forward(signum: int, _frame: object) -> None:
        for p in processes:
            if p.pid is not None and p.is_alive():
                os.kill(p.pid, signum)

    # Workers inherit the signal mask: blocked here, a stop signal reaching a worker before
    # its handlers are in place waits for them instead of killing it mid-start.
    signal.pthread_sigmask(signal.SIG_BLOCK, STOP_SIGNALS)
    try:
        for p in processes:
            p.start()
        signal.signal(signal.SIGTERM, forward)
        signal.signal(signal.SIGINT, forward)
    finally:
        signal.pthread_sigmask(signal.SIG_UNBLOCK, STOP_SIGNALS)
    structlog.get_logger("router.serve").info("workers_started", workers=workers)
    for p in processes:
        p.join()
    shutil.rmtree(metrics_dir, ignore_errors=True)
    return max(abs(p.exitcode or 0) for p in processes)


async def _topology(settings: Settings, delete: bool) -> int:
    import aio_pika

    from router.topology import Topology

    b = settings.broker
    topology = Topology(b.prefix, b.retry_ladder, b.delivery_limit)
    connection = await aio_pika.connect(
        b.url, client_properties={"connection_name": f"{b.connection_name}-topology"}
    )
    async with connection:
        channel = await connection.channel()
        if delete:
            await topology.delete(channel)
            print("deleted")
            return 0
        await topology.declare(channel)
        print(f"exchange {topology.exchange} (topic) -> alternate {topology.unrouted_exchange}")
        for spec in topology.queues():
            bindings = ", ".join(spec.bindings) or "-"
            print(f"queue {spec.name}  bindings: {bindings}  arguments: {spec.arguments}")
    return 0


def _source(settings: Settings, name: str) -> SourceSettings:
    try:
        return settings.sources[name]
    except KeyError:
        known = ", ".join(sorted(settings.sources)) or "none"
        raise SystemExit(f"unknown source {name!r} (configured: {known})") from None


def signed_headers(
    settings: Settings, source_name: str, body: bytes, topic: str | None = None,
    delivery_id: str | None = None,
) -> dict[str, str]:
    """The headers a provider would send with `body` to `source_name` (signature included);
    a fresh delivery id unless one is given (a provider's retry keeps its id)."""
    from router.verify import build_verifier

    s = _source(settings, source_name)
    verifier = build_verifier(s.scheme, s.secrets, s.options, file=str(settings.file),
                              key=f"sources.{source_name}")
    delivery_id = delivery_id or str(uuid.uuid4())
    headers = {"Content-Type": s.content_types[0] if s.content_types else "application/json"}
    if s.topic_header:
        headers[s.topic_header] = topic or next(iter(s.events), "")
    if s.id_headers:
        headers[s.id_headers[0]] = delivery_id
    headers.update(verifier.sign(body, time.time(), delivery_id))
    return headers


def _read_body(path: str | None) -> bytes:
    if path is None or path == "-":
        return sys.stdin.buffer.read()
    return Path(path).read_bytes()


def _sample_for(source: SourceSettings) -> Path:
    if source.sample is None:
        raise SystemExit(f"source {source.name} has no sample; pass --file")
    return source.sample


async def _send_test(url: str, body: bytes, headers: dict[str, str]) -> int:
    import aiohttp

    async with aiohttp.ClientSession() as session, session.post(
        url, data=body, headers=headers
    ) as response:
        text = await response.text()
        print(f"{response.status} {response.reason}")
        print(text)
        return 0 if response.status < 300 else 1


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="webhook-router", description=__doc__)
    parser.add_argument("--config", "-c", default=os.environ.get("ROUTER_CONFIG", DEFAULT_CONFIG),
                        help="path to router.toml (env ROUTER_CONFIG)")
    commands = parser.add_subparsers(dest="command", required=True)

    p_serve = commands.add_parser("serve", help="run the webhook ingress")
    p_serve.add_argument("--host")
    p_serve.add_argument("--port", type=int)
    p_serve.add_argument("--workers", type=int, help="processes sharing the port")

    p_topo = commands.add_parser("topology", help="declare the exchanges and queues and print them")
    p_topo.add_argument("--delete", action="store_true", help="delete them instead (careful)")

    p_sign = commands.add_parser("sign", help="print the headers a provider would send for a body")
    p_sign.add_argument("source")
    p_sign.add_argument("--file", "-f", help="body file (default: standard input)")
    p_sign.add_argument("--topic", help="provider topic header value")

    p_test = commands.add_parser("send-test", help="post a signed sample payload to the ingress")
    p_test.add_argument("source")
    p_test.add_argument("--url", default=None, help="ingress base URL (default from settings)")
    p_test.add_argument("--file", "-f", help="payload file (default: the source's sample)")
    p_test.add_argument("--topic", help="provider topic header value")
    p_dlq = commands.add_parser("dlq", help="inspect, replay or purge a dead-letter queue")
    p_dlq.add_argument("action", choices=["list", "show", "replay", "purge"])
    p_dlq.add_argument("name", help="consumer queue: orders, inventory, shipping, notifications, "
                                    "or deliver.SUBSCRIPTION (outbound webhooks)")
    p_dlq.add_argument("--limit", type=int, default=20, help="messages to list or show")
    p_dlq.add_argument("--id", help="only the message with this id (show, replay)")
    p_dlq.add_argument("--yes", "-y", action="store_true", help="purge without asking")

    p_subs = commands.add_parser("subscriptions", help="outbound webhook subscriptions")
    p_subs.add_argument("action", choices=["list", "enable", "disable", "test"])
    p_subs.add_argument("name", nargs="?", help="the subscription (not for list)")

    p_del = commands.add_parser(
        "deliveries", help="delivery attempts for an event, or `replay` past notifications")
    p_del.add_argument("target", metavar="EVENT_ID|replay",
                       help="an event id or a notification id, or `replay`")
    p_del.add_argument("--subscription", help="replay: the subscriber")
    p_del.add_argument("--since", help="replay: notifications created at or after this time "
                                       "(ISO-8601; UTC unless it says otherwise)")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        settings = load_settings(
            args.config,
            resolve_secrets=args.command not in ("topology", "dlq", "subscriptions",
                                                 "deliveries"),
            resolve_subscription_secrets=args.command == "subscriptions"
            and args.action == "test",
        )
    except ConfigError as exc:
        print(f"configuration error: {exc}", file=sys.stderr)
        return 2

    if args.command == "serve":
        server = settings.server
        return serve(settings, args.host or server.host, args.port or server.port,
                     args.workers or server.workers)
    if args.command == "topology":
        try:
            return asyncio.run(_topology(settings, args.delete))
        except (OSError, BrokerUnavailable) as exc:
            print(f"cannot reach the broker: {exc}", file=sys.stderr)
            return 1
    if args.command == "dlq":
        from router.dlq import dlq_command

        return asyncio.run(dlq_command(settings.broker, args.action, args.name,
                                       limit=args.limit, message_id=args.id, yes=args.yes))
    if args.command in ("subscriptions", "deliveries"):
        from consumers.admin import Usage, deliveries_command, subscriptions_command

        try:
            if args.command == "subscriptions":
                return asyncio.run(subscriptions_command(settings, args.action, args.name))
            return asyncio.run(deliveries_command(settings, args.target,
                                                  subscription=args.subscription,
                                                  since=args.since))
        except Usage as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2
    if args.command == "sign":
        body = _read_body(args.file)
        for name, value in signed_headers(settings, args.source, body, args.topic).items():
            print(f"{name}: {value}")
        return 0
    if args.command == "send-test":
        source = _source(settings, args.source)
        body = _read_body(args.file) if args.file else _sample_for(source).read_bytes()
        headers = signed_headers(settings, args.source, body, args.topic)
        scheme = "https" if settings.server.tls_cert else "http"
        host = "127.0.0.1" if settings.server.host in ("0.0.0.0", "::") else settings.server.host
        base = args.url or f"{scheme}://{host}:{settings.server.port}"
        try:
            return asyncio.run(_send_test(base.rstrip("/") + source.path, body, headers))
        except OSError as exc:
            print(f"cannot reach the ingress at {base}: {exc}", file=sys.stderr)
            return 1
    return 2  # pragma: no cover - argparse enforces a command


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())

