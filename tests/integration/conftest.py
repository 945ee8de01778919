"""Fixtures the integration tests share: an ingress on loopback for this test's topology."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer

from router.app import create_app
from router.settings import Settings


async def wait_ready(client: TestClient, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        response = await client.get("/readyz")
        if response.status == 200:
            return
        await asyncio.sleep(0.05)
    raise AssertionError("the ingress did not become ready")


@pytest.fixture
async def make_client(topology) -> AsyncIterator[Callable[..., Any]]:
    """Starts ingresses on loopback for this test's topology; closes them afterwards."""
    clients: list[TestClient] = []

    async def make(settings: Settings, ready: bool = True) -> TestClient:
        client = TestClient(TestServer(create_app(settings)))
        await client.start_server()
        clients.append(client)
        if ready:
            await wait_ready(client)
        return client

    yield make
    for client in clients:
        await client.close()


@pytest.fixture
async def client(settings: Settings, make_client) -> TestClient:
    return await make_client(settings)
