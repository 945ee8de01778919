"""`webhook-router` / `python -m router`: the ingress and the operators' commands.

    serve           run the webhook ingress
    topology        declare the exchanges and queues and print them
    sign            print the headers a provider would send for a body
    openapi         print the ingress's OpenAPI document (docs/openapi.yaml) from the config
    send-test       post a signed sample payload to a running ingress
    dlq             inspect, replay or purge a dead-letter queue
    subscriptions   outbound webhook subscriptions: list, enable, disable, test
    orders          where orders stand: show one, or list them by status
    labels          an order's shipping label: show it, void it, or buy one for a held order
    storefront      write-back to the stores: show the paused ones, resume one
    deliveries      delivery attempts for an event, or `replay` past notifications
    trace           one id's story: received, recorded, each consumer's attempts, notifications
    console         the operator console; `console hash-password` makes a password hash

Every command takes `--config FILE` (before or after the command; default: env
ROUTER_CONFIG, else config/router.toml).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from router.errors import ConfigError
from router.settings import DEFAULT_CONFIG, Settings, SourceSettings, load_settings, local_url


async def _topology(settings: Settings, delete: bool) -> int:
    from router.broker.connect import open_connection
    from router.broker.topology import Topology
    from router.hold import hold_queues

    b = settings.broker
    topology = Topology.of(b)
    connection = await open_connection(b, f"{b.connection_name}-topology")
    holds = hold_queues(settings)
    async with connection:
        channel = await connection.channel()
        if delete:
            await topology.delete(channel, settings.sources, topology.delivery_queues(
                settings.subscriptions, settings.notifications.retry_ladder))
            print("deleted")
            return 0
        await topology.declare(channel)
        await topology.declare_queues(channel, holds)
        print(f"exchange {topology.exchange} (topic) -> alternate {topology.unrouted_exchange}")
        for spec in [*topology.queues(), *holds]:
            bindings = ", ".join(spec.bindings) or "-"
            print(f"queue {spec.name}  bindings: {bindings}  arguments: {spec.arguments}")
    return 0


def _source(settings: Settings, name: str) -> SourceSettings:
    try:
        return settings.sources[name]
    except KeyError:
        known = ", ".join(sorted(settings.sources)) or "none"
        raise SystemExit(f"unknown source {name!r} (configured: {known})") from None


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


def _config_option(parser: argparse.ArgumentParser, default: object) -> None:
    parser.add_argument("--config", "-c", metavar="FILE", default=default,
                        help="path to router.toml (default: env ROUTER_CONFIG, else "
                             f"{DEFAULT_CONFIG})")


def _count(value: str) -> int:
    """A count of at least 1, for argparse."""
    number = int(value)
    if number < 1:
        raise argparse.ArgumentTypeError("must be at least 1")
    return number


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="webhook-router", description="The webhook ingress and the operators' commands.",
        epilog="Every command takes --config FILE, before or after its name. "
               "`webhook-router COMMAND --help` tells more.",
    )
    _config_option(parser, os.environ.get("ROUTER_CONFIG", DEFAULT_CONFIG))
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def command(name: str, help: str) -> argparse.ArgumentParser:
        sub = commands.add_parser(name, help=help, description=help)
        # Where users type it too (`serve --config FILE`); the top level's value otherwise.
        _config_option(sub, argparse.SUPPRESS)
        return sub

    p_serve = command("serve", "run the webhook ingress")
    p_serve.add_argument("--host")
    p_serve.add_argument("--port", type=int)
    p_serve.add_argument("--workers", type=int, help="processes sharing the port")

    p_topo = command("topology", "declare the exchanges and queues and print them")
    p_topo.add_argument("--delete", action="store_true", help="delete them instead (careful)")

    p_sign = command("sign", "print the headers a provider would send for a body")
    p_sign.add_argument("source")
    p_sign.add_argument("--file", "-f", help="body file (default: standard input)")
    p_sign.add_argument("--topic", help="provider topic header value")

    p_api = command("openapi", "print the ingress's OpenAPI 3.1 document, made from the config")
    p_api.add_argument("--output", "-o", help="write it to this file instead")

    p_test = command("send-test", "post a signed sample payload to a running ingress")
    p_test.add_argument("source")
    p_test.add_argument("--url", default=None, help="ingress base URL (default from settings)")
    p_test.add_argument("--file", "-f", help="payload file (default: the source's sample)")
    p_test.add_argument("--topic", help="provider topic header value")

    p_dlq = command("dlq", "inspect, replay or purge a dead-letter queue; look at, release "
                           "or purge the deliveries a source held")
    p_dlq.add_argument("action", choices=["list", "show", "replay", "purge", "release"])
    p_dlq.add_argument("name", help="consumer queue: orders, inventory, shipping, audit, "
                                    "notifications, deliver.SUBSCRIPTION (outbound webhooks), "
                                    "or held.SOURCE (what a source could not map; `release` "
                                    "maps them again)")
    p_dlq.add_argument("--limit", type=int, default=20, help="messages to list or show")
    p_dlq.add_argument("--id", help="only the message with this id (show, replay)")
    p_dlq.add_argument("--yes", "-y", action="store_true", help="purge without asking")

    p_subs = command("subscriptions",
                     "outbound webhook subscriptions: list, enable, disable, test")
    p_subs.add_argument("action", choices=["list", "enable", "disable", "test"])
    p_subs.add_argument("name", nargs="?", help="the subscription (not for list)")

    p_orders = command("orders", "where orders stand: show one, or list them by status")
    p_orders.add_argument("action", choices=["show", "list"])
    p_orders.add_argument("order_id", nargs="?", help="the order (show)")
    p_orders.add_argument("--status", help="list: only orders with this status, e.g. on_hold")
    p_orders.add_argument("--limit", type=int, default=50, help="list: how many, newest first")

    p_labels = command("labels", "an order's shipping label ([labels]): show it, void it "
                                 "(the carrier refunds it), or buy one for an order held for "
                                 "its label (address_invalid, no_rate) or whose label was "
                                 "voided")
    p_labels.add_argument("action", choices=["show", "void", "buy"])
    p_labels.add_argument("order_id", help="the order")

    p_store = command("storefront", "write-back to the stores ([storefront]): show the stores "
                                    "paused because they refused our credentials, or resume "
                                    "one once they were renewed")
    p_store.add_argument("action", choices=["show", "resume"])
    p_store.add_argument("source", nargs="?", help="the store's source (resume; show: only it)")

    p_del = command("deliveries",
                    "delivery attempts for an event, or `replay` past notifications")
    p_del.add_argument("target", metavar="EVENT_ID|replay",
                       help="an event id or a notification id, or `replay`")
    p_del.add_argument("--subscription", help="replay: the subscriber")
    p_del.add_argument("--since", help="replay: notifications created at or after this time "
                                       "(ISO-8601; UTC unless it says otherwise)")

    p_trace = command("trace", "what became of an event, an order, a tracking code or a SKU: "
                               "received, recorded, each consumer's attempts, notifications")
    p_trace.add_argument("id", metavar="ID", help="an event id (provider delivery id), order "
                                                  "id, tracking code, SKU or notification id")
    p_trace.add_argument("--store", help="the consumers' store URL (default: env DATABASE_URL, "
                                         "then [consumers] store)")
    p_trace.add_argument("--json", action="store_true", help="the same, as JSON")
    p_trace.add_argument("--limit", type=_count, default=50,
                         help="at most this many events, the newest (default 50)")
    p_trace.add_argument("--ingress", metavar="URL",
                         help="the ingress whose /rejections to ask for a refused delivery "
                              "by that id (default: [server] metrics_port, else port, on "
                              "loopback); - not to ask")

    p_console = command("console", "run the operator console ([console] in the config); "
                                   "`console hash-password` reads a password on standard "
                                   "input and prints its argon2 hash for [[console.users]]")
    p_console.add_argument("action", nargs="?", choices=["hash-password"])
    return parser


def _hash_password() -> int:
    from router.console.auth import hash_password

    prompt = sys.stdin.isatty()
    if prompt:
        import getpass

        password = getpass.getpass("password: ")
    else:
        password = sys.stdin.readline().rstrip("\r\n")
    try:
        print(hash_password(password))
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


def _store_command(settings: Settings, args: argparse.Namespace) -> int:
    """orders, labels, storefront, subscriptions, deliveries, trace: the consumers' commands,
    reading their store.

    They say first (on stderr) which store they read, and never create one: pointed where
    there is none, they say so and exit 2."""
    # The only place router/ reaches into consumers/: these commands are theirs.
    from consumers.label_admin import labels_command
    from consumers.order_admin import Usage as OrdersUsage
    from consumers.order_admin import orders_command
    from consumers.outbound.admin import Usage, deliveries_command, subscriptions_command
    from consumers.store import StoreError, StoreMissing, redact_url
    from consumers.storefront_admin import storefront_command
    from consumers.trace import trace_command

    url = getattr(args, "store", None) or settings.consumers.store
    store = redact_url(url)
    print(f"store: {store}", file=sys.stderr)
    try:
        if args.command == "trace":
            ingress = args.ingress or local_url(settings.server, metrics=True)
            return asyncio.run(trace_command(url, args.id, as_json=args.json,
                                             limit=args.limit,
                                             ingress=None if ingress == "-" else ingress))
        if args.command == "orders":
            return asyncio.run(orders_command(settings, args.action, order_id=args.order_id,
                                              status=args.status, limit=args.limit))
        if args.command == "labels":
            return asyncio.run(labels_command(settings, args.action, args.order_id))
        if args.command == "storefront":
            return asyncio.run(storefront_command(settings, args.action, args.source))
        if args.command == "subscriptions":
            return asyncio.run(subscriptions_command(settings, args.action, args.name))
        return asyncio.run(deliveries_command(settings, args.target,
                                              subscription=args.subscription, since=args.since))
    except (Usage, OrdersUsage) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except StoreMissing as exc:
        print(f"error: {store}: {exc}; nothing was created (is [consumers] store or "
              "DATABASE_URL right?)", file=sys.stderr)
        return 2
    except StoreError as exc:
        print(f"error: {store}: {exc}", file=sys.stderr)
        return 1


def main(argv: Sequence[str] | None = None) -> int:
    try:
        try:
            return _run(build_parser().parse_args(argv))
        finally:
            sys.stdout.flush()  # here, where a reader gone away is caught, not at exit
    except BrokenPipeError:
        # Whoever read our output stopped (`... | head`): end quietly, as cat and ls do, and
        # keep Python from complaining when it flushes stdout at exit.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141  # 128 + SIGPIPE, what a shell reports for a writer cut off


def _run(args: argparse.Namespace) -> int:
    if args.command == "console" and args.action == "hash-password":
        return _hash_password()  # needs no settings: run it anywhere
    metrics_dir = None
    try:
        releasing = args.command == "dlq" and args.action == "release"
        # The console signs test payloads as the providers would: it needs their secrets.
        secrets = releasing or args.command not in ("topology", "dlq", "orders", "trace",
                                                    "subscriptions", "deliveries", "openapi",
                                                    "labels", "storefront")
        settings = load_settings(
            args.config,
            resolve_secrets=secrets,
            # The console sends test notifications, as `subscriptions test` does.
            resolve_subscription_secrets=args.command == "console"
            or (args.command == "subscriptions" and args.action == "test"),
            resolve_console_secrets=args.command == "console",
            # `labels void` asks the carrier for a refund: it needs the carrier's key.
            resolve_carrier_secrets=args.command == "labels" and args.action == "void",
        )
        if args.command == "serve" and (args.workers or settings.server.workers) > 1:
            from router.serve import share_metrics

            metrics_dir = share_metrics()  # before anything imports prometheus_client
        from router.sources import check_sources

        check_sources(settings, verifiers=secrets)
    except ConfigError as exc:
        print(f"configuration error: {exc}", file=sys.stderr)
        if metrics_dir is not None:
            import shutil

            shutil.rmtree(metrics_dir, ignore_errors=True)
        return 2

    if args.command == "serve":
        from router.serve import serve

        server = settings.server
        return serve(settings, args.host or server.host, args.port or server.port,
                     args.workers or server.workers, metrics_dir=metrics_dir)
    if args.command == "console":
        if settings.console is None:
            print(f"{settings.file}: console: no [console] table: the console is off",
                  file=sys.stderr)
            return 2
        from router.console.serve import serve_console

        return serve_console(settings)
    if args.command == "openapi":
        from router.openapi import openapi_document, render_yaml

        text = render_yaml(openapi_document(settings))
        if args.output:
            Path(args.output).write_text(text)
        else:
            sys.stdout.write(text)
        return 0
    if args.command == "topology":
        from router.broker.errors import BROKER_ERRORS

        try:
            return asyncio.run(_topology(settings, args.delete))
        except BrokenPipeError:
            raise  # our reader went away; not the broker's doing
        except BROKER_ERRORS as exc:
            print(f"cannot reach the broker: {exc}", file=sys.stderr)
            return 1
    if releasing:
        if not args.name.startswith("held."):
            print(f"release takes held.SOURCE, not {args.name!r} (dead letters are replayed)",
                  file=sys.stderr)
            return 2
        from router.hold import release_command

        return asyncio.run(release_command(settings, args.name.removeprefix("held."),
                                           message_id=args.id))
    if args.command == "dlq":
        from router.broker.dlq import dlq_command

        return asyncio.run(dlq_command(settings.broker, args.action, args.name,
                                       limit=args.limit, message_id=args.id, yes=args.yes))
    if args.command in ("orders", "labels", "storefront", "subscriptions", "deliveries",
                        "trace"):
        return _store_command(settings, args)
    from router.providers import signed_headers

    source = _source(settings, args.source)
    if args.command == "sign":
        body = _read_body(args.file)
        for name, value in signed_headers(settings, args.source, body, args.topic).items():
            print(f"{name}: {value}")
        return 0
    if args.command == "send-test":
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
