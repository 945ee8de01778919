"""Who is logging in: argon2 password checks, token checks, roles and login throttling.

Every check takes the same time whether or not the user exists (an unknown name is
checked against a dummy hash), and tokens are compared in constant time.
"""

from __future__ import annotations

import asyncio
import hmac
import time
from collections import deque
from collections.abc import Callable

from argon2 import PasswordHasher
from argon2.exceptions import Argon2Error, InvalidHashError

from router.console.settings import ConsoleSettings, ConsoleUser
from router.network import rate_limit_key

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


class PasswordChecks:
    """argon2 checks off the event loop, at most `at_once` at a time: each holds 64 MiB
    (argon2's memory cost) and a thread while it runs."""

    def __init__(self, at_once: int) -> None:
        self._slots = asyncio.Semaphore(at_once)

    async def check(self, console: ConsoleSettings, name: str,
                    password: str) -> ConsoleUser | None:
        """check_password, on a thread once a slot is free."""
        async with self._slots:
            return await asyncio.to_thread(check_password, console, name, password)


class LoginThrottle:
    """Failed logins counted per client address (an IPv6 address by its /64) and per user
    name over a sliding `window`: after `limit` failures on either, more attempts wait.

    An attempt counts as failed from the moment it is made (`reserve`) until `succeeded`
    takes it back: a password check takes a while, and attempts sent together must not all
    pass the limit before the first of them has failed.
    """

    def __init__(self, limit: int = 5, window: float = 300.0, max_keys: int = 10_000,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.limit = limit
        self.window = window
        self.max_keys = max_keys
        self.clock = clock
        self._failures: dict[str, deque[float]] = {}

    def reserve(self, address: str, name: str) -> float | None:
        """Counts an attempt from `address` for `name` as failed and returns None; or, when
        either is at the limit already, counts nothing and returns the seconds to wait."""
        now = self.clock()
        keys = self._keys(address, name)
        waits = []
        for key in keys:
            recent = self._recent(key, now)
            if len(recent) >= self.limit:
                waits.append(recent[0] + self.window - now)
        if waits:
            return max(waits)
        for key in keys:
            if key not in self._failures and len(self._failures) >= self.max_keys:
                del self._failures[next(iter(self._failures))]  # the oldest key goes
            self._failures.setdefault(key, deque(maxlen=self.limit)).append(now)
        return None

    def succeeded(self, address: str, name: str) -> None:
        """The attempt reserved was right: it is no failure of the address, and the name's
        failures are forgotten (the address's others are not)."""
        address_key, *_ = self._keys(address, name)
        recent = self._failures.get(address_key)
        if recent:
            recent.pop()
        self._failures.pop(f"u:{name.lower()}", None)

    @staticmethod
    def _keys(address: str, name: str) -> list[str]:
        """The address's key, and the name's when there is one (a token login has none)."""
        return [f"a:{rate_limit_key(address)}", *([f"u:{name.lower()}"] if name else [])]

    def _recent(self, key: str, now: float) -> deque[float]:
        recent = self._failures.get(key, deque())
        while recent and recent[0] <= now - self.window:
            recent.popleft()
        if not recent:
            self._failures.pop(key, None)
        return recent
