"""Signed session cookies and the CSRF token bound to each session.

A cookie is `payload.signature`, both base64url: the payload is JSON {"u": user name or ""
(not logged in yet), "n": a random nonce, "exp": expiry (Unix seconds), "c": a keyed
fingerprint of the user's password hash and token as they logged in}, the signature its
HMAC-SHA256 under the session secret. A session whose user's password hash or token has
changed since (in the config) is not that user's any more. The CSRF token is an HMAC of the
nonce: it changes with every session (logging in makes a new one) and cannot be made
without the secret.
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

from router.console.settings import ConsoleUser

COOKIE = "console_session"
CSRF_FIELD = "csrf"
CSRF_HEADER = "X-CSRF-Token"


@dataclass(frozen=True)
class Session:
    user: str  # "" before logging in
    nonce: str
    expires: float
    credential: str = ""  # SessionCodec.credential of the user as they logged in


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

    def new(self, user: ConsoleUser | None = None) -> Session:
        """A new session for `user`, or before logging in (None)."""
        return Session(user=user.name if user else "", nonce=secrets.token_urlsafe(18),
                       expires=self.clock() + self.lifetime,
                       credential=self.credential(user) if user else "")

    def credential(self, user: ConsoleUser) -> str:
        """A fingerprint of `user`'s password hash and token, keyed with the secret (the
        cookie, readable by its holder, shows nothing of either)."""
        token = (user.token or b"").hex()
        return self._sign(f"credential\0{user.name}\0{user.password_hash or ''}\0{token}")

    def still_theirs(self, session: Session, user: ConsoleUser) -> bool:
        """Whether `user`'s password hash and token are what they were when `session` was
        made (a session from before a change, or from before this check, is not)."""
        return hmac.compare_digest(self.credential(user).encode(), _raw(session.credential))

    def encode(self, session: Session) -> str:
        payload = _b64(orjson.dumps({"u": session.user, "n": session.nonce,
                                     "exp": int(session.expires), "c": session.credential}))
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
                              expires=float(data["exp"]), credential=str(data.get("c", "")))
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
