"""JWT bearer tokens: HS256/384/512 with the secrets, or RS256/ES256 with PEM public keys
(never both: the same secret read as an HMAC key and a public key is algorithm confusion).
Signatures by PyJWT; exp, nbf and iat are checked against the `now` given."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from math import isfinite
from typing import Any

import jwt
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from jwt.algorithms import HMACAlgorithm

from router.errors import Unauthorized
from router.verify.credentials import bearer_token, bearer_value
from router.verify.scheme import Options, Scheme, SchemeBase, Verifier


class JwtVerifier(SchemeBase):
    """A JWT bearer token: signature by PyJWT, exp/nbf/iat against the `now` given."""

    __slots__ = (
        "_header",
        "_keys",
        "_issuer",
        "_audience",
        "_leeway",
        "_require",
        "_decode_options",
        "_signing",
    )

    def __init__(
        self,
        *,
        header: str,
        keys: Mapping[str, Sequence[Any]],
        issuer: str | None,
        audience: str | list[str] | None,
        leeway: float,
        require: Sequence[str],
        signing: tuple[str, Any] | None,
    ) -> None:
        super().__init__("jwt")
        self._header = header
        # algorithm -> the keys that verify it: HS* secrets (bytes) or loaded public keys
        self._keys = dict(keys)
        self._issuer = issuer
        self._audience = audience
        self._leeway = leeway
        self._require = list(require)
        # PyJWT reads its own clock, so its time checks are off and done against `now` below.
        self._decode_options: Any = {
            "verify_exp": False,
            "verify_nbf": False,
            "verify_iat": False,
            "require": self._require,
        }
        self._signing = signing

    def verify(self, body: bytes, headers: Mapping[str, str], now: float) -> None:
        token = bearer_token(headers, self._header, "invalid_token")
        if not token.isascii():  # a JWT is base64url; PyJWT would fail to encode it (500)
            raise Unauthorized(f"{self._header} token is not valid", reason="invalid_token")
        try:
            claims = self._decode(token)
        except jwt.PyJWTError as exc:
            raise Unauthorized(
                f"{self._header} token is not valid", reason="invalid_token"
            ) from exc
        self._check_times(claims, now)

    def _decode(self, token: str) -> dict[str, Any]:
        algorithm = jwt.get_unverified_header(token).get("alg")
        # The header only picks among the configured algorithms' keys; PyJWT checks it again.
        keys = self._keys.get(algorithm) if isinstance(algorithm, str) else None
        if not keys or not isinstance(algorithm, str):
            raise jwt.InvalidAlgorithmError("algorithm not allowed")
        for key in keys[:-1]:  # rotation: a signature mismatch moves on to the next key
            try:
                return self._decode_with(token, key, algorithm)
            except jwt.InvalidSignatureError:
                continue
        return self._decode_with(token, keys[-1], algorithm)

    def _decode_with(self, token: str, key: Any, algorithm: str) -> dict[str, Any]:
        return jwt.decode(
            token,
            key,
            algorithms=[algorithm],
            audience=self._audience,
            issuer=self._issuer,
            options=self._decode_options,
        )

    def _check_times(self, claims: Mapping[str, Any], now: float) -> None:
        times: dict[str, float] = {}
        for claim in ("exp", "nbf", "iat"):
            if claim in claims:
                value = claims[claim]
                if not isinstance(value, int | float) or isinstance(value, bool):
                    raise Unauthorized(
                        f"token claim {claim} is not a number", reason="invalid_token"
                    )
                try:  # JSON integers are unbounded: 10**400 does not fit a float
                    seconds = float(value)
                except OverflowError:
                    seconds = float("inf")
                if not isfinite(seconds):
                    raise Unauthorized(
                        f"token claim {claim} is out of range", reason="invalid_token"
                    )
                times[claim] = seconds
        if "exp" in times and times["exp"] <= now - self._leeway:
            raise Unauthorized("token has expired", reason="expired_token")
        if "nbf" in times and times["nbf"] > now + self._leeway:
            raise Unauthorized("token is not valid yet", reason="invalid_token")
        if "iat" in times and times["iat"] > now + self._leeway:
            raise Unauthorized("token was issued in the future", reason="invalid_token")

    def sign(self, body: bytes, now: float, delivery_id: str) -> dict[str, str]:
        if self._signing is None:
            raise ValueError(
                "jwt verifier has only public keys: set the `signing_key` option to sign"
            )
        algorithm, key = self._signing
        issued = int(now)
        claims: dict[str, Any] = {"iat": issued, "exp": issued + 300, "jti": delivery_id}
        if "nbf" in self._require:
            claims["nbf"] = issued
        if "sub" in self._require:
            claims["sub"] = "webhook-router"
        if self._issuer is not None:
            claims["iss"] = self._issuer
        if self._audience is not None:
            claims["aud"] = self._audience if isinstance(self._audience, str) else self._audience[0]
        token = jwt.encode(claims, key, algorithm=algorithm)
        return {self._header: bearer_value(self._header, token)}


_HMAC_JWT = frozenset({"HS256", "HS384", "HS512"})
_KEYED_JWT = frozenset({"RS256", "ES256"})


def _jwt_algorithm_for(key: object) -> str | None:
    """The one algorithm a loaded key can serve: RSA (2048 bits and up) or EC P-256."""
    if isinstance(key, rsa.RSAPublicKey | rsa.RSAPrivateKey) and key.key_size >= 2048:
        return "RS256"
    curve = getattr(key, "curve", None)
    if isinstance(key, ec.EllipticCurvePublicKey | ec.EllipticCurvePrivateKey) and isinstance(
        curve, ec.SECP256R1
    ):
        return "ES256"
    return None


def _build_jwt(secrets: Sequence[bytes], options: Options) -> Verifier:
    algorithms = options.text_list("algorithms", ["HS256"])
    unknown = sorted(set(algorithms) - _HMAC_JWT - _KEYED_JWT)
    if not algorithms or unknown:
        allowed = ", ".join(sorted(_HMAC_JWT | _KEYED_JWT))
        raise options.error("algorithms", f"must be a non-empty list of {allowed}")
    symmetric = _HMAC_JWT.issuperset(algorithms)
    if not symmetric and not _KEYED_JWT.issuperset(algorithms):
        # The same secret read as an HMAC key and as a public key is algorithm confusion.
        raise options.error("algorithms", "must not mix HS* with RS256/ES256")

    keys: dict[str, list[Any]] = {}
    signing: tuple[str, Any] | None = None
    if symmetric:
        if options.has("signing_key"):
            raise options.error("signing_key", "is for RS256/ES256; HS* signs with the secret")
        for index, secret in enumerate(secrets):
            try:  # PyJWT refuses empty keys and PEM/JWK text as HMAC keys; find out now
                HMACAlgorithm(HMACAlgorithm.SHA256).prepare_key(secret)
            except jwt.InvalidKeyError:
                raise options.secret_error(index, "is not usable as an HMAC key") from None
        keys = {algorithm: list(secrets) for algorithm in algorithms}
        signing = (algorithms[0], secrets[0])
    else:
        for index, secret in enumerate(secrets):
            try:
                public_key = serialization.load_pem_public_key(secret)
            except (ValueError, TypeError, UnsupportedAlgorithm):
                raise options.secret_error(index, "is not a PEM public key") from None
            algorithm = _jwt_algorithm_for(public_key)
            if algorithm is None or algorithm not in algorithms:
                raise options.secret_error(
                    index,
                    f"fits none of {algorithms} (RS256: RSA of 2048 bits or more; ES256: EC P-256)",
                )
            keys.setdefault(algorithm, []).append(public_key)
        missing = [a for a in algorithms if a not in keys]
        if missing:
            raise options.error("algorithms", f"no secret is a public key for {missing}")
        signing_pem = options.text("signing_key")
        if signing_pem:
            try:
                private_key = serialization.load_pem_private_key(signing_pem.encode(), None)
            except (ValueError, TypeError, UnsupportedAlgorithm):
                raise options.error(
                    "signing_key", "is not an unencrypted PEM private key"
                ) from None
            algorithm = _jwt_algorithm_for(private_key)
            if algorithm is None or algorithm not in algorithms:
                raise options.error("signing_key", f"fits none of {algorithms}")
            signing = (algorithm, private_key)

    return JwtVerifier(
        header=options.text("header", "Authorization") or "Authorization",
        keys=keys,
        issuer=options.text("issuer"),
        audience=options.text_or_list("audience"),
        leeway=options.seconds("leeway", 0, allow_zero=True),
        require=options.text_list("require", ["exp"]),
        signing=signing,
    )


SCHEMES: dict[str, Scheme] = {
    "jwt": Scheme(
        frozenset(
            {"header", "algorithms", "issuer", "audience", "leeway", "require", "signing_key"}
        ),
        _build_jwt,
    ),
}
