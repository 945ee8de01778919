"""Webhook verification schemes, byte-exact with the providers: one module per family.

    scheme.py              the Verifier protocol, the options reader, shared pieces
    hmac.py                HMAC over the body: generic, Shopify, WooCommerce, GitHub, EasyPost,
                           AfterShip
    stripe.py              Stripe-Signature
    standard_webhooks.py   Standard Webhooks / Svix (verifies inbound, signs outbound)
    credentials.py         bearer token, Basic
    jwt.py                 JWT bearer tokens

`build_verifier()` turns a source's settings into a `Verifier` once, at start-up: keys are
decoded, normalised, loaded and wrapped in HMAC objects there, so `verify()` on the request
path only hashes and compares. A new scheme is one module with a `SCHEMES` table and one
line below.

Failures raise `router.errors.Unauthorized` with one of these reasons:
missing_signature, invalid_signature, timestamp_out_of_tolerance,
missing_credentials, invalid_credentials, invalid_token, expired_token.
Messages name headers, never secrets or signatures (expected or received).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from router.errors import ConfigError
from router.verify import credentials, hmac, jwt, standard_webhooks, stripe
from router.verify.scheme import DEFAULT_TOLERANCE, Options, Scheme, Verifier

__all__ = ["DEFAULT_TOLERANCE", "SCHEMES", "Verifier", "build_verifier", "check_options"]

_REGISTRY: dict[str, Scheme] = {
    **hmac.SCHEMES,
    **stripe.SCHEMES,
    **standard_webhooks.SCHEMES,
    **credentials.SCHEMES,
    **jwt.SCHEMES,
}
SCHEMES: frozenset[str] = frozenset(_REGISTRY)


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
    reader = check_options(scheme, options, file=file, key=key)
    entry = _REGISTRY[scheme]
    if not secrets:
        raise ConfigError(file, f"{key}.secrets", f"scheme {scheme!r} needs at least one secret")
    return entry.build(list(secrets), reader)


def check_options(scheme: str, options: Mapping[str, Any], *, file: str, key: str) -> Options:
    """What can be checked without the secrets: the scheme exists and names only its own
    options (their values are read when the verifier is built)."""
    if scheme not in _REGISTRY:
        raise ConfigError(
            file,
            f"{key}.scheme",
            f"unknown scheme {scheme!r} (one of: {', '.join(sorted(SCHEMES))})",
        )
    return Options(scheme, options, _REGISTRY[scheme].options, file, key)
