"""Log lines never carry secrets or PII."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import orjson
import pytest

from router.logs import REDACTED, Redactor

PROVIDERS = Path(__file__).resolve().parents[1] / "fixtures" / "providers"
# Customer details in the corpus, by key: what must never reach a log line.
PII = frozenset({"address1", "address2", "address_1", "address_2", "first_name", "last_name",
                 "email", "contact_email", "phone", "zip", "postcode", "company", "latitude",
                 "longitude", "browser_ip", "customer_ip_address", "signed_by"})


class TestRedactor:
    def test_secret_keys_always_redacted(self):
        """Authorization, tokens and secrets are redacted whatever the settings."""
        out = Redactor(())(None, "info", {"authorization": "Bearer x", "token": "t", "ok": 1})
        assert {"authorization": REDACTED, "token": REDACTED, "ok": 1} == out

    def test_pii_fields_redacted_at_any_depth(self):
        """Configured PII fields are redacted inside nested dicts and lists."""
        event = {"order": {"email": "a@b.c", "lines": [{"phone": "1", "sku": "S"}]}}
        out = Redactor(["email", "phone"])(None, "info", event)
        assert {"order": {"email": REDACTED, "lines": [{"phone": REDACTED, "sku": "S"}]}} == out

    def test_secret_keys_by_pattern_whatever_their_case(self):
        """A key naming a signature, secret, token, password or HMAC, or authorization, is
        redacted in any case and at any depth."""
        headers = {"X-Hub-Signature-256": "sha256=1", "X-Shopify-Hmac-Sha256": "2",
                   "Stripe-Signature": "3", "webhook-signature": "4", "X-WC-Webhook-Signature": "5",
                   "Authorization": "Bearer 6", "AUTHORIZATION": "7", "X-Api-Token": "8",
                   "client_secret": "9", "DB_PASSWORD": "10", "Content-Type": "json"}
        out = Redactor(())(None, "info", {"headers": headers, "Client_Secret": "11"})
        assert {**dict.fromkeys(headers, REDACTED), "Content-Type": "json"} == out["headers"]
        assert REDACTED == out["Client_Secret"]

    @pytest.mark.parametrize("fixture", sorted(
        p.relative_to(PROVIDERS).as_posix() for p in PROVIDERS.rglob("*.json")))
    def test_no_customer_detail_of_the_corpus_survives(self, fixture):
        """Logging a provider's whole payload (the corpus) leaves none of its customers'
        names, addresses, phones, e-mails, postcodes or places, with no pii_fields set."""
        payload = orjson.loads((PROVIDERS / fixture).read_bytes())
        line = orjson.dumps(Redactor(())(None, "warning", {"payload": payload})).decode()
        leaked = [value for value in _values(payload, PII) if value in line]
        assert [] == leaked


def _values(value: object, keys: frozenset[str]) -> list[str]:
    """Every non-empty scalar under one of `keys`, at any depth, as JSON renders it."""
    found: list[str] = []
    if isinstance(value, dict):
        for key, inner in value.items():
            if key in keys and inner not in (None, "", [], {}):
                if not isinstance(inner, dict | list):
                    found.append(orjson.dumps(inner).decode())
            found += _values(inner, keys)
    elif isinstance(value, list):
        for inner in value:
            found += _values(inner, keys)
    return found


class TestStdlibRecords:
    def test_library_warnings_are_our_json_lines(self):
        """After configure_logging, a library's stdlib warning (aiormq, asyncpg), its
        exception and a Python warning come out on stdout as JSON lines like structlog's,
        a password in a URL redacted; info records stay out; nothing goes to stderr."""
        script = (
            "import logging, warnings, structlog\n"
            "from router.logs import configure_logging\n"
            "configure_logging('info', ())\n"
            "structlog.get_logger().info('ours', token='t')\n"
            "logging.getLogger('aiormq.connection').warning(\n"
            "    'connect to %s failed', 'amqp://guest:s3cret@host:5672/')\n"
            "logging.getLogger('aiohttp.access').info('chatter')\n"
            "try:\n"
            "    1 / 0\n"
            "except ZeroDivisionError:\n"
            "    logging.getLogger('asyncpg.pool').exception('pool broke')\n"
            "warnings.warn('old API')\n"
        )
        done = subprocess.run([sys.executable, "-c", script], capture_output=True, timeout=60,
                              cwd=Path(__file__).resolve().parents[2], check=True)
        lines = [orjson.loads(line) for line in done.stdout.splitlines()]
        assert ("", 4) == (done.stderr.decode(), len(lines))
        ours, aiormq, asyncpg, warned = lines
        assert ("ours", REDACTED) == (ours["event"], ours["token"])
        assert {"event", "level", "timestamp"} <= ours.keys() & aiormq.keys()
        assert ("warning", "aiormq.connection", "connect to amqp://guest:[redacted]@host:5672/"
                " failed") == (aiormq["level"], aiormq["logger"], aiormq["event"])
        assert ("error", "asyncpg.pool") == (asyncpg["level"], asyncpg["logger"])
        assert "ZeroDivisionError" in asyncpg["exception"]
        assert ("warning", "py.warnings") == (warned["level"], warned["logger"])
        assert "s3cret" not in done.stdout.decode()
