"""The Overview's "rejected in the last hour": counted from the rejections the ingress keeps,
and said to be a floor when those do not reach back an hour."""

from __future__ import annotations

from router.console.overview import _since

SINCE = "2026-11-29T11:00:00.000+00:00"


def _kept(source: str, reason: str, *times: str) -> list[dict[str, object]]:
    return [{"at": f"2026-11-29T{t}.000+00:00", "source": source, "status": 401,
             "reason": reason, "delivery_id": None, "client": "203.0.113.9"} for t in times]


def test_counts_only_the_last_hour_by_reason():
    kept = [*_kept("shopify", "invalid_signature", "11:30:00", "10:59:59"),
            *_kept("shopify", "missing_signature", "11:00:00")]
    totals = {"shopify": [["invalid_signature", 2], ["missing_signature", 1]]}
    assert {"shopify": {"reasons": [["invalid_signature", 1], ["missing_signature", 1]],
                        "at_least": False}} == _since(kept, totals, SINCE)


def test_a_full_buffer_within_the_hour_is_a_floor():
    """100 kept, 150 counted, the oldest kept within the hour: there may have been more."""
    kept = _kept("easypost", "rate_limited", *["11:10:00"] * 100)
    totals = {"easypost": [["rate_limited", 150]]}
    answer = _since(kept, totals, SINCE)["easypost"]
    assert {"reasons": [["rate_limited", 100]], "at_least": True} == answer


def test_a_full_buffer_reaching_back_past_the_hour_is_exact():
    kept = _kept("easypost", "rate_limited", "10:00:00", *["11:10:00"] * 99)
    totals = {"easypost": [["rate_limited", 150]]}
    assert not _since(kept, totals, SINCE)["easypost"]["at_least"]


def test_a_source_refused_only_long_ago_has_none_recent_and_entries_not_understood_skipped():
    kept = [*_kept("portal", "invalid_token", "09:00:00"), {"at": 5}, "nonsense"]
    totals = {"portal": [["invalid_token", 1]]}
    assert {"portal": {"reasons": [], "at_least": False}} == _since(kept, totals, SINCE)
