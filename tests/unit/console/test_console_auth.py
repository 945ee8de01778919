"""Passwords, tokens, roles and login throttling of the console."""

from __future__ import annotations

import io
import sys

import pytest

from router.cli import main
from router.console.auth import (
    LoginThrottle,
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
        """The limit's failures from one address make it wait until the first expires."""
        clock = FakeClock()
        throttle = LoginThrottle(limit=3, window=60, clock=clock)
        for i in range(3):
            assert None is throttle.retry_after("10.0.0.1", f"user{i}")
            throttle.failed("10.0.0.1", f"user{i}")
            clock.now += 1
        assert 57.0 == throttle.retry_after("10.0.0.1", "someone")
        assert None is throttle.retry_after("10.0.0.2", "someone")
        clock.now += 57
        assert None is throttle.retry_after("10.0.0.1", "someone")

    def test_blocks_a_user_name_from_any_address(self):
        """Failures against one name count whichever address they come from."""
        throttle = LoginThrottle(limit=2, window=60, clock=FakeClock())
        throttle.failed("10.0.0.1", "ana")
        throttle.failed("10.0.0.2", "Ana")
        assert 60.0 == throttle.retry_after("10.0.0.3", "ana")

    def test_success_clears_the_name(self):
        """A right password forgets that name's failures."""
        throttle = LoginThrottle(limit=2, window=60, clock=FakeClock())
        throttle.failed("10.0.0.1", "ana")
        throttle.succeeded("10.0.0.1", "ana")
        throttle.failed("10.0.0.2", "ana")
        assert None is throttle.retry_after("10.0.0.3", "ana")

    def test_keys_are_bounded(self):
        """Many addresses never grow the memory past max_keys."""
        throttle = LoginThrottle(limit=2, window=60, max_keys=10, clock=FakeClock())
        for i in range(100):
            throttle.failed(f"10.0.{i}.1", "x")
        assert 10 >= len(throttle._failures)
