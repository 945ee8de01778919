"""Refused requests, remembered per process so an operator can see why (GET /rejections).

    rejections = Rejections(kept=100, directory=None)
    rejections.record(source, status, reason, delivery_id, client)  # per refusal: a deque append
    rejections.answer(source=None, limit=None)  # {"rejections": [newest first], "counts": ...}

A rejection is its time (`at`, ISO 8601 UTC), `source` ("-" for a path with no source),
`status`, `reason` (the `error` the client got), `delivery_id` and `client`: never a body, a
header or a message. At most `kept` are kept per source, the newest; `counts` counts every
refusal by source and reason since the process started.

With several workers the metrics directory is shared: each worker writes what it holds to
`rejections-<pid>.json` there (replaced whole, from a loop timer, at most every WRITE_EVERY
seconds while it has news; never a write per request), and an answer adds the other
workers' files, a dead worker's included, to its own memory.

Read from elsewhere (the console, `webhook-router trace`): `await fetch(http, base)` is the
answer of the ingress at `base`, or RejectionsUnavailable saying why not.
"""

from __future__ import annotations

import asyncio
import os
import re
import time
from collections import deque
from collections.abc import Callable, Collection, Iterable, Mapping
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import structlog

from router.envelope import iso
from router.errors import BadQuery

FIELDS = ("at", "source", "status", "reason", "delivery_id", "client")
WRITE_EVERY = 0.5
FILE_PREFIX = "rejections-"
_LIMIT = re.compile(r"[0-9]{1,9}")
log = structlog.get_logger("router.rejections")

# (at as time.time(), source, status, reason, delivery_id, client): FIELDS, as recorded.
_Rejection = tuple[float, str, int, str, str | None, str | None]
Answer = dict[str, Any]


FETCH_TIMEOUT = 3.0


class RejectionsUnavailable(Exception):
    """The ingress's /rejections could not be read (the message says why)."""


async def fetch(http: aiohttp.ClientSession, base: str, timeout: float = FETCH_TIMEOUT
                ) -> Answer:
    """GET {base}/rejections: {"rejections": [newest first], "counts": {...}}."""
    try:
        async with http.get(f"{base}/rejections",
                            timeout=aiohttp.ClientTimeout(total=timeout)) as response:
            if response.status != 200:
                raise RejectionsUnavailable(f"HTTP {response.status}")
            answer = await response.json()
    except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
        raise RejectionsUnavailable(str(exc) or type(exc).__name__) from exc
    if not (isinstance(answer, dict) and isinstance(answer.get("counts"), dict)
            and isinstance(answer.get("rejections"), list)):
        raise RejectionsUnavailable("not a /rejections answer")
    return answer


def of_delivery(answer: Answer, delivery_id: str) -> list[dict[str, Any]]:
    """The kept rejections of the delivery `delivery_id`, oldest first."""
    found = [r for r in answer["rejections"]
             if isinstance(r, dict) and r.get("delivery_id") == delivery_id]
    return [{name: r.get(name) for name in FIELDS} for r in reversed(found)]


class Rejections:
    """One process's recent rejections per source, and its counts by source and reason."""

    def __init__(self, kept: int, directory: Path | None = None, *,
                 clock: Callable[[], float] = time.time) -> None:
        self.kept = kept
        self.directory = directory
        self.clock = clock
        self._recent: dict[str, deque[_Rejection]] = {}
        self._counts: dict[str, dict[str, int]] = {}
        self._timer: asyncio.TimerHandle | None = None

    def record(self, source: str, status: int, reason: str, delivery_id: str | None,
               client: str | None) -> None:
        """Remember one refusal (and, with a directory, have it written soon)."""
        counts = self._counts.get(source)
        if counts is None:
            counts = self._counts[source] = {}
        counts[reason] = counts.get(reason, 0) + 1
        if self.kept:
            recent = self._recent.get(source)
            if recent is None:
                recent = self._recent[source] = deque(maxlen=self.kept)
            recent.append((self.clock(), source, status, reason, delivery_id, client))
        if self.directory is not None and self._timer is None:
            self._timer = asyncio.get_running_loop().call_later(WRITE_EVERY, self.write)

    def held(self) -> Answer:
        """What this process holds, as a worker's file holds it."""
        rejections = [
            dict(zip(FIELDS, (iso(r[0]), *r[1:]), strict=True))
            for recent in self._recent.values() for r in reversed(recent)
        ]
        return {"rejections": rejections, "counts": self._counts}

    def answer(self, source: str | None = None, limit: int | None = None) -> Answer:
        """Every worker's rejections, newest first (of `source` only, at most `limit`)."""
        return merge([self.held(), *self._other_workers()], self.kept, source, limit)

    def write(self) -> None:
        """Replace this worker's file with what it holds now (whole: readers never see half)."""
        self._timer = None
        if self.directory is None:
            return
        path = self.directory / f"{FILE_PREFIX}{os.getpid()}.json"
        partial = path.with_name(path.name + ".partial")
        try:
            partial.write_bytes(orjson.dumps(self.held()))
            os.replace(partial, path)
        except OSError as exc:  # the directory went (a stopping run): nothing to serve then
            log.warning("rejections_not_written", error=str(exc))

    def close(self) -> None:
        """Write what is not written yet (the process is stopping)."""
        if self._timer is not None:
            self._timer.cancel()
            self.write()

    def _other_workers(self) -> list[Answer]:
        if self.directory is None:
            return []
        own = f"{FILE_PREFIX}{os.getpid()}.json"
        found = []
        for path in sorted(self.directory.glob(f"{FILE_PREFIX}*.json")):
            if path.name == own:
                continue
            try:
                held = orjson.loads(path.read_bytes())
            except (OSError, orjson.JSONDecodeError):  # gone since the listing; not ours
                continue
            if (isinstance(held, dict) and isinstance(held.get("rejections"), list)
                    and isinstance(held.get("counts"), dict)):
                found.append(held)
        return found


def merge(parts: Iterable[Mapping[str, Any]], kept: int, source: str | None = None,
          limit: int | None = None) -> Answer:
    """Several processes' rejections as one answer: the newest `kept` per source, newest
    first, at most `limit`, with the counts added up (only `source`'s, if given)."""
    parts = list(parts)
    rejections = [
        {name: r.get(name) for name in FIELDS}  # only these, whatever a file holds
        for part in parts for r in part["rejections"]
        if source is None or r.get("source") == source
    ]
    rejections.sort(key=lambda r: str(r["at"]), reverse=True)  # stable: ties keep their order
    per_source: dict[str, int] = {}
    newest = []
    for r in rejections:
        n = per_source.get(r["source"], 0)
        if n < kept:
            per_source[r["source"]] = n + 1
            newest.append(r)
    counts: dict[str, dict[str, int]] = {}
    for part in parts:
        for name, reasons in part["counts"].items():
            if source is None or name == source:
                total = counts.setdefault(name, {})
                for reason, n in reasons.items():
                    total[reason] = total.get(reason, 0) + n
    return {"rejections": newest[:limit], "counts": counts}


def read_query(query: Mapping[str, str], sources: Collection[str]) -> tuple[str | None, int | None]:
    """`source` and `limit` from the query of GET /rejections (BadQuery if either is wrong,
    or if it holds anything else)."""
    unknown = sorted(set(query) - {"source", "limit"})
    if unknown:
        raise BadQuery("only source and limit may be given")
    source = query.get("source")
    if source is not None and source != "-" and source not in sources:
        raise BadQuery("source: not a configured source (or - for a path with none)")
    text = query.get("limit")
    if text is None:
        return source, None
    if not _LIMIT.fullmatch(text) or int(text) < 1:
        raise BadQuery("limit: must be a whole number from 1 to 999999999")
    return source, int(text)
