"""Log lines never carry secrets or PII."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import orjson
import pytest

from router.logs import REDACTED, Redactor, mask_text

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


# Free text as operators see it, with the personal data in it masked: (text, expected).
MASKED = [
    ("jane.doe@example.com", REDACTED),
    ("Permanent: customer jane.doe+orders@shop.example.co.uk refused",
     f"Permanent: customer {REDACTED} refused"),
    ("Jane <jane@example.com>, cc ops@example.io.", f"Jane <{REDACTED}>, cc {REDACTED}."),
    ("postgresql://app:s3cret@db.example.com/router", f"postgresql://app:{REDACTED}/router"),
    ("first=Jane&email=jane.doe%40example.com&x=1", f"first=Jane&email={REDACTED}&x=1"),
    ("+15551234567", REDACTED),
    ("+1 (555) 123-4567", REDACTED),
    ("+44 20 7946 0958", REDACTED),
    ("+33 6 12 34 56 78", REDACTED),
    ("+49 (0)30 1234567", REDACTED),
    ("tel:+4915112345678;ext=2", f"tel:{REDACTED};ext=2"),
    ("call (555) 123-4567 after 5pm", f"call {REDACTED} after 5pm"),
    ("555-123-4567", REDACTED),
    ("555.123.4567", REDACTED),
    ("ring 555 123 4567.", f"ring {REDACTED}."),
    ("1-800-555-0100", REDACTED),
    ("020 7946 0958", REDACTED),
    ("07700 900123", REDACTED),
    ("06 12 34 56 78", REDACTED),
    ("03-1234-5678", REDACTED),
    ("(02) 9876 5432", REDACTED),
    ("note: leave at door, phone 555-123-4567 or jane@example.com",
     f"note: leave at door, phone {REDACTED} or {REDACTED}"),
    # in a string with an e-mail, the rest is read closely too: the SKU stays
    ("SKU-555-123-4567 sold to jane@example.com", f"SKU-555-123-4567 sold to {REDACTED}"),
]
# Shapes that look like numbers people write and must stay readable: (text).
KEPT = [
    "5820982911946154508",                       # Shopify order id
    "order 5820982911946154508 has no address",
    "#1042",                                     # an order name
    "9400100000000000000000",                    # USPS tracking code
    "9400 1000 0000 0000 0000 00",               # the same, as printed on the label
    "EZ1000000001",                              # EasyPost tracking code
    "1Z999AA10123456784",                        # UPS tracking code
    "trk_4f8a1c2d3e4f5a6b",                      # an id with hex
    "b54557e4-bdd9-4b37-8a5f-bf7d70bcd043",      # UUID
    "12345678-1234-1234-1234-123456789012",      # UUID of digits
    "2026-11-29",                                # ISO date
    "2026-11-29T10:00:00.000Z",
    "2026-11-29 10:00:00.123+00:00",
    "01.02.2026",                                # a European date
    "05.12.2026 10.30",
    "1764410400", "1764410400123",               # epoch seconds and milliseconds
    "192.168.100.200", "10.0.0.1", "2001:db8::1",  # IP addresses
    "127.0.0.1:5672",
    "19.99", "1,234.56", "1 234 567,89", "USD 1234.56",  # prices and amounts
    "+100", "-5", "+05:30",                      # an inventory delta, a UTC offset
    "SKU-555-123-4567",                          # a SKU with a phone's digits inside
    "MUG-1", "TEE-RED-XL", "0.12.3",             # SKUs, a version
    "4111 1111 1111 1111",                       # card-shaped (not ours to mask)
    "555 123 4567 8901", "ref 12 345 678 9012",  # a phone's groups inside longer runs
    "order.created/v1", "/webhooks/shopify",
    "r-3f2a-00000001a4",                         # our request id
    "@shopify handle",                           # no domain: not an address
]


class TestMaskByShape:
    @pytest.mark.parametrize(("text", "expected"), MASKED)
    def test_emails_and_phones_are_masked_in_free_text(self, text, expected):
        """An e-mail anywhere in a string, and a phone in E.164 or a national format with its
        separators, become [redacted]; the text around them stays."""
        assert expected == mask_text(text)

    @pytest.mark.parametrize("text", KEPT)
    def test_ids_codes_dates_amounts_and_addresses_are_kept(self, text):
        """Order ids, tracking codes, UUIDs, dates, timestamps, IPs, prices and SKUs are not
        taken for phones."""
        assert text == mask_text(text)

    def test_every_string_of_a_log_line_at_any_depth(self):
        """A dead-letter reason, a value under a key no list names and a string in a list,
        at any depth, are masked by shape; what is not personal stays, and the key
        redaction works as before."""
        event = {"event": "message", "reason": "Permanent: no address for jane@example.com",
                 "event_id": "b54557e4-bdd9-4b37-8a5f-bf7d70bcd043", "attempt": 3,
                 "payload": {"contact": "+44 20 7946 0958", "sku": "MUG-1",
                             "lines": ["call 555-123-4567", 5820982911946154508]},
                 "email": "jane@example.com"}
        out = Redactor(())(None, "warning", event)
        assert {"event": "message", "reason": f"Permanent: no address for {REDACTED}",
                "event_id": "b54557e4-bdd9-4b37-8a5f-bf7d70bcd043", "attempt": 3,
                "payload": {"contact": REDACTED, "sku": "MUG-1",
                            "lines": [f"call {REDACTED}", 5820982911946154508]},
                "email": REDACTED} == out

    def test_the_console_mask_masks_by_shape_too(self):
        """Redactor.mask (the console's pages and JSON) masks strings at any depth, a body
        that is not JSON (a string) included."""
        record = {"id": "evt-1", "reason": "Permanent: phone 555-123-4567",
                  "body": "name=Jane&email=jane%40example.com&mail=jane@example.com"}
        assert {"id": "evt-1", "reason": f"Permanent: phone {REDACTED}",
                "body": f"name=Jane&email={REDACTED}&mail={REDACTED}"
                } == Redactor(()).mask(record)


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
        done = _logged(
            "import warnings\n"
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

    def test_free_text_of_any_line_is_masked_the_exception_too(self):
        """A library's message and an exception's text (a unique violation naming the
        e-mail, a phone in a handler's error) come out with e-mails and phones masked."""
        done = _logged(
            "logging.getLogger('asyncpg.pool').warning(\n"
            "    'Key (contact)=(jane@example.com) already exists')\n"
            "try:\n"
            "    raise ValueError('no route to +44 20 7946 0958')\n"
            "except ValueError:\n"
            "    structlog.get_logger().exception('handler_failed', order='5820982911946154508')\n"
        )
        library, ours = (orjson.loads(line) for line in done.stdout.splitlines())
        assert f"Key (contact)=({REDACTED}) already exists" == library["event"]
        assert f"ValueError: no route to {REDACTED}" in ours["exception"]
        assert "5820982911946154508" == ours["order"]
        for personal in (b"jane@example.com", b"7946"):
            assert personal not in done.stdout


def _logged(script: str) -> subprocess.CompletedProcess[bytes]:
    """`script` run in a fresh interpreter after configure_logging('info', ())."""
    prelude = ("import logging, structlog\nfrom router.logs import configure_logging\n"
               "configure_logging('info', ())\n")
    return subprocess.run([sys.executable, "-c", prelude + script], capture_output=True,
                          timeout=60, cwd=Path(__file__).resolve().parents[2], check=True)
