"""Request bodies to plain Python values: JSON, XML (defused) and HTML form bodies.

    parse_body(body, media_type, max_depth=32) -> Any

Accepted media types (parameters such as `; charset=utf-8` are ignored):
    application/json, */*+json            orjson; dicts, lists, str, int (exact), float, ...
    application/xml, text/xml             defusedxml; converted to dicts (see below)
    application/x-www-form-urlencoded     dict of str -> str, the last value of a repeated name

Every failure is a MalformedPayload (400) whose `reason` says what was wrong:
    invalid_utf8        JSON or form body that is not UTF-8
    invalid_json        not one JSON document
    invalid_xml         not well-formed XML
    xml_forbidden       a DTD, an entity declaration or an external reference (never expanded)
    too_deep            objects/arrays (JSON) or elements (XML) nested deeper than max_depth
    unsupported_format  any other media type (the caller checks content types first)
Messages never echo the payload.

XML becomes `{root_tag: value}`: an element with neither children nor attributes is its text
(stripped, "" when empty); otherwise a dict with "@name" for each attribute, one key per child
tag (a list when the tag repeats) and "#text" for non-blank text. Namespaces are dropped from
tag and attribute names ("{urn:x}order" -> "order"); comments and tail text are ignored.
Depth counts elements: a lone root element is depth 1, like a flat JSON object.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import parse_qsl
from xml.etree.ElementTree import Element, ParseError

import defusedxml.ElementTree as defused_et
import orjson
from defusedxml import DefusedXmlException

from router.errors import MalformedPayload

__all__ = ["parse_body"]

_JSON = "json"
_XML = "xml"
_FORM = "form"
_KINDS = {
    "application/json": _JSON,
    "application/xml": _XML,
    "text/xml": _XML,
    "application/x-www-form-urlencoded": _FORM,
}

# For the depth check: keep only quotes and brackets, every bracket folded to "(" / ")".
_STRUCTURE = bytes.maketrans(b"{[}]", b"(())")
_NOT_STRUCTURE = bytes(c for c in range(256) if c not in b'"{}[]')


def parse_body(body: bytes, media_type: str, *, max_depth: int = 32) -> Any:
    """Parse `body` as `media_type`; MalformedPayload (with a reason) for anything unusable."""
    kind = _kind(media_type)
    if kind is _JSON:
        return _parse_json(body, max_depth)
    if kind is _XML:
        return _parse_xml(body, max_depth)
    if kind is _FORM:
        return _parse_form(body)
    raise MalformedPayload("the body's media type cannot be parsed", reason="unsupported_format")


def _kind(media_type: str) -> str | None:
    kind = _KINDS.get(media_type)
    if kind is not None:  # the common case: the caller passes a bare, lower-case type
        return kind
    bare = media_type.partition(";")[0].strip().lower()
    kind = _KINDS.get(bare)
    if kind is None and bare.endswith("+json") and "/" in bare:
        kind = _JSON
    return kind


# --- JSON --------------------------------------------------------------------------------


def _parse_json(body: bytes, max_depth: int) -> Any:
    try:
        value = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        if str(exc).startswith("depth limit"):  # orjson's own hard limit (1024)
            raise _too_deep(max_depth) from None
        try:
            bytes(body).decode("utf-8")
        except UnicodeDecodeError:
            raise MalformedPayload("the body is not valid UTF-8", reason="invalid_utf8") from None
        raise MalformedPayload(
            f"the body is not valid JSON (error at character {exc.pos})", reason="invalid_json"
        ) from None
    # Nesting needs at least one bracket per level: most payloads are cleared right here.
    if body.count(b"{") + body.count(b"[") > max_depth and _json_too_deep(body, max_depth):
        raise _too_deep(max_depth)
    return value


def _json_too_deep(body: bytes, max_depth: int) -> bool:
    """Whether already-parsed JSON nests deeper than max_depth, found with C-speed bytes ops.

    Walking the parsed value costs a Python step per value; this costs a few passes over the
    bytes instead. Escaped backslashes and quotes go first (a run of backslashes always starts
    an escape, so pairing them from the left is exact); then everything but quotes and brackets.
    Dropping two adjacent quotes keeps the others paired, so `""` (a string holding no bracket,
    or the seam between two strings) can go in one pass; strings that still hold brackets are
    cut out by splitting on quotes. What is left is the bracket skeleton, e.g. "(()(()))": each
    pass of removing "()" strips one level, so the number of passes is the depth.
    """
    if b"\\" in body:
        body = body.replace(b"\\\\", b"").replace(b'\\"', b"")
    skeleton = body.translate(_STRUCTURE, _NOT_STRUCTURE).replace(b'""', b"")
    if b'"' in skeleton:
        skeleton = b"".join(skeleton.split(b'"')[::2])
    depth = 0
    while skeleton:
        depth += 1
        if depth > max_depth:
            return True
        skeleton = skeleton.replace(b"()", b"")
    return False


def _too_deep(max_depth: int) -> MalformedPayload:
    return MalformedPayload(f"the body is nested deeper than {max_depth} levels", reason="too_deep")


# --- XML ---------------------------------------------------------------------------------


def _parse_xml(body: bytes, max_depth: int) -> dict[str, Any]:
    try:
        root = defused_et.fromstring(
            body, forbid_dtd=True, forbid_entities=True, forbid_external=True
        )
    except DefusedXmlException:
        raise MalformedPayload(
            "the body declares a DTD, entities or external references, which are not accepted",
            reason="xml_forbidden",
        ) from None
    except ParseError as exc:
        line, column = getattr(exc, "position", (0, 0))
        raise MalformedPayload(
            f"the body is not well-formed XML (line {line}, column {column})",
            reason="invalid_xml",
        ) from None
    return _xml_to_dict(root, max_depth)


def _local(name: str) -> str:
    return name.rpartition("}")[2] if name[:1] == "{" else name


def _xml_to_dict(root: Element, max_depth: int) -> dict[str, Any]:
    # Iterative, so a deep document cannot exhaust the Python stack. Children are pushed in
    # reverse, so each parent receives its children in document order.
    out: dict[str, Any] = {}
    stack: list[tuple[Element, dict[str, Any], int]] = [(root, out, 1)]
    while stack:
        elem, parent, depth = stack.pop()
        if depth > max_depth:
            raise _too_deep(max_depth)
        text = elem.text.strip() if elem.text else ""
        value: Any
        if len(elem) == 0 and not elem.attrib:
            value = text
        else:
            value = {"@" + _local(k): v for k, v in elem.attrib.items()}
            if text:
                value["#text"] = text
            for child in reversed(elem):
                stack.append((child, value, depth + 1))
        tag = _local(elem.tag)
        if tag not in parent:
            parent[tag] = value
        else:  # a repeated tag: values are never lists otherwise, so a list means "ours"
            existing = parent[tag]
            if type(existing) is list:
                existing.append(value)
            else:
                parent[tag] = [existing, value]
    return out


# --- forms -------------------------------------------------------------------------------


def _parse_form(body: bytes) -> dict[str, str]:
    try:
        text = bytes(body).decode("utf-8")
        pairs = parse_qsl(text, keep_blank_values=True, encoding="utf-8", errors="strict")
    except UnicodeDecodeError:
        raise MalformedPayload("the body is not valid UTF-8", reason="invalid_utf8") from None
    return dict(pairs)
