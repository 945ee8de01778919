"""What every verification scheme is made of, and the pieces several of them share.

A scheme is a `Verifier` (prepared once from a source's settings, called per request) and a
builder that makes one from the resolved secrets and the source's `options` table, read
through `Options` so that every problem names its key.  Everything here is pure: bytes,
headers, secrets and the clock go in; None, a bool, headers or a typed error come out.
"""

from __future__ import annotations

import base64
import binascii
import hmac
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from router.errors import ConfigError, Unauthorized

DEFAULT_TOLERANCE = 300  # seconds; Stripe's and Standard Webhooks' own default


class Verifier(Protocol):
    """One source's verification scheme, prepared once and called per request."""

    scheme: str
    # True when the signature covers the body and nothing else (no timestamp, no delivery
    # id): a captured request still verifies under any other headers, as often as it is sent.
    signs_only_body: bool

    def verify(self, body: bytes, headers: Mapping[str, str], now: float) -> None:
        """Return if the request is authentic; raise `Unauthorized` (with a reason) if not.

        `headers` must be case-insensitive (aiohttp's CIMultiDictProxy); `now` is unix seconds.
        """
        ...

    def is_ping(self, body: bytes, headers: Mapping[str, str]) -> bool:
        """True only for WooCommerce's unsigned creation ping, which wants a plain 200."""
        ...

    def sign(self, body: bytes, now: float, delivery_id: str) -> dict[str, str]:
        """The headers the provider would send with `body`, signed with the first secret.

        Raises ValueError where this verifier cannot sign (a JWT public key without a
        `signing_key`).
        """
        ...


@dataclass(frozen=True)
class Scheme:
    """A registry entry: the options a source may set for the scheme, and its builder."""

    options: frozenset[str]
    build: Builder


class SchemeBase:
    """Defaults shared by every scheme: only WooCommerce has a ping."""

    __slots__ = ("scheme", "signs_only_body")

    def __init__(self, scheme: str, *, signs_only_body: bool = False) -> None:
        self.scheme = scheme
        self.signs_only_body = signs_only_body

    def is_ping(self, body: bytes, headers: Mapping[str, str]) -> bool:
        return False


ENCODINGS: dict[str, Callable[[bytes], bytes]] = {
    "hex": binascii.hexlify,  # lowercase, as every provider sends it
    "base64": base64.b64encode,
}


class HmacKeys:
    """One keyed HMAC per secret, prepared once; `.copy()` per request skips re-keying.

    Signatures are compared in their encoded form (hex or base64), byte for byte, as the
    providers' own libraries do.
    """

    __slots__ = ("_macs", "_encode")

    def __init__(self, keys: Iterable[bytes], digestmod: Callable[..., Any], encoding: str) -> None:
        self._macs = tuple(hmac.new(key, digestmod=digestmod) for key in keys)
        self._encode = ENCODINGS[encoding]

    def matches(self, received: Sequence[bytes], *chunks: bytes) -> bool:
        """True if any received signature is that of the concatenated chunks under any secret."""
        for base in self._macs:
            mac = base.copy()
            for chunk in chunks:
                mac.update(chunk)
            expected = self._encode(mac.digest())
            for signature in received:
                if hmac.compare_digest(expected, signature):
                    return True
        return False

    def sign(self, *chunks: bytes) -> str:
        """The encoded signature of the concatenated chunks under the first secret."""
        return self.sign_all(*chunks)[0]

    def sign_all(self, *chunks: bytes) -> list[str]:
        """The encoded signatures of the concatenated chunks, one per secret, in order."""
        signatures = []
        for base in self._macs:
            mac = base.copy()
            for chunk in chunks:
                mac.update(chunk)
            signatures.append(self._encode(mac.digest()).decode("ascii"))
        return signatures


def any_match(secrets: Iterable[bytes], received: bytes) -> bool:
    """Constant-time comparison of a received token or password with each secret."""
    for secret in secrets:
        if hmac.compare_digest(secret, received):
            return True
    return False


def to_bytes(value: str) -> bytes | None:
    """A header value back as the bytes that were sent (aiohttp decodes surrogateescape)."""
    try:
        return value.encode("utf-8", "surrogateescape")
    except UnicodeEncodeError:
        return None


def parse_timestamp(value: str) -> int | None:
    """Unix seconds as sent in a header, or None; the length cap keeps int() cheap and safe."""
    value = value.strip()
    if 0 < len(value) <= 15 and value.isascii() and value.isdigit():
        return int(value)
    return None


def check_timestamp(header: str, value: str | None, now: float, tolerance: float) -> int:
    """The timestamp in `value`, which must be present, numeric and within tolerance of now."""
    if not value:
        raise Unauthorized(f"{header} header is missing", reason="missing_signature")
    timestamp = parse_timestamp(value)
    if timestamp is None:
        raise Unauthorized(f"{header} is not a unix timestamp", reason="invalid_signature")
    if abs(now - timestamp) > tolerance:
        raise Unauthorized(
            f"{header} is {abs(now - timestamp):.0f} s away from the server clock"
            f" (tolerance {tolerance:g} s)",
            reason="timestamp_out_of_tolerance",
        )
    return timestamp


class Options:
    """A source's scheme settings with the file and key, so every problem names its key."""

    def __init__(
        self, scheme: str, options: Mapping[str, Any], allowed: frozenset[str], file: str, key: str
    ) -> None:
        self.scheme = scheme
        self.file = file
        self.key = key
        self._options = options
        for name in sorted(options):
            if name not in allowed:
                known = ", ".join(sorted(allowed)) or "none"
                raise self.error(name, f"not an option of scheme {scheme!r} (options: {known})")

    def error(self, name: str, problem: str) -> ConfigError:
        """A problem with option `name`, which lives in the source's `options` table."""
        return ConfigError(self.file, f"{self.key}.options.{name}", problem)

    def secret_error(self, index: int, problem: str) -> ConfigError:
        return ConfigError(self.file, f"{self.key}.secrets[{index}]", problem)

    def has(self, name: str) -> bool:
        return name in self._options

    def text(
        self, name: str, default: str | None = None, *, choices: Iterable[str] = ()
    ) -> str | None:
        value = self._options.get(name, default)
        if value is None:
            return None
        if not isinstance(value, str):
            raise self.error(name, "must be a string")
        allowed = tuple(choices)
        if allowed and value not in allowed:
            raise self.error(name, f"must be one of {', '.join(map(repr, allowed))}")
        return value

    def required_text(self, name: str) -> str:
        value = self.text(name)
        if not value:
            raise self.error(name, f"is required by scheme {self.scheme!r}")
        return value

    def seconds(self, name: str, default: float, *, allow_zero: bool = False) -> float:
        value = self._options.get(name, default)
        lowest = "0 or more" if allow_zero else "more than 0"
        if (
            isinstance(value, bool)
            or not isinstance(value, int | float)
            or value < 0
            or (value == 0 and not allow_zero)
        ):
            raise self.error(name, f"must be a number of seconds, {lowest}")
        return value

    def text_list(self, name: str, default: Sequence[str]) -> list[str]:
        value = self._options.get(name, default)
        if not isinstance(value, list | tuple) or not all(isinstance(v, str) for v in value):
            raise self.error(name, "must be a list of strings")
        return list(value)

    def text_or_list(self, name: str) -> str | list[str] | None:
        value = self._options.get(name)
        if value is None or isinstance(value, str):
            return value
        values = self.text_list(name, [])
        if not values:
            raise self.error(name, "must be a string or a non-empty list of strings")
        return values


Builder = Callable[[Sequence[bytes], Options], Verifier]
