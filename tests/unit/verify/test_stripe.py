"""Stripe-Signature: timestamps, v1 entries, tolerance."""

from __future__ import annotations

import hashlib
import hmac

import pytest
from multidict import CIMultiDict
from verify_cases import (
    BODY,
    NOW,
    build,
    refusal,
)


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
