"""Instructions per accepted request in the ingress, counted by valgrind's callgrind: a
figure that does not move with the machine's speed or load (wall-clock runs here vary up to
3x from day to day), for before/after comparisons of the hot path.

    python bench/ingress_instructions.py [--requests 2000] [--warmup 200]
                                         [--compare LABEL=CHECKOUT ...]

Serves the ingress (one process, as `python -m router serve` with the shipped config, on a
unique-prefix topology) under `valgrind --tool=callgrind` with counting off, posts `warmup`
signed Shopify orders to warm it up, switches counting on (callgrind_control), posts
`requests` more (16 at a time, each a fresh X-Shopify-Event-Id, each answered 202 after the
broker's confirm), switches it off, checks that the queue held every order accepted, and
prints the instructions counted divided by the requests. With --compare, the same for
another checkout of this repository (e.g. made by `git worktree add ../wt-old <commit>`),
run with this interpreter. Two runs of one checkout agree within about 1%. Needs valgrind
(Debian package `valgrind`). A smoke (CI): `--requests 20 --warmup 20 --compare self=.`
(its ratio is about 1).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import shutil
import subprocess
import sys
import tempfile
import uuid
from pathlib import Path

import aiohttp

sys.path.insert(0, str(Path(__file__).resolve().parent))
from ingress import (  # noqa: E402  (the wrk benchmark's server set-up, shared)
    AMQP_URL,
    ROOT,
    SECRET,
    checkouts,
    declare,
    free_port,
    purge,
    signed_order,
    wait_http,
    write_config,
)

UNUSED_SECRETS = ("WOOCOMMERCE_WEBHOOK_SECRET", "PORTAL_WEBHOOK_TOKEN", "INVENTORY_WEBHOOK_SECRET",
                  "EASYPOST_WEBHOOK_SECRET", "AFTERSHIP_WEBHOOK_SECRET")


async def post_orders(port: int, count: int, tag: str) -> None:
    limit = asyncio.Semaphore(16)
    async with aiohttp.ClientSession() as session:

        async def one(i: int) -> None:
            # Each its own body: the same signed body under a new id would be a duplicate.
            body, signature = signed_order(i)
            async with limit, session.post(
                f"http://127.0.0.1:{port}/webhooks/shopify", data=body,
                headers={"Content-Type": "application/json", "X-Shopify-Topic": "orders/create",
                         "X-Shopify-Hmac-Sha256": signature,
                         "X-Shopify-Event-Id": f"{tag}-{i}"},
            ) as response:
                if response.status != 202:
                    raise RuntimeError(f"request {i}: {response.status} {await response.text()}")

        await asyncio.gather(*(one(i) for i in range(count)))


def count(root: Path, requests: int, warmup: int, tmp: Path) -> float:
    """Instructions per request of `root`'s ingress."""
    prefix = f"bench-{uuid.uuid4().hex[:6]}."
    print(f"serving {root.name} under valgrind, prefix {prefix}", flush=True)
    asyncio.run(declare(prefix))
    port = free_port()
    config = write_config(tmp, prefix, port, 1, root)
    out = tmp / "callgrind.out"
    env = {**os.environ, "SHOPIFY_WEBHOOK_SECRET": SECRET, "AMQP_URL": AMQP_URL,
           "PYTHONPATH": str(root), "PYTHONHASHSEED": "0",
           **{name: "unused-" + name for name in UNUSED_SECRETS}}
    with (tmp / "server.log").open("wb") as log:
        proc = subprocess.Popen(
            ["valgrind", "--tool=callgrind", "--instr-atstart=no", f"--callgrind-out-file={out}",
             sys.executable, "-m", "router", "--config", str(config), "serve"],
            cwd=root, env=env, stdout=log, stderr=subprocess.STDOUT,
        )
        try:
            wait_http(f"http://127.0.0.1:{port}/readyz", timeout=300)
            asyncio.run(post_orders(port, warmup, "warmup"))
            subprocess.run(["callgrind_control", "-i", "on", str(proc.pid)], check=True,
                           capture_output=True)
            asyncio.run(post_orders(port, requests, "run"))
            subprocess.run(["callgrind_control", "-i", "off", str(proc.pid)], check=True,
                           capture_output=True)
        finally:
            proc.terminate()
            proc.wait(timeout=300)
            queued = asyncio.run(purge(prefix, delete=True))
    if queued != warmup + requests:  # each was answered 202: each must be on the queue
        raise RuntimeError(f"{warmup + requests} orders accepted but {queued} queued")
    summary = out.read_text(errors="replace")
    total = re.search(r"^totals: (\d+)", summary, re.MULTILINE)
    if total is None:
        raise RuntimeError(f"no totals in {out}")
    return int(total.group(1)) / requests


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--warmup", type=int, default=200,
                        help="requests before counting starts (default 200)")
    parser.add_argument("--compare", action="append", default=[], metavar="LABEL=CHECKOUT")
    args = parser.parse_args()
    if shutil.which("valgrind") is None:
        print("valgrind is needed: apt-get install valgrind", file=sys.stderr)
        return 2
    roots = {"ours": ROOT, **checkouts(parser, args.compare)}
    counts: dict[str, float] = {}
    for label, root in roots.items():
        tmp = Path(tempfile.mkdtemp(prefix="bench-instructions-"))
        try:
            counts[label] = count(root, args.requests, args.warmup, tmp)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        print(f"{label:>10}: {counts[label]:10,.0f} instructions per request "
              f"({args.requests} requests)", flush=True)
    for label in list(roots)[1:]:
        print(f"ours / {label}: {counts['ours'] / counts[label]:.3f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
