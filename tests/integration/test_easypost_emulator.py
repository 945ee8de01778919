"""The EasyPost emulator as a referee: it answers in EasyPost's shapes, refuses what EasyPost
would refuse, counts what it sold, fails on demand, and starts by hand."""

from __future__ import annotations

import asyncio
import base64
import json
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest
from aiohttp.test_utils import TestClient, TestServer
from yarl import URL

from emulators.control import CONTROL
from emulators.easypost import EMULATOR, Emulator, build_app

KEY = "EZTK_emulator_test_key"
ROOT = Path(__file__).resolve().parents[2]
API = ROOT / "tests" / "fixtures" / "providers" / "easypost" / "api"
AUTH = {"Authorization": f"Bearer {KEY}"}


def basic(user: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:".encode()).decode()


def fixture(name: str) -> dict:
    return json.loads((API / name).read_text())


@pytest.fixture
async def client() -> AsyncIterator[TestClient]:
    emulator = Emulator(key=KEY, rejected_streets=frozenset({"1 Nowhere Lane"}))
    async with TestClient(TestServer(build_app(emulator), host="127.0.0.1")) as test_client:
        yield test_client


def emulator_of(client: TestClient) -> Emulator:
    return client.app[EMULATOR]


async def create(client: TestClient, body: dict | None = None) -> aiohttp.ClientResponse:
    return await client.post("/v2/shipments", headers=AUTH,
                             json=body or fixture("shipment-create-request.json"))


class TestShapes:
    async def test_a_created_shipment_has_every_field_of_easyposts(self, client):
        """201 with every key of EasyPost's Shipment, its rates carrying Rate's keys."""
        answer = await create(client)
        assert 201 == answer.status
        body = await answer.json()
        documented = fixture("shipment-created.json")
        assert set(documented) <= set(body)
        assert set(documented["rates"][0]) <= set(body["rates"][0])
        assert "order-5820982911946154508" == body["reference"]
        assert body["id"].startswith("shp_") and None is body["postage_label"]

    async def test_a_bought_shipment_has_label_tracker_and_selected_rate(self, client):
        """The buy answers with the keys EasyPost's bought Shipment has, nested ones too."""
        shipment = await (await create(client)).json()
        answer = await client.post(f"/v2/shipments/{shipment['id']}/buy", headers=AUTH,
                                   json={"rate": {"id": shipment["rates"][0]["id"]}})
        assert 200 == answer.status
        body = await answer.json()
        documented = fixture("shipment-bought.json")
        for part in ("postage_label", "tracker", "selected_rate"):
            assert set(documented[part]) <= set(body[part]), part
        assert body["tracking_code"] == body["tracker"]["tracking_code"]
        assert body["selected_rate"]["id"] == shipment["rates"][0]["id"]

    async def test_the_label_and_tracking_urls_open_without_the_key(self, client):
        """label_url serves a PNG and the tracker's public_url names the tracking code, as
        EasyPost's public files and tracking pages do; an unknown one is 404."""
        shipment = await (await create(client)).json()
        bought = await (await client.post(
            f"/v2/shipments/{shipment['id']}/buy", headers=AUTH,
            json={"rate": {"id": shipment["rates"][0]["id"]}})).json()
        label = await client.get(URL(bought["postage_label"]["label_url"]).path)
        assert (200, "image/png") == (label.status, label.content_type)
        assert (await label.read()).startswith(b"\x89PNG")
        page = await client.get(URL(bought["tracker"]["public_url"]).path)
        assert bought["tracking_code"] in await page.text()
        assert 404 == (await client.get("/track/trk_nope")).status

    async def test_a_shipment_is_found_by_id_and_by_reference(self, client):
        """EasyPost lets a reference stand for the id."""
        shipment = await (await create(client)).json()
        for name in (shipment["id"], shipment["reference"]):
            answer = await client.get(f"/v2/shipments/{name}", headers=AUTH)
            assert (200, shipment["id"]) == (answer.status, (await answer.json())["id"])


class TestRefusals:
    @pytest.mark.parametrize("headers", [
        {}, {"Authorization": "Bearer wrong"}, {"Authorization": "Basic !!"},
        {"Authorization": "Bearer cl\u00e9"},
        {"Authorization": basic("wrong")},
    ])
    async def test_without_the_key_401_in_easyposts_shape(self, client, headers):
        """No key, a wrong key, a broken header: 401 UNAUTHORIZED, nothing created."""
        answer = await client.post("/v2/shipments", headers=headers,
                                   json=fixture("shipment-create-request.json"))
        assert 401 == answer.status
        assert "UNAUTHORIZED" == (await answer.json())["error"]["code"]
        assert {} == emulator_of(client).shipments

    async def test_basic_auth_with_the_key_as_user_is_accepted(self, client):
        """curl -u KEY: works as with EasyPost."""
        answer = await client.post(
            "/v2/shipments", json=fixture("shipment-create-request.json"),
            headers={"Authorization": basic(KEY)})
        assert 201 == answer.status

    async def test_a_create_without_shipment_is_easyposts_recorded_422(self, client):
        """The same body EasyPost answered its own client."""
        answer = await create(client, {"parcel": {"weight": 1}})
        assert 422 == answer.status
        assert fixture("error-parameter-required.json") == await answer.json()

    @pytest.mark.parametrize(("change", "code", "field"), [
        (("to_address", "zip", None), "PARAMETER.REQUIRED", "shipment.to_address.zip"),
        (("from_address", "street1", ""), "PARAMETER.REQUIRED", "shipment.from_address.street1"),
        (("parcel", "weight", None), "PARAMETER.REQUIRED", "shipment.parcel.weight"),
        (("parcel", "weight", -2), "PARCEL.PARAMETERS.INVALID", "shipment.parcel.weight"),
        (("parcel", "height", None), "PARCEL.PARAMETERS.INVALID", "shipment.parcel"),
    ])
    async def test_missing_or_bad_fields_are_422_naming_the_field(self, client, change, code,
                                                                  field):
        """Each required field checked, the field named as EasyPost names it."""
        body = fixture("shipment-create-request.json")
        part, name, value = change
        body["shipment"][part][name] = value
        answer = await create(client, body)
        error = (await answer.json())["error"]
        assert (422, code) == (answer.status, error["code"])
        assert field in [item["field"] for item in error["errors"]]
        assert {} == emulator_of(client).shipments

    async def test_an_address_it_cannot_verify_strictly(self, client):
        """verify_strict on a rejected street: 422 ADDRESS.VERIFY.FAILURE in EasyPost's shape;
        without verify_strict the shipment is made with no rates and a rate_error message."""
        body = fixture("shipment-create-request.json")
        body["shipment"]["to_address"] |= {"street1": "1 NOWHERE LANE",
                                           "verify_strict": ["delivery"]}
        answer = await create(client, body)
        error = (await answer.json())["error"]
        assert (422, "ADDRESS.VERIFY.FAILURE") == (answer.status, error["code"])
        assert set(fixture("error-address-verify-failure.json")["error"]["errors"][0]) == set(
            error["errors"][0])
        del body["shipment"]["to_address"]["verify_strict"]
        loose = await (await create(client, body)).json()
        assert ([], "rate_error") == (loose["rates"], loose["messages"][0]["type"])

    async def test_buy_checks_the_rate_and_sells_once(self, client):
        """No rate, another shipment's rate: 422; a second buy: SHIPMENT.POSTAGE.EXISTS."""
        first = await (await create(client)).json()
        other = await (await create(client)).json()
        path = f"/v2/shipments/{first['id']}/buy"
        for body, code in (({}, "SHIPMENT.MISSING_RATE"),
                           ({"rate": {"id": other["rates"][0]["id"]}},
                            "SHIPMENT.INVALID_PARAMS")):
            answer = await client.post(path, headers=AUTH, json=body)
            assert (422, code) == (answer.status, (await answer.json())["error"]["code"])
        rate = {"rate": {"id": first["rates"][0]["id"]}}
        assert 200 == (await client.post(path, headers=AUTH, json=rate)).status
        again = await client.post(path, headers=AUTH, json=rate)
        assert fixture("error-postage-exists.json")["error"]["code"] == (
            await again.json())["error"]["code"]
        assert 1 == emulator_of(client).counters()["labels_sold"]

    async def test_unknown_paths_and_methods_answer_in_easyposts_shape(self, client):
        """404 NOT_FOUND and 405 with an error body, as EasyPost answers."""
        missing = await client.get("/v2/shipments/shp_nope", headers=AUTH)
        assert (404, "NOT_FOUND") == (missing.status, (await missing.json())["error"]["code"])
        wrong = await client.delete("/v2/shipments", headers=AUTH)
        assert 405 == wrong.status and "error" in await wrong.json()

    async def test_refund_needs_postage(self, client):
        """Nothing bought, nothing to refund."""
        shipment = await (await create(client)).json()
        answer = await client.post(f"/v2/shipments/{shipment['id']}/refund", headers=AUTH)
        assert 422 == answer.status


class TestControl:
    async def test_counters_and_faults_over_http(self, client):
        """The soak reads the counters and sets faults over HTTP, without the API key."""
        assert 201 == (await create(client)).status
        added = await client.post("/_emulator/faults",
                                  json={"status": 429, "retry_after": 4, "count": 1})
        assert 200 == added.status
        limited = await create(client)
        assert (429, "4") == (limited.status, limited.headers["Retry-After"])
        assert 201 == (await create(client)).status
        counters = await (await client.get("/_emulator/counters")).json()
        assert (2, 0) == (counters["shipments_created"], counters["labels_sold"])
        assert {"create_shipment": 3} == counters["requests"]

    async def test_a_fault_names_the_operation_it_hits(self, client):
        """A fault for buy_shipment leaves creates alone; a dropped buy sold nothing."""
        fault = {"drop": True, "operation": "buy_shipment"}
        assert 200 == (await client.post("/_emulator/faults", json=fault)).status
        shipment = await (await create(client)).json()
        with pytest.raises(aiohttp.ClientConnectionError):
            await client.post(f"/v2/shipments/{shipment['id']}/buy", headers=AUTH,
                              json={"rate": {"id": shipment["rates"][0]["id"]}})
        counters = await (await client.get("/_emulator/counters")).json()
        assert (1, 0) == (counters["shipments_created"], counters["labels_sold"])
        assert {"create_shipment": 1, "buy_shipment": 1} == counters["requests"]

    async def test_deleting_the_faults_ends_those_not_used_up(self, client):
        """A carrier down for a while (the soak): as many 503s as it takes, until DELETE."""
        fault = {"status": 503, "count": 1000, "operation": "create_shipment"}
        assert 200 == (await client.post("/_emulator/faults", json=fault)).status
        assert 503 == (await create(client)).status
        cleared = await client.delete("/_emulator/faults")
        assert {"cleared": [{"operation": "create_shipment", "count": 999}]} == (
            await cleared.json())
        assert 201 == (await create(client)).status

    async def test_a_delay_alone_answers_late_not_wrong(self, client):
        """A fault with only a delay lets the request through, and is used up."""
        fault = {"delay": 0.05, "operation": "create_shipment"}
        assert 200 == (await client.post("/_emulator/faults", json=fault)).status
        assert 201 == (await create(client)).status
        assert [] == client.app[CONTROL].faults

    @pytest.mark.parametrize("fault", [
        {"stauts": 500}, {"status": 999}, {"reset": True, "status": 500}, {"count": 2},
        {"delay": -1}, {"status": 429, "retry_after": -5}, [503],
    ])
    async def test_a_bad_fault_is_refused(self, client, fault):
        """An unknown field, a status that is no HTTP status, a fault that does nothing: a
        400, not a silent no-op, and nothing is set."""
        answer = await client.post("/_emulator/faults", json=fault)
        assert 400 == answer.status
        assert 201 == (await create(client)).status


async def test_starts_by_hand_and_stops_on_sigterm():
    """`python -m emulators easypost --port 0 --key K` says where it listens and answers."""
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "emulators", "easypost", "--port", "0", "--key", KEY,
        stdout=asyncio.subprocess.PIPE, cwd=ROOT)
    try:
        assert process.stdout is not None
        line = (await asyncio.wait_for(process.stdout.readline(), 60)).decode().strip()
        assert line.startswith("listening on http://127.0.0.1:"), line
        base = line.removeprefix("listening on ")
        async with aiohttp.ClientSession() as session:
            async with session.post(f"{base}/v2/shipments", headers=AUTH,
                                    json=fixture("shipment-create-request.json")) as answer:
                assert 201 == answer.status
            async with session.get(f"{base}/_emulator/counters") as answer:
                assert 1 == (await answer.json())["shipments_created"]
        process.terminate()
        assert 0 == await asyncio.wait_for(process.wait(), 60)
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
