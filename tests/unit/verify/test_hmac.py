"""HMAC over the body: the generic scheme and the Shopify, WooCommerce, GitHub, EasyPost and
AfterShip presets, with the providers' official vectors."""

from __future__ import annotations

import base64
import hashlib
import hmac

import pytest
from multidict import CIMultiDict
from verify_cases import (
    BODY,
    FIXTURES,
    NOW,
    SHARED_SAMPLES,
    build,
    config_error,
    refusal,
)

EASYPOST_FIXTURE = FIXTURES / "providers" / "easypost" / "tracker-updated.json"


class TestOfficialVectors:
    """GitHub's, WooCommerce's and EasyPost's own published vectors, which outrank every other
    test here."""

    def test_github(self):
        """GitHub's documented example verifies."""
        verifier = build("github", b"It's a Secret to Everybody")
        signature = "sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17"
        assert None is verifier.verify(
            b"Hello, World!", CIMultiDict({"X-Hub-Signature-256": signature}), NOW
        )

    def test_woocommerce(self):
        """WooCommerce's test vector (empty key, message "secret") verifies."""
        verifier = build("woocommerce", b"")
        headers = CIMultiDict(
            {"X-WC-Webhook-Signature": "GBDo00G55h6IiV+6CxqivQPLbI//KzaOZm747971tPs="}
        )
        assert None is verifier.verify(b"secret", headers, NOW)

    def test_woocommerce_swapped_key_and_message_fails(self):
        """The signature with key and message swapped is refused."""
        verifier = build("woocommerce", b"")
        headers = {"X-WC-Webhook-Signature": "+eZuF5tnR65UEI+C+K3os8Jddv0wr95sOVgixTAZYWk="}
        assert "invalid_signature" == refusal(verifier, b"secret", headers).reason

    EASYPOST_SIGNATURE = (
        "hmac-sha256-hex=38f3f53c103713df81616a0a186d77141957323ec21d5fe9363db93840f527db"
    )

    def test_easypost(self):
        """EasyPost's fixture verifies byte for byte with the NFKD-normalised secret."""
        body = EASYPOST_FIXTURE.read_bytes()
        verifier = build("easypost", "sécret".encode())
        headers = CIMultiDict({"X-Hmac-Signature": self.EASYPOST_SIGNATURE})
        assert 3550 == len(body)
        assert None is verifier.verify(body, headers, NOW)

    def test_easypost_fixture_is_the_shared_sample(self):
        """Our copy of the EasyPost fixture is byte-identical to the shared sample."""
        shared = SHARED_SAMPLES / "easypost-tracker-updated.json"
        if not shared.is_file():
            pytest.skip("shared/samples is not next to this checkout")
        assert shared.read_bytes() == EASYPOST_FIXTURE.read_bytes()

    def test_easypost_composed_secret_also_verifies(self):
        """The precomposed and decomposed spellings of the secret are the same key."""
        body = EASYPOST_FIXTURE.read_bytes()
        verifier = build("easypost", "se\u0301cret".encode())
        headers = CIMultiDict({"X-Hmac-Signature": self.EASYPOST_SIGNATURE})
        assert None is verifier.verify(body, headers, NOW)


class TestBodyHmacSchemes:
    """Shopify, WooCommerce, GitHub, EasyPost and AfterShip: a fixed header over the raw body."""

    @pytest.mark.parametrize(
        ("scheme", "header", "encode"),
        [
            ("shopify", "X-Shopify-Hmac-Sha256", lambda d: base64.b64encode(d).decode()),
            ("woocommerce", "X-WC-Webhook-Signature", lambda d: base64.b64encode(d).decode()),
            ("aftership", "aftership-hmac-sha256", lambda d: base64.b64encode(d).decode()),
            ("github", "X-Hub-Signature-256", lambda d: "sha256=" + d.hex()),
            ("easypost", "X-Hmac-Signature", lambda d: "hmac-sha256-hex=" + d.hex()),
        ],
    )
    def test_independent_computation_verifies(self, scheme, header, encode):
        """A signature computed here with hmac directly verifies."""
        digest = hmac.new(b"shared-secret", BODY, hashlib.sha256).digest()
        verifier = build(scheme, b"shared-secret")
        assert None is verifier.verify(BODY, CIMultiDict({header: encode(digest)}), NOW)

    def test_github_without_prefix_is_malformed(self):
        """A bare hex digest without `sha256=` is refused as invalid."""
        digest = hmac.new(b"k", BODY, hashlib.sha256).hexdigest()
        verifier = build("github", b"k")
        assert (
            "invalid_signature" == refusal(verifier, BODY, {"X-Hub-Signature-256": digest}).reason
        )

    def test_non_ascii_signature_is_invalid(self):
        """A signature header with non-ASCII text is refused, not a crash."""
        verifier = build("shopify", b"k")
        reason = refusal(verifier, BODY, {"X-Shopify-Hmac-Sha256": "é\udc80\ud800"}).reason
        assert "invalid_signature" == reason


class TestWooCommercePing:
    """WooCommerce's unsigned creation ping is recognised, and nothing else is."""

    def test_ping(self):
        """`webhook_id=N` without a signature header is a ping."""
        assert True is build("woocommerce", b"k").is_ping(b"webhook_id=42", CIMultiDict())

    @pytest.mark.parametrize(
        "body", [b"webhook_id=", b"webhook_id=4a", b"webhook_id=1&x=2", b'{"webhook_id": 1}', b""]
    )
    def test_other_bodies_are_not_pings(self, body):
        """Anything but `webhook_id=<digits>` is not a ping."""
        assert False is build("woocommerce", b"k").is_ping(body, CIMultiDict())

    def test_signed_ping_body_is_not_a_ping(self):
        """A body that looks like a ping but carries a signature is verified normally."""
        headers = CIMultiDict({"X-WC-Webhook-Signature": "anything"})
        assert False is build("woocommerce", b"k").is_ping(b"webhook_id=42", headers)


class TestGenericHmac:
    """scheme = "hmac": header, algorithm, encoding, prefix, timestamp header and template."""

    def test_sha512_base64_with_prefix(self):
        """A sha512 base64 signature with a prefix, computed here, verifies."""
        digest = hmac.new(b"k", BODY, hashlib.sha512).digest()
        verifier = build(
            "hmac", b"k", header="X-Sig", algorithm="sha512", encoding="base64", prefix="sha512="
        )
        headers = CIMultiDict({"X-Sig": "sha512=" + base64.b64encode(digest).decode()})
        assert None is verifier.verify(BODY, headers, NOW)

    def test_timestamp_default_template(self):
        """With a timestamp header the default signed content is "<timestamp>.<body>"."""
        t = str(int(NOW))
        digest = hmac.new(b"k", t.encode() + b"." + BODY, hashlib.sha256).hexdigest()
        verifier = build("hmac", b"k", header="X-Sig", timestamp_header="X-Ts")
        assert None is verifier.verify(BODY, CIMultiDict({"X-Sig": digest, "X-Ts": t}), NOW)

    def test_custom_template(self):
        """signed_content = "{timestamp}:{body}:end" signs exactly those bytes."""
        t = str(int(NOW))
        signed = t.encode() + b":" + BODY + b":end"
        digest = hmac.new(b"k", signed, hashlib.sha256).hexdigest()
        verifier = build(
            "hmac",
            b"k",
            header="X-Sig",
            timestamp_header="X-Ts",
            signed_content="{timestamp}:{body}:end",
        )
        assert None is verifier.verify(BODY, CIMultiDict({"X-Sig": digest, "X-Ts": t}), NOW)

    def test_stale_timestamp(self):
        """A correctly signed request older than the tolerance is refused."""
        verifier = build("hmac", b"k", header="X-Sig", timestamp_header="X-Ts", tolerance=60)
        headers = verifier.sign(BODY, NOW - 61, "d")
        assert "timestamp_out_of_tolerance" == refusal(verifier, BODY, headers).reason

    def test_missing_timestamp(self):
        """A signature without its timestamp header is refused as missing."""
        verifier = build("hmac", b"k", header="X-Sig", timestamp_header="X-Ts")
        headers = verifier.sign(BODY, NOW, "d")
        del headers["X-Ts"]
        assert "missing_signature" == refusal(verifier, BODY, headers).reason

    def test_timestamp_is_signed(self):
        """Moving the timestamp within the tolerance still breaks the signature."""
        verifier = build("hmac", b"k", header="X-Sig", timestamp_header="X-Ts")
        headers = verifier.sign(BODY, NOW, "d") | {"X-Ts": str(int(NOW) - 1)}
        assert "invalid_signature" == refusal(verifier, BODY, headers).reason

    def test_shipped_inventory_options(self):
        """The options of the shipped inventory source round-trip."""
        options = {
            "header": "X-Inventory-Signature",
            "algorithm": "sha256",
            "encoding": "hex",
            "prefix": "sha256=",
            "timestamp_header": "X-Inventory-Timestamp",
        }
        verifier = build("hmac", b"inventory-test-secret", **options)
        headers = verifier.sign(BODY, NOW, "d")
        assert headers["X-Inventory-Signature"].startswith("sha256=")
        assert None is verifier.verify(BODY, CIMultiDict(headers), NOW)


class TestHmacConfig:
    """Bad HMAC settings fail when the verifier is built, naming the key."""

    def test_easypost_secret_must_be_utf8(self):
        """EasyPost's secret must be text to be NFKD-normalised."""
        assert "sources.x.secrets[0]" == config_error("easypost", [b"\xff\xfe"]).key
