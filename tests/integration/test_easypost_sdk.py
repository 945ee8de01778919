"""EasyPost's official Python client against the emulator: what the real client sends, the
emulator accepts, and what the emulator answers, the real client reads. So the emulator (and
the driver tested against it) agree with the real API on shapes, not only with our reading
of its documentation."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import easypost
import pytest
from aiohttp.test_utils import TestServer

from emulators.easypost import Emulator, build_app

KEY = "EZTK_sdk_test_key"
TO = {"name": "Ada Lovelace", "street1": "12 Analytical Way", "city": "Portland", "state": "OR",
      "zip": "97201", "country": "US", "phone": "5555550101"}
FROM = {"name": "Example Warehouse", "street1": "500 Dock St", "city": "Reno", "state": "NV",
        "zip": "89501", "country": "US"}
PARCEL = {"length": 10, "width": 8, "height": 4, "weight": 15.4}


@pytest.fixture
async def emulator() -> AsyncIterator[tuple[Emulator, str]]:
    state = Emulator(key=KEY, rejected_streets=frozenset({"1 Nowhere Lane"}))
    server = TestServer(build_app(state), host="127.0.0.1")
    await server.start_server()
    yield state, str(server.make_url("/v2"))
    await server.close()


def sdk(base: str, key: str = KEY) -> Any:
    # the client is synchronous (requests): the tests run it in a thread beside the emulator
    return easypost.EasyPostClient(key, api_base=base, timeout=60)


async def test_the_sdk_creates_buys_retrieves_and_refunds(emulator):
    """create with reference -> lowest_rate -> buy -> retrieve -> refund, through the SDK's
    own objects; the emulator sold one label for that reference."""
    state, base = emulator
    client = sdk(base)

    def journey() -> tuple[Any, Any, Any, Any, Any]:
        shipment = client.shipment.create(to_address=TO, from_address=FROM, parcel=PARCEL,
                                          reference="order-sdk-1")
        rate = shipment.lowest_rate(carriers=["USPS"])
        bought = client.shipment.buy(shipment.id, rate=rate)
        found = client.shipment.retrieve(shipment.id)
        refunded = client.shipment.refund(shipment.id)
        return shipment, rate, bought, found, refunded

    shipment, rate, bought, found, refunded = await asyncio.to_thread(journey)
    assert isinstance(shipment, easypost.models.Shipment) and shipment.id.startswith("shp_")
    assert ("USPS", "GroundAdvantage", "6.07") == (rate.carrier, rate.service, rate.rate)
    assert bought.selected_rate.id == rate.id
    assert bought.tracking_code and bought.postage_label.label_url
    assert bought.tracker.tracking_code == bought.tracking_code
    assert found.tracking_code == bought.tracking_code
    assert "submitted" == refunded.refund_status
    assert {"order-sdk-1": 1} == state.counters()["labels_by_reference"]


async def test_the_sdk_reads_the_emulators_errors_as_easyposts(emulator):
    """A strict address failure, a missing parameter, a second buy and a wrong key come out
    as the SDK's own typed errors with EasyPost's codes."""
    state, base = emulator
    client = sdk(base)

    def failures() -> list[tuple[type, str | None]]:
        seen = []
        nowhere = TO | {"street1": "1 Nowhere Lane", "verify_strict": True}
        calls = [
            lambda: client.shipment.create(to_address=nowhere, from_address=FROM,
                                           parcel=PARCEL),
            lambda: client.shipment.create(to_address=TO, from_address=FROM, parcel={}),
            lambda: sdk(base, key="wrong").shipment.retrieve("shp_x"),
            lambda: client.shipment.retrieve("shp_missing"),
        ]
        shipment = client.shipment.create(to_address=TO, from_address=FROM, parcel=PARCEL)
        client.shipment.buy(shipment.id, rate=shipment.lowest_rate())
        calls.append(lambda: client.shipment.buy(shipment.id, rate=shipment.lowest_rate()))
        for call in calls:
            try:
                call()
            except easypost.errors.ApiError as exc:
                seen.append((type(exc), exc.code))
            else:
                seen.append((type(None), None))
        return seen

    assert [
        (easypost.errors.InvalidRequestError, "ADDRESS.VERIFY.FAILURE"),
        (easypost.errors.InvalidRequestError, "PARAMETER.REQUIRED"),
        (easypost.errors.UnauthorizedError, "UNAUTHORIZED"),
        (easypost.errors.NotFoundError, "NOT_FOUND"),
        (easypost.errors.InvalidRequestError, "SHIPMENT.POSTAGE.EXISTS"),
    ] == await asyncio.to_thread(failures)
    assert 1 == state.counters()["labels_sold"]
