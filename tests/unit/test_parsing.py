"""Unit tests for router.parsing.parse_body."""

from __future__ import annotations

import json
import random
from typing import Any

import orjson
import pytest

from router.errors import MalformedPayload
from router.parsing import _json_too_deep, parse_body

BILLION_LAUGHS = b"""<?xml version="1.0"?>
<!DOCTYPE lolz [
 <!ENTITY lol "lol">
 <!ENTITY lol2 "&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;">
 <!ENTITY lol3 "&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;">
]>
<lolz>&lol3;</lolz>"""

EXTERNAL_ENTITY = b"""<?xml version="1.0"?>
<!DOCTYPE foo [<!ENTITY xxe SYSTEM "file:///etc/passwd">]>
<foo>&xxe;</foo>"""


def reason_of(body: bytes, media_type: str, **kwargs: Any) -> str:
    with pytest.raises(MalformedPayload) as info:
        parse_body(body, media_type, **kwargs)
    return info.value.reason


def nested(depth: int) -> bytes:
    """A JSON document of exactly `depth` nested containers, alternating objects and arrays."""
    doc: Any = 1
    for level in range(depth):
        doc = {"k": doc} if level % 2 else [doc]
    return orjson.dumps(doc)


def depth_of(value: Any) -> int:
    if isinstance(value, dict):
        return 1 + max((depth_of(v) for v in value.values()), default=0)
    if isinstance(value, list):
        return 1 + max((depth_of(v) for v in value), default=0)
    return 0


class TestParseJson:
    def test_object(self) -> None:
        """A JSON object parses to a dict, big integers exact."""
        expected = {"id": 5820982911946154508, "note": "é", "ok": True, "x": None}
        actual = parse_body(
            b'{"id":5820982911946154508,"note":"\xc3\xa9","ok":true,"x":null}', "application/json"
        )
        assert expected == actual

    def test_suffix_and_parameters(self) -> None:
        """`+json` types and media type parameters are accepted."""
        assert {"a": 1} == parse_body(b'{"a":1}', "application/vnd.api+json")
        assert {"a": 1} == parse_body(b'{"a":1}', "Application/JSON; charset=utf-8")

    def test_invalid_utf8(self) -> None:
        """Bytes that are not UTF-8 are invalid_utf8."""
        assert "invalid_utf8" == reason_of(b'{"note":"\xff\xfe"}', "application/json")

    @pytest.mark.parametrize("body", [b"", b"{", b'{"a":1}x', b"NaN", b"{'a':1}"])
    def test_invalid_json(self, body: bytes) -> None:
        """Anything but one JSON document is invalid_json."""
        assert "invalid_json" == reason_of(body, "application/json")

    def test_message_does_not_echo_body(self) -> None:
        """The error message never contains the payload."""
        with pytest.raises(MalformedPayload) as info:
            parse_body(b'{"email":"jane.doe@example.com",}', "application/json")
        assert "jane" not in info.value.message

    def test_depth_at_limit_accepted(self) -> None:
        """Nesting exactly max_depth deep is accepted; a flat object is depth 1."""
        assert {"a": 1} == parse_body(b'{"a":1}', "application/json", max_depth=1)
        assert 32 == depth_of(parse_body(nested(32), "application/json", max_depth=32))

    def test_depth_over_limit(self) -> None:
        """Nesting one level past max_depth is too_deep."""
        assert "too_deep" == reason_of(nested(33), "application/json", max_depth=32)
        assert "too_deep" == reason_of(b'{"a":{}}', "application/json", max_depth=1)

    def test_depth_beyond_orjson_limit(self) -> None:
        """Nesting past orjson's own 1024 limit is too_deep, not invalid_json."""
        assert "too_deep" == reason_of(b"[" * 5000 + b"]" * 5000, "application/json")

    def test_brackets_in_strings_do_not_count(self) -> None:
        """Brackets and escaped quotes inside strings neither add nor hide depth."""
        body = orjson.dumps({"a": "[[[[{{{{", "b": ['"]]]}}}\\', {"c": '\\\\"['}]})
        assert 3 == depth_of(parse_body(body, "application/json", max_depth=3))
        assert "too_deep" == reason_of(body, "application/json", max_depth=2)
        hidden = orjson.dumps({"a": "]]]]]]]]", "b": [[[[1]]]]})
        assert "too_deep" == reason_of(hidden, "application/json", max_depth=4)

    def test_depth_agrees_with_walk(self) -> None:
        """The byte-level depth check agrees with a recursive walk on random documents."""
        rng = random.Random(7)
        atoms = ["{", "}", "[", "]", '"', "\\", "a", "é", "\n", "\\\\", '\\"']

        def gen(level: int) -> Any:
            roll = rng.random()
            if level > 8 or roll < 0.3:
                return rng.choice(["".join(rng.choices(atoms, k=rng.randint(0, 5))), 1, None])
            if roll < 0.65:
                return {"".join(rng.choices(atoms, k=3)): gen(level + 1) for _ in range(3)}
            return [gen(level + 1) for _ in range(rng.randint(0, 3))]

        for _ in range(500):
            doc = gen(0)
            depth = depth_of(doc)
            for body in (orjson.dumps(doc), json.dumps(doc).encode()):
                for limit in range(0, 11):
                    assert (depth > limit) == _json_too_deep(body, limit)


class TestParseXml:
    def test_shape(self) -> None:
        """XML becomes dicts: attributes as @name, repeated tags as lists, leaves as text."""
        body = b"""<?xml version="1.0" encoding="UTF-8"?>
        <order id="42">
          <note> Leave at door </note>
          <empty/>
          <line sku="A"><quantity>2</quantity></line>
          <line sku="B"><quantity>1</quantity></line>
          <total currency="USD">98.00</total>
        </order>"""
        expected = {
            "order": {
                "@id": "42",
                "note": "Leave at door",
                "empty": "",
                "line": [{"@sku": "A", "quantity": "2"}, {"@sku": "B", "quantity": "1"}],
                "total": {"@currency": "USD", "#text": "98.00"},
            }
        }
        assert expected == parse_body(body, "application/xml")

    def test_namespaces_dropped(self) -> None:
        """Namespace URIs are removed from tag and attribute names."""
        body = b'<o:order xmlns:o="urn:x" o:id="1"><o:sku>A</o:sku></o:order>'
        assert {"order": {"@id": "1", "sku": "A"}} == parse_body(body, "text/xml")

    def test_billion_laughs(self) -> None:
        """Entity expansion (billion laughs) is xml_forbidden."""
        assert "xml_forbidden" == reason_of(BILLION_LAUGHS, "application/xml")

    def test_external_entity(self) -> None:
        """An external entity is xml_forbidden and never read."""
        assert "xml_forbidden" == reason_of(EXTERNAL_ENTITY, "application/xml")

    def test_external_dtd(self) -> None:
        """A DOCTYPE pointing at an external DTD is xml_forbidden."""
        body = b'<!DOCTYPE foo SYSTEM "http://example.com/x.dtd"><foo/>'
        assert "xml_forbidden" == reason_of(body, "application/xml")

    @pytest.mark.parametrize("body", [b"<a><b></a>", b"", b"not xml", b"<a>&undefined;</a>"])
    def test_malformed(self, body: bytes) -> None:
        """Malformed XML is invalid_xml."""
        assert "invalid_xml" == reason_of(body, "application/xml")

    def test_depth(self) -> None:
        """Element nesting counts like JSON nesting: the root alone is depth 1."""
        body = b"<a>" * 5 + b"x" + b"</a>" * 5
        assert "too_deep" == reason_of(body, "application/xml", max_depth=4)
        assert {"a": {"a": {"a": {"a": {"a": "x"}}}}} == parse_body(
            body, "application/xml", max_depth=5
        )

    def test_very_deep(self) -> None:
        """A very deep document is rejected without exhausting the Python stack."""
        body = b"<a>" * 20000 + b"</a>" * 20000
        assert "too_deep" == reason_of(body, "application/xml")


class TestParseForm:
    def test_pairs(self) -> None:
        """A form body parses to str -> str, the last value of a repeated name winning."""
        expected = {"webhook_id": "12", "a": "2", "blank": "", "name": "Jane Doe"}
        actual = parse_body(
            b"webhook_id=12&a=1&a=2&blank=&name=Jane+Doe", "application/x-www-form-urlencoded"
        )
        assert expected == actual

    def test_invalid_utf8(self) -> None:
        """Raw or percent-encoded bytes that are not UTF-8 are invalid_utf8."""
        assert "invalid_utf8" == reason_of(b"a=\xff", "application/x-www-form-urlencoded")
        assert "invalid_utf8" == reason_of(b"a=%ff", "application/x-www-form-urlencoded")


class TestParseOther:
    @pytest.mark.parametrize("media_type", ["text/plain", "multipart/form-data", "", "json"])
    def test_unsupported(self, media_type: str) -> None:
        """Other media types are unsupported_format."""
        assert "unsupported_format" == reason_of(b"{}", media_type)
