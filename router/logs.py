"""structlog set-up: one JSON line per event, rendered with orjson; secrets and PII redacted.

Pipeline: merge_contextvars (request id, source) -> level -> timestamp -> redact -> JSON.
"""

from __future__ import annotations

import asyncio
import atexit
import logging
import sys
from collections.abc import Iterable, MutableMapping
from typing import Any, BinaryIO, cast

import orjson
import structlog

REDACTED = "[redacted]"
# Keys that always hold secrets, whatever the settings say.
SECRET_KEYS = frozenset(
    {"authorization", "secret", "secrets", "token", "password", "signature", "api_key", "cookie"}
)


class Redactor:
    """Processor replacing the values of secret and PII keys, at any depth, with [redacted]."""

    def __init__(self, pii_fields: Iterable[str]) -> None:
        self.keys = SECRET_KEYS | {f.lower() for f in pii_fields}

    def _clean(self, value: Any) -> Any:
        if isinstance(value, dict):
            return {
                k: REDACTED if str(k).lower() in self.keys else self._clean(v)
                for k, v in value.items()
            }
        if isinstance(value, list | tuple):
            return [self._clean(v) for v in value]
        return value

    def __call__(
        self, logger: Any, method: str, event_dict: MutableMapping[str, Any]
    ) -> MutableMapping[str, Any]:
        keys = self.keys
        for key, value in event_dict.items():
            if key in keys or (not key.islower() and key.lower() in keys):
                event_dict[key] = REDACTED
            elif value.__class__ in _CONTAINERS:
                event_dict[key] = self._clean(value)
        return event_dict


_CONTAINERS = (dict, list, tuple)


class LineBuffer:
    """stdout for log lines, flushed by `flush_soon` (a timer) rather than once per line.

    A write+flush per request is a syscall on the hot path; batching them costs at most
    `interval` seconds of delay, and `close` (shutdown, atexit) writes what is left.
    """

    def __init__(self, raw: Any, interval: float = 0.1, limit: int = 1 << 16) -> None:
        self._raw = raw
        self._chunks: list[bytes] = []
        self._size = 0
        self._interval = interval
        self._limit = limit
        self._scheduled = False

    def write(self, data: bytes) -> None:
        self._chunks.append(data)
        self._size += len(data)
        if self._size >= self._limit:
            self.close()
        elif not self._scheduled:
            try:
                loop = asyncio.get_running_loop()
            except RuntimeError:  # no loop (CLI, start-up): write through
                self.close()
                return
            self._scheduled = True
            loop.call_later(self._interval, self.close)

    def flush(self) -> None:
        """Called by structlog after each line; the timer does the real flushing."""

    def close(self) -> None:
        self._scheduled = False
        if self._chunks:
            data = b"".join(self._chunks)
            self._chunks.clear()
            self._size = 0
            self._raw.write(data)
            self._raw.flush()


def _orjson_dumps(obj: Any, **_: Any) -> bytes:
    return orjson.dumps(obj, default=str)


def configure_logging(level: str = "info", pii_fields: Iterable[str] = ()) -> None:
    """Configure structlog for the process (JSON lines on stdout)."""
    output = LineBuffer(sys.stdout.buffer)
    atexit.register(output.close)
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            Redactor(pii_fields),
            structlog.processors.format_exc_info,
            structlog.processors.JSONRenderer(serializer=_orjson_dumps),
        ],
        wrapper_class=structlog.make_filtering_bound_logger(
            logging.getLevelNamesMapping()[level.upper()]
        ),
        logger_factory=structlog.BytesLoggerFactory(cast(BinaryIO, output)),  # write, flush
        cache_logger_on_first_use=True,
    )
