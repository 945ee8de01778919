"""Paths into a payload: `a.b[0].c`, parsed once and compiled into fast getters (pure)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

Step = str | int
Getter = Callable[[Any], Any]  # current value -> the value at the path; None means absent


class PathError(ValueError):
    """A path that cannot be parsed; str() says why, quoting the path."""


def parse_path(text: Any) -> tuple[Step, ...]:
    """'a.b[0].c' -> ("a", "b", 0, "c"); '.' -> () (the current value)."""
    if not isinstance(text, str) or not text:
        raise PathError("must be a non-empty path string")
    if text == ".":
        return ()
    steps: list[Step] = []
    for part in text.split("."):
        name, bracket, rest = part.partition("[")
        if not name and not bracket:
            raise PathError(f"path {text!r} has an empty segment")
        if "]" in name:
            raise PathError(f"path {text!r} has ']' without '['")
        if name:
            steps.append(name)
        while bracket:
            index, close, rest = rest.partition("]")
            if not close:
                raise PathError(f"path {text!r} has '[' without ']'")
            if index == "*":
                raise PathError(f"path {text!r}: [*] is only allowed at the end of `each`")
            digits = index[1:] if index[:1] == "-" else index
            if not (digits.isascii() and digits.isdigit()):
                raise PathError(f"path {text!r}: [{index}] is not a list index")
            steps.append(int(index))
            if not rest:
                break
            if rest[0] != "[":
                raise PathError(f"path {text!r} has text after ']'")
            rest = rest[1:]
    return tuple(steps)


def json_pointer(steps: tuple[Step, ...]) -> str:
    return "".join("/" + str(s).replace("~", "~0").replace("/", "~1") for s in steps)


def getter(steps: tuple[Step, ...]) -> Getter:
    """A closure reading `steps` from a value; None when anything along the way is missing."""
    if not steps:
        return identity
    if all(type(s) is str for s in steps):
        if len(steps) == 1:
            (k1,) = steps

            def get1(value: Any) -> Any:
                return value.get(k1) if isinstance(value, dict) else None

            return get1
        if len(steps) == 2:
            k1, k2 = steps

            def get2(value: Any) -> Any:
                if isinstance(value, dict):
                    value = value.get(k1)
                    if isinstance(value, dict):
                        return value.get(k2)
                return None

            return get2
        keys = steps

        def get_keys(value: Any) -> Any:
            for k in keys:
                if not isinstance(value, dict):
                    return None
                value = value.get(k)
            return value

        return get_keys

    def get_mixed(value: Any) -> Any:
        for step in steps:
            if isinstance(step, str):
                if not isinstance(value, dict):
                    return None
                value = value.get(step)
            else:
                if not isinstance(value, list):
                    return None
                try:
                    value = value[step]
                except IndexError:
                    return None
        return value

    return get_mixed


def identity(value: Any) -> Any:
    return value
