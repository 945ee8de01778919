"""The Search page's order timeline shows the order's label, where the trace carries one
(consumers.trace: a `label` entry, the labels row), with its tracking link."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import jinja2
import pytest

import router.console
from router.console.pages import placed_asides

TEMPLATES = Path(router.console.__file__).parent / "templates"
BOUGHT = {"state": "bought", "carrier": "USPS", "service": "Priority",
          "tracking_code": "9400100000000000000000",
          "tracking_url": "https://track.easypost.com/djE6dHJrXzE",
          "label_url": "https://easypost-files.s3.amazonaws.com/label.png",
          "hold_reason": None, "message": None, "refund_status": None,
          "created_at": "2026-12-07T10:00:00.000Z", "updated_at": "2026-12-07T10:00:01.000Z"}


def search_page(**result: Any) -> str:
    """search.html as the console renders it (autoescape, StrictUndefined), for order 1042."""
    environment = jinja2.Environment(loader=jinja2.FileSystemLoader(TEMPLATES),
                                     autoescape=True, undefined=jinja2.StrictUndefined)
    trace = {"id": "1042", "events": [], "more": False, "refused": None,
             "refused_error": None, **result}
    return environment.get_template("search.html").render(
        id="1042", result=trace, asides=placed_asides(trace), user=None, may_act=False,
        csrf="")


class TestLabelOnTheTimeline:
    def test_a_bought_label_with_its_tracking_link(self):
        """The label's carrier, service, state, tracking code and a link to track it."""
        page = search_page(label=BOUGHT)
        assert 'id="label"' in page and "USPS" in page and "Priority" in page
        assert "<strong>bought</strong>" in page and "9400100000000000000000" in page
        assert ('<a href="https://track.easypost.com/djE6dHJrXzE" rel="noopener noreferrer">'
                "track the parcel</a>") in page

    def test_a_held_label_says_why(self):
        """A held label shows the hold reason and the carrier's message, and no tracking."""
        page = search_page(label={**BOUGHT, "state": "held", "tracking_code": None,
                                  "tracking_url": None, "label_url": None,
                                  "hold_reason": "address_invalid",
                                  "message": "Address not found"})
        assert "<strong>held</strong>: <code>address_invalid</code>" in page
        assert "Address not found" in page and "track the parcel" not in page

    @pytest.mark.parametrize("url", ["javascript:alert(1)", " javascript:alert(1)",
                                     "data:text/html,<script>x</script>", "//evil.example"])
    def test_a_link_that_is_no_web_address_is_text(self, url):
        """A carrier's URL that is not http(s) is shown as text, escaped, never as a link."""
        page = search_page(label={**BOUGHT, "tracking_url": url, "label_url": url})
        assert "track the parcel" not in page and "<script>" not in page
        assert 'href="javascript' not in page and 'href=" javascript' not in page

    @pytest.mark.parametrize("result", [{}, {"label": None}])
    def test_no_label_no_section(self, result):
        """Without a label in the trace (not an order, none bought, or a trace that does not
        carry labels) there is no Label section."""
        page = search_page(**result)
        assert 'id="label"' not in page and "Label" not in page


def event(event_id: str, received_at: str) -> dict[str, Any]:
    return {"event_id": event_id, "received_at": received_at}


class TestAsidesInTime:
    def test_each_goes_before_the_first_event_received_after_it(self):
        """The label and each write-back are placed by their last change: before the first
        event received later, or after every event."""
        events = [event("e-1", "2026-12-07T10:00:00Z"), event("e-2", "2026-12-07T10:00:20Z")]
        label = {**BOUGHT, "updated_at": "2026-12-07T10:00:05Z"}
        early = {"tracking_code": "T1", "updated_at": "2026-12-07T10:00:10Z"}
        late = {"tracking_code": "T2", "updated_at": "2026-12-07T10:00:30Z"}
        places = placed_asides({"events": events, "label": label, "writebacks": [late, early]})
        assert [[], [("label", label), ("writeback", early)], [("writeback", late)]] == [
            [(aside["kind"], aside["row"]) for aside in place] for place in places]

    def test_no_events_all_after(self):
        places = placed_asides({"events": [], "label": None, "writebacks": []})
        assert [[]] == places
