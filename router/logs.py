"""structlog set-up: one JSON line per event, rendered with orjson; secrets and PII redacted.

Pipeline: merge_contextvars (request id, source) -> level -> timestamp -> exception ->
redact -> JSON.
The standard library's records (aiohttp, aiormq, aio_pika, asyncpg, Python warnings) go
through the same pipeline and out as the same lines, at warning and above.
"""

from __future__ import annotations

import asyncio
import atexit
import logging
import re
import sys
from collections.abc import Callable, Iterable, MutableMapping
from datetime import UTC, datetime
from typing import Any, BinaryIO, cast

import orjson
import structlog

REDACTED = "[redacted]"
# A key holding any of these (case-insensitive) holds a secret, whatever the settings say:
# X-Hub-Signature-256, X-Shopify-Hmac-Sha256, client_secret, cart_token, db_password, ...
SECRET_PARTS = ("signature", "secret", "token", "password", "hmac")
SECRET_KEYS = frozenset({"authorization", "api_key", "apikey", "cookie", "set-cookie"})
# The providers' customer details, redacted whatever the settings say (Shopify's and
# WooCommerce's addresses and customers, EasyPost's and AfterShip's signed_by and places).
PII_KEYS = frozenset({
    "address", "address1", "address2", "address_1", "address_2", "billing_address",
    "shipping_address", "first_name", "last_name", "name", "company", "email",
    "contact_email", "phone", "zip", "postcode", "postal_code", "latitude", "longitude",
    "browser_ip", "customer_ip_address", "client_ip", "signed_by", "note", "customer_note",
})
_CACHE_LIMIT = 4096  # keys remembered per redactor; payload keys are few, but not bounded

# Personal data by its shape, wherever it is: free text (dead-letter reasons, notes, bodies
# that are not JSON, library messages) and keys no list names. A match starts only where a
# token starts (one lookbehind, so most positions cost one test and a search is linear)
# and ends where the token ends, so no part of a longer token (a SKU, a UUID, a tracking
# code, a dotted or dashed number) is taken. Digits alone are never a phone: order ids,
# timestamps, amounts and tracking codes are digits alone too; a phone needs its + or the
# separators people write it with. Digits are [0-9]: a set with \d scans several times
# slower.
_TOKEN_START = r"(?<![\w.%+-])"
_END = r"(?![\w-]|\.\w)"  # a full stop may end a sentence, not a dotted token
# nor is a phone one group of a longer run of digit groups (9400 1000 0000 0000 0000 00)
_PHONE_END = rf"{_END}(?![ .-][0-9])"
_PHONES = (
    r"(?<![0-9][ .-])(?:"
    # E.164, separators allowed: +1 (555) 123-4567, +44 20 7946 0958, +4915112345678
    rf"(?P<international>\+[1-9](?:[ ().-]{{0,2}}[0-9]){{7,14}}{_PHONE_END})"
    # North American: (555) 123-4567, 555-123-4567, 555.123.4567, 1-800-555-0100
    r"|(?P<nanp>(?:1[ .-])?(?:\([0-9]{3}\) ?|[0-9]{3}[ .-])[0-9]{3}[ .-][0-9]{4}"
    rf"{_PHONE_END})"
    # a national number after its trunk 0, one separator throughout (a date's dots and a
    # time's do not pass as one): 020 7946 0958, 06 12 34 56 78, 03-1234-5678, (02) 9876 5432
    r"|(?P<trunk>(?:0[1-9][0-9]{0,3}|\(0[1-9][0-9]{0,3}\))(?P<sep>[ .-])[0-9]{2,8}"
    rf"(?:(?P=sep)[0-9]{{2,8}}){{0,3}}{_PHONE_END}))"
)
# e-mail: local@domain.tld, or local%40domain.tld in a form-encoded body
_EMAIL = (r"(?P<email>[\w.%+-]{1,64}(?:@|%40)(?:[A-Za-z0-9-]{1,63}\.){1,8}[A-Za-z]{2,63}"
          r"(?![\w-]))")
_PII_TEXT = re.compile(rf"{_TOKEN_START}(?:{_EMAIL}|{_PHONES})")
_PHONE_TEXT = re.compile(rf"{_TOKEN_START}{_PHONES}")
# What every phone above holds: nine characters in a row of digits and separators, the
# first a digit, + or ( where a token starts, with a + or ( first or a separator among the
# first nine (so a long number alone, an order id or a tracking code, is passed over). It
# starts with a character set, so a search skips in C from one candidate to the next: most
# strings (words, paths, UUIDs, ids) cost one quick scan.
_PHONE_HINT = re.compile(
    r"[0-9+(](?<![\w.%+-].)(?:(?<=[+(])[0-9]|(?=[0-9 ().-]{8})[0-9]{0,7}[ ().-])")
_DIGITS = frozenset("0123456789")
_TRUNK_DIGITS = 9  # fewer is a date (01.02.2026) or a short code, not a national number
_SHORTEST = 6  # a@b.co; no shorter string holds an e-mail or a phone


def mask_text(text: str) -> str:
    """`text` with every e-mail address and phone number in it replaced by [redacted]."""
    if len(text) < _SHORTEST:
        return text
    if "@" in text or "%40" in text:
        return _PII_TEXT.sub(_masked, text)
    if _PHONE_HINT.search(text) is None:
        return text
    return _PHONE_TEXT.sub(_masked, text)


def _masked(match: re.Match[str]) -> str:
    if match.lastgroup == "trunk" and sum(c in _DIGITS for c in match[0]) < _TRUNK_DIGITS:
        return match[0]
    return REDACTED


class Redactor:
    """Processor replacing the values of secret and PII keys, at any depth, with [redacted],
    and e-mail addresses and phone numbers in any string (mask_text)."""

    def __init__(self, pii_fields: Iterable[str]) -> None:
        self.keys = SECRET_KEYS | PII_KEYS | {f.lower() for f in pii_fields}
        self._verdicts: dict[str, bool] = {}

    def hides(self, key: Any) -> bool:
        """True if `key`'s value is never logged."""
        verdict = self._verdicts.get(key)
        if verdict is None:
            lowered = str(key).lower()
            verdict = lowered in self.keys or any(part in lowered for part in SECRET_PARTS)
            if len(self._verdicts) < _CACHE_LIMIT:
                self._verdicts[key] = verdict
        return verdict

    def mask(self, value: Any) -> Any:
        """`value` with what hidden keys hold, and e-mails and phones in its strings, at any
        depth, replaced by [redacted] (a copy; the console masks its pages and answers with
        it too)."""
        if value.__class__ is str:
            return mask_text(value)
        if isinstance(value, dict):
            return {k: REDACTED if self.hides(k) else self.mask(v) for k, v in value.items()}
        if isinstance(value, list | tuple):
            return [self.mask(v) for v in value]
        return value

    def __call__(
        self, logger: Any, method: str, event_dict: MutableMapping[str, Any]
    ) -> MutableMapping[str, Any]:
        texts = []
        for key, value in event_dict.items():
            if self.hides(key):
                event_dict[key] = REDACTED
            elif value.__class__ is str:
                texts.append(value)
            elif value.__class__ in _CONTAINERS:
                event_dict[key] = self.mask(value)
        # One look at all the line's strings at once (a search costs more to start than to
        # run): most lines hold no @ and nothing shaped like a phone.
        joined = "\n".join(texts)
        if "@" in joined or "%40" in joined or _PHONE_HINT.search(joined) is not None:
            for key, value in event_dict.items():
                if value.__class__ is str:
                    event_dict[key] = mask_text(value)
        return event_dict


_CONTAINERS = (dict, list, tuple)
# user:password@ in a URL a library put in its message
_URL_PASSWORD = re.compile(r"(?P<scheme>[A-Za-z][A-Za-z0-9+.-]*://[^/\s:@]*):[^@\s/]*@")


class StdlibRecords(logging.Handler):
    """A stdlib logging handler writing each record as our JSON line: `event` is the message
    (passwords in URLs redacted), `logger` the library's logger, then the same processors
    as structlog's own lines (context, level, time, redaction, exception)."""

    def __init__(self, processors: list[Callable[..., Any]], output: Any) -> None:
        super().__init__()
        self.processors = processors
        self.output = output

    def emit(self, record: logging.LogRecord) -> None:
        try:
            method = record.levelname.lower()
            event: Any = {"event": _URL_PASSWORD.sub(r"\g<scheme>:[redacted]@",
                                                     record.getMessage()),
                          "logger": record.name}
            if record.exc_info:
                event["exc_info"] = record.exc_info
            for processor in self.processors:
                event = processor(None, method, event)
            self.output.write(event + b"\n")
        except Exception:
            self.handleError(record)


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
    return orjson.dumps(obj, default=str, option=orjson.OPT_UTC_Z)


def _timestamp(logger: Any, method: str, event_dict: MutableMapping[str, Any]) -> Any:
    """The time as a datetime, which orjson writes as ISO 8601 with Z
    (2026-11-29T09:24:39.391871Z, as structlog's TimeStamper(fmt="iso", utc=True) does, in
    half its time: no isoformat on the hot path)."""
    event_dict["timestamp"] = datetime.now(UTC)
    return event_dict


def configure_logging(level: str = "info", pii_fields: Iterable[str] = ()) -> None:
    """Configure structlog, and the standard library's logging, for the process (JSON lines
    on stdout)."""
    output = LineBuffer(sys.stdout.buffer)
    atexit.register(output.close)
    processors: list[Callable[..., Any]] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        _timestamp,
        # after the traceback is text: an exception's message is free text too (a unique
        # violation names the e-mail that was already there)
        structlog.processors.format_exc_info,
        Redactor(pii_fields),
        structlog.processors.JSONRenderer(serializer=_orjson_dumps),
    ]
    threshold = logging.getLevelNamesMapping()[level.upper()]
    structlog.configure(
        processors=processors,
        wrapper_class=structlog.make_filtering_bound_logger(threshold),
        logger_factory=structlog.BytesLoggerFactory(cast(BinaryIO, output)),  # write, flush
        cache_logger_on_first_use=True,
    )
    # Libraries' records: warnings and worse (their info and debug lines are chatter), as our
    # lines instead of Python's default format on stderr.
    root = logging.getLogger()
    for handler in [h for h in root.handlers if isinstance(h, StdlibRecords)]:
        root.removeHandler(handler)
    records = StdlibRecords(processors, output)
    records.setLevel(max(threshold, logging.WARNING))
    root.addHandler(records)
    root.setLevel(min(root.level or logging.WARNING, records.level))
    logging.captureWarnings(True)
