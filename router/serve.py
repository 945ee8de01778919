"""Running the ingress: one process, or several workers sharing the port (SO_REUSEPORT)
under a small supervisor that forwards SIGTERM/SIGINT to them."""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import ssl
import tempfile

import structlog
from aiohttp import web

from router.settings import Settings


def new_loop() -> asyncio.AbstractEventLoop:
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop is a dependency on every supported OS
        return asyncio.new_event_loop()
    return uvloop.new_event_loop()


def ssl_context(settings: Settings) -> ssl.SSLContext | None:
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
    # web.run_app, but listening through the connection cap (router.connections).
    loop = new_loop()
    asyncio.set_event_loop(loop)
    main = loop.create_task(_listen(app, settings, host, port, reuse_port))
    try:
        loop.run_until_complete(main)
    except (web.GracefulExit, KeyboardInterrupt):  # SIGTERM, SIGINT
        pass
    finally:
        main.cancel()  # stops listening, then finishes in-flight requests (runner.cleanup)
        loop.run_until_complete(asyncio.gather(main, return_exceptions=True))
        loop.run_until_complete(loop.shutdown_asyncgens())
        loop.close()


async def _listen(
    app: web.Application, settings: Settings, host: str, port: int, reuse_port: bool
) -> None:
    from router.connections import ConnectionLimit

    runner = web.AppRunner(
        app, handle_signals=True, access_log=None, keepalive_timeout=75.0,
        shutdown_timeout=settings.server.shutdown_timeout,
    )
    await runner.setup()
    try:
        assert runner.server is not None
        listener = await asyncio.get_running_loop().create_server(
            ConnectionLimit(runner.server, settings.server.max_connections), host, port,
            ssl=ssl_context(settings), reuse_port=reuse_port or None, backlog=128,
        )
        try:
            await asyncio.Future()  # until a stop signal
        finally:
            listener.close()
    finally:
        await runner.cleanup()


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
