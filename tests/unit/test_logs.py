"""Log lines never carry secrets or PII."""

from __future__ import annotations

from router.logs import REDACTED, Redactor


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
