"""Verification schemes: official vectors, round trips, rotation, replay windows, bad settings."""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from multidict import CIMultiDict

from router.errors import ConfigError, Unauthorized
from router.verify import SCHEMES, Verifier, build_verifier

FIXTURES = Path(__file__).parents[1] / "fixtures"
SHARED_SAMPLES = Path(__file__).parents[2].parent / "shared" / "samples"
FILE = "config/router.toml"
NOW = 1_700_000_000.0
BODY = b'{"id": 1, "note": "caf\xc3\xa9"}'
HS_KEY = b"jwt-test-key-0123456789abcdef-0123456789"  # 40 bytes: PyJWT wants 32+ for HS256

# Two secrets per scheme (for rotation) and the options each needs.
SCHEME_CASES: dict[str, tuple[bytes, bytes, dict[str, Any]]] = {
    "shopify": (b"shpss_one", b"shpss_two", {}),
    "woocommerce": (b"wc-one", b"wc-two", {}),
    "github": (b"gh-one", b"gh-two", {}),
    "stripe": (b"whsec_stripe_one", b"whsec_stripe_two", {}),
    "standard-webhooks": (
        b"whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
        b"whsec_" + base64.b64encode(b"second-key-0123456789"),
        {},
    ),
    "easypost": ("sécret".encode(), b"easypost-two", {}),
    "aftership": (b"as-one", b"as-two", {}),
    "hmac": (b"inv-one", b"inv-two", {"header": "X-Signature"}),
    "bearer": (b"token-one", b"token-two", {}),
    "basic": (b"password-one", b"password-two", {"username": "warehouse"}),
    "jwt": (HS_KEY, HS_KEY[::-1], {}),
}
# What a request without the scheme's headers is refused with.
MISSING_REASON = {
    "bearer": "missing_credentials",
    "basic": "missing_credentials",
    "jwt": "missing_credentials",
}
# Schemes that sign the body (the others carry credentials, independent of the body).
BODY_SIGNED = sorted(SCHEMES - {"bearer", "basic", "jwt"})


def build(scheme: str, *secrets: bytes, **options: Any) -> Verifier:
    return build_verifier(scheme, list(secrets), options, file=FILE, key=f"sources.{scheme}")


def refusal(
    verifier: Verifier, body: bytes, headers: Mapping[str, str], now: float = NOW
) -> Unauthorized:
    with pytest.raises(Unauthorized) as info:
        verifier.verify(body, CIMultiDict(headers), now)
    return info.value


def config_error(scheme: str, secrets: list[bytes], **options: Any) -> ConfigError:
    with pytest.raises(ConfigError) as info:
        build_verifier(scheme, secrets, options, file=FILE, key="sources.x")
    return info.value


def rsa_keys() -> tuple[bytes, str]:
    """A fresh (public PEM bytes, private PEM text) pair."""
    private = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    return _pems(private)


def ec_keys(curve: ec.EllipticCurve | None = None) -> tuple[bytes, str]:
    private = ec.generate_private_key(curve or ec.SECP256R1())
    return _pems(private)


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _pems(private: Any) -> tuple[bytes, str]:
    public = private.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    text = private.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ).decode()
    return public, text


class TestOfficialVectors:
    """The providers' own published vectors, which outrank every other test here."""

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

    SW_SECRET = b"whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
    SW_BODY = b'{"test": 2432232314}'
    SW_TIMESTAMP = 1614265330

    def sw_headers(self, names: str, signature: str) -> dict[str, str]:
        return {
            f"{names}-id": "msg_p5jXN8AQM9LWM0D4loKWxJek",
            f"{names}-timestamp": str(self.SW_TIMESTAMP),
            f"{names}-signature": signature,
        }

    @pytest.mark.parametrize("names", ["webhook", "svix"])
    def test_standard_webhooks(self, names):
        """The Standard Webhooks / Svix vector verifies at its own timestamp, under both names."""
        verifier = build("standard-webhooks", self.SW_SECRET)
        headers = self.sw_headers(names, "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=")
        assert None is verifier.verify(self.SW_BODY, CIMultiDict(headers), self.SW_TIMESTAMP)

    @pytest.mark.parametrize("names", ["webhook", "svix"])
    def test_standard_webhooks_near_miss_fails(self, names):
        """The vector's signature with its last character changed (…1OA=) is refused."""
        verifier = build("standard-webhooks", self.SW_SECRET)
        headers = self.sw_headers(names, "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OA=")
        reason = refusal(verifier, self.SW_BODY, headers, self.SW_TIMESTAMP).reason
        assert "invalid_signature" == reason

    EASYPOST_SIGNATURE = (
        "hmac-sha256-hex=38f3f53c103713df81616a0a186d77141957323ec21d5fe9363db93840f527db"
    )

    def test_easypost(self):
        """EasyPost's fixture verifies byte for byte with the NFKD-normalised secret."""
        body = (FIXTURES / "easypost-tracker-updated.json").read_bytes()
        verifier = build("easypost", "sécret".encode())
        headers = CIMultiDict({"X-Hmac-Signature": self.EASYPOST_SIGNATURE})
        assert 3550 == len(body)
        assert None is verifier.verify(body, headers, NOW)

    def test_easypost_fixture_is_the_shared_sample(self):
        """Our copy of the EasyPost fixture is byte-identical to the shared sample."""
        shared = SHARED_SAMPLES / "easypost-tracker-updated.json"
        if not shared.is_file():
            pytest.skip("shared/samples is not next to this checkout")
        assert shared.read_bytes() == (FIXTURES / "easypost-tracker-updated.json").read_bytes()

    def test_easypost_composed_secret_also_verifies(self):
        """The precomposed and decomposed spellings of the secret are the same key."""
        body = (FIXTURES / "easypost-tracker-updated.json").read_bytes()
        verifier = build("easypost", "se\u0301cret".encode())
        headers = CIMultiDict({"X-Hmac-Signature": self.EASYPOST_SIGNATURE})
        assert None is verifier.verify(body, headers, NOW)


class TestEverySchemeRoundTrip:
    """sign() gives headers that verify(); the same failures hold for every scheme."""

    @pytest.mark.parametrize("scheme", sorted(SCHEMES))
    def test_signed_headers_verify(self, scheme):
        """Headers from sign() verify against the same body and clock."""
        first, _, options = SCHEME_CASES[scheme]
        verifier = build(scheme, first, **options)
        headers = verifier.sign(BODY, NOW, "delivery-1")
        assert None is verifier.verify(BODY, CIMultiDict(headers), NOW)

    @pytest.mark.parametrize("scheme", sorted(SCHEMES))
    def test_second_secret_is_accepted(self, scheme):
        """During rotation a request signed with the second secret verifies."""
        first, second, options = SCHEME_CASES[scheme]
        headers = build(scheme, second, **options).sign(BODY, NOW, "delivery-1")
        assert None is build(scheme, first, second, **options).verify(
            BODY, CIMultiDict(headers), NOW
        )

    @pytest.mark.parametrize("scheme", sorted(SCHEMES))
    def test_unknown_secret_is_refused(self, scheme):
        """A request signed with a secret that is not configured is refused."""
        first, second, options = SCHEME_CASES[scheme]
        headers = build(scheme, second, **options).sign(BODY, NOW, "delivery-1")
        reason = refusal(build(scheme, first, **options), BODY, headers).reason
        assert reason in {"invalid_signature", "invalid_credentials", "invalid_token"}

    @pytest.mark.parametrize("scheme", BODY_SIGNED)
    def test_tampered_body_is_refused(self, scheme):
        """One changed byte in the body makes the signature invalid."""
        first, _, options = SCHEME_CASES[scheme]
        verifier = build(scheme, first, **options)
        headers = verifier.sign(BODY, NOW, "delivery-1")
        assert "invalid_signature" == refusal(verifier, BODY.replace(b"1", b"2"), headers).reason

    @pytest.mark.parametrize("scheme", sorted(SCHEMES))
    def test_missing_headers_are_refused(self, scheme):
        """A request without the scheme's headers is refused as missing, not invalid."""
        first, _, options = SCHEME_CASES[scheme]
        expected = MISSING_REASON.get(scheme, "missing_signature")
        assert expected == refusal(build(scheme, first, **options), BODY, {}).reason

    @pytest.mark.parametrize("scheme", sorted(SCHEMES))
    def test_lowercase_header_names_verify(self, scheme):
        """Header names are matched case-insensitively, as aiohttp delivers them."""
        first, _, options = SCHEME_CASES[scheme]
        verifier = build(scheme, first, **options)
        headers = {k.lower(): v for k, v in verifier.sign(BODY, NOW, "delivery-1").items()}
        assert None is verifier.verify(BODY, CIMultiDict(headers), NOW)

    @pytest.mark.parametrize("scheme", sorted(SCHEMES))
    def test_messages_never_contain_secrets_or_signatures(self, scheme):
        """Refusal messages name headers, never the secret, the expected or the sent value."""
        first, second, options = SCHEME_CASES[scheme]
        verifier = build(scheme, first, **options)
        expected_headers = verifier.sign(b"other body", NOW, "delivery-1")
        sent_headers = build(scheme, second, **options).sign(BODY, NOW, "delivery-1")
        message = refusal(verifier, b"other body", sent_headers).message
        values = [*expected_headers.values(), *sent_headers.values()]
        # Signatures and tokens, without their `sha256=` / `v1,` / `Bearer ` dressing.
        fragments = [f for v in values for f in re.split(r"[=, ]+", v) if len(f) >= 16]
        for secret in (first.decode(), second.decode(), *fragments):
            assert secret not in message

    @pytest.mark.parametrize("scheme", sorted(SCHEMES))
    def test_only_woocommerce_pings(self, scheme):
        """is_ping is False for a normal signed request, whatever the scheme."""
        first, _, options = SCHEME_CASES[scheme]
        verifier = build(scheme, first, **options)
        assert False is verifier.is_ping(BODY, CIMultiDict(verifier.sign(BODY, NOW, "d")))

    @pytest.mark.parametrize("scheme", sorted(SCHEMES - {"woocommerce"}))
    def test_ping_body_is_not_a_ping_elsewhere(self, scheme):
        """Only WooCommerce treats an unsigned `webhook_id=N` body as a ping."""
        first, _, options = SCHEME_CASES[scheme]
        assert False is build(scheme, first, **options).is_ping(b"webhook_id=7", CIMultiDict())


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

    def test_sign_sends_delivery_headers(self):
        """Shopify's signed headers carry the delivery id and the trigger time."""
        headers = build("shopify", b"k").sign(BODY, NOW, "delivery-9")
        assert "delivery-9" == headers["X-Shopify-Webhook-Id"]
        assert "2023-11-14T22:13:20Z" == headers["X-Shopify-Triggered-At"]

    def test_github_sign_sends_delivery_header(self):
        """GitHub's signed headers carry X-GitHub-Delivery."""
        assert (
            "delivery-9" == build("github", b"k").sign(BODY, NOW, "delivery-9")["X-GitHub-Delivery"]
        )


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


class TestStripe:
    """Stripe-Signature: t=<unix>,v1=<hex> over "<t>.<body>", keyed with the whole whsec_ string."""

    SECRET = b"whsec_test_secret"

    def header(self, timestamp: int, *signatures: str) -> dict[str, str]:
        return {"Stripe-Signature": ",".join([f"t={timestamp}", *signatures])}

    def v1(self, timestamp: int, body: bytes = BODY, secret: bytes = SECRET) -> str:
        signed = f"{timestamp}.".encode() + body
        return "v1=" + hmac.new(secret, signed, hashlib.sha256).hexdigest()

    def test_independent_computation_verifies(self):
        """A signature computed with the undecoded whsec_ string as key verifies."""
        t = int(NOW)
        assert None is build("stripe", self.SECRET).verify(
            BODY, CIMultiDict(self.header(t, self.v1(t))), NOW
        )

    def test_any_of_several_v1_entries_may_match(self):
        """With several v1 entries (Stripe rotating secrets) one match is enough."""
        t = int(NOW)
        header = self.header(t, self.v1(t, secret=b"whsec_old"), self.v1(t), "v0=deadbeef")
        assert None is build("stripe", self.SECRET).verify(BODY, CIMultiDict(header), NOW)

    def test_only_v0_is_refused(self):
        """A header with only test-mode v0 entries has nothing to check."""
        t = int(NOW)
        header = self.header(t, self.v1(t).replace("v1=", "v0="))
        assert "invalid_signature" == refusal(build("stripe", self.SECRET), BODY, header).reason

    @pytest.mark.parametrize("age", [301, -301, 10_000])
    def test_timestamp_outside_tolerance(self, age):
        """A correctly signed request 301 s old or ahead is refused as a replay."""
        t = int(NOW) - age
        reason = refusal(build("stripe", self.SECRET), BODY, self.header(t, self.v1(t))).reason
        assert "timestamp_out_of_tolerance" == reason

    def test_timestamp_at_tolerance_edge(self):
        """A request exactly 300 s old is still inside the default tolerance."""
        t = int(NOW) - 300
        assert None is build("stripe", self.SECRET).verify(
            BODY, CIMultiDict(self.header(t, self.v1(t))), NOW
        )

    def test_tolerance_option(self):
        """tolerance = 30 refuses a request 31 s old."""
        t = int(NOW) - 31
        verifier = build("stripe", self.SECRET, tolerance=30)
        reason = refusal(verifier, BODY, self.header(t, self.v1(t))).reason
        assert "timestamp_out_of_tolerance" == reason

    @pytest.mark.parametrize(
        "value", ["v1=abc", "t=1700000000", "t=soon,v1=abc", "garbage", "t=" + "9" * 5000 + ",v1=a"]
    )
    def test_malformed_header(self, value):
        """A header without t=, without v1= or with a non-numeric t is invalid."""
        verifier = build("stripe", self.SECRET)
        assert "invalid_signature" == refusal(verifier, BODY, {"Stripe-Signature": value}).reason

    def test_sign_format(self):
        """sign() writes t=<int>,v1=<hex>."""
        header = build("stripe", self.SECRET).sign(BODY, NOW + 0.7, "d")["Stripe-Signature"]
        assert f"t={int(NOW)},{self.v1(int(NOW))}" == header


class TestStandardWebhooks:
    """webhook-id/-timestamp/-signature (or svix-*), base64 HMAC keyed by the decoded whsec_."""

    SECRET = b"whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"

    def test_multiple_signatures_any_may_match(self):
        """A space-separated list verifies when any v1 entry matches; other versions are skipped."""
        verifier = build("standard-webhooks", self.SECRET)
        headers = verifier.sign(BODY, NOW, "msg_1")
        good = headers["webhook-signature"]
        headers["webhook-signature"] = f"v1a,AAAA v1,bm90IGl0 {good}"
        assert None is verifier.verify(BODY, CIMultiDict(headers), NOW)

    def test_other_versions_are_not_checked(self):
        """A correct signature labelled v1a (asymmetric) instead of v1 is not accepted."""
        verifier = build("standard-webhooks", self.SECRET)
        headers = verifier.sign(BODY, NOW, "msg_1")
        headers["webhook-signature"] = headers["webhook-signature"].replace("v1,", "v1a,")
        assert "invalid_signature" == refusal(verifier, BODY, headers).reason

    def test_secret_without_prefix(self):
        """The base64 key without `whsec_` is the same secret."""
        signed = build("standard-webhooks", self.SECRET).sign(BODY, NOW, "msg_1")
        bare = build("standard-webhooks", self.SECRET.removeprefix(b"whsec_"))
        assert None is bare.verify(BODY, CIMultiDict(signed), NOW)

    @pytest.mark.parametrize("age", [301, -301])
    def test_timestamp_outside_tolerance(self, age):
        """A signed request more than 5 minutes old or ahead is refused."""
        verifier = build("standard-webhooks", self.SECRET)
        headers = verifier.sign(BODY, NOW - age, "msg_1")
        assert "timestamp_out_of_tolerance" == refusal(verifier, BODY, headers).reason

    def test_id_is_signed(self):
        """Changing webhook-id breaks the signature."""
        verifier = build("standard-webhooks", self.SECRET)
        headers = verifier.sign(BODY, NOW, "msg_1") | {"webhook-id": "msg_2"}
        assert "invalid_signature" == refusal(verifier, BODY, headers).reason

    def test_missing_id(self):
        """A signature without webhook-id is refused as missing."""
        verifier = build("standard-webhooks", self.SECRET)
        headers = verifier.sign(BODY, NOW, "msg_1")
        del headers["webhook-id"]
        assert "missing_signature" == refusal(verifier, BODY, headers).reason

    @pytest.mark.parametrize("value", ["v1", "v2,abc", "", "   "])
    def test_malformed_signature_list(self, value):
        """A signature header with no v1 entry is refused."""
        verifier = build("standard-webhooks", self.SECRET)
        headers = verifier.sign(BODY, NOW, "msg_1") | {"webhook-signature": value}
        assert refusal(verifier, BODY, headers).reason in {"invalid_signature", "missing_signature"}

    def test_sign_headers(self):
        """sign() sends the delivery id, the timestamp and a v1 signature."""
        headers = build("standard-webhooks", self.SECRET).sign(BODY, NOW, "msg_1")
        assert ["webhook-id", "webhook-signature", "webhook-timestamp"] == sorted(headers)
        assert ("msg_1", str(int(NOW))) == (headers["webhook-id"], headers["webhook-timestamp"])
        assert headers["webhook-signature"].startswith("v1,")


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


class TestBearer:
    """A static token in `Authorization: Bearer <token>` (or in a custom header)."""

    def test_valid(self):
        """The configured token is accepted."""
        verifier = build("bearer", b"tok-1")
        assert None is verifier.verify(BODY, CIMultiDict({"Authorization": "Bearer tok-1"}), NOW)

    def test_scheme_is_case_insensitive(self):
        """`bearer` in lower case is the same scheme."""
        verifier = build("bearer", b"tok-1")
        assert None is verifier.verify(BODY, CIMultiDict({"Authorization": "bearer tok-1"}), NOW)

    @pytest.mark.parametrize(
        ("value", "reason"),
        [
            ("Bearer tok-2", "invalid_credentials"),
            ("Bearer tok-1x", "invalid_credentials"),
            ("Basic dG9rLTE=", "invalid_credentials"),
            ("tok-1", "invalid_credentials"),
            ("Bearer ", "missing_credentials"),
        ],
    )
    def test_refused(self, value, reason):
        """A wrong token, another auth scheme or an empty token is refused."""
        assert reason == refusal(build("bearer", b"tok-1"), BODY, {"Authorization": value}).reason

    def test_custom_header_takes_the_bare_token(self):
        """With header = "X-Api-Key" the header value is the token itself."""
        verifier = build("bearer", b"tok-1", header="X-Api-Key")
        assert {"X-Api-Key": "tok-1"} == verifier.sign(BODY, NOW, "d")
        assert None is verifier.verify(BODY, CIMultiDict({"X-Api-Key": "tok-1"}), NOW)


class TestBasic:
    """`Authorization: Basic base64(user:password)`; the secrets are the accepted passwords."""

    def basic(self, user: str, password: str) -> dict[str, str]:
        return {
            "Authorization": "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()
        }

    def test_valid(self):
        """The configured username with a configured password is accepted."""
        verifier = build("basic", b"pa:ss", username="wh")
        assert None is verifier.verify(BODY, CIMultiDict(self.basic("wh", "pa:ss")), NOW)

    @pytest.mark.parametrize(
        "headers",
        [
            {"Authorization": "Basic " + base64.b64encode(b"wh:nope").decode()},
            {"Authorization": "Basic " + base64.b64encode(b"other:pa:ss").decode()},
            {"Authorization": "Basic " + base64.b64encode(b"whpa:ss").decode()},
            {"Authorization": "Basic " + base64.b64encode(b"no-colon").decode()},
            {"Authorization": "Basic !!!"},
            {"Authorization": "Basic é"},
            {"Authorization": "Bearer pa:ss"},
        ],
    )
    def test_refused(self, headers):
        """A wrong user, a wrong password or malformed credentials are refused."""
        verifier = build("basic", b"pa:ss", username="wh")
        assert "invalid_credentials" == refusal(verifier, BODY, headers).reason


class TestJwt:
    """JWT bearer tokens: PyJWT checks the signature, the `now` given checks exp/nbf/iat."""

    def token(self, claims: dict[str, Any], key: Any = HS_KEY, algorithm: str = "HS256") -> dict:
        return {"Authorization": "Bearer " + jwt.encode(claims, key, algorithm=algorithm)}

    def test_hs256(self):
        """A token signed with the shared key verifies."""
        headers = self.token({"exp": NOW + 60})
        assert None is build("jwt", HS_KEY).verify(BODY, CIMultiDict(headers), NOW)

    def test_expired(self):
        """A token whose exp has passed on the given clock is expired."""
        headers = self.token({"exp": NOW - 1})
        assert "expired_token" == refusal(build("jwt", HS_KEY), BODY, headers).reason

    def test_expired_within_leeway(self):
        """leeway = 10 accepts a token that expired 5 s ago."""
        headers = self.token({"exp": NOW - 5})
        assert None is build("jwt", HS_KEY, leeway=10).verify(BODY, CIMultiDict(headers), NOW)

    def test_clock_is_the_one_given(self):
        """A token valid today is expired for a clock a day later: PyJWT's own clock is unused."""
        headers = self.token({"exp": NOW + 60})
        assert "expired_token" == refusal(build("jwt", HS_KEY), BODY, headers, NOW + 86_400).reason

    @pytest.mark.parametrize("claim", ["nbf", "iat"])
    def test_not_yet_valid(self, claim):
        """A token valid only from a minute ahead is refused."""
        headers = self.token({"exp": NOW + 600, claim: NOW + 60})
        assert "invalid_token" == refusal(build("jwt", HS_KEY), BODY, headers).reason

    def test_exp_required(self):
        """By default a token without exp is refused."""
        headers = self.token({"sub": "x"})
        assert "invalid_token" == refusal(build("jwt", HS_KEY), BODY, headers).reason

    def test_non_numeric_exp(self):
        """An exp that is not a number is refused as invalid."""
        headers = self.token({"exp": "tomorrow"})
        assert "invalid_token" == refusal(build("jwt", HS_KEY), BODY, headers).reason

    def test_issuer_and_audience(self):
        """Matching iss and aud verify, and sign() writes both."""
        verifier = build("jwt", HS_KEY, issuer="https://portal.example", audience="router")
        headers = self.token({"exp": NOW + 60, "iss": "https://portal.example", "aud": "router"})
        assert None is verifier.verify(BODY, CIMultiDict(headers), NOW)
        claims = jwt.decode(
            verifier.sign(BODY, NOW, "d")["Authorization"].removeprefix("Bearer "),
            HS_KEY,
            algorithms=["HS256"],
            audience="router",
            options={"verify_exp": False},
        )
        assert ("https://portal.example", "router") == (claims["iss"], claims["aud"])

    @pytest.mark.parametrize(
        "claims",
        [
            {"iss": "https://evil.example", "aud": "router"},
            {"iss": "https://portal.example", "aud": "someone-else"},
            {"aud": "router"},
            {"iss": "https://portal.example"},
        ],
    )
    def test_wrong_or_missing_issuer_or_audience(self, claims):
        """A token for another issuer or audience, or without them, is refused."""
        verifier = build("jwt", HS_KEY, issuer="https://portal.example", audience="router")
        headers = self.token({"exp": NOW + 60, **claims})
        assert "invalid_token" == refusal(verifier, BODY, headers).reason

    def test_algorithm_not_allowed(self):
        """An HS512 token is refused when only HS256 is configured."""
        headers = self.token({"exp": NOW + 60}, HS_KEY * 2, "HS512")
        assert "invalid_token" == refusal(build("jwt", HS_KEY * 2), BODY, headers).reason

    def test_alg_none_is_refused(self):
        """An unsigned token (alg none) is refused."""
        headers = self.token({"exp": NOW + 60}, None, "none")
        assert "invalid_token" == refusal(build("jwt", HS_KEY), BODY, headers).reason

    @pytest.mark.parametrize(
        "token", ["not-a-jwt", "a.b.c", "eyJhbGciOlsiSFMyNTYiXX0.e30.x", "Bearer x.y.z", "...."]
    )
    def test_malformed(self, token):
        """Garbage in the bearer token is refused as invalid, not a crash."""
        headers = {"Authorization": "Bearer " + token}
        assert "invalid_token" == refusal(build("jwt", HS_KEY), BODY, headers).reason

    def test_rs256_round_trip_and_rotation(self):
        """RS256 tokens from the signing key verify against the second of two public keys."""
        old_public, _ = rsa_keys()
        public, private = rsa_keys()
        verifier = build("jwt", old_public, public, algorithms=["RS256"], signing_key=private)
        headers = verifier.sign(BODY, NOW, "d")
        assert None is verifier.verify(BODY, CIMultiDict(headers), NOW)
        assert "RS256" == jwt.get_unverified_header(headers["Authorization"][7:])["alg"]

    def test_es256_round_trip(self):
        """ES256 tokens signed with a P-256 key verify."""
        public, private = ec_keys()
        headers = self.token(
            {"exp": NOW + 60}, serialization.load_pem_private_key(private.encode(), None), "ES256"
        )
        assert None is build("jwt", public, algorithms=["ES256"]).verify(
            BODY, CIMultiDict(headers), NOW
        )

    def test_rs256_wrong_key(self):
        """An RS256 token signed by another key is refused."""
        public, _ = rsa_keys()
        other_public, other_private = rsa_keys()
        headers = build("jwt", other_public, algorithms=["RS256"], signing_key=other_private).sign(
            BODY, NOW, "d"
        )
        assert (
            "invalid_token"
            == refusal(build("jwt", public, algorithms=["RS256"]), BODY, headers).reason
        )

    def test_public_key_as_hmac_secret_is_refused(self):
        """An HS256 token keyed with the RS256 public key PEM (algorithm confusion) is refused."""
        public, _ = rsa_keys()
        signing_input = b64url(b'{"alg":"HS256","typ":"JWT"}') + "." + b64url(b'{"exp":2e9}')
        mac = hmac.new(public, signing_input.encode(), hashlib.sha256).digest()
        token = signing_input + "." + b64url(mac)
        verifier = build("jwt", public, algorithms=["RS256"])
        reason = refusal(verifier, BODY, {"Authorization": "Bearer " + token}).reason
        assert "invalid_token" == reason

    def test_sign_without_signing_key(self):
        """An RS256 verifier with only public keys cannot sign, and says why."""
        public, _ = rsa_keys()
        with pytest.raises(ValueError, match="signing_key"):
            build("jwt", public, algorithms=["RS256"]).sign(BODY, NOW, "d")

    def test_missing_token(self):
        """No Authorization header is missing credentials."""
        assert "missing_credentials" == refusal(build("jwt", HS_KEY), BODY, {}).reason


class TestBuildVerifierConfig:
    """Bad settings fail when the verifier is built, naming the file and the key."""

    def test_unknown_scheme(self):
        """An unknown scheme names `<source>.scheme`."""
        error = config_error("shopfiy", [b"k"])
        assert (FILE, "sources.x.scheme") == (error.file, error.key)
        assert "shopify" in error.problem

    def test_no_secrets(self):
        """A scheme without secrets names `<source>.secrets`."""
        assert "sources.x.secrets" == config_error("github", []).key

    @pytest.mark.parametrize(
        ("scheme", "options", "key"),
        [
            ("shopify", {"tolerance": 10}, "sources.x.options.tolerance"),
            ("stripe", {"tolerence": 10}, "sources.x.options.tolerence"),
            ("stripe", {"tolerance": 0}, "sources.x.options.tolerance"),
            ("stripe", {"tolerance": "5m"}, "sources.x.options.tolerance"),
            ("standard-webhooks", {"tolerance": True}, "sources.x.options.tolerance"),
            ("hmac", {}, "sources.x.options.header"),
            ("hmac", {"header": "X", "algorithm": "md5"}, "sources.x.options.algorithm"),
            ("hmac", {"header": "X", "encoding": "hex32"}, "sources.x.options.encoding"),
            ("hmac", {"header": "X", "tolerance": 5}, "sources.x.options.tolerance"),
            (
                "hmac",
                {"header": "X", "signed_content": "{timestamp}.{body}"},
                "sources.x.options.signed_content",
            ),
            (
                "hmac",
                {"header": "X", "signed_content": "{id}.{body}"},
                "sources.x.options.signed_content",
            ),
            (
                "hmac",
                {"header": "X", "signed_content": "{timestamp}", "timestamp_header": "T"},
                "sources.x.options.signed_content",
            ),
            ("basic", {}, "sources.x.options.username"),
            ("basic", {"username": "a:b"}, "sources.x.options.username"),
            ("bearer", {"header": 5}, "sources.x.options.header"),
            ("jwt", {"algorithms": ["none"]}, "sources.x.options.algorithms"),
            ("jwt", {"algorithms": "HS256"}, "sources.x.options.algorithms"),
            ("jwt", {"algorithms": []}, "sources.x.options.algorithms"),
            ("jwt", {"algorithms": ["HS256", "RS256"]}, "sources.x.options.algorithms"),
            ("jwt", {"leeway": -1}, "sources.x.options.leeway"),
            ("jwt", {"audience": []}, "sources.x.options.audience"),
            ("jwt", {"require": "exp"}, "sources.x.options.require"),
            ("jwt", {"signing_key": "pem"}, "sources.x.options.signing_key"),
        ],
    )
    def test_bad_option(self, scheme, options, key):
        """Each bad option is a ConfigError naming that option."""
        secret = HS_KEY if scheme == "jwt" else b"whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
        assert key == config_error(scheme, [secret], **options).key

    @pytest.mark.parametrize("secret", [b"whsec_!!not base64!!", b"whsec_", "é".encode()])
    def test_bad_whsec_secret(self, secret):
        """A Standard Webhooks secret that is not base64 names its index."""
        error = config_error(
            "standard-webhooks", [b"whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw", secret]
        )
        assert "sources.x.secrets[1]" == error.key

    def test_easypost_secret_must_be_utf8(self):
        """EasyPost's secret must be text to be NFKD-normalised."""
        assert "sources.x.secrets[0]" == config_error("easypost", [b"\xff\xfe"]).key

    def test_jwt_bad_pem(self):
        """An RS256 secret that is not a PEM public key names its index."""
        error = config_error("jwt", [b"-----BEGIN PUBLIC KEY-----\nnope\n"], algorithms=["RS256"])
        assert "sources.x.secrets[0]" == error.key

    def test_jwt_key_of_the_wrong_kind(self):
        """An EC key for an RS256-only source, or a P-384 key for ES256, is refused."""
        ec_public, _ = ec_keys()
        p384_public, _ = ec_keys(ec.SECP384R1())
        assert "sources.x.secrets[0]" == config_error("jwt", [ec_public], algorithms=["RS256"]).key
        assert (
            "sources.x.secrets[0]" == config_error("jwt", [p384_public], algorithms=["ES256"]).key
        )

    def test_jwt_algorithm_without_key(self):
        """Allowing ES256 without any EC key is refused."""
        public, _ = rsa_keys()
        assert (
            "sources.x.options.algorithms"
            == config_error("jwt", [public], algorithms=["RS256", "ES256"]).key
        )

    def test_jwt_pem_as_hmac_secret(self):
        """A PEM public key configured as an HS256 secret is refused."""
        public, _ = rsa_keys()
        assert "sources.x.secrets[0]" == config_error("jwt", [public]).key

    def test_jwt_bad_signing_key(self):
        """A signing_key that is not a private key PEM is refused."""
        public, _ = rsa_keys()
        error = config_error("jwt", [public], algorithms=["RS256"], signing_key="nope")
        assert "sources.x.options.signing_key" == error.key

    def test_problem_never_contains_the_secret(self):
        """ConfigError messages name the secret's position, not its value."""
        error = config_error("standard-webhooks", [b"whsec_!!sup3r-s3cret!!"])
        assert "sup3r" not in str(error)

    def test_schemes(self):
        """SCHEMES lists exactly the supported scheme names."""
        expected = {
            "shopify",
            "woocommerce",
            "github",
            "stripe",
            "standard-webhooks",
            "easypost",
            "aftership",
            "hmac",
            "bearer",
            "basic",
            "jwt",
        }
        assert expected == SCHEMES
