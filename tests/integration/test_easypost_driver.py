"""The EasyPost driver against the EasyPost emulator on a local port: a label bought once,
and every failure mapped to the error the labels consumer steers by."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

import aiohttp
import pytest
from aiohttp.test_utils import TestServer

from consumers.carriers.base import (
    Address,
    AddressRejected,
    CarrierRefused,
    CarrierUnavailable,
    Parcel,
    ShipmentRequest,
    Uncertain,
)
from consumers.carriers.easypost import EasyPost
from consumers.carriers.rates import RateRule, Service, choose_rate
from emulators.control import CONTROL, Fault
from emulators.easypost import Emulator, build_app

KEY = "EZTK_driver_test_key"
WAREHOUSE = Address(name="Example Warehouse", line1="500 Dock St", city="Reno", region="NV",
                    postal_code="89501", country="US")
CUSTOMER = Address(name="Ada Lovelace", line1="12 Analytical Way", city="Portland",
                   region="OR", postal_code="97201", country="US")
NOWHERE = Address(name="Nobody", line1="1 Nowhere Lane", city="Portland", region="OR",
                  postal_code="97201", country="US")


def request(reference: str, to: Address = CUSTOMER) -> ShipmentRequest:
    return ShipmentRequest(reference=reference, from_address=WAREHOUSE, to_address=to,
                           parcel=Parcel(15.4, 10, 8, 4))


@dataclass
class Setup:
    emulator: Emulator
    server: TestServer
    session: aiohttp.ClientSession

    def driver(self, key: str = KEY, timeout: float = 30.0) -> EasyPost:
        return EasyPost(key, self.session, base_url=str(self.server.make_url("/v2")),
                        timeout=timeout)

    def fail(self, **fault: Any) -> None:
        """What POST /_emulator/faults asks for."""
        self.server.app[CONTROL].faults.append(Fault(**fault))


@pytest.fixture
async def setup() -> AsyncIterator[Setup]:
    emulator = Emulator(key=KEY, rejected_streets=frozenset({"1 Nowhere Lane"}))
    server = TestServer(build_app(emulator), host="127.0.0.1")
    await server.start_server()
    async with aiohttp.ClientSession() as session:
        yield Setup(emulator, server, session)
    await server.close()


class TestBuyingALabel:
    async def test_create_choose_buy(self, setup):
        """One shipment, the cheapest allowed rate bought, one label sold for the order."""
        driver = setup.driver()
        shipment = await driver.create_shipment(request("order-1"))
        assert shipment.label is None and shipment.rates
        rate = choose_rate(shipment.rates, RateRule(allowed=(Service("USPS"),)), "US")
        label = await driver.buy(shipment.id, rate.id)
        assert (shipment.id, "USPS", "GroundAdvantage", Decimal("6.07")) == (
            label.shipment_id, label.carrier, label.service, label.amount)
        assert label.tracking_code.startswith("9400") and label.label_url
        assert {"order-1": 1} == setup.emulator.counters()["labels_by_reference"]

    async def test_a_retry_finds_the_label_by_looking_the_shipment_up(self, setup):
        """After a buy, retrieving the stored shipment id shows the label: nothing to buy."""
        driver = setup.driver()
        shipment = await driver.create_shipment(request("order-2"))
        label = await driver.buy(shipment.id, shipment.rates[0].id)
        assert label == (await driver.retrieve_shipment(shipment.id)).label

    async def test_buying_a_bought_shipment_returns_its_label_without_a_second_sale(self, setup):
        """EasyPost's SHIPMENT.POSTAGE.EXISTS is read as 'take the label that exists'."""
        driver = setup.driver()
        shipment = await driver.create_shipment(request("order-3"))
        first = await driver.buy(shipment.id, shipment.rates[0].id)
        again = await driver.buy(shipment.id, shipment.rates[1].id)
        assert first == again
        assert 1 == setup.emulator.counters()["labels_sold"]

    async def test_refund(self, setup):
        """Voiding a label asks for the refund and reads its status."""
        driver = setup.driver()
        shipment = await driver.create_shipment(request("order-4"))
        await driver.buy(shipment.id, shipment.rates[0].id)
        refund = await driver.refund(shipment.id)
        assert (shipment.id, "submitted") == (refund.shipment_id, refund.status)
        assert 1 == setup.emulator.counters()["refunds"]


class TestFailures:
    async def test_an_address_the_carrier_rejects(self, setup):
        """422 ADDRESS.VERIFY.FAILURE -> AddressRejected with the carrier's message; no
        shipment was made."""
        with pytest.raises(AddressRejected) as caught:
            await setup.driver().create_shipment(request("order-5", to=NOWHERE))
        assert "ADDRESS.VERIFY.FAILURE" == caught.value.code
        assert "Address not found" in caught.value.message
        assert 0 == setup.emulator.counters().get("shipments_created", 0)

    async def test_500_is_transient(self, setup):
        """A carrier error is retried later."""
        setup.fail(status=500)
        with pytest.raises(CarrierUnavailable) as caught:
            await setup.driver().create_shipment(request("order-6"))
        assert (500, None) == (caught.value.status, caught.value.retry_after)

    async def test_429_is_transient_with_its_retry_after(self, setup):
        """Rate limited: retry, not before the seconds EasyPost asked for."""
        driver = setup.driver()
        shipment = await driver.create_shipment(request("order-7"))
        setup.fail(status=429, retry_after=3, operation="buy_shipment")
        with pytest.raises(CarrierUnavailable) as caught:
            await driver.buy(shipment.id, shipment.rates[0].id)
        assert (429, 3.0) == (caught.value.status, caught.value.retry_after)
        assert 0 == setup.emulator.counters()["labels_sold"]

    async def test_a_buy_whose_answer_is_lost_is_uncertain_and_the_label_is_found(self, setup):
        """The connection drops after the sale: Uncertain, never 'failed'; looking the
        shipment up finds the one label sold."""
        driver = setup.driver()
        shipment = await driver.create_shipment(request("order-8"))
        setup.fail(reset=True, operation="buy_shipment")
        with pytest.raises(Uncertain):
            await driver.buy(shipment.id, shipment.rates[0].id)
        found = await driver.retrieve_shipment(shipment.id)
        assert found.label is not None
        assert {shipment.id: 1} == setup.emulator.counters()["labels_by_shipment"]

    async def test_a_create_whose_answer_is_lost_is_found_by_its_reference(self, setup):
        """Uncertain create: the shipment is there under our reference, nothing is bought."""
        driver = setup.driver()
        setup.fail(reset=True, operation="create_shipment")
        with pytest.raises(Uncertain):
            await driver.create_shipment(request("order-12"))
        found = await driver.retrieve_shipment("order-12")
        assert ("order-12", None) == (found.reference, found.label)
        assert 0 == setup.emulator.counters()["labels_sold"]

    async def test_a_lost_answer_to_a_read_is_only_unavailable(self, setup):
        """A GET changes nothing at the carrier: retrying it is safe."""
        driver = setup.driver()
        shipment = await driver.create_shipment(request("order-9"))
        # aiohttp itself retries an idempotent request once on a dropped keep-alive connection
        setup.fail(reset=True, operation="retrieve_shipment", count=5)
        with pytest.raises(CarrierUnavailable):
            await driver.retrieve_shipment(shipment.id)

    async def test_a_slow_buy_past_the_timeout_is_uncertain(self, setup):
        """The carrier may still be selling while we gave up waiting."""
        driver = setup.driver()
        shipment = await driver.create_shipment(request("order-10"))
        setup.fail(delay=3.0, operation="buy_shipment")
        with pytest.raises(Uncertain):
            await setup.driver(timeout=0.3).buy(shipment.id, shipment.rates[0].id)

    async def test_nobody_listening_is_unavailable(self, setup):
        """Connection refused: nothing was sent, so nothing can have been bought."""
        port = setup.server.port
        await setup.server.close()
        driver = EasyPost(KEY, setup.session, base_url=f"http://127.0.0.1:{port}/v2")
        with pytest.raises(CarrierUnavailable):
            await driver.buy("shp_x", "rate_x")

    async def test_a_wrong_key_is_refused(self, setup):
        """401 is permanent: retrying with the same key will not help."""
        with pytest.raises(CarrierRefused) as caught:
            await setup.driver(key="not-the-key").create_shipment(request("order-11"))
        assert (401, "UNAUTHORIZED") == (caught.value.status, caught.value.code)

    async def test_an_unknown_shipment_is_refused(self, setup):
        """404 NOT_FOUND for a shipment id EasyPost does not know."""
        with pytest.raises(CarrierRefused) as caught:
            await setup.driver().retrieve_shipment("shp_unknown")
        assert (404, "NOT_FOUND") == (caught.value.status, caught.value.code)
