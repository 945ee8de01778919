"""What every emulator shares: faults a test asks for (`POST /_emulator/faults`; `DELETE` ends
those not used up, for a fault that lasts a while rather than a number of requests), what the
emulator was told (`GET /_emulator/counters`), data to start from (`POST /_emulator/seed`,
where an emulator takes any), and serving from the command line. The control routes take no
credentials: an emulator listens on loopback unless told otherwise."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hmac
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web


@dataclass
class Fault:
    """What the next `count` requests for `operation` (any when None) get: `status` instead
    of an answer (a 429 says `retry_after` seconds when given, else what the provider would);
    `drop`: the connection dropped before anything is done; `reset`: the work done, then the
    connection dropped (the answer lost, not the request); `delay` seconds of waiting before
    any of these (alone: a late answer). With `seconds`, it answers every request for that
    many seconds from when it was asked for (an outage), whatever `count` says. A status
    answered with `retry_after` carries that Retry-After header (429 has one by default, as
    each provider sends). An emulator may know statuses of its own (Shopify: "user_error", a
    mutation refused with `message`)."""

    status: int | str | None = None
    count: int = 1
    operation: str | None = None
    drop: bool = False
    reset: bool = False
    delay: float = 0.0
    retry_after: int | None = None
    message: str = "refused by the emulator"
    seconds: float | None = None
    until: float = field(init=False, default=0.0)  # monotonic end of a `seconds` outage

    def __post_init__(self) -> None:
        if self.status is None and not (self.drop or self.reset or self.delay):
            raise ValueError("a fault needs a status, drop, reset or delay")
        if isinstance(self.status, int) and not 100 <= self.status <= 599:
            raise ValueError(f"status {self.status} is no HTTP status")
        if self.reset and self.status is not None:
            raise ValueError("reset drops the answer: it takes no status")
        if not 0 <= self.delay <= 600:
            raise ValueError(f"delay {self.delay} is not 0 to 600 seconds")
        if self.retry_after is not None and self.retry_after < 0:
            raise ValueError(f"retry_after {self.retry_after} is negative")
        if self.seconds is not None:
            if not 0 < self.seconds <= 86400:
                raise ValueError(f"seconds {self.seconds} is not 0 to 86400")
            self.until = time.monotonic() + self.seconds

    @property
    def answers(self) -> bool:
        """Whether it changes the answer (else it only delays it)."""
        return self.status is not None or self.drop or self.reset


@dataclass
class Control:
    """An emulator's faults and counters."""

    faults: list[Fault] = field(default_factory=list)
    requests: Counter[str] = field(default_factory=Counter)

    async def take(self, operation: str, after_work: bool) -> Fault | None:
        """The fault due for this request before its work (or after it: `reset`), if any,
        once its delay has passed; it counts down. A fault that only delays is not returned:
        the request goes on."""
        now = time.monotonic()
        self.faults = [f for f in self.faults if f.seconds is None or f.until > now]
        for fault in self.faults:
            if fault.reset == after_work and fault.operation in (None, operation):
                fault.count -= 1
                if fault.count <= 0 and fault.seconds is None:
                    self.faults.remove(fault)
                if fault.delay:
                    await asyncio.sleep(fault.delay)
                return fault if fault.answers else None
        return None


CONTROL = web.AppKey("control", Control)


def same_secret(given: str, expected: str) -> bool:
    """Constant-time comparison of what a client sent (any bytes a header can carry, as
    aiohttp decodes them) with the configured secret."""
    return hmac.compare_digest(given.encode("utf-8", "surrogateescape"),
                               expected.encode("utf-8", "surrogateescape"))


def cut(request: web.Request) -> web.StreamResponse:
    """Drop the connection with no answer (the client sees it closed after its request)."""
    if request.transport is not None:
        request.transport.abort()
    raise asyncio.CancelledError  # nothing more to write; aiohttp ends the handler quietly


def add_control(app: web.Application, counters: Callable[[], dict[str, Any]],
                seed: Callable[[dict[str, Any]], None] | None = None) -> None:
    """Mount /_emulator/{faults,counters} on `app`, and /_emulator/seed if it takes `seed`."""
    app[CONTROL] = Control()

    async def add_fault(request: web.Request) -> web.Response:
        try:
            app[CONTROL].faults.append(Fault(**await request.json()))
        except (TypeError, ValueError) as exc:
            raise web.HTTPBadRequest(text=f"not a fault: {exc}") from None
        return web.json_response({"faults": len(app[CONTROL].faults)})

    async def clear(request: web.Request) -> web.Response:
        """End every fault not used up; says how many requests each still had to hit."""
        left = [{"operation": f.operation, "count": f.count} for f in app[CONTROL].faults]
        app[CONTROL].faults.clear()
        return web.json_response({"cleared": left})

    async def read(request: web.Request) -> web.Response:
        return web.json_response({**counters(), "requests": dict(app[CONTROL].requests)})

    app.router.add_post("/_emulator/faults", add_fault)
    app.router.add_delete("/_emulator/faults", clear)
    app.router.add_get("/_emulator/counters", read)
    if seed is not None:  # an emulator with data to start from
        async def add(request: web.Request) -> web.Response:
            seed(await request.json())
            return web.json_response(counters())

        app.router.add_post("/_emulator/seed", add)


def serve(app: web.Application, args: argparse.Namespace) -> int:
    """Serve `app` until interrupted or terminated; says where once it is listening."""

    async def run() -> None:
        runner = web.AppRunner(app, handle_signals=True)
        await runner.setup()
        try:
            await web.TCPSite(runner, args.host, args.port).start()
            # the first line says where it listens (port 0 picks one): scripts and tests read it
            print(f"listening on http://{args.host}:{runner.addresses[0][1]}", flush=True)
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
    parser.add_argument("--port", type=int, required=True, help="0 picks a free port")
    return parser
