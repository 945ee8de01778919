"""Pure pieces of outbound delivery: the retry rung for an attempt and Retry-After."""

from __future__ import annotations

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
