"""WooCommerce's pure pieces: the requests built (paths, Basic or query-string keys, bodies)
and the answers read (WooCommerce's documented examples,
tests/fixtures/providers/woocommerce/rest/) into values or the errors tree."""

from __future__ import annotations

import base64
from pathlib import Path

import orjson
import pytest

from consumers.storefronts.contract import Tracking
from consumers.storefronts.errors import StoreAuthRevoked, StoreRefused, StoreUnavailable
from consumers.storefronts.transport import Response
from consumers.storefronts.woocommerce import (
    build_complete_order,
    build_create_note,
    build_get_order,
    build_list_notes,
    existing_note,
    note_text,
    parse_created_note,
    read_json,
)

FIXTURES = Path(__file__).resolve().parents[2] / "fixtures" / "providers" / "woocommerce" / \
    "rest"
AUTH = ("ck_0123", "cs_4567")
TRACKING = Tracking("9400111899223197428490", "USPS",
                    "https://tools.usps.com/go/TrackConfirmAction?tLabels=9400111899223197428490")


def answer(name: str, status: int = 200) -> Response:
    return Response(status, {}, (FIXTURES / name).read_bytes())


class TestBuild:
    def test_basic_auth(self):
        """The key and secret as HTTP Basic (key as user, secret as password), nothing in
        the query string."""
        request = build_list_notes("723", AUTH, query_auth=False)
        assert ("GET", "/wp-json/wc/v3/orders/723/notes") == (request.method, request.path)
        expected = "Basic " + base64.b64encode(b"ck_0123:cs_4567").decode()
        assert expected == request.headers["Authorization"]
        assert (("type", "customer"),) == request.params

    def test_query_string_auth(self):
        """For servers that drop the Authorization header: consumer_key and consumer_secret
        as query parameters, and no Authorization header."""
        request = build_list_notes("723", AUTH, query_auth=True)
        assert "Authorization" not in request.headers
        assert ("consumer_key", "ck_0123") in request.params
        assert ("consumer_secret", "cs_4567") in request.params

    def test_create_note(self):
        """The note: customer-visible, carrier, number and link; the request that writes."""
        request = build_create_note("723", TRACKING, AUTH, False)
        assert ("POST", "/wp-json/wc/v3/orders/723/notes") == (request.method, request.path)
        assert {"note": note_text(TRACKING), "customer_note": True} == \
            orjson.loads(request.body)
        assert "application/json" == request.headers["Content-Type"]
        assert request.writes
        assert TRACKING.number in note_text(TRACKING) and TRACKING.url in note_text(TRACKING)

    def test_complete_order(self):
        """PUT the order's status completed."""
        request = build_complete_order("723", AUTH, False)
        assert ("PUT", "/wp-json/wc/v3/orders/723") == (request.method, request.path)
        assert {"status": "completed"} == orjson.loads(request.body)
        assert request.writes

    def test_get_order_reads_the_status_only(self):
        assert (("_fields", "id,status"),) == build_get_order("723", AUTH, False).params

    @pytest.mark.parametrize("ref", ["", "wc_order_abc", "723/notes", "-1"])
    def test_not_an_order_id(self, ref):
        """Only a numeric id reaches a path."""
        with pytest.raises(StoreRefused):
            build_list_notes(ref, AUTH, False)


class TestParse:
    def test_no_note_with_the_number(self):
        """The documented notes: none carries our number."""
        assert existing_note(read_json(answer("notes-723.json")), TRACKING.number) is None

    def test_note_with_the_number(self):
        """A note containing the number is the write-back done; its id is returned."""
        notes = read_json(answer("notes-723.json"))
        assert "280" == existing_note(notes, "On hold")

    def test_a_longer_number_is_another_number(self):
        """A note with 1Z1234 is not the note for 1Z12: whole numbers only."""
        notes = [{"id": 5, "note": "Shipped with UPS. Tracking number: 1Z1234 (https://x)"}]
        assert existing_note(notes, "1Z12") is None
        assert "5" == existing_note(notes, "1Z1234")

    def test_created_note(self):
        assert "281" == parse_created_note(answer("note-created-723.json", 201))

    def test_unknown_order_refuses_with_the_message(self):
        with pytest.raises(StoreRefused, match=r"Invalid ID\. \(woocommerce_rest_shop_order"):
            read_json(answer("error-invalid-order.json", 404))

    @pytest.mark.parametrize("status", [401, 403])
    def test_keys_refused(self, status):
        with pytest.raises(StoreAuthRevoked, match="Consumer secret is invalid"):
            read_json(answer("error-consumer-secret.json", status))

    @pytest.mark.parametrize("status", [429, 500, 503])
    def test_unavailable(self, status):
        with pytest.raises(StoreUnavailable):
            read_json(Response(status, {"retry-after": "5"}, b"busy"))

    def test_a_notes_answer_that_is_not_a_list(self):
        with pytest.raises(StoreUnavailable):
            existing_note({"id": 1}, "x")
