"""`python -m emulators NAME [options]`: one line per emulator; each module has `main`."""

from __future__ import annotations

import importlib
import sys

EMULATORS = {
    "easypost": "emulators.easypost",
    "shopify": "emulators.shopify",
    "woocommerce": "emulators.woocommerce",
}


def main(argv: list[str]) -> int:
    if not argv or argv[0] not in EMULATORS:
        print(f"usage: python -m emulators {{{'|'.join(EMULATORS)}}} [--help]", file=sys.stderr)
        return 2
    module = importlib.import_module(EMULATORS[argv[0]])
    return int(module.main(argv[1:]) or 0)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
