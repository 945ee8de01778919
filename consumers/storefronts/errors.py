"""What a storefront driver raises when the store did not take the write-back.

    StoreError            the store did not confirm the write-back
    ├── StoreUnavailable  5xx, timeout, refused connection, 429 or GraphQL THROTTLED: nothing
    │   │                 was done; try again after `retry_after` (consumers.errors.Transient)
    │   └── Throttled     GraphQL THROTTLED: the cost bucket refills in `retry_after` seconds
    ├── Uncertain         the spending request went out and its answer was lost: it may have
    │                     been done; a retry looks it up first (consumers.errors.Transient)
    ├── StoreAuthRevoked  401/403 or ACCESS_DENIED: the token or key no longer works; pause
    │                     write-back for that store instead of burning retries
    └── StoreRefused      any other 4xx, GraphQL errors or userErrors: it will never be done as
                          asked; `message` is the store's own (consumers.errors.Permanent)

Messages carry the store's words, never a token or key.
"""

from __future__ import annotations

from consumers.errors import Permanent, Transient


class StoreError(Exception):
    """The store did not confirm the write-back; the original error, if any, is the
    `__cause__`."""


class StoreUnavailable(StoreError, Transient):
    """Nothing was done; the store asks to be tried again, after `retry_after` seconds when it
    said (Retry-After, or the GraphQL cost bucket's refill time; Transient keeps it)."""


class Throttled(StoreUnavailable):
    """Shopify's GraphQL THROTTLED: the query was not run (a mutation neither), and the cost
    bucket holds its cost again in `retry_after` seconds (None when the answer does not say)."""


class Uncertain(StoreError, Transient):
    """The request that writes went out and no answer came back: the write may have happened.
    Retrying is safe because every driver looks for its own earlier write first."""


class StoreAuthRevoked(StoreError):
    """The store refused our credentials (401/403, ACCESS_DENIED): every write-back to that
    store will fail the same way until an operator renews them."""

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


class StoreRefused(StoreError, Permanent):
    """The store refused the write-back as asked (a 4xx, GraphQL errors, userErrors, no open
    fulfillment order): `message` is what the store said."""

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.status = status
