"""Webhook verification schemes, byte-exact with the providers.

`build_verifier()` turns a source's settings into a `Verifier` once, at start-up: keys are
decoded, normalised, loaded and wrapped in HMAC objects there, so `verify()` on the request
path only hashes and compares. Everything here is pure: bytes, headers, secrets and the clock
go in; None, a bool, headers or a typed error come out.

Failures raise `router.errors.Unauthorized` with one of these reasons:
missing_signature, invalid_signature, timestamp_out_of_tolerance,
missing_credentials, invalid_credentials, invalid_token, expired_token.
Messages name headers, never secrets or signatures (expected or received).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import re
import unicodedata
from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import UTC, datetime
from enum import Enum
from math import isfinite
from typing import Any, Protocol

import jwt
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from jwt.algorithms import HMACAlgorithm

from router.errors import ConfigError, Unauthorized

DEFAULT_TOLERANCE = 300  # seconds; Stripe's and Standard Webhooks' own default


class Verifier(Protocol):
    """One source's verification scheme, prepared once and called per request."""

    scheme: str

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


# --- shared pieces -------------------------------------------------------------------------


class _Scheme:
    """Defaults shared by every scheme: only WooCommerce has a ping."""

    __slots__ = ("scheme",)

    def __init__(self, scheme: str) -> None:
        self.scheme = scheme

    def is_ping(self, body: bytes, headers: Mapping[str, str]) -> bool:
        return False


_ENCODINGS: dict[str, Callable[[bytes], bytes]] = {
    "hex": binascii.hexlify,  # lowercase, as every provider sends it
    "base64": base64.b64encode,
}


class _HmacKeys:
    """One keyed HMAC per secret, prepared once; `.copy()` per request skips re-keying.

    Signatures are compared in their encoded form (hex or base64), byte for byte, as the
    providers' own libraries do.
    """

    __slots__ = ("_macs", "_encode")

    def __init__(self, keys: Iterable[bytes], digestmod: Callable[..., Any], encoding: str) -> None:
        self._macs = tuple(hmac.new(key, digestmod=digestmod) for key in keys)
        self._encode = _ENCODINGS[encoding]

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


def _any_match(secrets: Iterable[bytes], received: bytes) -> bool:
    """Constant-time comparison of a received token or password with each secret."""
    for secret in secrets:
        if hmac.compare_digest(secret, received):
            return True
    return False


def _to_bytes(value: str) -> bytes | None:
    """A header value back as the bytes that were sent (aiohttp decodes surrogateescape)."""
    try:
        return value.encode("utf-8", "surrogateescape")
    except UnicodeEncodeError:
        return None


def _parse_timestamp(value: str) -> int | None:
    """Unix seconds as sent in a header, or None; the length cap keeps int() cheap and safe."""
    value = value.strip()
    if 0 < len(value) <= 15 and value.isascii() and value.isdigit():
        return int(value)
    return None


def _check_timestamp(header: str, value: str | None, now: float, tolerance: float) -> int:
    """The timestamp in `value`, which must be present, numeric and within tolerance of now."""
    if not value:
        raise Unauthorized(f"{header} header is missing", reason="missing_signature")
    timestamp = _parse_timestamp(value)
    if timestamp is None:
        raise Unauthorized(f"{header} is not a unix timestamp", reason="invalid_signature")
    if abs(now - timestamp) > tolerance:
        raise Unauthorized(
            f"{header} is {abs(now - timestamp):.0f} s away from the server clock"
            f" (tolerance {tolerance:g} s)",
            reason="timestamp_out_of_tolerance",
        )
    return timestamp


def _iso_utc(now: float) -> str:
    return datetime.fromtimestamp(now, UTC).isoformat().replace("+00:00", "Z")


class _Part(Enum):
    BODY = "body"
    TIMESTAMP = "timestamp"


_Template = tuple[bytes | _Part, ...]


# --- HMAC over the body (Shopify, WooCommerce, GitHub, EasyPost, AfterShip, generic) --------


class HmacVerifier(_Scheme):
    """An HMAC of the raw body (or of a template with a timestamp) in one header."""

    __slots__ = (
        "_keys",
        "_header",
        "_prefix",
        "_timestamp_header",
        "_template",
        "_tolerance",
        "_delivery_headers",
    )

    def __init__(
        self,
        scheme: str,
        keys: _HmacKeys,
        *,
        header: str,
        prefix: str = "",
        timestamp_header: str | None = None,
        template: _Template | None = None,
        tolerance: float = DEFAULT_TOLERANCE,
        delivery_headers: Callable[[float, str], dict[str, str]] | None = None,
    ) -> None:
        super().__init__(scheme)
        self._keys = keys
        self._header = header
        self._prefix = prefix
        self._timestamp_header = timestamp_header
        self._template = template  # None: the raw body alone is signed
        self._tolerance = tolerance
        self._delivery_headers = delivery_headers

    def verify(self, body: bytes, headers: Mapping[str, str], now: float) -> None:
        value = headers.get(self._header)
        if not value:
            raise Unauthorized(f"{self._header} header is missing", reason="missing_signature")
        value = value.strip()
        received = _to_bytes(value.removeprefix(self._prefix))
        if received is None or not value.startswith(self._prefix):
            raise Unauthorized(f"{self._header} is malformed", reason="invalid_signature")
        timestamp = ""
        if self._timestamp_header is not None:
            timestamp = headers.get(self._timestamp_header) or ""
            _check_timestamp(self._timestamp_header, timestamp, now, self._tolerance)
        if not self._keys.matches((received,), *self._content(body, timestamp)):
            raise Unauthorized(
                f"{self._header} does not match the body", reason="invalid_signature"
            )

    def sign(self, body: bytes, now: float, delivery_id: str) -> dict[str, str]:
        timestamp = str(int(now))
        headers = {self._header: self._prefix + self._keys.sign(*self._content(body, timestamp))}
        if self._timestamp_header is not None:
            headers[self._timestamp_header] = timestamp
        if self._delivery_headers is not None:
            headers.update(self._delivery_headers(now, delivery_id))
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


# --- Stripe ----------------------------------------------------------------------------------


class StripeVerifier(_Scheme):
    """`Stripe-Signature: t=<unix>,v1=<hex>[,v1=...]` over `"<t>.<body>"`."""

    __slots__ = ("_keys", "_tolerance")
    HEADER = "Stripe-Signature"

    def __init__(self, keys: _HmacKeys, tolerance: float) -> None:
        super().__init__("stripe")
        self._keys = keys
        self._tolerance = tolerance

    def verify(self, body: bytes, headers: Mapping[str, str], now: float) -> None:
        value = headers.get(self.HEADER)
        if not value:
            raise Unauthorized(f"{self.HEADER} header is missing", reason="missing_signature")
        stamp = ""
        received: list[bytes] = []
        for item in value.split(","):
            name, _, field = item.partition("=")
            name = name.strip()
            if name == "t":
                stamp = field
            elif name == "v1":  # other schemes (v0: test mode) are ignored, as Stripe does
                signature = _to_bytes(field.strip())
                if signature is not None:
                    received.append(signature)
        if not stamp or not received:
            raise Unauthorized(
                f"{self.HEADER} has no t= or no v1= entry", reason="invalid_signature"
            )
        timestamp = _check_timestamp(f"{self.HEADER} t=", stamp, now, self._tolerance)
        # Stripe's SDKs sign the timestamp as a formatted int, not as the raw header text.
        if not self._keys.matches(received, b"%d." % timestamp, body):
            raise Unauthorized(f"{self.HEADER} does not match the body", reason="invalid_signature")

    def sign(self, body: bytes, now: float, delivery_id: str) -> dict[str, str]:
        timestamp = int(now)
        signature = self._keys.sign(b"%d." % timestamp, body)
        return {self.HEADER: f"t={timestamp},v1={signature}"}


# --- Standard Webhooks / Svix ----------------------------------------------------------------


class StandardWebhooksVerifier(_Scheme):
    """`webhook-id/-timestamp/-signature` (or the same with `svix-`), base64 HMAC-SHA256."""

    __slots__ = ("_keys", "_tolerance")
    FAMILIES = (
        ("webhook-id", "webhook-timestamp", "webhook-signature"),
        ("svix-id", "svix-timestamp", "svix-signature"),
    )

    def __init__(self, keys: _HmacKeys, tolerance: float) -> None:
        super().__init__("standard-webhooks")
        self._keys = keys
        self._tolerance = tolerance

    def verify(self, body: bytes, headers: Mapping[str, str], now: float) -> None:
        # One family or the other, never a mix: the first whose signature header is present.
        id_header, timestamp_header, signature_header = self.FAMILIES[0]
        value = headers.get(signature_header)
        if not value:
            id_header, timestamp_header, signature_header = self.FAMILIES[1]
            value = headers.get(signature_header)
        if not value:
            raise Unauthorized("webhook-signature header is missing", reason="missing_signature")
        msg_id = headers.get(id_header)
        if not msg_id:
            raise Unauthorized(f"{id_header} header is missing", reason="missing_signature")
        timestamp = _check_timestamp(
            timestamp_header, headers.get(timestamp_header), now, self._tolerance
        )
        received: list[bytes] = []
        for item in value.split():
            version, _, signature = item.partition(",")
            if version == "v1":  # other versions (v1a: asymmetric) are not ours to check
                encoded = _to_bytes(signature)
                if encoded is not None:
                    received.append(encoded)
        prefix = _to_bytes(f"{msg_id}.{timestamp}.")
        if not received or prefix is None:
            raise Unauthorized(f"{signature_header} is malformed", reason="invalid_signature")
        if not self._keys.matches(received, prefix, body):
            raise Unauthorized(
                f"{signature_header} does not match the body", reason="invalid_signature"
            )

    def sign(self, body: bytes, now: float, delivery_id: str) -> dict[str, str]:
        """The three headers, with one `v1,` signature per secret (space-separated), so a
        receiver holding any of the keys being rotated verifies."""
        timestamp = int(now)
        signatures = self._keys.sign_all(f"{delivery_id}.{timestamp}.".encode(), body)
        return {
            "webhook-id": delivery_id,
            "webhook-timestamp": str(timestamp),
            "webhook-signature": " ".join("v1," + signature for signature in signatures),
        }


# --- Bearer, Basic, JWT ----------------------------------------------------------------------


def _bearer_token(headers: Mapping[str, str], header: str, bad_reason: str) -> str:
    """The token in `Bearer <token>`; a custom header may also carry the bare token."""
    value = headers.get(header, "").strip()
    if not value:
        raise Unauthorized(f"{header} header is missing", reason="missing_credentials")
    kind, _, token = value.partition(" ")
    if kind.lower() == "bearer":
        token = token.strip()
    elif header.lower() == "authorization":
        raise Unauthorized(f"{header} is not a Bearer credential", reason=bad_reason)
    else:
        token = value
    if not token:
        raise Unauthorized(f"{header} carries no token", reason="missing_credentials")
    return token


def _bearer_value(header: str, token: str) -> str:
    return f"Bearer {token}" if header.lower() == "authorization" else token


class BearerVerifier(_Scheme):
    """A static token that must equal one of the secrets."""

    __slots__ = ("_tokens", "_header")

    def __init__(self, tokens: Sequence[bytes], header: str) -> None:
        super().__init__("bearer")
        self._tokens = tuple(tokens)
        self._header = header

    def verify(self, body: bytes, headers: Mapping[str, str], now: float) -> None:
        token = _to_bytes(_bearer_token(headers, self._header, "invalid_credentials"))
        if token is None or not _any_match(self._tokens, token):
            raise Unauthorized(f"{self._header} token is not valid", reason="invalid_credentials")

    def sign(self, body: bytes, now: float, delivery_id: str) -> dict[str, str]:
        return {self._header: _bearer_value(self._header, self._tokens[0].decode())}


class BasicVerifier(_Scheme):
    """`Authorization: Basic base64(user:password)`; the secrets are the accepted passwords."""

    __slots__ = ("_username", "_passwords")
    HEADER = "Authorization"

    def __init__(self, username: bytes, passwords: Sequence[bytes]) -> None:
        super().__init__("basic")
        self._username = username
        self._passwords = tuple(passwords)

    def verify(self, body: bytes, headers: Mapping[str, str], now: float) -> None:
        value = headers.get(self.HEADER, "").strip()
        if not value:
            raise Unauthorized(f"{self.HEADER} header is missing", reason="missing_credentials")
        kind, _, encoded = value.partition(" ")
        try:
            decoded = base64.b64decode(encoded.strip(), validate=True)
        except ValueError:  # binascii.Error, or non-ASCII text
            decoded = b""
        username, colon, password = decoded.partition(b":")
        if kind.lower() != "basic" or not colon:
            raise Unauthorized(
                f"{self.HEADER} is not Basic credentials", reason="invalid_credentials"
            )
        # Both comparisons always run, so timing does not tell which one failed.
        user_ok = hmac.compare_digest(username, self._username)
        password_ok = _any_match(self._passwords, password)
        if not (user_ok & password_ok):
            raise Unauthorized("username or password is not valid", reason="invalid_credentials")

    def sign(self, body: bytes, now: float, delivery_id: str) -> dict[str, str]:
        credentials = base64.b64encode(self._username + b":" + self._passwords[0])
        return {self.HEADER: "Basic " + credentials.decode("ascii")}


class JwtVerifier(_Scheme):
    """A JWT bearer token: signature by PyJWT, exp/nbf/iat against the `now` given."""

    __slots__ = (
        "_header",
        "_keys",
        "_issuer",
        "_audience",
        "_leeway",
        "_require",
        "_decode_options",
        "_signing",
    )

    def __init__(
        self,
        *,
        header: str,
        keys: Mapping[str, Sequence[Any]],
        issuer: str | None,
        audience: str | list[str] | None,
        leeway: float,
        require: Sequence[str],
        signing: tuple[str, Any] | None,
    ) -> None:
        super().__init__("jwt")
        self._header = header
        # algorithm -> the keys that verify it: HS* secrets (bytes) or loaded public keys
        self._keys = dict(keys)
        self._issuer = issuer
        self._audience = audience
        self._leeway = leeway
        self._require = list(require)
        # PyJWT reads its own clock, so its time checks are off and done against `now` below.
        self._decode_options: Any = {
            "verify_exp": False,
            "verify_nbf": False,
            "verify_iat": False,
            "require": self._require,
        }
        self._signing = signing

    def verify(self, body: bytes, headers: Mapping[str, str], now: float) -> None:
        token = _bearer_token(headers, self._header, "invalid_token")
        try:
            claims = self._decode(token)
        except jwt.PyJWTError as exc:
            raise Unauthorized(
                f"{self._header} token is not valid", reason="invalid_token"
            ) from exc
        self._check_times(claims, now)

    def _decode(self, token: str) -> dict[str, Any]:
        algorithm = jwt.get_unverified_header(token).get("alg")
        # The header only picks among the configured algorithms' keys; PyJWT checks it again.
        keys = self._keys.get(algorithm) if isinstance(algorithm, str) else None
        if not keys:
            raise jwt.InvalidAlgorithmError("algorithm not allowed")
        for key in keys[:-1]:  # rotation: a signature mismatch moves on to the next key
            try:
                return self._decode_with(token, key, algorithm)
            except jwt.InvalidSignatureError:
                continue
        return self._decode_with(token, keys[-1], algorithm)

    def _decode_with(self, token: str, key: Any, algorithm: str) -> dict[str, Any]:
        return jwt.decode(
            token,
            key,
            algorithms=[algorithm],
            audience=self._audience,
            issuer=self._issuer,
            options=self._decode_options,
        )

    def _check_times(self, claims: Mapping[str, Any], now: float) -> None:
        times: dict[str, float] = {}
        for claim in ("exp", "nbf", "iat"):
            if claim in claims:
                value = claims[claim]
                if (
                    not isinstance(value, int | float)
                    or isinstance(value, bool)
                    or not isfinite(value)
                ):
                    raise Unauthorized(
                        f"token claim {claim} is not a number", reason="invalid_token"
                    )
                times[claim] = value
        if "exp" in times and times["exp"] <= now - self._leeway:
            raise Unauthorized("token has expired", reason="expired_token")
        if "nbf" in times and times["nbf"] > now + self._leeway:
            raise Unauthorized("token is not valid yet", reason="invalid_token")
        if "iat" in times and times["iat"] > now + self._leeway:
            raise Unauthorized("token was issued in the future", reason="invalid_token")

    def sign(self, body: bytes, now: float, delivery_id: str) -> dict[str, str]:
        if self._signing is None:
            raise ValueError(
                "jwt verifier has only public keys: set the `signing_key` option to sign"
            )
        algorithm, key = self._signing
        issued = int(now)
        claims: dict[str, Any] = {"iat": issued, "exp": issued + 300, "jti": delivery_id}
        if "nbf" in self._require:
            claims["nbf"] = issued
        if "sub" in self._require:
            claims["sub"] = "webhook-router"
        if self._issuer is not None:
            claims["iss"] = self._issuer
        if self._audience is not None:
            claims["aud"] = self._audience if isinstance(self._audience, str) else self._audience[0]
        token = jwt.encode(claims, key, algorithm=algorithm)
        return {self._header: _bearer_value(self._header, token)}


# --- building from settings ------------------------------------------------------------------


class _Settings:
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


_Builder = Callable[[Sequence[bytes], _Settings], Verifier]


def _hmac_preset(
    scheme: str,
    header: str,
    encoding: str,
    prefix: str = "",
    delivery_headers: Callable[[float, str], dict[str, str]] | None = None,
    prepare_key: Callable[[bytes, int, _Settings], bytes] | None = None,
    cls: type[HmacVerifier] = HmacVerifier,
) -> _Builder:
    """A builder for a provider whose scheme is a fixed HMAC header over the raw body."""

    def build(secrets: Sequence[bytes], settings: _Settings) -> Verifier:
        keys = secrets
        if prepare_key is not None:
            keys = [prepare_key(s, n, settings) for n, s in enumerate(secrets)]
        return cls(
            scheme,
            _HmacKeys(keys, hashlib.sha256, encoding),
            header=header,
            prefix=prefix,
            delivery_headers=delivery_headers,
        )

    return build


def _nfkd_key(secret: bytes, index: int, settings: _Settings) -> bytes:
    """EasyPost normalises its secret (NFKD) before using it as the HMAC key."""
    try:
        return unicodedata.normalize("NFKD", secret.decode("utf-8")).encode("utf-8")
    except UnicodeDecodeError:
        raise settings.secret_error(index, "is not UTF-8 text") from None


def _whsec_key(secret: bytes, index: int, settings: _Settings) -> bytes:
    """Standard Webhooks keys are base64 after the `whsec_` prefix (the prefix is optional)."""
    try:
        text = secret.decode("ascii").strip().removeprefix("whsec_")
        key = base64.b64decode(text, validate=True)
    except ValueError:
        key = b""
    if not key:
        raise settings.secret_error(index, "is not a whsec_ base64 secret")
    return key


def _build_stripe(secrets: Sequence[bytes], settings: _Settings) -> Verifier:
    # The whole `whsec_...` string is the key, as bytes: Stripe does not decode it.
    tolerance = settings.seconds("tolerance", DEFAULT_TOLERANCE)
    return StripeVerifier(_HmacKeys(secrets, hashlib.sha256, "hex"), tolerance)


def _build_standard_webhooks(secrets: Sequence[bytes], settings: _Settings) -> Verifier:
    keys = [_whsec_key(s, n, settings) for n, s in enumerate(secrets)]
    tolerance = settings.seconds("tolerance", DEFAULT_TOLERANCE)
    return StandardWebhooksVerifier(_HmacKeys(keys, hashlib.sha256, "base64"), tolerance)


_PLACEHOLDER = re.compile(r"(\{[^{}]*\})")
_DIGESTS = {"sha256": hashlib.sha256, "sha512": hashlib.sha512}


def _compile_template(template: str, has_timestamp: bool, settings: _Settings) -> _Template:
    parts: list[bytes | _Part] = []
    for piece in _PLACEHOLDER.split(template):
        if piece in ("{body}", "{timestamp}"):
            part = _Part(piece[1:-1])
            if part is _Part.TIMESTAMP and not has_timestamp:
                raise settings.error(
                    "signed_content", "uses {timestamp} but timestamp_header is not set"
                )
            parts.append(part)
        elif "{" in piece or "}" in piece:
            raise settings.error(
                "signed_content", f"unknown placeholder {piece!r}; use {{body}} and {{timestamp}}"
            )
        elif piece:
            parts.append(piece.encode("utf-8"))
    if _Part.BODY not in parts:
        raise settings.error("signed_content", "must contain {body}")
    return tuple(parts)


def _build_generic_hmac(secrets: Sequence[bytes], settings: _Settings) -> Verifier:
    header = settings.required_text("header")
    algorithm = settings.text("algorithm", "sha256", choices=_DIGESTS) or "sha256"
    encoding = settings.text("encoding", "hex", choices=_ENCODINGS) or "hex"
    prefix = settings.text("prefix", "") or ""
    timestamp_header = settings.text("timestamp_header") or None
    if timestamp_header is None and settings.has("tolerance"):
        raise settings.error("tolerance", "needs timestamp_header")
    default_template = "{timestamp}.{body}" if timestamp_header else "{body}"
    template_text = settings.text("signed_content", default_template) or default_template
    template = _compile_template(template_text, timestamp_header is not None, settings)
    return HmacVerifier(
        "hmac",
        _HmacKeys(secrets, _DIGESTS[algorithm], encoding),
        header=header,
        prefix=prefix,
        timestamp_header=timestamp_header,
        template=None if template == (_Part.BODY,) else template,
        tolerance=settings.seconds("tolerance", DEFAULT_TOLERANCE),
    )


def _build_bearer(secrets: Sequence[bytes], settings: _Settings) -> Verifier:
    return BearerVerifier(secrets, settings.text("header", "Authorization") or "Authorization")


def _build_basic(secrets: Sequence[bytes], settings: _Settings) -> Verifier:
    username = settings.required_text("username")
    if ":" in username:
        raise settings.error("username", "must not contain ':' (RFC 7617)")
    return BasicVerifier(username.encode("utf-8"), secrets)


_HMAC_JWT = frozenset({"HS256", "HS384", "HS512"})
_KEYED_JWT = frozenset({"RS256", "ES256"})


def _jwt_algorithm_for(key: object) -> str | None:
    """The one algorithm a loaded key can serve: RSA (2048 bits and up) or EC P-256."""
    if isinstance(key, rsa.RSAPublicKey | rsa.RSAPrivateKey) and key.key_size >= 2048:
        return "RS256"
    curve = getattr(key, "curve", None)
    if isinstance(key, ec.EllipticCurvePublicKey | ec.EllipticCurvePrivateKey) and isinstance(
        curve, ec.SECP256R1
    ):
        return "ES256"
    return None


def _build_jwt(secrets: Sequence[bytes], settings: _Settings) -> Verifier:
    algorithms = settings.text_list("algorithms", ["HS256"])
    unknown = sorted(set(algorithms) - _HMAC_JWT - _KEYED_JWT)
    if not algorithms or unknown:
        allowed = ", ".join(sorted(_HMAC_JWT | _KEYED_JWT))
        raise settings.error("algorithms", f"must be a non-empty list of {allowed}")
    symmetric = _HMAC_JWT.issuperset(algorithms)
    if not symmetric and not _KEYED_JWT.issuperset(algorithms):
        # The same secret read as an HMAC key and as a public key is algorithm confusion.
        raise settings.error("algorithms", "must not mix HS* with RS256/ES256")

    keys: dict[str, list[Any]] = {}
    signing: tuple[str, Any] | None = None
    if symmetric:
        if settings.has("signing_key"):
            raise settings.error("signing_key", "is for RS256/ES256; HS* signs with the secret")
        for index, secret in enumerate(secrets):
            try:  # PyJWT refuses empty keys and PEM/JWK text as HMAC keys; find out now
                HMACAlgorithm(HMACAlgorithm.SHA256).prepare_key(secret)
            except jwt.InvalidKeyError:
                raise settings.secret_error(index, "is not usable as an HMAC key") from None
        keys = {algorithm: list(secrets) for algorithm in algorithms}
        signing = (algorithms[0], secrets[0])
    else:
        for index, secret in enumerate(secrets):
            try:
                public_key = serialization.load_pem_public_key(secret)
            except (ValueError, TypeError, UnsupportedAlgorithm):
                raise settings.secret_error(index, "is not a PEM public key") from None
            algorithm = _jwt_algorithm_for(public_key)
            if algorithm is None or algorithm not in algorithms:
                raise settings.secret_error(
                    index,
                    f"fits none of {algorithms} (RS256: RSA of 2048 bits or more; ES256: EC P-256)",
                )
            keys.setdefault(algorithm, []).append(public_key)
        missing = [a for a in algorithms if a not in keys]
        if missing:
            raise settings.error("algorithms", f"no secret is a public key for {missing}")
        signing_pem = settings.text("signing_key")
        if signing_pem:
            try:
                private_key = serialization.load_pem_private_key(signing_pem.encode(), None)
            except (ValueError, TypeError, UnsupportedAlgorithm):
                raise settings.error(
                    "signing_key", "is not an unencrypted PEM private key"
                ) from None
            algorithm = _jwt_algorithm_for(private_key)
            if algorithm is None or algorithm not in algorithms:
                raise settings.error("signing_key", f"fits none of {algorithms}")
            signing = (algorithm, private_key)

    return JwtVerifier(
        header=settings.text("header", "Authorization") or "Authorization",
        keys=keys,
        issuer=settings.text("issuer"),
        audience=settings.text_or_list("audience"),
        leeway=settings.seconds("leeway", 0, allow_zero=True),
        require=settings.text_list("require", ["exp"]),
        signing=signing,
    )


def _shopify_delivery(now: float, delivery_id: str) -> dict[str, str]:
    return {"X-Shopify-Webhook-Id": delivery_id, "X-Shopify-Triggered-At": _iso_utc(now)}


def _woocommerce_delivery(now: float, delivery_id: str) -> dict[str, str]:
    return {"X-WC-Webhook-Delivery-ID": delivery_id}


def _github_delivery(now: float, delivery_id: str) -> dict[str, str]:
    return {"X-GitHub-Delivery": delivery_id}


_SCHEMES: dict[str, tuple[frozenset[str], _Builder]] = {
    "shopify": (
        frozenset(),
        _hmac_preset(
            "shopify", "X-Shopify-Hmac-Sha256", "base64", delivery_headers=_shopify_delivery
        ),
    ),
    "woocommerce": (
        frozenset(),
        _hmac_preset(
            "woocommerce",
            "X-WC-Webhook-Signature",
            "base64",
            delivery_headers=_woocommerce_delivery,
            cls=WooCommerceVerifier,
        ),
    ),
    "github": (
        frozenset(),
        _hmac_preset(
            "github", "X-Hub-Signature-256", "hex", "sha256=", delivery_headers=_github_delivery
        ),
    ),
    "stripe": (frozenset({"tolerance"}), _build_stripe),
    "standard-webhooks": (frozenset({"tolerance"}), _build_standard_webhooks),
    "easypost": (
        frozenset(),
        _hmac_preset(
            "easypost", "X-Hmac-Signature", "hex", "hmac-sha256-hex=", prepare_key=_nfkd_key
        ),
    ),
    "aftership": (frozenset(), _hmac_preset("aftership", "aftership-hmac-sha256", "base64")),
    "hmac": (
        frozenset(
            {
                "header",
                "algorithm",
                "encoding",
                "prefix",
                "timestamp_header",
                "signed_content",
                "tolerance",
            }
        ),
        _build_generic_hmac,
    ),
    "bearer": (frozenset({"header"}), _build_bearer),
    "basic": (frozenset({"username"}), _build_basic),
    "jwt": (
        frozenset(
            {"header", "algorithms", "issuer", "audience", "leeway", "require", "signing_key"}
        ),
        _build_jwt,
    ),
}

SCHEMES: frozenset[str] = frozenset(_SCHEMES)


def build_verifier(
    scheme: str,
    secrets: Sequence[bytes],
    options: Mapping[str, Any],
    *,
    file: str,
    key: str,
) -> Verifier:
    """Prepare the verifier for one source; bad settings raise ConfigError naming the key.

    `secrets` are resolved values; any of them verifies (rotation), the first one signs.
    `options` is the source's `options` table. Error keys are `<key>.scheme`,
    `<key>.secrets` / `<key>.secrets[i]` and `<key>.options.<name>`.
    """
    if scheme not in _SCHEMES:
        raise ConfigError(
            file,
            f"{key}.scheme",
            f"unknown scheme {scheme!r} (one of: {', '.join(sorted(SCHEMES))})",
        )
    allowed, build = _SCHEMES[scheme]
    settings = _Settings(scheme, options, allowed, file, key)
    if not secrets:
        raise ConfigError(file, f"{key}.secrets", f"scheme {scheme!r} needs at least one secret")
    return build(list(secrets), settings)
