"""Passwords, tokens, roles and login throttling of the console."""

from __future__ import annotations

import asyncio
import io
import sys
import threading

import pytest

from router.cli import main
from router.console import auth
from router.console.auth import (
    LoginThrottle,
    PasswordChecks,
    check_password,
    check_token,
    hash_password,
    may_act,
)
from router.console.settings import ConsoleSettings, ConsoleUser

ANA = ConsoleUser("ana", "operator", password_hash=hash_password("correct horse"))
BO = ConsoleUser("bo", "viewer", token=b"bo-token")
CONSOLE = ConsoleSettings(users=(ANA, BO), session_secret=b"s" * 32)


class TestPasswords:
    def test_right_password(self):
        """The user's own password logs them in."""
        assert ANA == check_password(CONSOLE, "ana", "correct horse")

    @pytest.mark.parametrize(("name", "password"), [
        ("ana", "wrong"), ("ana", ""), ("nobody", "correct horse"), ("bo", "bo-token"),
    ])
    def test_wrong_password_unknown_or_token_only_user(self, name, password):
        """A wrong password, an unknown name or a user without a password: no one."""
        assert None is check_password(CONSOLE, name, password)

    def test_hash_password_command_reads_stdin(self, monkeypatch, capsys):
        """`console hash-password` prints an argon2id hash of the line on standard input."""
        monkeypatch.setattr(sys, "stdin", io.StringIO("correct horse\n"))
        assert 0 == main(["console", "hash-password"])
        printed = capsys.readouterr().out.strip()
        assert printed.startswith("$argon2id$")
        user = ConsoleUser("ana", "operator", password_hash=printed)
        assert user == check_password(ConsoleSettings(users=(user,)), "ana", "correct horse")

    def test_empty_password_is_refused(self, monkeypatch, capsys):
        """An empty password gets no hash."""
        monkeypatch.setattr(sys, "stdin", io.StringIO("\n"))
        assert 2 == main(["console", "hash-password"])
        assert "empty" in capsys.readouterr().err


class TestTokens:
    def test_right_token(self):
        """A configured token names its user."""
        assert BO == check_token(CONSOLE, "bo-token")

    @pytest.mark.parametrize("token", ["", "bo-toke", "bo-token2", "bo-tokén", "bo-\udcff"])
    def test_wrong_token(self, token):
        """Anything else names no one (and an empty token matches no token-less user)."""
        assert None is check_token(CONSOLE, token)


class TestRoles:
    def test_operator_acts_viewer_reads(self):
        """Only operators may act."""
        assert (True, False) == (may_act("operator"), may_act("viewer"))


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class TestLoginThrottle:
    def test_blocks_an_address_after_the_limit(self):
        """The limit's attempts from one address make it wait until the first expires."""
        clock = FakeClock()
        throttle = LoginThrottle(limit=3, window=60, clock=clock)
        for i in range(3):
            assert None is throttle.reserve("10.0.0.1", f"user{i}")
            clock.now += 1
        assert 57.0 == throttle.reserve("10.0.0.1", "someone")
        assert None is throttle.reserve("10.0.0.2", "someone")
        clock.now += 57
        assert None is throttle.reserve("10.0.0.1", "someone")

    def test_attempts_count_before_they_are_checked(self):
        """Attempts reserved together, none answered yet, stop at the limit: the rest wait
        (and a refused attempt counts nothing more)."""
        throttle = LoginThrottle(limit=5, window=60, clock=FakeClock())
        answers = [throttle.reserve("10.0.0.1", "ana") for _ in range(15)]
        assert [None] * 5 + [60.0] * 10 == answers
        assert 5 == len(throttle._failures["a:10.0.0.1"])

    def test_blocks_a_user_name_from_any_address(self):
        """Failures against one name count whichever address they come from."""
        throttle = LoginThrottle(limit=2, window=60, clock=FakeClock())
        throttle.reserve("10.0.0.1", "ana")
        throttle.reserve("10.0.0.2", "Ana")
        assert 60.0 == throttle.reserve("10.0.0.3", "ana")

    def test_success_clears_the_name_and_its_own_attempt(self):
        """A right password forgets that name's failures and is no failure of the address;
        the address's earlier failures stay."""
        throttle = LoginThrottle(limit=2, window=60, clock=FakeClock())
        throttle.reserve("10.0.0.1", "ana")
        throttle.reserve("10.0.0.1", "bo")
        throttle.succeeded("10.0.0.1", "bo")
        assert None is throttle.reserve("10.0.0.2", "bo")
        throttle.succeeded("10.0.0.2", "bo")
        assert None is throttle.reserve("10.0.0.1", "cy")
        assert 60.0 == throttle.reserve("10.0.0.1", "dee")

    @pytest.mark.parametrize(("neighbour", "same"), [
        ("2001:db8:1:2::ffff", True), ("2001:db8:1:2:aaaa:bbbb:cccc:dddd", True),
        ("2001:db8:1:3::1", False), ("::ffff:10.0.0.1", False)])
    def test_ipv6_is_counted_by_its_64(self, neighbour, same):
        """An IPv6 client has a whole /64 to send from: the /64 is counted as one address."""
        throttle = LoginThrottle(limit=2, window=60, clock=FakeClock())
        for _ in range(2):
            throttle.reserve("2001:db8:1:2::1", "")
        assert same == (throttle.reserve(neighbour, "") is not None)

    def test_keys_are_bounded(self):
        """Many addresses never grow the memory past max_keys."""
        throttle = LoginThrottle(limit=2, window=60, max_keys=10, clock=FakeClock())
        for i in range(100):
            throttle.reserve(f"10.0.{i}.1", "x")
        assert 10 >= len(throttle._failures)


class CountingCheck:
    """check_password that holds each call until `release` is set, counting how many run;
    `all_started` once `expected` calls have begun."""

    def __init__(self, expected: int) -> None:
        self.expected = expected
        self.lock = threading.Lock()
        self.running = self.most = self.calls = 0
        self.release, self.all_started = threading.Event(), threading.Event()

    def __call__(self, console: ConsoleSettings, name: str, password: str) -> None:
        with self.lock:
            self.calls += 1
            self.running += 1
            self.most = max(self.most, self.running)
            if self.calls == self.expected:
                self.all_started.set()
        self.release.wait(10)
        with self.lock:
            self.running -= 1


class TestPasswordChecks:
    async def test_at_most_at_once(self, monkeypatch):
        """Six checks asked at once run two at a time (each holds 64 MiB): the other four
        wait for a slot, and all six are answered."""
        check = CountingCheck(6)
        monkeypatch.setattr(auth, "check_password", check)
        checks = PasswordChecks(2)
        tasks = [asyncio.create_task(checks.check(CONSOLE, "ana", "x")) for _ in range(6)]
        # Unbounded, all six would be running by then; bounded, this waits it out.
        assert not await asyncio.to_thread(check.all_started.wait, 2)
        check.release.set()
        await asyncio.wait_for(asyncio.gather(*tasks), 10)
        assert (2, 6) == (check.most, check.calls)
