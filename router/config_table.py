"""Reading one TOML table of the settings: typed getters that name the file and key of any
problem (a ConfigError), and the small checks the sections share."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from router.errors import ConfigError


class Table:
    """One TOML table being read: typed getters that name the key on error, and a check
    that nothing unknown was left over (a typo is an error, not a silent default)."""

    def __init__(self, data: Mapping[str, Any], file: str, key: str) -> None:
        if not isinstance(data, Mapping):
            raise ConfigError(file, key, "must be a table")
        self.data = dict(data)
        self.file = file
        self.key = key
        self.seen: set[str] = set()

    def _name(self, name: str) -> str:
        return f"{self.key}.{name}" if self.key and name else self.key or name

    def error(self, name: str, problem: str) -> ConfigError:
        return ConfigError(self.file, self._name(name), problem)

    def get(self, name: str, kind: type | tuple[type, ...], default: Any = None) -> Any:
        self.seen.add(name)
        if name not in self.data:
            return default
        value = self.data[name]
        if kind is float and isinstance(value, int) and not isinstance(value, bool):
            return float(value)
        if not isinstance(value, kind) or (isinstance(value, bool) and kind in (int, float)):
            kinds = kind if isinstance(kind, tuple) else (kind,)
            wanted = " or ".join(k.__name__ for k in kinds)
            raise self.error(name, f"must be {wanted}, not {type(value).__name__}")
        return value

    def require(self, name: str, kind: type) -> Any:
        if name not in self.data:
            raise self.error(name, "is required")
        return self.get(name, kind)

    def positive(self, name: str, kind: type, default: Any) -> Any:
        value = self.get(name, kind, default)
        if value is not None and value <= 0:
            raise self.error(name, "must be greater than 0")
        return value

    def strings(self, name: str, default: tuple[str, ...] = ()) -> tuple[str, ...]:
        value = self.get(name, list, None)
        if value is None:
            return default
        if not all(isinstance(v, str) for v in value):
            raise self.error(name, "must be a list of strings")
        return tuple(value)

    def table(self, name: str) -> Table:
        return Table(self.get(name, dict, {}), self.file, self._name(name))

    def done(self) -> None:
        unknown = sorted(set(self.data) - self.seen)
        if unknown:
            raise self.error(unknown[0], "unknown setting")


def path_in(base: Path, value: str) -> Path:
    p = Path(value)
    return p if p.is_absolute() else base / p


def relative(base: Path, value: str | None) -> Path | None:
    return None if value is None else path_in(base, value)


def existing_file(t: Table, base: Path, name: str) -> Path | None:
    path = relative(base, t.get(name, str))
    if path is not None and not path.is_file():
        raise t.error(name, f"no such file: {path}")
    return path


def non_negative(t: Table, name: str, default: float) -> float:
    value: float = t.get(name, float, default)
    if value < 0:
        raise t.error(name, "must be 0 or more seconds")
    return value


def check_cidrs(t: Table, name: str, cidrs: tuple[str, ...]) -> None:
    import ipaddress

    for cidr in cidrs:
        try:
            ipaddress.ip_network(cidr, strict=False)
        except ValueError as exc:
            raise t.error(name, f"{cidr!r} is not an IP address or CIDR") from exc


# RabbitMQ's x-message-ttl is at most 2**32 - 1 ms: the longest retry rung, in seconds.
MAX_RUNG = (2**32 - 1) // 1000


def retry_ladder(t: Table, default: tuple[int, ...]) -> tuple[int, ...]:
    """`retry_ladder`: a non-empty list of whole seconds, each a TTL RabbitMQ can hold."""
    ladder = t.get("retry_ladder", list, list(default))
    if not ladder or not all(isinstance(v, int) and not isinstance(v, bool)
                             and 0 < v <= MAX_RUNG for v in ladder):
        raise t.error("retry_ladder", "must be a non-empty list of whole seconds from 1 to "
                                      f"{MAX_RUNG} (RabbitMQ's longest message TTL)")
    return tuple(ladder)
