"""Every scheme through the registry: sign() and verify() agree, rotation, the same refusals
for every scheme, and settings checked when a verifier is built."""

from __future__ import annotations

import re

import pytest
from multidict import CIMultiDict
from verify_cases import (
    BODY,
    BODY_SIGNED,
    FILE,
    HS_KEY,
    MISSING_REASON,
    NOW,
    SCHEME_CASES,
    build,
    config_error,
    refusal,
)

from router.verify import SCHEMES


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


class TestSignsOnlyBody:
    """Which schemes leave a captured request replayable under other headers: the
    ingress also deduplicates their deliveries on the signed body (router.dedup)."""

    BODY_ONLY = {"shopify", "woocommerce", "github", "easypost", "aftership", "hmac"}

    @pytest.mark.parametrize("scheme", sorted(SCHEMES))
    def test_every_scheme_says(self, scheme):
        """The body-HMAC presets sign the body alone; schemes with a signed timestamp or
        id (Stripe, Standard Webhooks) and those that sign no body do not."""
        first, _, options = SCHEME_CASES[scheme]
        assert (scheme in self.BODY_ONLY) is build(scheme, first, **options).signs_only_body

    @pytest.mark.parametrize(("options", "expected"), [
        ({"timestamp_header": "X-Timestamp"}, False),
        ({"timestamp_header": "X-Timestamp", "signed_content": "{body}"}, True),
        ({"signed_content": "v1:{body}"}, True),
    ])
    def test_generic_hmac_only_a_signed_timestamp_counts(self, options, expected):
        """A timestamp header bounds replays only when it is inside the signed content."""
        verifier = build("hmac", b"k", header="X-Signature", **options)
        assert expected is verifier.signs_only_body


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
