"""Every benchmark in bench/ still runs: its smoke form (tiny counts, a few seconds), started
as a user starts it, exits 0, prints its ratio line and leaves nothing behind: no queue or
exchange of the prefix it printed, no database of its own, no temporary directory, no
process. The figures of a smoke mean nothing and are not looked at. bench/soak.py runs in
scripts/test already (its short form), so it is not here."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import subprocess
import sys
import uuid
from dataclasses import dataclass
from pathlib import Path

import aio_pika
import asyncpg
import pytest

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
AMQP_URL = os.environ.get("AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/")
PG_ADMIN_URL = os.environ.get("PG_ADMIN_URL", "postgresql://root@127.0.0.1:5432/postgres")
RATIO = r"\d+\.\d\d"


@dataclass(frozen=True)
class Smoke:
    args: tuple[str, ...]
    ratio_line: str  # a regular expression for the line with its ratio(s), one per line
    timeout: float = 60.0
    topologies: tuple[str, ...] = ("",)  # under each printed prefix: <prefix><this>events


SMOKES = {
    "consumers": Smoke(
        ("bench/consumers.py", "--count", "30", "--rounds", "1", "--only", "sqlite",
         "--only", "postgres", "--only", "pg-conc", "--only", "labels"),
        rf"^ +labels/pg +\d+ +{RATIO}$"),
    "e2e": Smoke(("bench/e2e.py", "--smoke"),
                 rf"ours/naive: accepted {RATIO}, 2xx p99 {RATIO}, e2e p99 {RATIO}",
                 topologies=("", "naive.")),
    "ingress": Smoke(
        ("bench/ingress.py", "--duration", "1", "--warmup", "1", "--rounds", "1",
         "--workers", "1", "--connections", "8"),
        rf"^ours x1 / plain: req/s ratio per round {RATIO}, median {RATIO};"),
    "ingress_instructions": Smoke(
        ("bench/ingress_instructions.py", "--requests", "20", "--warmup", "20",
         "--compare", "self=."),
        r"^ours / self: \d+\.\d{3}$"),
    "notifications": Smoke(("bench/notifications.py", "--count", "30", "--rounds", "1"),
                           rf"^ +postgres +\d+ +{RATIO}$"),
    "publish": Smoke(("bench/publish.py", "--count", "200", "--rounds", "1"),
                     rf"^ConfirmingPublisher +\d+ +[\d.]+ +{RATIO} +{RATIO}$"),
}


async def databases_named(prefix: str) -> list[str]:
    connection = await asyncpg.connect(PG_ADMIN_URL)
    try:
        rows = await connection.fetch("SELECT datname FROM pg_database"
                                      " WHERE starts_with(datname, $1)", prefix)
    finally:
        await connection.close()
    return sorted(row["datname"] for row in rows)


async def broker_leftovers(prefixes: list[str]) -> list[str]:
    """Of each prefix's events exchange and orders queue, those that still exist."""
    left = []
    async with await aio_pika.connect(AMQP_URL) as connection:
        for prefix in prefixes:
            for kind, name in (("exchange", f"{prefix}events"), ("queue", f"{prefix}orders")):
                channel = await connection.channel()
                try:
                    if kind == "exchange":
                        await channel.declare_exchange(name, passive=True)
                    else:
                        await channel.declare_queue(name, passive=True)
                    left.append(f"{kind} {name}")
                except aio_pika.exceptions.ChannelNotFoundEntity:
                    continue
                finally:
                    if not channel.is_closed:
                        await channel.close()
    return left


def stray_processes(group: int) -> bool:
    """Whether a process of the bench's process group is still alive (then killed)."""
    try:
        os.killpg(group, signal.SIGKILL)
    except ProcessLookupError:
        return False
    return True


@pytest.mark.parametrize("name", sorted(SMOKES))
def test_smoke(name: str, tmp_path: Path) -> None:
    """The bench's smoke form runs, verifies itself, prints its ratio and cleans up."""
    smoke = SMOKES[name]
    databases = f"bench_{uuid.uuid4().hex[:8]}_"  # its databases' names begin so
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    # Its own session, so that whatever it starts can be found afterwards; its own TMPDIR,
    # so that whatever temporary file it leaves can be.
    proc = subprocess.Popen(
        [sys.executable, *smoke.args], cwd=ROOT,
        env={**os.environ, "TMPDIR": str(tmp), "BENCH_DATABASE_PREFIX": databases},
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True)
    try:
        output, _ = proc.communicate(timeout=smoke.timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        output, _ = proc.communicate()
        pytest.fail(f"{name}: no exit within {smoke.timeout:.0f} s\n{output}")
    strays = stray_processes(proc.pid)
    prefixes = [prefix + sub for prefix in re.findall(r"prefix (\S+\.)$", output, re.MULTILINE)
                for sub in smoke.topologies]

    assert proc.returncode == 0, output
    assert re.search(smoke.ratio_line, output, re.MULTILINE), output
    assert prefixes, output
    assert [] == asyncio.run(broker_leftovers(prefixes))
    assert [] == asyncio.run(databases_named(databases))
    assert [] == sorted(p.name for p in tmp.iterdir())
    assert not strays, f"{name} left processes running"
