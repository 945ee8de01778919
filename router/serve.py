"""Running the ingress: one process on aiohttp's own runner, or several workers under
gunicorn's master (aiohttp's uvloop worker), which restarts a worker that dies.

Workers share the listening socket the master bound, and a worker accepts from it only once
it has reached the broker: connections wait in the kernel's queue for a worker that can
publish, never for a 503 from one still connecting. Each worker counts its own metrics in a
directory made for this run; /metrics adds up every worker's, the dead ones' included.
"""

from __future__ import annotations

import asyncio
import math
import os
import shutil
import signal
import ssl
import sys
import tempfile
from collections.abc import Awaitable, Callable
from types import FrameType
from typing import Any

import structlog
from aiohttp import web
from aiohttp.worker import GunicornUVLoopWebWorker
from gunicorn.app.base import BaseApplication
from gunicorn.arbiter import Arbiter
from gunicorn.glogging import Logger as GunicornLogger

from router.settings import Settings

log = structlog.get_logger("router.serve")
STOP_SIGNALS = {signal.SIGTERM, signal.SIGINT, signal.SIGQUIT}
METRICS_DIR = "PROMETHEUS_MULTIPROC_DIR"
METRICS_DIR_PREFIX = "webhook-router-metrics-"  # in the temporary directory


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


def share_metrics() -> str:
    """Make this run's metrics directory and name it in PROMETHEUS_MULTIPROC_DIR, which
    prometheus_client reads once, when it is first imported: so before that, or every
    worker would count in its own memory and /metrics would add up nothing."""
    if "prometheus_client" in sys.modules:
        raise RuntimeError("prometheus_client was imported before the metrics directory was set")
    metrics_dir = tempfile.mkdtemp(prefix=METRICS_DIR_PREFIX)
    os.environ[METRICS_DIR] = metrics_dir
    return metrics_dir


def serve(settings: Settings, host: str, port: int, workers: int,
          metrics_dir: str | None = None) -> int:
    """Run the ingress until SIGTERM/SIGINT; with workers > 1, under gunicorn's master
    (`metrics_dir` from share_metrics, made here if not given)."""
    from router.logs import configure_logging

    if port == settings.server.metrics_port:
        print(f"{settings.file}: server.metrics_port: must differ from the port ({port})",
              file=sys.stderr)
        if metrics_dir is not None:
            shutil.rmtree(metrics_dir, ignore_errors=True)
        return 2
    configure_logging(settings.logging.level, settings.logging.pii_fields)
    if workers == 1:
        _serve_one(settings, host, port)
        return 0
    return _serve_workers(settings, host, port, workers, metrics_dir or share_metrics())


def _serve_one(settings: Settings, host: str, port: int) -> None:
    """One process listens at once and answers 503 until the broker is reached."""
    from router.app import create_app

    app = create_app(settings)
    # web.run_app, but listening through the connection cap (router.connections).
    loop = new_loop()
    asyncio.set_event_loop(loop)
    main = loop.create_task(_listen(app, settings, host, port))
    try:
        loop.run_until_complete(main)
    except (web.GracefulExit, KeyboardInterrupt):  # SIGTERM, SIGINT
        log.info("shutting_down")
    finally:
        main.cancel()  # stops listening, then finishes in-flight requests (runner.cleanup)
        loop.run_until_complete(asyncio.gather(main, return_exceptions=True))
        loop.run_until_complete(loop.shutdown_asyncgens())
        loop.close()


async def _listen(app: web.Application, settings: Settings, host: str, port: int) -> None:
    from router.connections import ConnectionLimit

    runner = web.AppRunner(
        app, handle_signals=True, access_log=None, keepalive_timeout=75.0,
        shutdown_timeout=settings.server.shutdown_timeout,
    )
    await runner.setup()
    try:
        assert runner.server is not None
        ports = [port, settings.server.metrics_port]
        listeners = [
            await asyncio.get_running_loop().create_server(
                ConnectionLimit(runner.server, settings.server.max_connections,
                                header_timeout=settings.server.header_timeout), host, p,
                ssl=ssl_context(settings), backlog=128,
            )
            for p in ports if p is not None
        ]
        try:
            await asyncio.Future()  # until a stop signal
        finally:
            for listener in listeners:
                listener.close()
    finally:
        await runner.cleanup()


def _serve_workers(settings: Settings, host: str, port: int, workers: int,
                   metrics_dir: str) -> int:
    master = os.getpid()
    try:
        _Ingress(settings, host, port, workers).run()  # leaves by SystemExit, with its status
    finally:
        # A worker leaves through here too when it exits; the directory is the master's.
        if os.getpid() == master:
            shutil.rmtree(metrics_dir, ignore_errors=True)
    return 0


def _address(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


class _Ingress(BaseApplication):
    """gunicorn configured from our settings, not from its command line or a file."""

    def __init__(self, settings: Settings, host: str, port: int, workers: int) -> None:
        self.settings = settings
        server = settings.server
        binds = [port] if server.metrics_port is None else [port, server.metrics_port]
        self.options: dict[str, Any] = {
            "bind": [_address(host, p) for p in binds],
            "workers": workers,
            "worker_class": IngressWorker,
            "proc_name": settings.broker.connection_name,
            # aiohttp drains in-flight requests for shutdown_timeout; then the publisher closes.
            "graceful_timeout": math.ceil(server.shutdown_timeout) + 10,
            "logger_class": _GunicornLog,
            "accesslog": None,  # one line per request comes from the app's middleware
            "child_exit": _child_exit,
            "when_ready": _when_ready,
        }
        if server.tls_cert is not None and server.tls_key is not None:
            # Tells the worker to wrap the sockets; the context itself is ssl_context's.
            self.options.update(certfile=str(server.tls_cert), keyfile=str(server.tls_key))
        super().__init__()

    def load_config(self) -> None:
        if "control_socket_disable" in self.cfg.settings:  # gunicorn >= 25.1: not wanted
            self.options["control_socket_disable"] = True
        for name, value in self.options.items():
            self.cfg.set(name, value)

    def load(self) -> Callable[[], Awaitable[web.AppRunner]]:
        """In each worker: the app, set up (broker reached) before the worker listens."""
        from router.app import create_app
        from router.connections import LimitedRunner

        app = create_app(self.settings, wait_for_broker=True)
        shutdown_timeout = self.settings.server.shutdown_timeout

        async def runner() -> web.AppRunner:
            # The sites aiohttp's worker makes listen through the connection cap.
            return LimitedRunner(app, limit=self.settings.server.max_connections,
                                 header_timeout=self.settings.server.header_timeout,
                                 access_log=None, keepalive_timeout=75.0,
                                 shutdown_timeout=shutdown_timeout)

        return runner

    def run(self) -> None:
        _Arbiter(self).run()


class _Arbiter(Arbiter):
    def spawn_worker(self) -> int:
        # A stop signal that reaches a worker before its own handlers are in place would run
        # the master's handler copied by fork, and be lost: the worker would start and serve
        # until killed. Forked with the stop signals blocked, the worker takes them only once
        # it can act on them (IngressWorker.run).
        signal.pthread_sigmask(signal.SIG_BLOCK, STOP_SIGNALS)
        try:
            pid: int = super().spawn_worker()
            return pid
        finally:
            signal.pthread_sigmask(signal.SIG_UNBLOCK, STOP_SIGNALS)


class IngressWorker(GunicornUVLoopWebWorker):
    """aiohttp's uvloop worker that can be stopped, and stays alive, while it starts."""

    def run(self) -> None:
        self.loop.call_soon(self._starting)
        try:
            super().run()
        except asyncio.CancelledError:
            sys.exit(0)  # stopped before it listened: nothing to finish

    def _starting(self) -> None:
        # The loop runs and its signal handlers see what comes now (uvloop drops a signal
        # that arrives before the loop first runs).
        signal.pthread_sigmask(signal.SIG_UNBLOCK, STOP_SIGNALS)
        self._alive_while_starting()

    def _alive_while_starting(self) -> None:
        # Waiting for the broker may take longer than the master's worker timeout; once it
        # listens, aiohttp's worker tells the master it is alive by itself (and, as here,
        # stops when its master is gone).
        if not self.booted:
            if os.getppid() != self.ppid:  # the master was killed: nobody would stop us
                log.warning("master_gone", worker=os.getpid())
                self.alive = False
                self._stop_starting()
                return
            self.notify()
            self.loop.call_later(1.0, self._alive_while_starting)

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        log.info("shutting_down", worker=os.getpid())
        super().handle_exit(sig, frame)
        self._stop_starting()

    def handle_quit(self, sig: int, frame: FrameType | None) -> None:
        super().handle_quit(sig, frame)
        self._stop_starting()

    def _stop_starting(self) -> None:
        if not self.booted and self._task is not None:
            cancel_until_done(self.loop, self._task)

    def _create_ssl_context(self, cfg: object) -> ssl.SSLContext:  # type: ignore[override]
        context = ssl_context(self.app.settings)  # asked for only when tls_cert is set
        assert context is not None
        return context


def cancel_until_done(
    loop: asyncio.AbstractEventLoop, task: asyncio.Task[Any], every: float = 0.5
) -> None:
    """Cancel `task`, and again every `every` seconds until it is done.

    One cancellation can be lost: on Python 3.11, asyncio.wait_for (used by the AMQP client
    libraries) returns its inner result when that completes in the same loop turn as the
    cancellation, so a connect refused at that moment raises the refusal instead, which the
    reconnect loop takes as one more failed try; the worker then waited for the broker until
    its master killed it (a CI run saw a worker outlive its killed master that way)."""
    if not task.done():
        task.cancel()
        loop.call_later(every, cancel_until_done, loop, task, every)


def _when_ready(arbiter: Arbiter) -> None:
    log.info("workers_starting", workers=arbiter.num_workers,
             listen=[str(listener) for listener in arbiter.LISTENERS],
             metrics_dir=os.environ[METRICS_DIR])


def _child_exit(arbiter: Arbiter, worker: IngressWorker) -> None:
    """A worker is gone: its counters still count, its live gauges no longer do."""
    from prometheus_client import multiprocess

    multiprocess.mark_process_dead(worker.pid, os.environ[METRICS_DIR])


class _GunicornLog(GunicornLogger):
    """gunicorn's own messages as our JSON lines: event "gunicorn", its text in `message`."""

    _log = structlog.get_logger("gunicorn")

    def setup(self, cfg: object) -> None:
        self.cfg = cfg

    def _emit(self, level: str, msg: str, args: tuple[Any, ...], **kw: Any) -> None:
        extra = {"exc_info": True} if kw.get("exc_info") else {}
        getattr(self._log, level)("gunicorn", message=str(msg % args if args else msg), **extra)

    def critical(self, msg: str, *args: Any, **kw: Any) -> None:
        self._emit("critical", msg, args, **kw)

    def error(self, msg: str, *args: Any, **kw: Any) -> None:
        self._emit("error", msg, args, **kw)

    def warning(self, msg: str, *args: Any, **kw: Any) -> None:
        self._emit("warning", msg, args, **kw)

    def info(self, msg: str, *args: Any, **kw: Any) -> None:
        self._emit("info", msg, args, **kw)

    def debug(self, msg: str, *args: Any, **kw: Any) -> None:
        self._emit("debug", msg, args, **kw)

    def exception(self, msg: str, *args: Any, **kw: Any) -> None:
        self._emit("error", msg, args, exc_info=True)

    def log(self, lvl: int, msg: str, *args: Any, **kw: Any) -> None:
        self._emit("info", msg, args, **kw)

    def access(self, *args: Any, **kw: Any) -> None:
        pass

    def reopen_files(self) -> None:
        pass

    def close_on_exec(self) -> None:
        pass
