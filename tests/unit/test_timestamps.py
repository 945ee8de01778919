"""The hot path's shortcuts for timestamps give exactly what datetime would.

router.envelope.iso writes the date and time of day once per second; the mapping's
`as = "datetime"` skips isoformat for a timestamp already in its canonical form. Both are
checked against the plain datetime expressions they stand for, on generated inputs and the
edges (rounding into the next second, +00:00 and -00:00, a zero fraction, lower-case t).
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from router.envelope import iso
from router.mapping.conversions import CONVERTERS

as_datetime = CONVERTERS["datetime"]


def slow_iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).isoformat(timespec="milliseconds")


def slow_datetime(text: str) -> str:
    moment = datetime.fromisoformat(text.strip())
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    out = moment.isoformat()
    return out[:-6] + "Z" if out.endswith("+00:00") else out


@given(st.floats(min_value=0, max_value=253402300799.0, allow_nan=False))
@settings(max_examples=3000)
def test_iso_is_isoformat_in_milliseconds(ts: float) -> None:
    assert iso(ts) == slow_iso(ts)


@pytest.mark.parametrize("ts", [
    0.0, 1.0, 1764294359.346, 1764294359.9999996, 1764294359.9994999, 1764294359.0005,
    1764294359.999, 1764294360.0, 86399.9999999, 1e-7,
])
def test_iso_edges(ts: float) -> None:
    assert iso(ts) == slow_iso(ts)
    assert iso(ts) == slow_iso(ts)  # the second time from the remembered second


def test_iso_moves_to_the_next_second() -> None:
    assert iso(1764294359.5) == "2025-11-28T01:45:59.500+00:00"
    assert iso(1764294360.25) == "2025-11-28T01:46:00.250+00:00"
    assert iso(1764294359.5) == "2025-11-28T01:45:59.500+00:00"  # and back


@pytest.mark.parametrize("text", [
    "2026-11-20T10:15:31-05:00",
    "2026-11-20T10:15:31+00:00",
    "2026-11-20T10:15:31-00:00",
    "2026-11-20T10:15:31Z",
    "2026-11-20T10:15:31.123456+05:30",
    "2026-11-20T10:15:31.000000-05:00",  # isoformat drops a zero fraction
    "2026-11-20T10:15:31.000000Z",
    "2026-11-20T10:15:31.123-05:00",     # three digits: isoformat writes six
    "2026-11-20t10:15:31-05:00",
    "2026-11-20 10:15:31-05:00",
    "2026-11-20T10:15:31",               # no offset: UTC
    "2026-11-20T10:15:31+05:30:15",      # an offset with seconds
    "  2026-11-20T10:15:31-05:00 ",
    "2024-02-29T23:59:59.999999+14:00",
])
def test_datetime_conversion_is_isoformat(text: str) -> None:
    assert as_datetime(text) == slow_datetime(text)


@given(
    st.datetimes(min_value=datetime(1, 1, 2), max_value=datetime(9999, 12, 30)),
    st.one_of(st.none(), st.integers(min_value=-23 * 60, max_value=23 * 60)),
    st.sampled_from(["T", " "]),
    st.sampled_from(["auto", "seconds", "milliseconds", "microseconds"]),
    st.booleans(),
)
@settings(max_examples=3000)
def test_datetime_conversion_on_generated_timestamps(
    moment: datetime, offset: int | None, sep: str, timespec: str, zulu: bool
) -> None:
    if offset is not None:
        moment = moment.replace(tzinfo=timezone(timedelta(minutes=offset)))
    text = moment.isoformat(sep=sep, timespec=timespec)
    if zulu and text.endswith("+00:00"):
        text = text[:-6] + "Z"
    assert as_datetime(text) == slow_datetime(text)
