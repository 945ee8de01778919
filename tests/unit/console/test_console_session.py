"""Signed session cookies and their CSRF tokens."""

from __future__ import annotations

import base64
import dataclasses

import pytest

from router.console.session import Session, SessionCodec
from router.console.settings import ConsoleUser

ANA = ConsoleUser("ana", "operator", password_hash="$argon2id$v=19$m=65536,t=3,p=4$c2FsdA$aGFzaA")


class Clock:
    now = 1_800_000_000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def codec(clock) -> SessionCodec:
    return SessionCodec(b"k" * 32, lifetime=3600, clock=clock)


class TestSessionCodec:
    def test_round_trip(self, codec):
        """A cookie it made reads back as the same session."""
        session = codec.new(ANA)
        assert session.user == codec.decode(codec.encode(session)).user

    def test_expired(self, codec, clock):
        """After its lifetime a cookie is no session."""
        cookie = codec.encode(codec.new(ANA))
        clock.now += 3601
        assert None is codec.decode(cookie)

    @pytest.mark.parametrize("tamper", [
        lambda c: c[:-2] + ("AA" if not c.endswith("AA") else "BB"),
        lambda c: "eyJ1IjoiYm8iLCJuIjoieCIsImV4cCI6OTk5OTk5OTk5OX0." + c.split(".")[1],
        lambda c: c.replace(".", ""),
        lambda c: "",
        lambda c: "a.b.c",
        lambda c: c.split(".")[0] + ".é",          # compare_digest refuses non-ASCII str
        lambda c: c.split(".")[0] + ".\udcff",     # a byte that was not UTF-8
    ])
    def test_forged_or_broken(self, codec, tamper):
        """A changed payload or signature, or no cookie at all, is no session."""
        assert None is codec.decode(tamper(codec.encode(codec.new(ANA))))

    def test_another_secret_cannot_read_it(self, codec, clock):
        """A cookie signed under one secret is nothing under another."""
        other = SessionCodec(b"o" * 32, lifetime=3600, clock=clock)
        assert None is other.decode(codec.encode(codec.new(ANA)))

    def test_csrf_is_bound_to_the_session(self, codec):
        """A session's own token passes; another session's, or none, does not."""
        one, two = codec.new(ANA), codec.new(ANA)
        assert codec.csrf_ok(one, codec.csrf_token(one))
        assert not codec.csrf_ok(one, codec.csrf_token(two))
        assert not codec.csrf_ok(one, None)
        assert not codec.csrf_ok(one, "")
        assert not codec.csrf_ok(one, "é\udcff")  # not ASCII: refused, never a TypeError


class TestNotes:
    def test_a_note_reads_back_only_in_its_own_session_and_unchanged(self, codec):
        """The note after an action is shown for the session it was made in, as written."""
        session, other = codec.new(ANA), codec.new(ANA)
        token = codec.note_token(session, "replayed dead-1 to orders")
        assert codec.note_ok(session, "replayed dead-1 to orders", token)
        assert not codec.note_ok(session, "call +1 555 0100 to restore access", token)
        assert not codec.note_ok(other, "replayed dead-1 to orders", token)
        assert not codec.note_ok(session, "replayed dead-1 to orders", None)
        assert not codec.note_ok(session, "replayed dead-1 to orders", "ünïcode")


class TestCredential:
    def test_a_session_is_its_users_while_their_credentials_stay(self, codec):
        """A session made for a user, read back from its cookie, is theirs while their
        password hash and token are what they were."""
        session = codec.decode(codec.encode(codec.new(ANA)))
        assert codec.still_theirs(session, dataclasses.replace(ANA))

    @pytest.mark.parametrize("changed", [
        dataclasses.replace(ANA, password_hash=ANA.password_hash + "x"),
        dataclasses.replace(ANA, password_hash=None, token=b"t"),
        dataclasses.replace(ANA, token=b"a new token"),
        dataclasses.replace(ANA, name="bo"),
    ])
    def test_a_changed_password_or_token_ends_it(self, codec, changed):
        """Another password hash, a token added or changed, or another user: not theirs."""
        session = codec.decode(codec.encode(codec.new(ANA)))
        assert not codec.still_theirs(session, changed)

    def test_a_session_from_before_the_check_is_no_ones(self, codec):
        """A cookie without the fingerprint (made before it was kept) is nobody's."""
        old = codec.encode(Session(user="ana", nonce="n", expires=codec.clock() + 60))
        assert not codec.still_theirs(codec.decode(old), ANA)

    def test_the_cookie_shows_nothing_of_the_credentials(self, codec):
        """The fingerprint is keyed: under another secret it is another value, and the
        cookie holds neither the hash nor a plain digest of it."""
        other = SessionCodec(b"o" * 32, lifetime=3600)
        assert codec.credential(ANA) != other.credential(ANA)
        payload = codec.encode(codec.new(ANA)).split(".")[0]
        assert "argon2" not in base64.urlsafe_b64decode(payload + "==").decode()
