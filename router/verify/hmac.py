"""HMAC over the body: the generic `hmac` scheme and the Shopify, WooCommerce, GitHub,
EasyPost and AfterShip presets (a fixed header and encoding over the raw body).

    shopify      X-Shopify-Hmac-Sha256     base64(HMAC-SHA256(secret, body))
    woocommerce  X-WC-Webhook-Signature    the same; plus the unsigned `webhook_id=N` ping
    github       X-Hub-Signature-256       sha256=<hex>
    easypost     X-Hmac-Signature          hmac-sha256-hex=<hex>, key NFKD-normalised
    aftership    aftership-hmac-sha256     base64
    hmac         any header, sha256/sha512, hex/base64, optional prefix, and optionally a
                 timestamp header inside a `signed_content` template ("{timestamp}.{body}")
"""

from __future__ import annotations

import hashlib
import re
import unicodedata
from collections.abc import Callable, Mapping, Sequence
from enum import Enum

from router.errors import Unauthorized
from router.verify.scheme import (
    DEFAULT_TOLERANCE,
    ENCODINGS,
    Builder,
    HmacKeys,
    Options,
    Scheme,
    SchemeBase,
    Verifier,
    check_timestamp,
    to_bytes,
)


class _Part(Enum):
    BODY = "body"
    TIMESTAMP = "timestamp"


_Template = tuple[bytes | _Part, ...]


# --- the verifier ------------------------------------------------------------------------


class HmacVerifier(SchemeBase):
    """An HMAC of the raw body (or of a template with a timestamp) in one header."""

    __slots__ = (
        "_keys",
        "_header",
        "_prefix",
        "_timestamp_header",
        "_template",
        "_tolerance",
    )

    def __init__(
        self,
        scheme: str,
        keys: HmacKeys,
        *,
        header: str,
        prefix: str = "",
        timestamp_header: str | None = None,
        template: _Template | None = None,
        tolerance: float = DEFAULT_TOLERANCE,
    ) -> None:
        # Only a signed timestamp bounds how long a captured request can be replayed.
        super().__init__(scheme, signs_only_body=template is None
                         or _Part.TIMESTAMP not in template)
        self._keys = keys
        self._header = header
        self._prefix = prefix
        self._timestamp_header = timestamp_header
        self._template = template  # None: the raw body alone is signed
        self._tolerance = tolerance

    def verify(self, body: bytes, headers: Mapping[str, str], now: float) -> None:
        value = headers.get(self._header)
        if not value:
            raise Unauthorized(f"{self._header} header is missing", reason="missing_signature")
        value = value.strip()
        received = to_bytes(value.removeprefix(self._prefix))
        if received is None or not value.startswith(self._prefix):
            raise Unauthorized(f"{self._header} is malformed", reason="invalid_signature")
        timestamp = ""
        if self._timestamp_header is not None:
            timestamp = headers.get(self._timestamp_header) or ""
            check_timestamp(self._timestamp_header, timestamp, now, self._tolerance)
        if not self._keys.matches((received,), *self._content(body, timestamp)):
            raise Unauthorized(
                f"{self._header} does not match the body", reason="invalid_signature"
            )

    def sign(self, body: bytes, now: float, delivery_id: str) -> dict[str, str]:
        timestamp = str(int(now))
        headers = {self._header: self._prefix + self._keys.sign(*self._content(body, timestamp))}
        if self._timestamp_header is not None:
            headers[self._timestamp_header] = timestamp
        return headers

    def _content(self, body: bytes, timestamp: str) -> Sequence[bytes]:
        if self._template is None:
            return (body,)
        stamp = timestamp.strip().encode("ascii")
        return [
            body if part is _Part.BODY else stamp if part is _Part.TIMESTAMP else part
            for part in self._template
        ]


class WooCommerceVerifier(HmacVerifier):
    """WooCommerce's HMAC, plus the unsigned `webhook_id=N` ping sent when a hook is created."""

    __slots__ = ()

    def is_ping(self, body: bytes, headers: Mapping[str, str]) -> bool:
        return (
            body.startswith(b"webhook_id=")
            and body[len(b"webhook_id=") :].isdigit()
            and not headers.get("X-WC-Webhook-Signature")
        )


# --- builders ----------------------------------------------------------------------------


def _hmac_preset(
    scheme: str,
    header: str,
    encoding: str,
    prefix: str = "",
    prepare_key: Callable[[bytes, int, Options], bytes] | None = None,
    cls: type[HmacVerifier] = HmacVerifier,
) -> Builder:
    """A builder for a provider whose scheme is a fixed HMAC header over the raw body."""

    def build(secrets: Sequence[bytes], options: Options) -> Verifier:
        keys = secrets
        if prepare_key is not None:
            keys = [prepare_key(s, n, options) for n, s in enumerate(secrets)]
        return cls(
            scheme,
            HmacKeys(keys, hashlib.sha256, encoding),
            header=header,
            prefix=prefix,
        )

    return build


def _nfkd_key(secret: bytes, index: int, options: Options) -> bytes:
    """EasyPost normalises its secret (NFKD) before using it as the HMAC key."""
    try:
        return unicodedata.normalize("NFKD", secret.decode("utf-8")).encode("utf-8")
    except UnicodeDecodeError:
        raise options.secret_error(index, "is not UTF-8 text") from None


_PLACEHOLDER = re.compile(r"(\{[^{}]*\})")
_DIGESTS = {"sha256": hashlib.sha256, "sha512": hashlib.sha512}


def _compile_template(template: str, has_timestamp: bool, options: Options) -> _Template:
    parts: list[bytes | _Part] = []
    for piece in _PLACEHOLDER.split(template):
        if piece in ("{body}", "{timestamp}"):
            part = _Part(piece[1:-1])
            if part is _Part.TIMESTAMP and not has_timestamp:
                raise options.error(
                    "signed_content", "uses {timestamp} but timestamp_header is not set"
                )
            parts.append(part)
        elif "{" in piece or "}" in piece:
            raise options.error(
                "signed_content", f"unknown placeholder {piece!r}; use {{body}} and {{timestamp}}"
            )
        elif piece:
            parts.append(piece.encode("utf-8"))
    if _Part.BODY not in parts:
        raise options.error("signed_content", "must contain {body}")
    return tuple(parts)


def _build_generic_hmac(secrets: Sequence[bytes], options: Options) -> Verifier:
    header = options.required_text("header")
    algorithm = options.text("algorithm", "sha256", choices=_DIGESTS) or "sha256"
    encoding = options.text("encoding", "hex", choices=ENCODINGS) or "hex"
    prefix = options.text("prefix", "") or ""
    timestamp_header = options.text("timestamp_header") or None
    if timestamp_header is None and options.has("tolerance"):
        raise options.error("tolerance", "needs timestamp_header")
    default_template = "{timestamp}.{body}" if timestamp_header else "{body}"
    template_text = options.text("signed_content", default_template) or default_template
    template = _compile_template(template_text, timestamp_header is not None, options)
    return HmacVerifier(
        "hmac",
        HmacKeys(secrets, _DIGESTS[algorithm], encoding),
        header=header,
        prefix=prefix,
        timestamp_header=timestamp_header,
        template=None if template == (_Part.BODY,) else template,
        tolerance=options.seconds("tolerance", DEFAULT_TOLERANCE),
    )


SCHEMES: dict[str, Scheme] = {
    "shopify": Scheme(frozenset(), _hmac_preset("shopify", "X-Shopify-Hmac-Sha256", "base64")),
    "woocommerce": Scheme(
        frozenset(),
        _hmac_preset(
            "woocommerce", "X-WC-Webhook-Signature", "base64", cls=WooCommerceVerifier
        ),
    ),
    "github": Scheme(frozenset(), _hmac_preset("github", "X-Hub-Signature-256", "hex", "sha256=")),
    "easypost": Scheme(
        frozenset(),
        _hmac_preset(
            "easypost", "X-Hmac-Signature", "hex", "hmac-sha256-hex=", prepare_key=_nfkd_key
        ),
    ),
    "aftership": Scheme(
        frozenset(), _hmac_preset("aftership", "aftership-hmac-sha256", "base64")
    ),
    "hmac": Scheme(
        frozenset(
            {"header", "algorithm", "encoding", "prefix", "timestamp_header", "signed_content",
             "tolerance"}
        ),
        _build_generic_hmac,
    ),
}
