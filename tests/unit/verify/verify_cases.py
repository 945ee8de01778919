"""What the verification tests share: two secrets per scheme, a clock, a body, and helpers
that build a verifier or catch its refusal."""

from __future__ import annotations

import base64
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from multidict import CIMultiDict

from router.errors import ConfigError, Unauthorized
from router.verify import SCHEMES, Verifier, build_verifier

FIXTURES = Path(__file__).parents[2] / "fixtures"
SHARED_SAMPLES = Path(__file__).parents[3].parent / "shared" / "samples"
FILE = "config/router.toml"
NOW = 1_700_000_000.0
BODY = b'{"id": 1, "note": "caf\xc3\xa9"}'
HS_KEY = b"jwt-test-key-0123456789abcdef-0123456789"  # 40 bytes: PyJWT wants 32+ for HS256

# Two secrets per scheme (for rotation) and the options each needs.
SCHEME_CASES: dict[str, tuple[bytes, bytes, dict[str, Any]]] = {
    "shopify": (b"shpss_one", b"shpss_two", {}),
    "woocommerce": (b"wc-one", b"wc-two", {}),
    "github": (b"gh-one", b"gh-two", {}),
    "stripe": (b"whsec_stripe_one", b"whsec_stripe_two", {}),
    "standard-webhooks": (
        b"whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
        b"whsec_" + base64.b64encode(b"second-key-0123456789"),
        {},
    ),
    "easypost": ("sécret".encode(), b"easypost-two", {}),
    "aftership": (b"as-one", b"as-two", {}),
    "hmac": (b"inv-one", b"inv-two", {"header": "X-Signature"}),
    "bearer": (b"token-one", b"token-two", {}),
    "basic": (b"password-one", b"password-two", {"username": "warehouse"}),
    "jwt": (HS_KEY, HS_KEY[::-1], {}),
}
# What a request without the scheme's headers is refused with.
MISSING_REASON = {
    "bearer": "missing_credentials",
    "basic": "missing_credentials",
    "jwt": "missing_credentials",
}
# Schemes that sign the body (the others carry credentials, independent of the body).
BODY_SIGNED = sorted(SCHEMES - {"bearer", "basic", "jwt"})


def build(scheme: str, *secrets: bytes, **options: Any) -> Verifier:
    return build_verifier(scheme, list(secrets), options, file=FILE, key=f"sources.{scheme}")


def refusal(
    verifier: Verifier, body: bytes, headers: Mapping[str, str], now: float = NOW
) -> Unauthorized:
    with pytest.raises(Unauthorized) as info:
        verifier.verify(body, CIMultiDict(headers), now)
    return info.value


def config_error(scheme: str, secrets: list[bytes], **options: Any) -> ConfigError:
    with pytest.raises(ConfigError) as info:
        build_verifier(scheme, secrets, options, file=FILE, key="sources.x")
    return info.value


def rsa_keys() -> tuple[bytes, str]:
    """A fresh (public PEM bytes, private PEM text) pair."""
    private = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    return _pems(private)


def ec_keys(curve: ec.EllipticCurve | None = None) -> tuple[bytes, str]:
    private = ec.generate_private_key(curve or ec.SECP256R1())
    return _pems(private)


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _pems(private: Any) -> tuple[bytes, str]:
    public = private.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    text = private.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ).decode()
    return public, text

