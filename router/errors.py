"""The ingress's errors, each carrying the HTTP answer it stands for.

    IngressError                  4xx/5xx with a JSON body {"error": reason, "message": ...}
    ├── UnknownSource             404  no source is configured at this path
    ├── MethodNotAllowed          405  webhooks are POSTed
    ├── RequestTimeout            408  body not received within the source's body_timeout
    ├── PayloadTooLarge           413  body (decompressed) over the source's limit
    ├── UnsupportedMediaType      415  content type (or content coding) not accepted
    ├── Forbidden                 403  client address not in the allowlist
    ├── RateLimited               429  token bucket empty (Retry-After)
    ├── Unauthorized              401  signature/credentials missing, invalid or expired
    ├── MalformedPayload          400  not JSON/XML, bad UTF-8, too deep, dangerous XML
    ├── BadQuery                  400  an operator endpoint's query is not valid
    ├── InvalidPayload            422  schema violation or unmappable payload (with paths)
    └── BrokerTrouble                  not confirmed by the broker (Retry-After): try again
        ├── BrokerUnavailable     503  the broker did not take the event: unreachable,
        │   │                          blocking publishers, too many unconfirmed, refused
        │   └── HoldQueueFull     503  the source's held.* queue is at its limit
        └── BrokerUnconfirmed     504  sent, but not confirmed in time: it may still be
                                       delivered (a repeat is harmless)

    ConfigError                   settings are wrong: names the file, the key and the problem

Messages never contain secrets or payload values: they are safe to return and to log.
"""

from __future__ import annotations

from typing import Any


class IngressError(Exception):
    """A request the ingress refuses; `status` and `reason` become the HTTP answer."""

    status: int = 400
    reason: str = "bad_request"
    closes_connection: bool = False  # answer, then close at once (no reading what follows)

    def __init__(
        self,
        message: str,
        *,
        reason: str | None = None,
        errors: list[dict[str, Any]] | None = None,
        retry_after: int | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        if reason is not None:
            self.reason = reason
        self.errors = errors
        self.retry_after = retry_after

    def body(self) -> dict[str, Any]:
        body: dict[str, Any] = {"error": self.reason, "message": self.message}
        if self.errors is not None:
            body["errors"] = self.errors
        return body


class UnknownSource(IngressError):
    status = 404
    reason = "unknown_source"


class MethodNotAllowed(IngressError):
    status = 405
    reason = "method_not_allowed"


class RequestTimeout(IngressError):
    status = 408
    reason = "body_timeout"
    closes_connection = True


class PayloadTooLarge(IngressError):
    status = 413
    reason = "payload_too_large"


class UnsupportedMediaType(IngressError):
    status = 415
    reason = "unsupported_media_type"


class Forbidden(IngressError):
    status = 403
    reason = "address_not_allowed"


class RateLimited(IngressError):
    status = 429
    reason = "rate_limited"


class Unauthorized(IngressError):
    """Verification failed; `reason` says how (missing_signature, invalid_signature, ...)."""

    status = 401
    reason = "unauthorized"


class MalformedPayload(IngressError):
    status = 400
    reason = "malformed_payload"


class BadQuery(IngressError):
    status = 400
    reason = "bad_request"


class InvalidPayload(IngressError):
    status = 422
    reason = "invalid_payload"


class BrokerTrouble(IngressError):
    """The broker did not confirm the event: the provider must try again."""

    status = 503
    reason = "broker_unavailable"


class BrokerUnavailable(BrokerTrouble):
    status = 503
    reason = "broker_unavailable"


class HoldQueueFull(BrokerUnavailable):
    """The source's hold queue is at its limit ([broker] held_max_length/held_max_bytes)."""

    reason = "hold_queue_full"


class BrokerUnconfirmed(BrokerTrouble):
    status = 504
    reason = "broker_unconfirmed"


class ConfigError(Exception):
    """Bad settings, found at start-up: `file`, `key` and what is wrong."""

    def __init__(self, file: str, key: str, problem: str) -> None:
        super().__init__(f"{file}: {key}: {problem}")
        self.file = file
        self.key = key
        self.problem = problem
