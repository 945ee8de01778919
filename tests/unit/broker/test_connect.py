"""router.broker.connect: the [broker] TLS keys and aio-pika's URL query (tls_context), and
a cluster's addresses tried in turn (rotation, try_addresses, RotatingRobustConnection)."""

from __future__ import annotations

import dataclasses
import random
import ssl

import aio_pika
import pytest
from yarl import URL

from router.broker.connect import (
    RotatingRobustConnection,
    rotation,
    tls_context,
    try_addresses,
)
from router.settings import BrokerSettings


class TestTlsContext:
    def test_plain_amqp_has_none(self):
        """amqp:// gets no TLS context."""
        assert tls_context(BrokerSettings(url="amqp://guest:guest@broker/")) is None

    def test_amqps_verifies_by_default(self):
        """amqps:// verifies the certificate and the host name unless told otherwise."""
        context = tls_context(BrokerSettings(url="amqps://guest:guest@broker/"))
        assert context is not None
        assert (ssl.CERT_REQUIRED, True) == (context.verify_mode, context.check_hostname)

    def test_no_verify_from_the_query_or_the_key(self):
        """aio-pika's no_verify_ssl=1 and verify = false both turn verification off."""
        query = BrokerSettings(url="amqps://broker/?no_verify_ssl=1")
        key = dataclasses.replace(BrokerSettings(url="amqps://broker/"), verify=False)
        for settings in (query, key):
            context = tls_context(settings)
            assert context is not None
            assert (ssl.CERT_NONE, False) == (context.verify_mode, context.check_hostname)


NODES = ("amqp://n1/", "amqp://n2/", "amqp://n3/")
CLUSTER = BrokerSettings(url=NODES[0], other_urls=NODES[1:])


class TestRotation:
    def test_after_a_lost_address_the_others_come_first(self):
        """After the address lost, the next ones in order, the lost one last."""
        assert ["amqp://n3/", "amqp://n1/", "amqp://n2/"] == rotation(NODES, "amqp://n2/")
        assert list(NODES) == rotation(NODES, "amqp://n3/")

    def test_a_fresh_start_is_at_a_random_address(self, monkeypatch):
        """Without a lost address, every address in order from a random one."""
        monkeypatch.setattr(random, "randrange", lambda n: 2)
        assert ["amqp://n3/", "amqp://n1/", "amqp://n2/"] == rotation(NODES)
        assert ["amqp://only/"] == rotation(["amqp://only/"], "amqp://elsewhere/")


class TestTryAddresses:
    async def test_the_first_that_answers(self):
        """Addresses that refuse are passed over; the first that answers is taken."""
        tried: list[str] = []

        async def attempt(url: str) -> str:
            tried.append(url)
            if url != "amqp://n3/":
                raise ConnectionRefusedError(url)
            return url

        assert "amqp://n3/" == await try_addresses(CLUSTER, attempt, after="amqp://n3/")
        assert list(NODES) == tried

    async def test_all_refusing_raises_the_last_failure(self):
        """When no address answers, the last failure is raised."""

        async def attempt(url: str) -> str:
            raise ConnectionRefusedError(url)

        with pytest.raises(ConnectionRefusedError) as info:
            await try_addresses(CLUSTER, attempt, after="amqp://n1/")
        assert ("amqp://n1/",) == info.value.args

    async def test_other_errors_are_not_the_brokers(self):
        """A failure that is not the broker's (a bug) propagates from the first address."""
        tried: list[str] = []

        async def attempt(url: str) -> str:
            tried.append(url)
            raise KeyError(url)

        with pytest.raises(KeyError):
            await try_addresses(CLUSTER, attempt)
        assert 1 == len(tried)


class TestRotatingRobustConnection:
    async def test_each_attempt_goes_to_the_next_address(self, monkeypatch):
        """aio-pika's robust connection makes each (re)connect attempt in the private method
        we override; each attempt is made to the next address, with its TLS context."""
        base = aio_pika.RobustConnection
        assert hasattr(base, "_RobustConnection__connect_transport")  # aio-pika renamed it
        made: list[tuple[str, object]] = []

        async def connect_transport(self: RotatingRobustConnection) -> None:
            made.append((str(self.url), self.kwargs["context"]))

        monkeypatch.setattr(base, "_RobustConnection__connect_transport", connect_transport)
        contexts = [object(), object(), object()]
        addresses = zip(NODES, contexts, strict=True)
        connection = RotatingRobustConnection(
            [(url, URL(url + "?heartbeat=4"), context) for url, context in addresses])
        assert "amqp://n1/" == connection.address
        for _ in range(4):
            await connection._RobustConnection__connect_transport()  # type: ignore[attr-defined]
        assert [(url + "?heartbeat=4", context) for url, context
                in zip([*NODES, NODES[0]], [*contexts, contexts[0]], strict=True)] == made
        assert "amqp://n1/" == connection.address
