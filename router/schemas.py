"""JSON Schemas (draft 2020-12) compiled once at start-up, checked per request.

    registry = SchemaRegistry.load(Path("config/schemas"))  # every *.json; name = file stem
    registry.names()                                         # {"order.v1", "shopify.order.v1"}
    registry.check("order.v1", data, reason="unmappable")    # None, or raises InvalidPayload

`check` raises InvalidPayload(reason=reason) whose `errors` list every failing location (at most
20) as {"path": JSON Pointer into the instance ("/" for the root), "message": ...}. A missing
required property is reported at its own path ("/lines/0/sku": "is a required property") and
so is an unexpected one ("/extra": "is not allowed"). Messages are built from the failed
keyword and the schema only, never from the instance: no payload value (PII) reaches a
response or a log line through them. `format` is asserted (a "date-time" must be RFC 3339).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import jsonschema_rs
import orjson

from router.errors import ConfigError, InvalidPayload

__all__ = ["MAX_ERRORS", "SchemaRegistry"]

MAX_ERRORS = 20
_DRAFT_2020_12 = "https://json-schema.org/draft/2020-12/schema"


class SchemaRegistry:
    """Compiled validators by name; build one with `load`."""

    def __init__(self, validators: Mapping[str, Any]) -> None:
        self._validators: dict[str, Any] = dict(validators)

    @classmethod
    def load(cls, directory: Path) -> SchemaRegistry:
        """Compile every `*.json` in `directory`; ConfigError(file, key, problem) for a bad one.

        The key is "(file)" when the folder or file cannot be read, "(json)" for invalid JSON,
        "$schema" for a draft other than 2020-12, else the JSON Pointer of the offending part.
        Remote `$ref`s are never fetched.
        """
        directory = Path(directory)
        if not directory.is_dir():
            raise ConfigError(str(directory), "(file)", "schemas folder does not exist")
        validators: dict[str, Any] = {}
        for path in sorted(directory.glob("*.json")):
            validators[path.stem] = _compile(path)
        return cls(validators)

    def names(self) -> set[str]:
        """The names of the loaded schemas (file stems)."""
        return set(self._validators)

    def check(self, name: str, instance: Any, *, reason: str = "schema_violation") -> None:
        """Return if `instance` is valid under schema `name`, else raise InvalidPayload (422).

        KeyError for an unknown name: callers check names against `names()` at start-up.
        """
        validator = self._validators[name]
        if validator.is_valid(instance):  # the fast path; errors are only collected on failure
            return
        errors: list[dict[str, str]] = []
        seen: set[tuple[str, str]] = set()
        for error in validator.iter_errors(instance):
            for item in _describe(error):
                if item not in seen:
                    seen.add(item)
                    errors.append({"path": item[0], "message": item[1]})
            if len(errors) >= MAX_ERRORS:
                break
        if not errors:  # defensive: is_valid and iter_errors disagreeing must still be a 422
            errors.append({"path": "/", "message": "is not valid"})
        raise InvalidPayload(
            f"the payload does not match the {name} schema",
            reason=reason,
            errors=errors[:MAX_ERRORS],
        )


def _compile(path: Path) -> Any:
    file = str(path)
    try:
        schema = orjson.loads(path.read_bytes())
    except OSError as exc:
        raise ConfigError(file, "(file)", f"cannot be read: {exc.strerror}") from None
    except orjson.JSONDecodeError as exc:
        raise ConfigError(file, "(json)", f"not valid JSON: {exc}") from None
    if not isinstance(schema, dict | bool):
        raise ConfigError(file, "/", "a schema must be a JSON object or a boolean")
    if isinstance(schema, dict) and schema.get("$schema", _DRAFT_2020_12) != _DRAFT_2020_12:
        raise ConfigError(file, "$schema", f"must be {_DRAFT_2020_12!r} (draft 2020-12)")
    try:
        jsonschema_rs.meta.validate(schema)
    except jsonschema_rs.ValidationError as exc:
        raise ConfigError(file, _pointer(exc.instance_path), _first_line(exc)) from None
    try:
        return jsonschema_rs.Draft202012Validator(schema, validate_formats=True, offline=True)
    except (jsonschema_rs.ValidationError, jsonschema_rs.ReferencingError, ValueError) as exc:
        key = _pointer(getattr(exc, "instance_path", ()))
        raise ConfigError(file, key, _first_line(exc)) from None


def _first_line(exc: Exception) -> str:
    return (getattr(exc, "message", None) or str(exc)).partition("\n")[0]


def _pointer(parts: Any) -> str:
    """A JSON Pointer ("/a/0/b"); "/" for the root rather than RFC 6901's "" (clearer to read)."""
    if not parts:
        return "/"
    return "".join("/" + str(p).replace("~", "~0").replace("/", "~1") for p in parts)


def _join(pointer: str, name: str) -> str:
    return ("" if pointer == "/" else pointer) + "/" + name.replace("~", "~0").replace("/", "~1")


def _types(kind: dict[str, Any]) -> str:
    return " or ".join(kind.get("types") or ["the expected type"])


def _allowed(kind: dict[str, Any]) -> str:
    options = kind.get("options")
    if isinstance(options, list) and 0 < len(options) <= 12:
        return "must be one of " + ", ".join(orjson.dumps(o).decode() for o in options)
    return "must be one of the allowed values"


# Keyword -> message, from the keyword's own details (schema values: limits, types, options).
_MESSAGES: dict[str, Callable[[dict[str, Any]], str]] = {
    "type": lambda k: f"must be of type {_types(k)}",
    "enum": _allowed,
    "const": lambda k: "must be equal to " + orjson.dumps(k.get("expected_value")).decode(),
    "minimum": lambda k: f"must be at least {k.get('limit')}",
    "maximum": lambda k: f"must be at most {k.get('limit')}",
    "exclusiveMinimum": lambda k: f"must be greater than {k.get('limit')}",
    "exclusiveMaximum": lambda k: f"must be less than {k.get('limit')}",
    "multipleOf": lambda k: f"must be a multiple of {k.get('multiple_of')}",
    "minLength": lambda k: f"must be at least {k.get('limit')} characters long",
    "maxLength": lambda k: f"must be at most {k.get('limit')} characters long",
    "pattern": lambda k: "does not match the pattern",
    "format": lambda k: f"must be a valid {k.get('format')}",
    "minItems": lambda k: f"must have at least {k.get('limit')} items",
    "maxItems": lambda k: f"must have at most {k.get('limit')} items",
    "uniqueItems": lambda k: "must not contain duplicate items",
    "contains": lambda k: "must contain a matching item",
    "minProperties": lambda k: f"must have at least {k.get('limit')} properties",
    "maxProperties": lambda k: f"must have at most {k.get('limit')} properties",
    "propertyNames": lambda k: "has a property name that is not allowed",
    "anyOf": lambda k: "must match at least one of the allowed forms",
    "oneOf": lambda k: "must match exactly one of the allowed forms",
    "not": lambda k: "must not match the excluded form",
    "falseSchema": lambda k: "is not allowed",
    "additionalItems": lambda k: "has more items than allowed",
    "unevaluatedItems": lambda k: "has items that are not allowed",
    "contentEncoding": lambda k: f"must be {k.get('content_encoding', 'validly')} encoded",
    "contentMediaType": lambda k: f"must be valid {k.get('content_media_type', 'content')}",
}


def _describe(error: Any) -> list[tuple[str, str]]:
    """(path, message) pairs for one jsonschema_rs.ValidationError, free of instance values."""
    kind = error.kind
    name = kind.name
    details = kind.as_dict()
    path = _pointer(error.instance_path)
    if name == "required":
        return [(_join(path, str(details.get("property"))), "is a required property")]
    if name in ("additionalProperties", "unevaluatedProperties"):
        unexpected = details.get("unexpected") or []
        if unexpected:
            return [(_join(path, str(p)), "is not allowed") for p in unexpected]
        return [(path, "has properties that are not allowed")]
    if name == "oneOf" and "MultipleValid" in type(kind).__name__:
        return [(path, "matches more than one of the allowed forms")]
    message = _MESSAGES.get(name)
    return [(path, message(details) if message else f"fails the {name} check")]
