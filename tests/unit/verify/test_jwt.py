"""JWT bearer tokens: algorithms, keys, rotation, time claims."""

from __future__ import annotations

import hashlib
import hmac
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from multidict import CIMultiDict
from verify_cases import (
    BODY,
    HS_KEY,
    NOW,
    b64url,
    build,
    config_error,
    ec_keys,
    refusal,
    rsa_keys,
)


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

    @pytest.mark.parametrize("claim", ["exp", "nbf", "iat"])
    def test_time_claim_beyond_a_float_is_refused(self, claim):
        """A time claim of 10**400 (JSON integers are unbounded; no float holds it) is an
        invalid token, not an OverflowError."""
        claims = {"exp": NOW + 600, claim: 10**400}
        assert "invalid_token" == refusal(build("jwt", HS_KEY), BODY, self.token(claims)).reason

    def test_token_that_is_not_ascii_is_refused(self):
        """A token with bytes that were not UTF-8 (lone surrogates once aiohttp decoded the
        header) is an invalid token, not a UnicodeEncodeError."""
        headers = {"Authorization": "Bearer ey\udcff.ey.sig"}
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


class TestJwtConfig:
    """Bad JWT settings fail when the verifier is built, naming the key."""

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
