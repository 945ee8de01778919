"""Pure pieces of outbound delivery: the retry rung for an attempt and Retry-After."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime

import pytest

from consumers.outbound.sender import parse_retry_after, rung_for

LADDER = (5, 300, 1800, 7200, 18000, 36000, 36000)


@pytest.mark.parametrize(("attempt", "retry_after", "delay"), [
    (0, None, 5),
    (1, None, 300),
    (6, None, 36000),
    (0, 3, 5),          # shorter than the rung: the rung
    (0, 60, 300),       # the first rung at least that long
    (2, 7200, 7200),
    (0, 10**6, 36000),  # longer than any rung: the last
])
def test_rung_for(attempt, retry_after, delay):
    assert delay == rung_for(LADDER, attempt, retry_after)


def test_parse_retry_after():
    assert 120.0 == parse_retry_after("120")
    assert parse_retry_after(None) is None
    assert parse_retry_after("soon") is None
    later = format_datetime(datetime.now(UTC) + timedelta(seconds=90), usegmt=True)
    assert 80 < parse_retry_after(later) <= 90


@pytest.mark.parametrize(("value", "seconds"), [
    ("0", 0.0),
    (" 7 ", 7.0),
    ("9" * 400, float("inf")),       # too long for int(): the last rung, not an error
    ("\u00b2", None),                 # str.isdigit() says yes; float() says no
    ("\u0663", None),                 # Arabic-Indic 3: not delta-seconds
    ("-5", None),
    ("1.5", None),
    ("0x10", None),
    ("Mon, 01 Jan 99999 00:00:00 GMT", None),
    ("Thu, 01 Jan 1970 00:00:00 +9999", None),
    ("Sun, 06 Nov 1994 08:49:37 GMT", 0.0),  # in the past: now
    ("\x00", None),
])
def test_parse_retry_after_never_raises(value, seconds):
    """Whatever a receiver sends gives seconds or None."""
    assert seconds == parse_retry_after(value)


def test_parse_retry_after_reads_a_date_without_zone_as_utc(monkeypatch):
    """An HTTP date with -0000 is UTC whatever this machine's zone."""
    later = datetime.now(UTC) + timedelta(seconds=90)
    value = later.strftime("%a, %d %b %Y %H:%M:%S -0000")
    monkeypatch.setenv("TZ", "America/New_York")
    time.tzset()
    try:
        assert 80 < parse_retry_after(value) <= 90
    finally:
        monkeypatch.undo()
        time.tzset()
