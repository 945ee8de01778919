"""Just enough GraphQL for an emulator: read a document (operations, variable definitions,
fields with aliases and arguments, nested selections; no fragments or directives), pick the
operation asked for, and check a selection against a small schema. Errors come out as
GraphQL error objects in the shape graphql-ruby (Shopify's server) gives them."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

TOKEN = re.compile(
    r'(?P<skip>[\s,\ufeff]+|#[^\n\r]*)'
    r'|(?P<string>"(?:\\.|[^"\\\n])*")'
    r'|(?P<number>-?\d+(?:\.\d+)?(?:[eE][+-]?\d+)?)'
    r'|(?P<name>[_A-Za-z][_0-9A-Za-z]*)'
    r'|(?P<punct>\.\.\.|[!$&()\[\]{}:=@|])'
)


class GraphQLError(Exception):
    """A request error: the document or its variables do not fit; nothing was executed."""

    def __init__(self, message: str, code: str | None = None, **extensions: Any) -> None:
        super().__init__(message)
        self.body: dict[str, Any] = {"message": message}
        if code or extensions:
            self.body["extensions"] = {**({"code": code} if code else {}), **extensions}


@dataclass
class Var:
    name: str


@dataclass
class Field:
    name: str
    alias: str
    arguments: dict[str, Any] = field(default_factory=dict)
    selections: list[Field] = field(default_factory=list)


@dataclass
class Operation:
    kind: str  # query | mutation
    name: str | None
    variables: dict[str, str]  # $name -> declared type, as written ("FulfillmentInput!")
    selections: list[Field]


def _tokens(text: str) -> list[tuple[str, str]]:
    out: list[tuple[str, str]] = []
    pos = 0
    while pos < len(text):
        match = TOKEN.match(text, pos)
        if match is None or text.startswith('"""', pos):
            raise GraphQLError(f"Parse error on {text[pos:pos + 10]!r}", "parseError")
        pos = match.end()
        kind = match.lastgroup or ""
        if kind != "skip":
            out.append((kind, match.group()))
    return out


class _Parser:
    def __init__(self, text: str) -> None:
        self.tokens = _tokens(text)
        self.at = 0

    def peek(self) -> str | None:
        return self.tokens[self.at][1] if self.at < len(self.tokens) else None

    def take(self, expected: str | None = None) -> tuple[str, str]:
        if self.at >= len(self.tokens):
            raise GraphQLError("Parse error: unexpected end of document", "parseError")
        token = self.tokens[self.at]
        if expected is not None and token[1] != expected:
            raise GraphQLError(f"Parse error on {token[1]!r}: expected {expected!r}",
                               "parseError")
        self.at += 1
        return token

    def name(self) -> str:
        kind, value = self.take()
        if kind != "name":
            raise GraphQLError(f"Parse error on {value!r}: expected a name", "parseError")
        return value

    def document(self) -> list[Operation]:
        operations = []
        while self.peek() is not None:
            if self.peek() == "{":
                operations.append(Operation("query", None, {}, self.selection_set()))
                continue
            kind = self.name()
            if kind not in ("query", "mutation"):
                raise GraphQLError(f"{kind} definitions are not emulated", "parseError")
            name = self.name() if self.peek() not in ("(", "{") else None
            variables = self.variable_definitions() if self.peek() == "(" else {}
            operations.append(Operation(kind, name, variables, self.selection_set()))
        if not operations:
            raise GraphQLError("No query string was present", "parseError")
        return operations

    def variable_definitions(self) -> dict[str, str]:
        found: dict[str, str] = {}
        self.take("(")
        while self.peek() != ")":
            self.take("$")
            name = self.name()
            self.take(":")
            found[name] = self.type_ref()
            if self.peek() == "=":
                self.take("=")
                self.value()
        self.take(")")
        return found

    def type_ref(self) -> str:
        if self.peek() == "[":
            self.take("[")
            inner = self.type_ref()
            self.take("]")
            text = f"[{inner}]"
        else:
            text = self.name()
        if self.peek() == "!":
            self.take("!")
            text += "!"
        return text

    def selection_set(self) -> list[Field]:
        self.take("{")
        fields = []
        while self.peek() != "}":
            if self.peek() in ("...", "@"):
                raise GraphQLError("fragments and directives are not emulated", "parseError")
            alias = name = self.name()
            if self.peek() == ":":
                self.take(":")
                name = self.name()
            arguments: dict[str, Any] = {}
            if self.peek() == "(":
                self.take("(")
                while self.peek() != ")":
                    key = self.name()
                    self.take(":")
                    arguments[key] = self.value()
                self.take(")")
            selections = self.selection_set() if self.peek() == "{" else []
            fields.append(Field(name, alias, arguments, selections))
        self.take("}")
        if not fields:
            raise GraphQLError("Parse error: empty selection", "parseError")
        return fields

    def value(self) -> Any:
        kind, token = self.take()
        if token == "$":
            return Var(self.name())
        if kind == "string":
            return bytes(token[1:-1], "utf-8").decode("unicode_escape")
        if kind == "number":
            return float(token) if any(c in token for c in ".eE") else int(token)
        if token == "[":
            items = []
            while self.peek() != "]":
                items.append(self.value())
            self.take("]")
            return items
        if token == "{":
            obj = {}
            while self.peek() != "}":
                key = self.name()
                self.take(":")
                obj[key] = self.value()
            self.take("}")
            return obj
        if kind == "name":
            return {"true": True, "false": False, "null": None}.get(token, token)
        raise GraphQLError(f"Parse error on {token!r}", "parseError")


def parse(text: str, operation_name: str | None) -> Operation:
    """The operation to run: the one named `operation_name`, or the only one."""
    operations = _Parser(text).document()
    if operation_name:
        for operation in operations:
            if operation.name == operation_name:
                return operation
        raise GraphQLError(f'No operation named "{operation_name}"')
    if len(operations) > 1:
        raise GraphQLError("An operation name is required")
    return operations[0]


def resolve(value: Any, variables: dict[str, Any]) -> Any:
    """An argument's value with its variables filled in."""
    if isinstance(value, Var):
        return variables.get(value.name)
    if isinstance(value, list):
        return [resolve(v, variables) for v in value]
    if isinstance(value, dict):
        return {k: resolve(v, variables) for k, v in value.items()}
    return value


# A schema for selections: type -> field -> the field's type ("[T]" a list of T). Scalars are
# the names not in the table.
SCALARS = frozenset({"ID", "String", "Boolean", "Int", "Float", "DateTime", "URL"})


def check_selection(selections: list[Field], type_name: str,
                    schema: dict[str, dict[str, str]], path: list[str]) -> None:
    """Every field asked exists on its type; objects are selected into, scalars are not."""
    for f in selections:
        if f.name == "__typename":
            continue
        field_type = schema[type_name].get(f.name)
        where = [*path, f.alias]
        if field_type is None:
            raise GraphQLError(f"Field '{f.name}' doesn't exist on type '{type_name}'",
                               "undefinedField", typeName=type_name, fieldName=f.name)
        inner = field_type.strip("[]")
        if inner in SCALARS:
            if f.selections:
                raise GraphQLError(f"Selections can't be made on scalars (field '{f.name}' "
                                   f"returns {inner} but has selections)", "selectionMismatch")
        elif not f.selections:
            raise GraphQLError(f"Field must have selections (field '{f.name}' returns "
                               f"{inner} but has no selections)", "selectionMismatch")
        else:
            check_selection(f.selections, inner, schema, where)


def project(value: Any, selections: list[Field], type_name: str,
            schema: dict[str, dict[str, str]]) -> Any:
    """`value` cut down to what was selected (checked by check_selection), under each
    field's alias."""
    if value is None:
        return None
    if isinstance(value, list):
        return [project(v, selections, type_name, schema) for v in value]
    out: dict[str, Any] = {}
    for f in selections:
        if f.name == "__typename":
            out[f.alias] = type_name
        elif f.selections:
            inner = schema[type_name][f.name].strip("[]")
            out[f.alias] = project(value.get(f.name), f.selections, inner, schema)
        else:
            out[f.alias] = value.get(f.name)
    return out


def requested_cost(operation: Operation) -> int:
    """A simplification of Shopify's calculated query cost: 10 for a mutation; for a query 1,
    plus 2 + `first` for each paginated field."""
    if operation.kind == "mutation":
        return 10

    def walk(fields: list[Field]) -> int:
        total = 0
        for f in fields:
            first = f.arguments.get("first")
            total += (2 + first if isinstance(first, int) else 0) + walk(f.selections)
        return total

    return 1 + walk(operation.selections)
