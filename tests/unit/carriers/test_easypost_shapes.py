"""The EasyPost driver's pure half: the requests it builds and the answers it parses, against
the trimmed EasyPost bodies in tests/fixtures/providers/easypost/api (README there)."""

from __future__ import annotations

import json
from decimal import Decimal
from pathlib import Path

import pytest

from consumers.carriers import build_carrier
from consumers.carriers.base import (
    Address,
    AddressRejected,
    CarrierRefused,
    CarrierUnavailable,
    Parcel,
    ShipmentRequest,
)
from consumers.carriers.easypost import (
    build_buy,
    build_create,
    parse_error,
    parse_label,
    parse_refund,
    parse_shipment,
    retry_after,
)

API = Path(__file__).resolve().parents[2] / "fixtures" / "providers" / "easypost" / "api"


def fixture(name: str) -> dict:
    return json.loads((API / name).read_text())


def raw(name: str) -> bytes:
    return (API / name).read_bytes()


WAREHOUSE = Address(name="Example Warehouse", line1="500 Dock St", line2="Bay 4", city="Reno",
                    region="NV", postal_code="89501", country="US", phone="5555550100",
                    email="ship@example.test")
CUSTOMER = Address(name="Ada Lovelace", line1="12 Analytical Way", city="Portland",
                   region="OR", postal_code="97201", country="US")
REQUEST = ShipmentRequest(reference="order-5820982911946154508", from_address=WAREHOUSE,
                          to_address=CUSTOMER, parcel=Parcel(15.4, 10, 8, 4))


class TestBuildCreate:
    def test_uses_only_fields_easypost_was_sent(self):
        """Every key we send at each level is one EasyPost's client sent in the same place."""
        documented = fixture("shipment-create-request.json")["shipment"]
        built = build_create(REQUEST)["shipment"]
        assert set(built) <= set(documented)
        assert set(built["from_address"]) <= set(documented["from_address"])
        assert set(built["to_address"]) - {"verify_strict"} <= set(documented["to_address"])
        assert set(built["parcel"]) == set(documented["parcel"])

    def test_maps_our_address_and_parcel_to_easypost_names(self):
        """Address lines, region and postal code become street1/2, state and zip; the parcel
        goes in ounces and inches; our reference rides along."""
        built = build_create(REQUEST)["shipment"]
        expected_from = {"name": "Example Warehouse", "street1": "500 Dock St",
                         "street2": "Bay 4", "city": "Reno", "state": "NV", "zip": "89501",
                         "country": "US", "phone": "5555550100", "email": "ship@example.test"}
        assert expected_from == built["from_address"]
        assert {"weight": 15.4, "length": 10, "width": 8, "height": 4} == built["parcel"]
        assert "order-5820982911946154508" == built["reference"]

    def test_asks_strict_verification_of_the_destination_only(self):
        """verify_strict on to_address makes a bad address fail the create (422); the
        warehouse's address is not verified on every label."""
        built = build_create(REQUEST)["shipment"]
        assert ["delivery"] == built["to_address"]["verify_strict"]
        assert "verify_strict" not in built["from_address"]
        unverified = ShipmentRequest(REQUEST.reference, WAREHOUSE, CUSTOMER, REQUEST.parcel,
                                     verify_address=False)
        assert "verify_strict" not in build_create(unverified)["shipment"]["to_address"]

    def test_a_parcel_without_dimensions_sends_weight_alone(self):
        """No length/width/height keys when the parcel has no size."""
        request = ShipmentRequest("r", WAREHOUSE, CUSTOMER, Parcel(8))
        assert {"weight": 8} == build_create(request)["shipment"]["parcel"]

    @pytest.mark.parametrize("parcel", [
        dict(weight_oz=0), dict(weight_oz=-1), dict(weight_oz=5, length_in=3),
        dict(weight_oz=5, length_in=3, width_in=2, height_in=0),
    ])
    def test_a_parcel_easypost_would_refuse_is_refused_here(self, parcel):
        """No weight, a partial size or a size of zero fails when the Parcel is made."""
        with pytest.raises(ValueError):
            Parcel(**parcel)

    def test_buy_names_the_rate_as_easypost_wants(self):
        """POST /shipments/{id}/buy takes {"rate": {"id": ...}}."""
        assert fixture("shipment-buy-request.json") == build_buy(
            "rate_aaaa0000aaaa0000aaaa0000aaaa0003")


class TestParse:
    def test_a_created_shipment_has_rates_and_no_label(self):
        """Rates keep EasyPost's ids; amounts are exact decimals."""
        shipment = parse_shipment(fixture("shipment-created.json"))
        assert "shp_0a1b2c3d4e5f60718293a4b5c6d7e8f9" == shipment.id
        assert "order-5820982911946154508" == shipment.reference
        assert None is shipment.label
        assert [("USPS", "Express", Decimal("31.20")), ("USPS", "Priority", Decimal("8.05")),
                ("USPS", "GroundAdvantage", Decimal("5.98")), ("UPS", "Ground", Decimal("9.40"))
                ] == [(r.carrier, r.service, r.amount) for r in shipment.rates]
        assert "rate_aaaa0000aaaa0000aaaa0000aaaa0001" == shipment.rates[0].id

    def test_a_bought_shipment_carries_its_label(self):
        """Tracking code, the selected rate's carrier/service/amount, label and tracking URLs."""
        label = parse_label(fixture("shipment-bought.json"))
        assert ("shp_0a1b2c3d4e5f60718293a4b5c6d7e8f9", "9400100200000000000017", "USPS",
                "GroundAdvantage", Decimal("5.98"), "USD") == (
            label.shipment_id, label.tracking_code, label.carrier, label.service,
            label.amount, label.currency)
        assert label.label_url.endswith("pl_00000000000000000000000000000004.png")
        assert label.tracking_url.endswith("trk_00000000000000000000000000000005")

    def test_a_retrieved_bought_shipment_is_seen_as_bought(self):
        """What a retry reads: the shipment's label is there, so nothing is bought again."""
        assert parse_shipment(fixture("shipment-bought.json")).label is not None

    def test_a_buy_answer_without_label_is_refused(self):
        """A 200 to a buy with no postage is not taken as a label."""
        with pytest.raises(CarrierRefused):
            parse_label(fixture("shipment-created.json"))

    def test_refund_reads_the_refund_status(self):
        """POST /refund answers the shipment with refund_status."""
        refund = parse_refund(fixture("shipment-refunded.json"))
        assert ("shp_0a1b2c3d4e5f60718293a4b5c6d7e8f9", "submitted") == (
            refund.shipment_id, refund.status)

    def test_something_else_than_a_shipment_is_refused(self):
        """A body without the fields of a Shipment is a typed error, not a KeyError."""
        with pytest.raises(CarrierRefused):
            parse_shipment({"object": "Shipment"})


class TestParseError:
    def test_address_verify_failure_keeps_the_carriers_words(self):
        """422 ADDRESS.VERIFY.FAILURE -> AddressRejected with the message and field errors."""
        error = parse_error(422, {}, raw("error-address-verify-failure.json"))
        assert isinstance(error, AddressRejected)
        assert "ADDRESS.VERIFY.FAILURE" == error.code
        assert ("Unable to verify address.; address: Address not found; "
                "street1: House number is missing") == error.message

    def test_other_422_is_refused_for_good(self):
        """A missing parameter is our bug: permanent, code and message kept."""
        error = parse_error(422, {}, raw("error-parameter-required.json"))
        assert isinstance(error, CarrierRefused)
        assert (422, "PARAMETER.REQUIRED") == (error.status, error.code)
        assert "shipment: cannot be blank" in error.message

    def test_postage_exists_is_refused_with_its_code(self):
        """The buy of a bought shipment: the transport reads that code (see the driver)."""
        error = parse_error(422, {}, raw("error-postage-exists.json"))
        assert isinstance(error, CarrierRefused)
        assert "SHIPMENT.POSTAGE.EXISTS" == error.code

    @pytest.mark.parametrize(("status", "headers", "expected_after"), [
        (429, {"Retry-After": "7"}, 7.0),
        (503, {"Retry-After": "2.5"}, 2.5),
        (500, {}, None),
        (502, {"Retry-After": "Wed, 21 Oct 2015 07:28:00 GMT"}, None),
        (504, {}, None),
        (408, {}, None),
    ])
    def test_5xx_429_and_timeouts_are_transient(self, status, headers, expected_after):
        """Retry later, not before Retry-After seconds when given."""
        error = parse_error(status, headers, b'{"error": {"code": "X", "message": "busy"}}')
        assert isinstance(error, CarrierUnavailable)
        assert (status, expected_after) == (error.status, error.retry_after)

    @pytest.mark.parametrize("status", [400, 401, 402, 403, 404])
    def test_other_4xx_are_permanent(self, status):
        """Unauthorized, payment required, not found: no retry will help."""
        assert isinstance(parse_error(status, {}, b"{}"), CarrierRefused)

    def test_a_body_that_is_not_easypost_json_is_described(self):
        """An HTML 502 from a proxy still becomes a typed error with its text."""
        error = parse_error(502, {}, b"<html>Bad Gateway</html>")
        assert isinstance(error, CarrierUnavailable)
        assert "Bad Gateway" in str(error)

    def test_retry_after_never_goes_negative(self):
        """A clock-skewed negative value means: now."""
        assert 0.0 == retry_after({"Retry-After": "-3"})


class TestRegistry:
    async def test_easypost_is_registered_by_name(self):
        """The labels setting names the carrier; an unknown one fails with the known list."""
        import aiohttp

        async with aiohttp.ClientSession() as session:
            assert "easypost" == build_carrier("easypost", "key", session).name
            with pytest.raises(ValueError, match="known: easypost"):
                build_carrier("fedex-direct", "key", session)
