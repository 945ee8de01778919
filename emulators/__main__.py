"""python -m emulators NAME [--host H] [--port P] [options]: run one emulator until stopped."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import signal
import sys

from aiohttp import web

from emulators import easypost


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m emulators", description=__doc__)
    names = parser.add_subparsers(dest="name", required=True)
    ep = names.add_parser("easypost", help="EasyPost REST API v2 (shipments, buy, refund)")
    ep.add_argument("--host", default="127.0.0.1")
    ep.add_argument("--port", type=int, default=12011, help="0 picks a free port")
    ep.add_argument("--key", required=True, help="the API key clients must present")
    ep.add_argument("--reject-street", action="append", default=[], metavar="STREET1",
                    help="a street1 it fails to verify (ADDRESS.VERIFY.FAILURE); repeatable")
    return parser


async def _serve(app: web.Application, host: str, port: int) -> None:
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, host, port)
    await site.start()
    bound = runner.addresses[0][1]
    # the first line says where it listens (port 0 picks one): scripts and tests read it
    print(f"listening on http://{host}:{bound}", flush=True)
    stop = asyncio.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError):
            asyncio.get_running_loop().add_signal_handler(signum, stop.set)
    try:
        await stop.wait()
    finally:
        await runner.cleanup()


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    emulator = easypost.Emulator(key=args.key, rejected_streets=frozenset(args.reject_street))
    asyncio.run(_serve(easypost.build_app(emulator), args.host, args.port))
    return 0


if __name__ == "__main__":
    sys.exit(main())
