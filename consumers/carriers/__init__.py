"""Carrier APIs the labels consumer buys from: one module per carrier behind one small
interface (`base.Carrier`), registered in `CARRIERS` below; `rates` chooses what to buy."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import aiohttp

from consumers.carriers.base import Carrier
from consumers.carriers.easypost import EasyPost

# carrier name (the `[labels] carrier` setting) -> driver; a new carrier is a module and a line
CARRIERS: dict[str, Callable[..., Carrier]] = {
    "easypost": EasyPost,
}


def build_carrier(name: str, api_key: str, session: aiohttp.ClientSession,
                  **options: Any) -> Carrier:
    """The driver for `name`, on the caller's session (options: base_url, timeout)."""
    try:
        driver = CARRIERS[name]
    except KeyError:
        known = ", ".join(sorted(CARRIERS))
        raise ValueError(f"unknown carrier {name!r}; known: {known}") from None
    return driver(api_key, session, **options)
