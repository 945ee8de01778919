"""The `as = ...` conversions of a mapping expression, and free-text sanitising (pure).

A value a converter cannot take raises BadValue, whose message names what was expected,
never the value.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

TEXT_MAX = 1000
# From 2**53 on a float no longer holds every integer: 9007199254740993.0 parses as
# 9007199254740992.0, like 9007199254740992.0 itself. A number that reached us as a float
# there (a JSON number written with a fraction or an exponent, or an integer beyond 64 bits,
# which orjson parses as a float) may stand for a neighbour too, so it is refused (the field
# is unmappable) rather than let two ids collide. Integers (orjson: up to 64 bits) are exact.
EXACT_FLOAT = 2**53


class BadValue(Exception):
    """A value a converter cannot take; `message` names what was expected, never the value."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message



def map_key(value: Any) -> str | None:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return str(value)
    return None


def _exact(value: float) -> float:
    if not -EXACT_FLOAT < value < EXACT_FLOAT:
        raise BadValue("is a number too large to be exact (an integer of at most 64 bits or a "
                       "string is)")
    return value


def as_str(value: Any) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)  # str(int) is exact, so 64-bit Shopify ids survive
    if isinstance(value, float):
        return str(_exact(value))
    raise BadValue("must be a string, a number or a boolean")


def _as_int(value: Any) -> int:
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(_exact(value))
    if isinstance(value, str):
        text = value.strip()
        digits = text[1:] if text[:1] in ("+", "-") else text
        # isascii + isdigit: int() alone would also take "1_000" and non-ASCII digits.
        if digits.isascii() and digits.isdigit() and len(digits) <= 30:
            return int(text)
    raise BadValue("must be an integer")


def _as_float(value: Any) -> float:
    if isinstance(value, int | float) and not isinstance(value, bool):
        try:
            result = float(value)
        except OverflowError:
            raise BadValue("must be a finite number") from None
    elif isinstance(value, str) and value.isascii() and "_" not in value:
        try:
            result = float(value)
        except ValueError:
            raise BadValue("must be a number") from None
    else:
        raise BadValue("must be a number")
    if not math.isfinite(result):
        raise BadValue("must be a finite number")
    return result


_TRUE = frozenset({"true", "1", "yes", "y", "on"})
_FALSE = frozenset({"false", "0", "no", "n", "off"})


def _as_bool(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, int) and value in (0, 1):
        return bool(value)
    if isinstance(value, str):
        text = value.strip().lower()
        if text in _TRUE:
            return True
        if text in _FALSE:
            return False
    raise BadValue("must be a boolean")


def _as_lower(value: Any) -> str | None:
    return as_str(value).strip().lower() or None


def _as_upper(value: Any) -> str | None:
    return as_str(value).strip().upper() or None


def _as_text(value: Any) -> str | None:
    return sanitize_text(as_str(value)) or None


_ZERO = timedelta(0)
# A date-time that isoformat() would write back as it is (with +00:00 as Z): the usual
# provider timestamp, which then skips isoformat (the dearest step of the conversion).
_CANONICAL_DATETIME = re.compile(
    r"[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}(?:\.[0-9]{6})?(?:Z|[+-][0-9]{2}:[0-9]{2})"
)


def _as_datetime(value: Any) -> str:
    if isinstance(value, str):
        text = value.strip()
        try:
            moment = datetime.fromisoformat(text)
        except ValueError:
            raise BadValue("must be an ISO 8601 date-time") from None
        if _CANONICAL_DATETIME.fullmatch(text) and (moment.microsecond or "." not in text):
            return text[:-6] + "Z" if moment.utcoffset() == _ZERO and text[-1] != "Z" else text
    elif isinstance(value, int | float) and not isinstance(value, bool):
        try:
            moment = datetime.fromtimestamp(value, UTC)
        except (OverflowError, OSError, ValueError):
            raise BadValue("must be a Unix time in seconds") from None
    else:
        raise BadValue("must be an ISO 8601 date-time")
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    text = moment.isoformat()
    return text[:-6] + "Z" if text.endswith("+00:00") else text


CONVERTERS: dict[str, Callable[[Any], Any]] = {
    "str": as_str,
    "int": _as_int,
    "float": _as_float,
    "bool": _as_bool,
    "lower": _as_lower,
    "upper": _as_upper,
    "text": _as_text,
    "datetime": _as_datetime,
}


# --- free text ---------------------------------------------------------------------------

# Control characters go (tab and newline stay); line breaks of every kind become "\n";
# zero-width and bidirectional-override characters go (they hide or reorder text).
_TEXT_TABLE: dict[int, str | None] = {
    c: None for c in (*range(0x00, 0x20), *range(0x7F, 0xA0)) if c not in (0x09, 0x0A)
}
_TEXT_TABLE.update({0x0D: "\n", 0x85: "\n", 0x2028: "\n", 0x2029: "\n"})
_TEXT_TABLE.update(
    {
        c: None
        for c in (
            *range(0x200B, 0x2010),
            *range(0x202A, 0x202F),
            *range(0x2060, 0x2065),
            *range(0x2066, 0x206A),
            0xFEFF,
        )
    }
)
_TAG_START = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ/!?")


def sanitize_text(text: str, limit: int = TEXT_MAX) -> str:
    """Free text made safe to store and show: see `as = "text"` in the module docstring."""
    if not (text.isascii() and text.isprintable()):  # printable ASCII needs no translation
        text = text.translate(_TEXT_TABLE)
    if "<" in text:
        text = _strip_tags(text)
    if "\n" in text:
        lines = (" ".join(line.split()) for line in text.split("\n"))
        text = "\n".join(line for line in lines if line)
    else:
        text = " ".join(text.split())
    if len(text) > limit:
        text = text[:limit].rstrip()
    return text


def _strip_tags(text: str) -> str:
    """Remove `<tag ...>`, `</tag>`, `<!...>` and `<?...>`; a lone "<" (as in "a < b") stays."""
    out: list[str] = []
    start = 0
    while True:
        lt = text.find("<", start)
        if lt < 0:
            break
        if text[lt + 1 : lt + 2] not in _TAG_START:  # also true at the very end ("")
            out.append(text[start : lt + 1])
            start = lt + 1
            continue
        gt = text.find(">", lt + 1)
        if gt < 0:
            break
        out.append(text[start:lt])
        out.append(" ")  # "<br>" between words must not glue them together
        start = gt + 1
    out.append(text[start:])
    return "".join(out)
