"""Stripe: `Stripe-Signature: t=<unix>,v1=<hex>[,v1=...]`, hex HMAC-SHA256 over
`"<t>.<body>"`, keyed with the whole `whsec_...` string (not decoded); tolerance 300 s."""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence

from router.errors import Unauthorized
from router.verify.scheme import (
    DEFAULT_TOLERANCE,
    HmacKeys,
    Options,
    Scheme,
    SchemeBase,
    Verifier,
    check_timestamp,
    to_bytes,
)


class StripeVerifier(SchemeBase):
    """`Stripe-Signature: t=<unix>,v1=<hex>[,v1=...]` over `"<t>.<body>"`."""

    __slots__ = ("_keys", "_tolerance")
    HEADER = "Stripe-Signature"

    def __init__(self, keys: HmacKeys, tolerance: float) -> None:
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
                signature = to_bytes(field.strip())
                if signature is not None:
                    received.append(signature)
        if not stamp or not received:
            raise Unauthorized(
                f"{self.HEADER} has no t= or no v1= entry", reason="invalid_signature"
            )
        timestamp = check_timestamp(f"{self.HEADER} t=", stamp, now, self._tolerance)
        # Stripe's SDKs sign the timestamp as a formatted int, not as the raw header text.
        if not self._keys.matches(received, b"%d." % timestamp, body):
            raise Unauthorized(f"{self.HEADER} does not match the body", reason="invalid_signature")

    def sign(self, body: bytes, now: float, delivery_id: str) -> dict[str, str]:
        timestamp = int(now)
        signature = self._keys.sign(b"%d." % timestamp, body)
        return {self.HEADER: f"t={timestamp},v1={signature}"}


def _build_stripe(secrets: Sequence[bytes], options: Options) -> Verifier:
    # The whole `whsec_...` string is the key, as bytes: Stripe does not decode it.
    tolerance = options.seconds("tolerance", DEFAULT_TOLERANCE)
    return StripeVerifier(HmacKeys(secrets, hashlib.sha256, "hex"), tolerance)


SCHEMES: dict[str, Scheme] = {"stripe": Scheme(frozenset({"tolerance"}), _build_stripe)}
