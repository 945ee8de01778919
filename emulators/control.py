"""What every emulator shares: faults a test asks for (`POST /_emulator/fail`), the state it
reads back (`GET /_emulator/state`), and serving from the command line. The control routes
take no credentials: an emulator listens on loopback unless told otherwise."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web


@dataclass
class Fault:
    """Fail the next `times` requests for `operation` (any when None): answer `status`, or
    with `status` "disconnect" cut the connection without an answer, after the request took
    effect when `after_effect` (the answer lost, not the request). An emulator may know more
    statuses (Shopify: "user_error", refusing a mutation with `message`)."""

    status: int | str
    times: int = 1
    operation: str | None = None
    after_effect: bool = False
    message: str = "refused by the emulator"


@dataclass
class Control:
    """An emulator's faults and counters."""

    faults: list[Fault] = field(default_factory=list)
    requests: Counter[str] = field(default_factory=Counter)

    def take(self, operation: str, after_effect: bool) -> Fault | None:
        """The fault due for this request, if any; it counts down."""
        for fault in self.faults:
            if fault.after_effect == after_effect and fault.operation in (None, operation):
                fault.times -= 1
                if fault.times <= 0:
                    self.faults.remove(fault)
                return fault
        return None


CONTROL = web.AppKey("control", Control)


def cut(request: web.Request) -> web.StreamResponse:
    """Drop the connection with no answer (the client sees it closed after its request)."""
    if request.transport is not None:
        request.transport.abort()
    raise asyncio.CancelledError  # nothing more to write; aiohttp ends the handler quietly


def add_control(app: web.Application, state: Callable[[], dict[str, Any]],
                seed: Callable[[dict[str, Any]], None]) -> None:
    """Mount /_emulator/{fail,state,seed} on `app`."""
    app[CONTROL] = Control()

    async def fail(request: web.Request) -> web.Response:
        body = await request.json()
        fault = Fault(status=body["status"], times=int(body.get("times", 1)),
                      operation=body.get("operation"),
                      after_effect=bool(body.get("after_effect", False)),
                      message=str(body.get("message", Fault.message)))
        if not isinstance(fault.status, int | str):
            raise web.HTTPBadRequest(text="status: an HTTP status or a name")
        app[CONTROL].faults.append(fault)
        return web.json_response({"faults": len(app[CONTROL].faults)})

    async def read(request: web.Request) -> web.Response:
        return web.json_response({**state(), "requests": dict(app[CONTROL].requests)})

    async def add(request: web.Request) -> web.Response:
        seed(await request.json())
        return web.json_response(state())

    app.router.add_post("/_emulator/fail", fail)
    app.router.add_get("/_emulator/state", read)
    app.router.add_post("/_emulator/seed", add)


def serve(app: web.Application, args: argparse.Namespace) -> int:
    """Serve `app` until interrupted or terminated; says where once it is listening."""

    async def run() -> None:
        runner = web.AppRunner(app, handle_signals=True)
        await runner.setup()
        try:
            await web.TCPSite(runner, args.host, args.port).start()
            print(f"emulator listening on http://{args.host}:{args.port}", flush=True)
            await asyncio.Event().wait()
        finally:
            await runner.cleanup()

    with contextlib.suppress(KeyboardInterrupt, web.GracefulExit):
        asyncio.run(run())
    return 0


def arguments(description: str) -> argparse.ArgumentParser:
    """The options every emulator takes."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    return parser
