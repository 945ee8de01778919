"""Where the console sends the browser after logging in."""

from __future__ import annotations

import pytest

from router.console.pages import next_location

HOSTILE = [
    # yarl drops tab, CR and LF (anywhere) and leading C0 controls: "//evil.example" is sent
    "/\t/evil.example", "/\n/evil.example", "/\r/evil.example", "/\r\n/evil.example",
    "\t//evil.example", "\x01//evil.example", " //evil.example",
    # another host, a scheme, a backslash (browsers read it as "/")
    "//evil.example", "/\\evil.example", "\\\\evil.example",
    "/\\/evil.example", "/x\\evil.example", "/x/%5c/evil.example", "https://evil.example",
    "http:evil.example", "javascript:alert(1)", "evil.example", "",
    # control and (unicode) whitespace characters, raw
    "/\x00/evil.example", "/\x0b/evil.example", "/\x7f", "/ /evil.example",
    "/\u00a0/evil.example", "/\u2028/evil.example", "/\u3000/evil.example",
    "/\ufeff/evil.example", "/\uff0f/evil.example",
    # and percent-encoded, for whatever on the way decodes them
    "/%09/evil.example", "/%0d%0a/evil.example", "/%2F/evil.example", "/%2f%2fevil.example",
    "/%5Cevil.example", "/%20/evil.example", "/%E3%80%80/evil.example", "%2F%2Fevil.example",
    # what yarl cannot read
    "http://[::1", None,
]


class TestNextLocation:
    @pytest.mark.parametrize("value", HOSTILE)
    def test_anything_but_a_local_path_goes_home(self, value):
        """A value that would leave this console, or that carries a control, whitespace or
        backslash character (raw or encoded), is "/"."""
        assert "/" == next_location(value)

    @pytest.mark.parametrize(("value", "location"), [
        ("/", "/"),
        ("/search", "/search"),
        ("/search?id=1042", "/search?id=1042"),
        ("/search?id=a%20b", "/search?id=a%20b"),
        ("/dead-letters/message?id=x#top", "/dead-letters/message?id=x#top"),
        ("/search?next=//evil.example", "/search?next=//evil.example"),  # a query is no host
        ("///evil.example", "/evil.example"),  # an empty host: yarl sends the path alone
    ])
    def test_a_local_path_is_kept(self, value, location):
        """A path on this console comes back as it will be sent."""
        assert location == next_location(value)
