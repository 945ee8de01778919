"""Bearer tokens and Basic credentials."""

from __future__ import annotations

import base64

import pytest
from multidict import CIMultiDict
from verify_cases import (
    BODY,
    NOW,
    build,
    refusal,
)


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
