"""Secret references: settings name where a secret lives, never the secret itself.

    env:NAME    the value of environment variable NAME
    file:PATH   the contents of PATH (trailing newline stripped), relative to the config file
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

from router.errors import ConfigError


def resolve_secret(
    ref: object,
    *,
    file: str,
    key: str,
    base: Path,
    environ: Mapping[str, str] | None = None,
) -> bytes:
    """Return the secret `ref` points at; ConfigError naming `file` and `key` if it can't."""
    env = os.environ if environ is None else environ
    if not isinstance(ref, str):
        raise ConfigError(file, key, "must be a string like 'env:NAME' or 'file:PATH'")
    kind, _, target = ref.partition(":")
    if kind == "env" and target:
        text = env.get(target)
        if not text:
            raise ConfigError(file, key, f"environment variable {target} is not set")
        return text.encode()
    if kind == "file" and target:
        path = Path(target)
        if not path.is_absolute():
            path = base / path
        try:
            value = path.read_bytes().rstrip(b"\r\n")
        except OSError as exc:
            problem = f"cannot read secret file {target}: {exc.strerror}"
            raise ConfigError(file, key, problem) from exc
        if not value:
            raise ConfigError(file, key, f"secret file {target} is empty")
        return value
    raise ConfigError(
        file, key, "secrets are references: 'env:NAME' or 'file:PATH', never inline values"
    )
