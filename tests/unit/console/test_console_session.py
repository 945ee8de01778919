"""Signed session cookies and their CSRF tokens."""

from __future__ import annotations

import pytest

from router.console.session import SessionCodec


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
        session = codec.new("ana")
        assert session.user == codec.decode(codec.encode(session)).user

    def test_expired(self, codec, clock):
        """After its lifetime a cookie is no session."""
        cookie = codec.encode(codec.new("ana"))
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
        assert None is codec.decode(tamper(codec.encode(codec.new("ana"))))

    def test_another_secret_cannot_read_it(self, codec, clock):
        """A cookie signed under one secret is nothing under another."""
        other = SessionCodec(b"o" * 32, lifetime=3600, clock=clock)
        assert None is other.decode(codec.encode(codec.new("ana")))

    def test_csrf_is_bound_to_the_session(self, codec):
        """A session's own token passes; another session's, or none, does not."""
        one, two = codec.new("ana"), codec.new("ana")
        assert codec.csrf_ok(one, codec.csrf_token(one))
        assert not codec.csrf_ok(one, codec.csrf_token(two))
        assert not codec.csrf_ok(one, None)
        assert not codec.csrf_ok(one, "")
        assert not codec.csrf_ok(one, "é\udcff")  # not ASCII: refused, never a TypeError


class TestNotes:
    def test_a_note_reads_back_only_in_its_own_session_and_unchanged(self, codec):
        """The note after an action is shown for the session it was made in, as written."""
        session, other = codec.new("ana"), codec.new("ana")
        token = codec.note_token(session, "replayed dead-1 to orders")
        assert codec.note_ok(session, "replayed dead-1 to orders", token)
        assert not codec.note_ok(session, "call +1 555 0100 to restore access", token)
        assert not codec.note_ok(other, "replayed dead-1 to orders", token)
        assert not codec.note_ok(session, "replayed dead-1 to orders", None)
        assert not codec.note_ok(session, "replayed dead-1 to orders", "ünïcode")
