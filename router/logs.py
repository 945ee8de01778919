"""structlog set-up: one JSON line per event, rendered with orjson; secrets and PII redacted.

Pipeline: merge_contextvars (request id, source) -> level -> timestamp -> redact -> JSON.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Iterable, MutableMapping
from typing import Any

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
            if key.lower() in keys:
                event_dict[key] = REDACTED
            elif isinstance(value, dict | list | tuple):
                event_dict[key] = self._clean(value)
        return event_dict


def _orjson_dumps(obj: Any, **_: Any) -> bytes:
    return orjson.dumps(obj, default=str)


def configure_logging(level: str = "info", pii_fields: Iterable[str] = ()) -> None:
    """Configure structlog for the process (JSON lines on stdout)."""
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
        logger_factory=structlog.BytesLoggerFactory(sys.stdout.buffer),
        cache_logger_on_first_use=True,
    )
