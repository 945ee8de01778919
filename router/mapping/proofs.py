"""What a provider topic's body must show: the `[proofs]` table of a mapping file.

Shopify, WooCommerce, GitHub, EasyPost and AfterShip sign the body only: a topic header
(`X-Shopify-Topic`, `X-WC-Webhook-Topic`, `X-GitHub-Event`) is not signed, so a captured
body re-sent under another topic would otherwise take on that topic's meaning (an order's
creation posted as its cancellation). A topic listed here is taken only when its body proves
it, i.e. the named JSON Schema (a file stem in config/schemas/) holds for the body:

    [proofs]
    "orders/cancelled" = "shopify.proof.cancelled.v1"   # cancelled_at is set

A body that does not is unusable with reason "unproven_topic" (held, or refused with 422 by
a source that rejects). A topic not listed is proven by its payload schema alone: list every
topic whose event means more than the body's fields say.
"""

from __future__ import annotations

import tomllib
from collections.abc import Collection
from pathlib import Path

from router.errors import ConfigError

PROOFS = "proofs"  # the table's name; load_mappings skips it


def load_proofs(path: Path, *, schema_names: Collection[str] | None = None) -> dict[str, str]:
    """{provider topic: proof schema name} from the mapping file's [proofs] table ({} when it
    has none); ConfigError(file, key, problem) for a bad entry or, with `schema_names`, a
    schema that is not among them."""
    file = str(path)
    try:
        with open(path, "rb") as fh:
            table = tomllib.load(fh).get(PROOFS, {})
    except OSError as exc:
        raise ConfigError(file, "(file)", f"cannot be read: {exc.strerror}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(file, "(toml)", f"not valid TOML: {exc}") from None
    if not isinstance(table, dict):
        raise ConfigError(file, PROOFS, "must be a table of topic = schema name")
    for topic, name in table.items():
        key = f'{PROOFS}."{topic}"'
        if not isinstance(name, str) or not name:
            raise ConfigError(file, key, "must be a schema name such as 'shopify.proof.v1'")
        if schema_names is not None and name not in schema_names:
            raise ConfigError(file, key, f"schema {name!r} is not in the schemas folder")
    return dict(table)
