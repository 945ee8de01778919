"""Credentials that do not depend on the body: a bearer token, or Basic user and password.
The secrets are the accepted tokens or passwords (any of them, for rotation)."""

from __future__ import annotations

import base64
import hmac
from collections.abc import Mapping, Sequence

from router.errors import Unauthorized
from router.verify.scheme import Options, Scheme, SchemeBase, Verifier, any_match, to_bytes


def bearer_token(headers: Mapping[str, str], header: str, bad_reason: str) -> str:
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


def bearer_value(header: str, token: str) -> str:
    return f"Bearer {token}" if header.lower() == "authorization" else token


class BearerVerifier(SchemeBase):
    """A static token that must equal one of the secrets."""

    __slots__ = ("_tokens", "_header")

    def __init__(self, tokens: Sequence[bytes], header: str) -> None:
        super().__init__("bearer")
        self._tokens = tuple(tokens)
        self._header = header

    def verify(self, body: bytes, headers: Mapping[str, str], now: float) -> None:
        token = to_bytes(bearer_token(headers, self._header, "invalid_credentials"))
        if token is None or not any_match(self._tokens, token):
            raise Unauthorized(f"{self._header} token is not valid", reason="invalid_credentials")

    def sign(self, body: bytes, now: float, delivery_id: str) -> dict[str, str]:
        return {self._header: bearer_value(self._header, self._tokens[0].decode())}


class BasicVerifier(SchemeBase):
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
        password_ok = any_match(self._passwords, password)
        if not (user_ok & password_ok):
            raise Unauthorized("username or password is not valid", reason="invalid_credentials")

    def sign(self, body: bytes, now: float, delivery_id: str) -> dict[str, str]:
        credentials = base64.b64encode(self._username + b":" + self._passwords[0])
        return {self.HEADER: "Basic " + credentials.decode("ascii")}


def _build_bearer(secrets: Sequence[bytes], options: Options) -> Verifier:
    return BearerVerifier(secrets, options.text("header", "Authorization") or "Authorization")


def _build_basic(secrets: Sequence[bytes], options: Options) -> Verifier:
    username = options.required_text("username")
    if ":" in username:
        raise options.error("username", "must not contain ':' (RFC 7617)")
    return BasicVerifier(username.encode("utf-8"), secrets)


SCHEMES: dict[str, Scheme] = {
    "bearer": Scheme(frozenset({"header"}), _build_bearer),
    "basic": Scheme(frozenset({"username"}), _build_basic),
}
