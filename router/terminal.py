"""Stored text made safe to print on an operator's terminal (`dlq`, `trace`)."""

from __future__ import annotations


def printable(text: str, keep: str = "", *, json: bool = False) -> str:
    """`text` safe for a terminal: every character Python does not call printable (controls
    such as ESC, CR and newline, C1 codes, bidi overrides, line separators) becomes its
    escape (\\x1b, \\n, \\u202e), except those in `keep`. A stored header or body then
    cannot move the cursor, recolour the screen or forge extra lines of our output.

    With `json`, the escapes are JSON's (\\u001b, surrogate pairs past U+FFFF): for JSON
    text, whose strings may carry C1 codes and bidi overrides raw, and stays the same JSON."""
    if text.isprintable():
        return text
    return "".join(c if c.isprintable() or c in keep else _escape(c, json) for c in text)


_SHORT_ESCAPES = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}


def _escape(char: str, json: bool) -> str:
    if char in _SHORT_ESCAPES:
        return _SHORT_ESCAPES[char]
    code = ord(char)
    if code < 0x100 and not json:
        return f"\\x{code:02x}"
    if code < 0x10000:
        return f"\\u{code:04x}"
    if not json:
        return f"\\U{code:08x}"
    high, low = divmod(code - 0x10000, 0x400)
    return f"\\u{0xD800 + high:04x}\\u{0xDC00 + low:04x}"
