"""Standard Webhooks (and Svix, with `svix-*` header names): verifying inbound webhooks
and signing our outbound ones, one class for both.

Signed content `"<webhook-id>.<webhook-timestamp>.<body>"`, HMAC-SHA256 keyed with the
base64-decoded part of `whsec_...`, base64 digest; `webhook-signature` holds one or more
space-separated `v1,<signature>` (one per key during a rotation).
"""

from __future__ import annotations

import base64
import hashlib
from collections.abc import Mapping, Sequence

from router.errors import ConfigError, Unauthorized
from router.verify.scheme import (
    DEFAULT_TOLERANCE,
    HmacKeys,
    Options,
    Scheme,
    SchemeBase,
    check_timestamp,
    to_bytes,
)


class StandardWebhooks(SchemeBase):
    """`webhook-id/-timestamp/-signature` (or the same with `svix-`), base64 HMAC-SHA256:
    `verify` for inbound webhooks, `sign` for ours."""

    __slots__ = ("_keys", "_tolerance")
    FAMILIES = (
        ("webhook-id", "webhook-timestamp", "webhook-signature"),
        ("svix-id", "svix-timestamp", "svix-signature"),
    )

    def __init__(self, keys: HmacKeys, tolerance: float) -> None:
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
        timestamp = check_timestamp(
            timestamp_header, headers.get(timestamp_header), now, self._tolerance
        )
        received: list[bytes] = []
        for item in value.split():
            version, _, signature = item.partition(",")
            if version == "v1":  # other versions (v1a: asymmetric) are not ours to check
                encoded = to_bytes(signature)
                if encoded is not None:
                    received.append(encoded)
        prefix = to_bytes(f"{msg_id}.{timestamp}.")
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


def _whsec_key(secret: bytes, index: int, options: Options) -> bytes:
    """Standard Webhooks keys are base64 after the `whsec_` prefix (the prefix is optional)."""
    try:
        text = secret.decode("ascii").strip().removeprefix("whsec_")
        key = base64.b64decode(text, validate=True)
    except ValueError:
        key = b""
    if not key:
        raise options.secret_error(index, "is not a whsec_ base64 secret")
    return key


def _build_standard_webhooks(secrets: Sequence[bytes], options: Options) -> StandardWebhooks:
    keys = [_whsec_key(s, n, options) for n, s in enumerate(secrets)]
    tolerance = options.seconds("tolerance", DEFAULT_TOLERANCE)
    return StandardWebhooks(HmacKeys(keys, hashlib.sha256, "base64"), tolerance)


def signer(secrets: Sequence[bytes], *, file: str, key: str) -> StandardWebhooks:
    """The signer (and verifier) for `whsec_` secrets, as outbound webhooks use it; a secret
    that is not one raises ConfigError naming `<key>.secrets[i]`."""
    if not secrets:
        raise ConfigError(file, f"{key}.secrets", "at least one whsec_ secret is required")
    options = Options("standard-webhooks", {}, frozenset(), file, key)
    return _build_standard_webhooks(secrets, options)


SCHEMES: dict[str, Scheme] = {
    "standard-webhooks": Scheme(frozenset({"tolerance"}), _build_standard_webhooks)
}
