"""What the console refuses, each with the status and reason of its answer (a JSON body
{"error", "message"} for /api/ and fetches, an error page otherwise).

    ConsoleError            4xx
    ├── NotLoggedIn         401  no valid session (pages redirect to /login instead)
    ├── Forbidden           403  the user's role may not do this (a viewer acting)
    ├── CsrfRefused         403  a POST without this session's CSRF token
    ├── UnknownQueue        404  not a queue with dead letters here
    ├── UnknownSource       404  not a configured source (Send test payload, preview)
    ├── UnknownSubscription 404  not a configured subscription
    ├── NotConfirmed        409  a purge whose confirmation does not name the queue
    ├── UnknownTopic        422  Send test payload: a topic the source does not know
    ├── BadTopic            422  Send test payload: a topic with control characters
    ├── SubscriptionOff     409  enabling, testing or replaying to one off in the config
    ├── BadSearch           400  a search without an id, or one too long
    ├── BadTime             400  a replay's time is not an ISO-8601 date-time
    ├── MissingId           400  a replay without the id of the message to replay
    ├── TooManyAttempts     429  failed logins from this address or for this name (Retry-After)
    ├── StoreUnavailable    503  the consumers' store is not there or cannot be reached
    └── BrokerFailed        503  the broker could not do it (not there, no such message)

`broker_call(work)` awaits a broker operation and turns its failures into BrokerFailed.
"""

from __future__ import annotations

from collections.abc import Awaitable
from typing import TypeVar

from router.broker.counts import BrokerAway
from router.broker.dlq import DlqError
from router.broker.errors import BROKER_ERRORS


class ConsoleError(Exception):
    status = 400
    reason = "bad_request"

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class NotLoggedIn(ConsoleError):
    status = 401
    reason = "login_required"


class MissingId(ConsoleError):
    status = 400
    reason = "id_required"


class Forbidden(ConsoleError):
    status = 403
    reason = "forbidden"


class UnknownQueue(ConsoleError):
    status = 404
    reason = "unknown_queue"


class UnknownSource(ConsoleError):
    status = 404
    reason = "unknown_source"


class UnknownSubscription(ConsoleError):
    status = 404
    reason = "unknown_subscription"


class UnknownTopic(ConsoleError):
    status = 422
    reason = "unknown_topic"


class BadTopic(ConsoleError):
    status = 422
    reason = "bad_topic"


class SubscriptionOff(ConsoleError):
    status = 409
    reason = "subscription_off"


class BadTime(ConsoleError):
    status = 400
    reason = "bad_time"


class NotConfirmed(ConsoleError):
    status = 409
    reason = "not_confirmed"


class CsrfRefused(ConsoleError):
    status = 403
    reason = "csrf_token_invalid"


class BadSearch(ConsoleError):
    status = 400
    reason = "bad_search"


class TooManyAttempts(ConsoleError):
    status = 429
    reason = "too_many_attempts"

    def __init__(self, message: str, retry_after: float) -> None:
        super().__init__(message)
        self.retry_after = max(1, int(retry_after + 0.999))


class StoreUnavailable(ConsoleError):
    status = 503
    reason = "store_unavailable"


class BrokerFailed(ConsoleError):
    status = 503
    reason = "broker_failed"


T = TypeVar("T")


async def broker_call(work: Awaitable[T]) -> T:
    """`work`'s result; a dead-letter, count or broker failure as BrokerFailed (503)."""
    try:
        return await work
    except (DlqError, BrokerAway) as exc:
        raise BrokerFailed(str(exc)) from exc
    except BROKER_ERRORS as exc:
        raise BrokerFailed(f"broker error: {exc or type(exc).__name__}") from exc
