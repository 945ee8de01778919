"""Declarative field mappings, provider payload -> canonical model, compiled once at load.

    mappings = load_mappings(Path("config/mappings/shopify.toml"))   # event type -> EventMapping
    m = mappings["order.created"]
    registry.check(m.payload_schema, payload)           # the provider's shape, BEFORE mapping
    data = m.apply(payload)                             # canonical dict, or InvalidPayload 422
    registry.check(m.model_schema, data, reason="unmappable")
    m.occurred_at(payload)                              # RFC 3339 string or None

The mapping file (TOML, one per provider) has one table per canonical model (and may have a
[proofs] table: what each provider topic's body must show, router/mapping/proofs.py):

    [order]
    types = ["order.created", "order.updated"]  # canonical event types served (each once per file)
    payload_schema = "shopify.order.v1"         # schema names = file stems in config/schemas/
    model_schema = "order.v1"
    occurred_at = "updated_at"                  # optional expression: the provider's event time
    [order.fields]                              # output field name -> expression
    order_id = { path = "id", as = "str", required = true }
    status = { const = "received" }
    [order.fields.shipping_address]             # a table without path/const/each/join: an object
    city = "shipping_address.city"

Expressions
    "a.b[0].c"        a path: dict keys separated by dots, list indexes in brackets (negative
                      counts from the end: "details[-1]"), "." is the current value itself.
                      A key containing "." or "[" cannot be addressed.
    { path = P }      P a path or a list of paths: the first present one wins.
    { const = V }     a fixed string, number or boolean.
    { join = [E, ...], sep = " " }
                      the parts (paths or expression tables) that are present and not blank,
                      as strings, joined with sep (default " "); absent when none is.
    { first = [E, ...] }
                      the first of the expressions whose value is present and not blank: a
                      fallback order, e.g. a line's identity when a product has no SKU:
                      first = ["sku", { path = "variant_id", absent = [0], prefix = "variant:" }]
    { each = "items[*]", fields = {...} }
                      a list with one object per item of the list at the path before "[*]";
                      paths inside `fields` are relative to the item. Every item yields an
                      object (possibly {}), so a bad item fails the model schema rather than
                      vanishing.
    { each = "items[*]", value = E }
                      a list of E evaluated on each item; items where E is absent are skipped.
    a table without any of path/const/each/join/first
                      a nested object whose keys are output fields (paths stay relative to the
                      current value, not to the object); omitted when none of its fields is.
                      Its field names cannot be expression keys (path, const, each, join,
                      first, as, map, map_default, default, required, sep, fields, value,
                      absent, prefix, present).
Modifiers (path, join and first; each takes only default and required)
    as = "str" | "int" | "float" | "bool" | "lower" | "upper" | "text" | "datetime"
        (router/mapping/conversions.py)
        str       numbers and booleans as text; ints exactly, so 64-bit ids keep every digit
                  (a float from 2^53 on, which may stand for its neighbour, is unmappable)
        int       ints, integral floats below 2^53, decimal strings ("12", " -3 ")
        float     numbers and numeric strings, finite only
        bool      booleans, 0/1, "true"/"false"/"yes"/"no"/"on"/"off"/"1"/"0"
        lower     the trimmed string in lower case; blank counts as absent
        upper     the trimmed string in upper case; blank counts as absent
        text      sanitised free text: HTML tags and control/invisible characters removed
                  (newline and tab kept), whitespace runs collapsed within each line, blank
                  lines dropped, trimmed, capped at 1000 characters; blank counts as absent
        datetime  an ISO 8601 string or Unix seconds -> RFC 3339; no offset means UTC, and
                  "+00:00" is written "Z"
    int and float never take booleans; a value that cannot be converted is unmappable.
    map = { "from" = "to", ... }   applied after `as`; non-string values are looked up as text
        ("true", "2"). A value with no entry takes `map_default` if given, else is unmappable.
    default = V        used, as written, when the value is absent (missing or null); for each,
                       only an array of scalars. Without a default an absent field is omitted.
    absent = [V, ...]  (path only) values that count as absent, as found (before `as`): a
                       provider's 0 for "no variation", "" for "no SKU".
    prefix = "text"    (path only) put before the value, as text, once everything else is
                       done: "variant:" + 123 is "variant:123". Not added to a default.
    present = V        (path only, without as and map) V whenever the path has a value:
                       what a field's presence means, e.g. cancelled_at set -> "cancelled".
    required = true    absent is an error naming the payload path (not with default).
occurred_at is an expression too; without an explicit `as` it is read as "datetime". A time
that is absent or unreadable gives None (the event is still accepted).

Errors: InvalidPayload(reason="unmappable", errors=[{"path": JSON Pointer into the payload,
"message": ...}]) lists every failing field (at most 20); messages never contain payload values.
Anything wrong in a file is a ConfigError naming the file and the dotted key at load time.
"""

from __future__ import annotations

import math
import tomllib
from collections.abc import Callable, Collection
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from router.errors import ConfigError, InvalidPayload
from router.mapping.conversions import CONVERTERS, BadValue, as_str, map_key, sanitize_text
from router.mapping.paths import PathError, Step, getter, json_pointer, parse_path
from router.mapping.proofs import PROOFS, load_proofs

__all__ = ["EventMapping", "load_mappings", "load_proofs", "sanitize_text"]

MAX_ERRORS = 20

_Fn = Callable[[Any], Any]  # current value -> field value; None means absent
_MISSING: Any = object()

_SOURCES = ("path", "const", "each", "join", "first")
_MODIFIERS = ("as", "map", "map_default", "default", "required", "sep", "fields", "value",
              "absent", "prefix", "present")
_ALLOWED = {
    "path": {"path", "as", "map", "map_default", "default", "required", "absent", "prefix",
             "present"},
    "join": {"join", "sep", "as", "map", "map_default", "default", "required"},
    "first": {"first", "as", "map", "map_default", "default", "required"},
    "each": {"each", "fields", "value", "default", "required"},
    "const": {"const"},
}
_MODEL_KEYS = ("types", "payload_schema", "model_schema", "occurred_at", "fields")


@dataclass(frozen=True)
class EventMapping:
    """One compiled model table of a mapping file; shared by every event type it serves."""

    model: str  # the table name: "order", "inventory", "tracking"
    payload_schema: str  # provider payload schema, checked before `apply`
    model_schema: str  # canonical model schema, checked after `apply` (reason "unmappable")
    types: tuple[str, ...] = ()
    _build: Callable[[Any], dict[str, Any]] = field(
        default=lambda payload: {}, repr=False, compare=False
    )
    _when: _Fn | None = field(default=None, repr=False, compare=False)

    def apply(self, payload: Any) -> dict[str, Any]:
        """The canonical data for `payload` (without `source`); InvalidPayload 422 "unmappable"."""
        try:
            return self._build(payload)
        except _Unmappable as exc:
            unique = dict.fromkeys((p or "/", m) for p, m in exc.errors)
            raise InvalidPayload(
                f"the payload cannot be mapped to the {self.model} model",
                reason="unmappable",
                errors=[{"path": p, "message": m} for p, m in list(unique)[:MAX_ERRORS]],
            ) from None

    def occurred_at(self, payload: Any) -> str | None:
        """The provider's event time (RFC 3339), or None when not configured, absent or bad."""
        if self._when is None:
            return None
        try:
            value = self._when(payload)
        except _Unmappable:
            return None
        return value if isinstance(value, str) else None


class _Unmappable(Exception):
    """Raised inside compiled expressions; `errors` are (payload pointer, message) pairs."""

    def __init__(self, errors: list[tuple[str, str]]) -> None:
        super().__init__(errors)
        self.errors = errors



# --- loading -----------------------------------------------------------------------------


def load_mappings(
    path: Path, *, schema_names: Collection[str] | None = None
) -> dict[str, EventMapping]:
    """Compile a mapping file into {canonical event type: EventMapping}.

    ConfigError(file, key, problem) for anything wrong: unreadable file, invalid TOML, unknown
    or missing keys, bad paths or values, an event type listed twice; with `schema_names`, also
    a schema name that is not among them.
    """
    file = str(path)
    try:
        with open(path, "rb") as fh:
            document = tomllib.load(fh)
    except OSError as exc:
        raise ConfigError(file, "(file)", f"cannot be read: {exc.strerror}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(file, "(toml)", f"not valid TOML: {exc}") from None
    if not document:
        raise ConfigError(file, "(file)", "defines no model tables")
    by_type: dict[str, EventMapping] = {}
    for model, table in document.items():
        if model == PROOFS:  # what each topic's body must show: router.mapping.proofs
            continue
        if not isinstance(table, dict):
            raise ConfigError(file, model, "must be a table such as [order]")
        mapping = _compile_model(_Ctx(file), model, table, schema_names)
        for type_ in mapping.types:
            if type_ in by_type:
                raise ConfigError(
                    file,
                    f"{model}.types",
                    f"{type_!r} is already served by [{by_type[type_].model}]",
                )
            by_type[type_] = mapping
    return by_type


@dataclass(frozen=True)
class _Ctx:
    file: str

    def error(self, key: str, problem: str) -> ConfigError:
        return ConfigError(self.file, key, problem)


def _compile_model(
    ctx: _Ctx, model: str, table: dict[str, Any], schema_names: Collection[str] | None
) -> EventMapping:
    for key in table:
        if key not in _MODEL_KEYS:
            raise ctx.error(
                f"{model}.{key}", f"unknown key (expected one of {', '.join(_MODEL_KEYS)})"
            )
    types = table.get("types")
    if not isinstance(types, list) or not types:
        raise ctx.error(f"{model}.types", "must be a non-empty array of event types")
    for type_ in types:
        if not isinstance(type_, str) or not type_:
            raise ctx.error(f"{model}.types", "every event type must be a non-empty string")
        if types.count(type_) > 1:
            raise ctx.error(f"{model}.types", f"{type_!r} is listed twice")
    schemas = {}
    for key in ("payload_schema", "model_schema"):
        name = table.get(key)
        if not isinstance(name, str) or not name:
            raise ctx.error(f"{model}.{key}", "must be a schema name such as 'order.v1'")
        if schema_names is not None and name not in schema_names:
            raise ctx.error(f"{model}.{key}", f"schema {name!r} is not in the schemas folder")
        schemas[key] = name
    fields = table.get("fields")
    if not isinstance(fields, dict) or not fields:
        raise ctx.error(f"{model}.fields", "must be a table of output fields")
    build = _compile_object(ctx, f"{model}.fields", fields)
    when = None
    if "occurred_at" in table:
        when = _compile_occurred_at(ctx, f"{model}.occurred_at", table["occurred_at"])
    return EventMapping(
        model=model,
        payload_schema=schemas["payload_schema"],
        model_schema=schemas["model_schema"],
        types=tuple(types),
        _build=build,
        _when=when,
    )


def _compile_occurred_at(ctx: _Ctx, key: str, spec: Any) -> _Fn:
    if isinstance(spec, str):
        spec = {"path": spec}
    if isinstance(spec, dict) and "as" not in spec and ("path" in spec or "join" in spec):
        spec = {**spec, "as": "datetime"}
    return _compile_expr(ctx, key, spec, nested_ok=False, each_ok=False)


def _compile_object(ctx: _Ctx, key: str, fields: dict[str, Any]) -> Callable[[Any], dict[str, Any]]:
    """A builder producing {name: value} for the present fields; gathers every field's errors."""
    compiled = tuple(
        (name, _compile_expr(ctx, f"{key}.{name}", spec, nested_ok=True, each_ok=True))
        for name, spec in fields.items()
    )

    def build(value: Any) -> dict[str, Any]:
        out: dict[str, Any] = {}
        errors: list[tuple[str, str]] | None = None
        for name, fn in compiled:
            try:
                item = fn(value)
            except _Unmappable as exc:  # zero-cost until raised: keep going to report all
                errors = (errors or []) + exc.errors
                continue
            if item is not None:
                out[name] = item
        if errors:
            raise _Unmappable(errors)
        return out

    return build


def _compile_expr(ctx: _Ctx, key: str, spec: Any, *, nested_ok: bool, each_ok: bool) -> _Fn:
    if isinstance(spec, str):
        return getter(_parse_path(ctx, key, spec))
    if not isinstance(spec, dict):
        raise ctx.error(key, "must be a path string or a table")
    sources = [s for s in _SOURCES if s in spec]
    if not sources:
        modifiers = [m for m in _MODIFIERS if m in spec]
        if modifiers:
            raise ctx.error(
                key, f"has {modifiers[0]!r} but none of path, const, each, join, first")
        if not nested_ok:
            raise ctx.error(key, "must be an expression with path, const, join or first")
        if not spec:
            raise ctx.error(key, "an object needs at least one field")
        build = _compile_object(ctx, key, spec)

        def nested(value: Any) -> dict[str, Any] | None:
            return build(value) or None

        return nested
    if len(sources) > 1:
        raise ctx.error(
            key, f"takes only one of path, const, each, join, first (has {', '.join(sources)})"
        )
    kind = sources[0]
    for name in spec:
        if name not in _ALLOWED[kind]:
            raise ctx.error(f"{key}.{name}", f"not allowed with {kind!r}")
    if kind == "const":
        return _compile_const(ctx, key, spec["const"])
    if kind == "each":
        if not each_ok:
            raise ctx.error(key, "each is not allowed here")
        return _compile_each(ctx, key, spec)
    if kind == "path":
        get, where = _compile_paths(ctx, f"{key}.path", spec["path"])
    elif kind == "join":
        get, where = _compile_join(ctx, key, spec)
    else:
        get, where = _compile_first(ctx, key, spec)
    return _compile_value(ctx, key, spec, get, where)


def _compile_const(ctx: _Ctx, key: str, value: Any) -> _Fn:
    if not _is_scalar(value):
        raise ctx.error(f"{key}.const", "must be a string, a number or a boolean")

    def const(_: Any) -> Any:
        return value

    return const


def _compile_paths(ctx: _Ctx, key: str, spec: Any) -> tuple[_Fn, Callable[[Any], str]]:
    """A getter for one path or for alternatives (first present wins), and its error pointer."""
    if isinstance(spec, str):
        steps = _parse_path(ctx, key, spec)
        pointer = json_pointer(steps)
        return getter(steps), lambda value: pointer
    if not isinstance(spec, list) or not spec:
        raise ctx.error(key, "must be a path or a non-empty array of paths")
    alternatives = [
        (getter(s), json_pointer(s))
        for s in (_parse_path(ctx, f"{key}[{i}]", p) for i, p in enumerate(spec))
    ]
    getters = tuple(g for g, _ in alternatives)
    if len(getters) == 1:
        only = alternatives[0][1]
        return getters[0], lambda value: only

    def first(value: Any) -> Any:
        for get in getters:
            found = get(value)
            if found is not None:
                return found
        return None

    def where(value: Any) -> str:  # error path only: whichever alternative was present
        for get, pointer in alternatives:
            if get(value) is not None:
                return pointer
        return alternatives[0][1]

    return first, where


def _compile_join(ctx: _Ctx, key: str, spec: dict[str, Any]) -> tuple[_Fn, Callable[[Any], str]]:
    parts_spec = spec["join"]
    if not isinstance(parts_spec, list) or not parts_spec:
        raise ctx.error(f"{key}.join", "must be a non-empty array of expressions")
    sep = spec.get("sep", " ")
    if not isinstance(sep, str):
        raise ctx.error(f"{key}.sep", "must be a string")
    parts = tuple(
        _compile_expr(ctx, f"{key}.join[{i}]", p, nested_ok=False, each_ok=False)
        for i, p in enumerate(parts_spec)
    )
    pointer = _first_pointer(ctx, f"{key}.join", parts_spec)

    def join(value: Any) -> str | None:
        texts = []
        for part in parts:
            item = part(value)
            if item is not None:
                try:
                    text = as_str(item)
                except BadValue as exc:
                    raise _Unmappable([(pointer, exc.message)]) from None
                if text and not text.isspace():
                    texts.append(text)
        return sep.join(texts) if texts else None

    return join, lambda value: pointer


def _first_pointer(ctx: _Ctx, key: str, specs: list[Any]) -> str:
    """The pointer errors name for a join or first: its first part that names a path
    (compile-time, so no per-call cost)."""
    for i, part in enumerate(specs):
        text = part.get("path") if isinstance(part, dict) else part
        if isinstance(text, list) and text:
            text = text[0]
        if isinstance(text, str):
            return json_pointer(_parse_path(ctx, f"{key}[{i}]", text))
    return ""


def _compile_first(
    ctx: _Ctx, key: str, spec: dict[str, Any]
) -> tuple[_Fn, Callable[[Any], str]]:
    specs = spec["first"]
    if not isinstance(specs, list) or not specs:
        raise ctx.error(f"{key}.first", "must be a non-empty array of expressions")
    options = tuple(
        _compile_expr(ctx, f"{key}.first[{i}]", s, nested_ok=False, each_ok=False)
        for i, s in enumerate(specs)
    )
    pointer = _first_pointer(ctx, f"{key}.first", specs)

    def first(value: Any) -> Any:
        for option in options:
            found = option(value)
            if found is not None and not (isinstance(found, str) and not found.strip()):
                return found
        return None

    return first, lambda value: pointer


def _compile_value(
    ctx: _Ctx, key: str, spec: dict[str, Any], get: _Fn, where: Callable[[Any], str]
) -> _Fn:
    """path/join/first plus `as`, `map`, `default`, `required`, `absent` and `prefix`, fused
    into one closure."""
    conv = None
    if "as" in spec:
        name = spec["as"]
        conv = CONVERTERS.get(name) if isinstance(name, str) else None
        if conv is None:
            raise ctx.error(f"{key}.as", f"must be one of {', '.join(CONVERTERS)}")
    table: dict[str, Any] | None = None
    if "map" in spec:
        table = spec["map"]
        if not isinstance(table, dict) or not table:
            raise ctx.error(f"{key}.map", "must be a non-empty table of value = value")
        for name, mapped in table.items():
            if not _is_scalar(mapped):
                raise ctx.error(f"{key}.map.{name}", "must be a string, a number or a boolean")
    map_default = spec.get("map_default", _MISSING)
    if map_default is not _MISSING:
        if table is None:
            raise ctx.error(f"{key}.map_default", "needs a map")
        if not _is_scalar(map_default):
            raise ctx.error(f"{key}.map_default", "must be a string, a number or a boolean")
    default, required = _absent_rules(ctx, key, spec, list_ok=False)
    absent = spec.get("absent", [])
    if not isinstance(absent, list) or not all(_is_scalar(a) for a in absent):
        raise ctx.error(f"{key}.absent", "must be an array of strings, numbers or booleans")
    # Compared with their types: 0 must not also match false.
    nothing = tuple((type(a), a) for a in absent)
    prefix = spec.get("prefix", "")
    if not isinstance(prefix, str):
        raise ctx.error(f"{key}.prefix", "must be a string")
    present = spec.get("present", _MISSING)
    if present is not _MISSING and (not _is_scalar(present) or conv or table is not None):
        raise ctx.error(f"{key}.present", "must be a string, a number or a boolean, "
                                          "without as or map")

    if conv is None and table is None and default is None and not required and not (
        nothing or prefix or present is not _MISSING
    ):
        return get  # the common plain copy: no wrapper at all

    def value_expr(value: Any) -> Any:
        found = get(value)
        if nothing and (type(found), found) in nothing:
            found = None
        if found is not None and present is not _MISSING:
            found = present
        if found is not None and conv is not None:
            try:
                found = conv(found)
            except BadValue as exc:
                raise _Unmappable([(where(value), exc.message)]) from None
        if found is None:
            if default is not None:
                return default
            if required:
                raise _Unmappable([(where(value), "is required")])
            return None
        if table is not None:
            key = found if isinstance(found, str) else map_key(found)
            mapped = _MISSING if key is None else table.get(key, _MISSING)
            if mapped is _MISSING:
                if map_default is _MISSING:
                    raise _Unmappable([(where(value), "has no mapping for this value")])
                mapped = map_default
            found = mapped
        if prefix:
            try:
                return prefix + as_str(found)
            except BadValue as exc:
                raise _Unmappable([(where(value), exc.message)]) from None
        return found

    return value_expr


def _compile_each(ctx: _Ctx, key: str, spec: dict[str, Any]) -> _Fn:
    text = spec["each"]
    if not isinstance(text, str) or not text.endswith("[*]"):
        raise ctx.error(f"{key}.each", "must be a path ending in [*], e.g. 'line_items[*]'")
    prefix = text[: -len("[*]")]
    steps = _parse_path(ctx, f"{key}.each", prefix) if prefix else ()
    get = getter(steps)
    pointer = json_pointer(steps)
    if ("fields" in spec) == ("value" in spec):
        raise ctx.error(key, "each needs exactly one of fields (objects) or value (scalars)")
    default, required = _absent_rules(ctx, key, spec, list_ok=True)
    item_fn: _Fn
    if "fields" in spec:
        fields = spec["fields"]
        if not isinstance(fields, dict) or not fields:
            raise ctx.error(f"{key}.fields", "must be a table of output fields")
        item_fn = _compile_object(ctx, f"{key}.fields", fields)
        keep_absent = True
    else:
        item_fn = _compile_expr(ctx, f"{key}.value", spec["value"], nested_ok=False, each_ok=False)
        keep_absent = False

    def each(value: Any) -> list[Any] | None:
        items = get(value)
        if items is None:
            if default is not None:
                return list(default)  # a fresh list: results never share state
            if required:
                raise _Unmappable([(pointer, "is required")])
            return None
        if not isinstance(items, list):
            raise _Unmappable([(pointer, "must be a list")])
        try:
            if keep_absent:
                return [item_fn(item) for item in items]
            return [v for v in (item_fn(item) for item in items) if v is not None]
        except _Unmappable:
            pass
        errors: list[tuple[str, str]] = []  # the slow path, only to say which items failed
        for i, item in enumerate(items):
            try:
                item_fn(item)
            except _Unmappable as exc:
                errors.extend((f"{pointer}/{i}{p}", m) for p, m in exc.errors)
        raise _Unmappable(errors)

    return each


def _absent_rules(ctx: _Ctx, key: str, spec: dict[str, Any], *, list_ok: bool) -> tuple[Any, bool]:
    default = spec.get("default")
    if default is not None:
        if list_ok:
            if not isinstance(default, list) or not all(_is_scalar(d) for d in default):
                raise ctx.error(f"{key}.default", "must be an array of scalars")
        elif not _is_scalar(default):
            raise ctx.error(f"{key}.default", "must be a string, a number or a boolean")
    required = spec.get("required", False)
    if not isinstance(required, bool):
        raise ctx.error(f"{key}.required", "must be true or false")
    if required and default is not None:
        raise ctx.error(f"{key}.required", "a field with a default cannot be required")
    return default, required


def _is_scalar(value: Any) -> bool:
    if isinstance(value, float):
        return math.isfinite(value)  # TOML allows nan/inf, JSON does not
    return isinstance(value, str | int | bool)



def _parse_path(ctx: _Ctx, key: str, text: Any) -> tuple[Step, ...]:
    try:
        return parse_path(text)
    except PathError as exc:
        raise ctx.error(key, str(exc)) from None

