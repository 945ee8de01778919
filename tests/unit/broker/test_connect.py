"""router.broker.connect.tls_context: the [broker] TLS keys and aio-pika's URL query."""

from __future__ import annotations

import dataclasses
import ssl

from router.broker.connect import tls_context
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
