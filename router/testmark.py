"""The mark on a delivery the console's Send test payload posts: the ingress publishes its
event with the AMQP header `x-console-test: <operator>`, so downstream can tell it from real
traffic.

A provider signs only what it sends; anyone who has a captured body could add a header. So
the mark is signed too, with the source's own secret (which the console already signs the
delivery with): `X-Console-Test` names the operator (percent-encoded), and
`X-Console-Test-Signature` is an HMAC-SHA256 over the operator and the body's SHA-256. A mark
that does not verify is ignored: the delivery goes on as the provider's, unmarked.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Mapping, Sequence
from urllib.parse import quote, unquote

USER_HEADER = "X-Console-Test"
SIGNATURE_HEADER = "X-Console-Test-Signature"
MAX_USER = 100  # characters of an operator's name carried


def _signature(secret: bytes, user: str, body: bytes) -> str:
    key = hashlib.sha256(b"console test\0" + secret).digest()  # never the signing key itself
    message = user.encode() + b"\0" + hashlib.sha256(body).digest()
    return hmac.new(key, message, hashlib.sha256).hexdigest()


def mark_headers(secrets: Sequence[bytes], user: str, body: bytes) -> dict[str, str]:
    """The headers that mark `body` as `user`'s console test (signed with the first secret)."""
    user = user[:MAX_USER]
    return {USER_HEADER: quote(user, safe=""),
            SIGNATURE_HEADER: _signature(secrets[0], user, body)}


def marked_by(secrets: Sequence[bytes], headers: Mapping[str, str], body: bytes) -> str | None:
    """The operator whose console test this delivery is, or None: no mark, or one that none
    of the source's secrets signed."""
    sent, signature = headers.get(USER_HEADER), headers.get(SIGNATURE_HEADER)
    if sent is None or signature is None or len(sent) > 3 * MAX_USER:
        return None
    user = unquote(sent, errors="replace")
    given = signature.encode("utf-8", "surrogateescape")  # a header that was not UTF-8
    ok = False
    for secret in secrets:  # every one, in constant time: keys rotate
        ok |= hmac.compare_digest(_signature(secret, user, body).encode(), given)
    return user if ok else None
