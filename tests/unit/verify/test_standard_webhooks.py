"""Standard Webhooks / Svix: the official vector, both header families, signing for outbound."""

from __future__ import annotations

import pytest
from multidict import CIMultiDict
from verify_cases import (
    BODY,
    NOW,
    build,
    config_error,
    refusal,
)


class TestOfficialVectors:
    """The Standard Webhooks / Svix SDKs' own vector."""

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


class TestStandardWebhooksConfig:
    """Bad whsec_ secrets fail when the verifier is built, naming their index."""

    @pytest.mark.parametrize("secret", [b"whsec_!!not base64!!", b"whsec_", "é".encode()])
    def test_bad_whsec_secret(self, secret):
        """A Standard Webhooks secret that is not base64 names its index."""
        error = config_error(
            "standard-webhooks", [b"whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw", secret]
        )
        assert "sources.x.secrets[1]" == error.key
