"""Signed session cookies and the CSRF token bound to each session.

A cookie is `payload.signature`, both base64url: the payload is JSON {"u": user name or ""
(not logged in yet), "n": a random nonce, "exp": expiry (Unix seconds)}, the signature its
HMAC-SHA256 under the session secret. The CSRF token is an HMAC of the nonce: it changes
with every session (logging in makes a new one) and cannot be made without the secret.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass

import orjson

COOKIE = "console_session"
CSRF_FIELD = "csrf"
CSRF_HEADER = "X-CSRF-Token"


@dataclass(frozen=True)
class Session:
    user: str  # "" before logging in
    nonce: str
    expires: float


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _raw(text: str) -> bytes:
    """A client's text as bytes for a constant-time comparison: compare_digest refuses str
    with non-ASCII characters (a TypeError, so a 500), and a header that was not UTF-8
    arrives with lone surrogates."""
    return text.encode("utf-8", "surrogateescape")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


class SessionCodec:
    """Makes and reads session cookies signed with `secret`, valid for `lifetime` seconds."""

    def __init__(self, secret: bytes, lifetime: float,
                 clock: Callable[[], float] = time.time) -> None:
        if not secret:
            raise ValueError("a session secret is needed")
        self._key = hashlib.sha256(b"console session\0" + secret).digest()
        self.lifetime = lifetime
        self.clock = clock

    def new(self, user: str = "") -> Session:
        return Session(user=user, nonce=secrets.token_urlsafe(18),
                       expires=self.clock() + self.lifetime)

    def encode(self, session: Session) -> str:
        payload = _b64(orjson.dumps({"u": session.user, "n": session.nonce,
                                     "exp": int(session.expires)}))
        return f"{payload}.{self._sign(payload)}"

    def decode(self, cookie: str | None) -> Session | None:
        """The session in `cookie`, or None if it is missing, forged, malformed or expired."""
        if not cookie or cookie.count(".") != 1:
            return None
        payload, signature = cookie.split(".")
        if not hmac.compare_digest(self._sign(payload).encode(), _raw(signature)):
            return None
        try:
            data = orjson.loads(_unb64(payload))
            session = Session(user=str(data["u"]), nonce=str(data["n"]),
                              expires=float(data["exp"]))
        except (binascii.Error, ValueError, KeyError, TypeError):
            return None
        return session if session.expires > self.clock() else None

    def csrf_token(self, session: Session) -> str:
        return self._sign(f"csrf\0{session.nonce}")

    def csrf_ok(self, session: Session, token: str | None) -> bool:
        return bool(token) and hmac.compare_digest(self.csrf_token(session).encode(),
                                                   _raw(token or ""))

    def note_token(self, session: Session, note: str) -> str:
        """A token that `note` (a message shown after a redirect) was written by this console
        for this session: a link made elsewhere cannot put its own words on a page."""
        return self._sign(f"note\0{session.nonce}\0{note}")

    def note_ok(self, session: Session, note: str, token: str | None) -> bool:
        return bool(token) and hmac.compare_digest(self.note_token(session, note).encode(),
                                                   _raw(token or ""))

    def _sign(self, text: str) -> str:
        return _b64(hmac.new(self._key, text.encode(), hashlib.sha256).digest())
