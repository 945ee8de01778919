"""Who is logging in: argon2 password checks, token checks, roles and login throttling.

Every check takes the same time whether or not the user exists (an unknown name is
checked against a dummy hash), and tokens are compared in constant time.
"""

from __future__ import annotations

import hmac
import time
from collections import deque
from collections.abc import Callable

from argon2 import PasswordHasher
from argon2.exceptions import Argon2Error, InvalidHashError

from router.console.settings import ConsoleSettings, ConsoleUser

_HASHER = PasswordHasher()
# Checked when the name is unknown or has no password, so the answer takes as long.
_DUMMY_HASH = _HASHER.hash("not a password anyone has")

ACTING_ROLES = frozenset({"operator"})


def hash_password(password: str) -> str:
    """An argon2id hash of `password` for [[console.users]] password_hash."""
    if not password:
        raise ValueError("the password is empty")
    return _HASHER.hash(password)


def check_password(console: ConsoleSettings, name: str, password: str) -> ConsoleUser | None:
    """The user `name` if `password` is theirs, else None (in about the same time)."""
    user = console.user(name)
    stored = user.password_hash if user is not None else None
    ok: bool
    try:
        ok = _HASHER.verify(stored or _DUMMY_HASH, password)
    except (Argon2Error, InvalidHashError):  # a mismatch, or a hash argon2 cannot read
        ok = False
    return user if ok and stored is not None else None


def check_token(console: ConsoleSettings, token: str) -> ConsoleUser | None:
    """The user whose token `token` is, comparing every configured token in constant time."""
    given = token.encode("utf-8", "surrogateescape")  # a header that was not UTF-8
    found = None
    for user in console.users:
        if user.token is not None and hmac.compare_digest(user.token, given) and given:
            found = user
    return found


def may_act(role: str) -> bool:
    """Viewers read; operators may also act (replay, purge, enable, disable)."""
    return role in ACTING_ROLES


class LoginThrottle:
    """Failed logins counted per client address and per user name over a sliding `window`:
    after `limit` failures on either, more attempts wait (`retry_after` seconds)."""

    def __init__(self, limit: int = 5, window: float = 300.0, max_keys: int = 10_000,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.limit = limit
        self.window = window
        self.max_keys = max_keys
        self.clock = clock
        self._failures: dict[str, deque[float]] = {}

    def retry_after(self, address: str, name: str) -> float | None:
        """Seconds until `address` (and `name`) may try again, or None if they may now."""
        now = self.clock()
        waits = []
        for key in self._keys(address, name):
            recent = self._recent(key, now)
            if len(recent) >= self.limit:
                waits.append(recent[0] + self.window - now)
        return max(waits) if waits else None

    def failed(self, address: str, name: str) -> None:
        now = self.clock()
        for key in self._keys(address, name):
            if key not in self._failures and len(self._failures) >= self.max_keys:
                del self._failures[next(iter(self._failures))]  # the oldest key goes
            self._failures.setdefault(key, deque(maxlen=self.limit)).append(now)

    def succeeded(self, address: str, name: str) -> None:
        """A right password clears that name's failures (not the address's)."""
        self._failures.pop(f"u:{name.lower()}", None)

    @staticmethod
    def _keys(address: str, name: str) -> list[str]:
        """The address's key, and the name's when there is one (a token login has none)."""
        return [f"a:{address}", *([f"u:{name.lower()}"] if name else [])]

    def _recent(self, key: str, now: float) -> deque[float]:
        recent = self._failures.get(key, deque())
        while recent and recent[0] <= now - self.window:
            recent.popleft()
        if not recent:
            self._failures.pop(key, None)
        return recent
