"""The ingress as an OpenAPI 3.1 document, generated from the settings (`webhook-router
openapi`; the committed `docs/openapi.yaml` is checked against it by the tests).

    document = openapi_document(settings)     # a dict; secrets are not needed
    text = render_yaml(document)

Per source: its path and method, the media types it accepts, the headers its scheme reads
(signature, timestamp, topic, delivery id, event time), the provider payload schemas its
mappings check (where the payload fits none, the delivery is held or refused with 422), and
every answer it can give with its JSON body: the reasons of each status are listed, so a
client (and the fuzzer in tests/integration/test_fuzz.py) can check an answer against them.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

import orjson
import yaml

from router.mapping import load_mappings
from router.settings import Settings, SourceSettings

OPENAPI_VERSION = "3.1.0"
API_VERSION = "1"

# The `error` of each refusal (router.errors and the middleware in router.app). A test reads
# every reason the code raises and checks it is listed here under its status.
REASONS: dict[int, tuple[str, ...]] = {
    400: ("invalid_json", "invalid_utf8", "too_deep", "invalid_xml", "xml_forbidden",
          "unsupported_format", "invalid_event_id", "invalid_encoding", "bad_request"),
    401: ("missing_signature", "invalid_signature", "timestamp_out_of_tolerance",
          "missing_credentials", "invalid_credentials", "invalid_token", "expired_token"),
    403: ("address_not_allowed",),
    404: ("unknown_source",),
    405: ("method_not_allowed",),
    408: ("body_timeout", "header_timeout"),
    413: ("payload_too_large",),
    415: ("unsupported_media_type", "unsupported_encoding"),
    422: ("unknown_event", "schema_violation", "unproven_topic", "unmappable"),
    429: ("rate_limited",),
    503: ("broker_unavailable", "hold_queue_full", "too_many_connections"),
    504: ("broker_unconfirmed",),
}
HELD_REASONS = REASONS[422]

_WHEN = {
    400: "The body cannot be read safely: not UTF-8, not JSON or XML, nested too deep, XML "
         "with a DTD or entities, a Content-Encoding that does not decode, or a delivery id "
         "over 200 bytes.",
    401: "Verification failed: the signature or credentials are missing, wrong or expired.",
    403: "The client address is outside the source's allow_ips.",
    404: "No source at this path (any path not listed here).",
    405: "Not a method this path takes (sources take POST, the probes GET and HEAD).",
    408: "The whole body did not arrive within the source's body_timeout, or the request "
         "line and headers within header_timeout; the connection is closed.",
    413: "The body (as declared, as received, or decoded) is over the source's max_body.",
    415: "The Content-Type is not one this source accepts, or the Content-Encoding is not "
         "gzip, deflate or identity.",
    422: "Authentic, but not usable: the topic is not mapped (unknown_event), the payload "
         "breaks the provider schema (schema_violation, with `errors`), the body does not "
         "prove its topic (unproven_topic) or the mapped event breaks the canonical one "
         "(unmappable).",
    429: "This client's token bucket is empty; retry after Retry-After seconds.",
    503: "RabbitMQ is unreachable, blocking publishers, has too many unconfirmed or refused "
         "it (a bounded queue is full: the source's hold queue, hold_queue_full, or audit), "
         "or the process is at its max_connections; nothing was taken, retry after "
         "Retry-After seconds.",
    504: "Sent to RabbitMQ but not confirmed in time: it may still be delivered; retry after "
         "Retry-After seconds (a repeat is harmless).",
}

# What each verification scheme reads: (header, required, what it holds).
_HMAC_BASE64 = "base64 of the HMAC-SHA256 of the raw body"
SCHEME_HEADERS: dict[str, tuple[tuple[str, bool, str], ...]] = {
    "shopify": (("X-Shopify-Hmac-Sha256", True, _HMAC_BASE64),),
    "woocommerce": (("X-WC-Webhook-Signature", True,
                     _HMAC_BASE64 + " (absent only on the unsigned creation ping)"),),
    "github": (("X-Hub-Signature-256", True,
                "`sha256=` and the hex HMAC-SHA256 of the raw body"),),
    "easypost": (("X-Hmac-Signature", True,
                  "`hmac-sha256-hex=` and the hex HMAC-SHA256 of the raw body"),),
    "aftership": (("aftership-hmac-sha256", True, _HMAC_BASE64),),
    "stripe": (("Stripe-Signature", True,
                "`t=<unix seconds>,v1=<hex HMAC-SHA256 of t.body>`, more v1= while keys "
                "rotate"),),
    "standard-webhooks": (
        ("webhook-id", False, "the message id, signed with the body (or svix-id)"),
        ("webhook-timestamp", False, "unix seconds, within the tolerance (or svix-timestamp)"),
        ("webhook-signature", False,
         "space-separated `v1,<base64 HMAC-SHA256 of id.timestamp.body>` (or svix-signature)"),
    ),
    # hmac: from its options; bearer, basic and jwt: security schemes (below).
    "hmac": (),
    "bearer": (),
    "basic": (),
    "jwt": (),
}
_CREDENTIALS = {"bearer", "basic", "jwt"}


def _ref(kind: str, name: str) -> dict[str, str]:
    return {"$ref": f"#/components/{kind}/{name}"}


def _operation_id(name: str) -> str:
    return "post_" + re.sub(r"[^A-Za-z0-9_]", "_", name)


def _header(name: str, required: bool, description: str, **schema: Any) -> dict[str, Any]:
    return {"name": name, "in": "header", "required": required, "description": description,
            "schema": {"type": "string", **schema}}


def _signature_headers(s: SourceSettings) -> list[dict[str, Any]]:
    if s.scheme != "hmac":
        return [_header(name, required, what) for name, required, what in SCHEME_HEADERS[s.scheme]]
    o = s.options
    algorithm = str(o.get("algorithm", "sha256")).upper().replace("SHA", "SHA-")
    encoding = o.get("encoding", "hex")
    timestamp_header = o.get("timestamp_header")
    signed = o.get("signed_content", "{timestamp}.{body}" if timestamp_header else "{body}")
    prefix = o.get("prefix", "")
    headers = [_header(
        o["header"], True,
        f"{'`' + prefix + '` and the ' if prefix else 'the '}{encoding} HMAC-{algorithm} of "
        f"`{signed}`",
    )]
    if timestamp_header:
        headers.append(_header(timestamp_header, True, "unix seconds, within the tolerance",
                               pattern="^[0-9]{1,15}$"))
    return headers


def _parameters(s: SourceSettings) -> list[dict[str, Any]]:
    params = _signature_headers(s)
    if s.topic_header:
        params.append(_header(
            s.topic_header, False,
            "the provider's topic; mapped: " + ", ".join(f"`{t}`" for t in s.events),
            examples=list(s.events),
        ))
    for n, name in enumerate(s.id_headers):
        params.append(_header(
            name, False,
            "the provider's delivery id (at most 200 bytes), the same on its retries"
            + ("" if n == 0 else f"; read when {s.id_headers[n - 1]} is absent"),
        ))
    if s.occurred_at_header:
        params.append(_header(s.occurred_at_header, False,
                              "when the event happened, if the payload does not say"))
    params.append(_header(
        "Content-Encoding", False,
        "gzip or deflate bodies are decoded before any check; max_body applies to what "
        "they decode to", examples=["gzip", "deflate"],
    ))
    seen: set[str] = set()
    unique = []
    for param in params:  # a header read for two purposes is described once
        if param["name"].lower() not in seen:
            seen.add(param["name"].lower())
            unique.append(param)
    return unique


def _security(s: SourceSettings) -> tuple[str, dict[str, Any]] | None:
    """The security scheme of a credential scheme: its component name and definition."""
    if s.scheme not in _CREDENTIALS:
        return None
    if s.scheme == "basic":
        return "basic", {"type": "http", "scheme": "basic",
                         "description": f"user `{s.options.get('username')}`, a configured "
                                        "password"}
    header = str(s.options.get("header", "Authorization"))
    kind = "a JWT (" + ", ".join(s.options.get("algorithms", ["HS256"])) + ")" \
        if s.scheme == "jwt" else "one of the configured tokens"
    if header.lower() == "authorization":
        scheme: dict[str, Any] = {"type": "http", "scheme": "bearer",
                                  "description": f"`Bearer` and {kind}"}
        if s.scheme == "jwt":
            scheme["bearerFormat"] = "JWT"
        return f"{s.scheme}_{s.name}", scheme
    return f"{s.scheme}_{s.name}", {"type": "apiKey", "in": "header", "name": header,
                                    "description": f"{kind}, bare or after `Bearer `"}


def _payload_schemas(s: SourceSettings) -> list[str]:
    mappings = load_mappings(s.mapping)
    wanted = [s.event_type] if s.event_type else list(dict.fromkeys(s.events.values()))
    return list(dict.fromkeys(mappings[t].payload_schema for t in wanted if t in mappings))


def _request_body(s: SourceSettings, schemas: list[str]) -> dict[str, Any]:
    refs = [_ref("schemas", name) for name in schemas]
    body: dict[str, Any] = refs[0] if len(refs) == 1 else {"anyOf": refs}
    content: dict[str, Any] = {}
    for media_type in s.content_types:
        if "xml" in media_type:
            content[media_type] = {"schema": {
                **body, "description": "XML, read as JSON: an element is its text, or an "
                                       "object of its attributes (`@name`) and children"}}
        else:
            content[media_type] = {"schema": body}
    if s.scheme == "woocommerce":
        content["application/x-www-form-urlencoded"] = {"schema": {
            "description": "WooCommerce's unsigned creation ping, answered 200 `ping`",
            "type": "object", "required": ["webhook_id"],
            "properties": {"webhook_id": {"type": "string", "pattern": "^[0-9]+$"}},
        }}
    return {"required": True, "content": content,
            "description": "The raw bytes are verified; payloads that fit none of the schemas "
                           + ("are held (202 held)." if s.on_invalid == "hold"
                              else "are refused (422).")}


def _json_answer(description: str, schema: dict[str, Any],
                 retry_after: bool = False) -> dict[str, Any]:
    answer: dict[str, Any] = {"description": description,
                              "content": {"application/json": {"schema": schema}}}
    if retry_after:
        answer["headers"] = {"Retry-After": _ref("headers", "RetryAfter")}
    return answer


def _responses(s: SourceSettings) -> dict[str, Any]:
    ok = [_ref("schemas", "Duplicate")]
    if s.scheme == "woocommerce":
        ok.append(_ref("schemas", "Ping"))
    accepted = [_ref("schemas", "Accepted")]
    if s.on_invalid == "hold":
        accepted.append(_ref("schemas", "Held"))
    responses: dict[str, Any] = {
        "200": _json_answer("Nothing published: the delivery id (or, where only the body "
                            "is signed, the same body under the same topic) was accepted "
                            "within dedup_window (duplicate)"
                            + (", or the creation ping" if len(ok) > 1 else ""),
                            ok[0] if len(ok) == 1 else {"oneOf": ok}),
        "202": _json_answer("Confirmed by RabbitMQ: published as its canonical event"
                            + (", or held on held." + s.name if len(accepted) > 1 else ""),
                            accepted[0] if len(accepted) == 1 else {"oneOf": accepted}),
    }
    statuses = [400, 401]
    if s.allow_ips:
        statuses.append(403)
    statuses += [408, 413, 415]
    if s.on_invalid == "reject":
        statuses.append(422)
    if s.rate_limit is not None:
        statuses.append(429)
    statuses += [503, 504]
    for status in statuses:
        if status == 413:
            when = _WHEN[status] + f" Here: {s.max_body} bytes."
        elif status == 415:
            when = _WHEN[status] + " Here: " + ", ".join(s.content_types) + "."
        else:  # the same for every source
            responses[str(status)] = _ref("responses", f"Error{status}")
            continue
        responses[str(status)] = _json_answer(when, _ref("schemas", f"Error{status}"))
    return responses


def _operation(s: SourceSettings, schemas: list[str],
               security: tuple[str, dict[str, Any]] | None) -> dict[str, Any]:
    events = (f"always `{s.event_type}`" if s.event_type else
              ", ".join(f"`{topic}` → `{kind}`" for topic, kind in s.events.items()))
    where = (f"header {s.topic_header}" if s.topic_header
             else f"body field `{s.topic_field}`" if s.topic_field else "")
    description = (
        f"Scheme `{s.scheme}`. Events: {events}"
        + (f" (topic in the {where})" if where and not s.event_type else "")
        + ". An authentic delivery that cannot be used is "
        + ("held (202 held)." if s.on_invalid == "hold" else "refused (422).")
    )
    if s.id_field and not s.id_headers:
        description += f" The delivery id is the body field `{s.id_field}`."
    operation: dict[str, Any] = {
        "operationId": _operation_id(s.name),
        "summary": f"A webhook from {s.name}",
        "description": description,
        "parameters": _parameters(s),
        "requestBody": _request_body(s, schemas),
        "responses": _responses(s),
    }
    if security is not None:
        operation["security"] = [{security[0]: []}]
    return operation


def _status_schema(value: str, **extra: Any) -> dict[str, Any]:
    properties = {"status": {"const": value}, **extra}
    return {"type": "object", "required": list(properties), "properties": properties}


def _components(settings: Settings, schema_names: list[str],
                security: dict[str, Any]) -> dict[str, Any]:
    text = {"type": "string"}
    schemas: dict[str, Any] = {
        "Accepted": _status_schema("accepted", id=text),
        "Held": _status_schema("held", id=text, reason={"enum": list(HELD_REASONS)}),
        "Duplicate": _status_schema("duplicate", id=text),
        "Ping": _status_schema("ping"),
        "Status": {"type": "object", "required": ["status"],
                   "properties": {"status": {"enum": ["ok", "ready", "unavailable"]},
                                  "reason": {"const": "broker_unavailable"}}},
        "Rejection": _rejection_schema(),
        "Rejections": {
            "type": "object", "required": ["rejections", "counts"],
            "properties": {
                "rejections": {"type": "array", "items": _ref("schemas", "Rejection"),
                               "description": "newest first"},
                "counts": {"type": "object", "description": "source -> reason -> refusals",
                           "additionalProperties": {"type": "object", "additionalProperties": {
                               "type": "integer", "minimum": 1}}},
            },
        },
        "FailingPath": {"type": "object", "required": ["path", "message"],
                        "properties": {"path": {"type": "string",
                                                "description": "JSON Pointer into the payload"},
                                       "message": text}},
    }
    for status in sorted(REASONS):
        reason: dict[str, Any] = {"type": "string"}
        if status in REASONS:
            reason["enum"] = list(REASONS[status])
        properties: dict[str, Any] = {"error": reason, "message": text}
        if status == 422:
            properties["errors"] = {"type": "array",
                                    "items": _ref("schemas", "FailingPath")}
        schemas[f"Error{status}"] = {
            "type": "object", "required": ["error", "message"], "properties": properties,
            "description": "Messages never contain secrets or payload values.",
        }
    for name in schema_names:
        document = orjson.loads((settings.server.schemas / f"{name}.json").read_bytes())
        document.pop("$schema", None)  # 3.1 schema objects are draft 2020-12 already
        schemas[name] = document
    responses = {
        f"Error{status}": _json_answer(_WHEN[status], _ref("schemas", f"Error{status}"),
                                       retry_after=status in (429, 503, 504))
        for status in sorted(REASONS) if status not in (413, 415)
    }
    return {
        "schemas": schemas,
        "responses": responses,
        "headers": {"RetryAfter": {"description": "seconds to wait before retrying",
                                   "schema": {"type": "integer", "minimum": 1}}},
        "securitySchemes": security,
    }


def _rejection_schema() -> dict[str, Any]:
    def text_or_null(description: str) -> dict[str, Any]:
        return {"type": ["string", "null"], "description": description}  # a list each: no YAML &

    properties = {
        "at": {"type": "string", "format": "date-time", "description": "when, in UTC"},
        "source": {"type": "string", "description": "`-` for a path with no source"},
        "status": {"type": "integer", "minimum": 400, "maximum": 599},
        "reason": {"type": "string", "description": "the `error` the client got"},
        "delivery_id": text_or_null("the provider's delivery id, as its headers (or the "
                                    "body) named it"),
        "client": text_or_null("the client address (behind trusted_proxies)"),
    }
    return {"type": "object", "required": list(properties), "properties": properties,
            "additionalProperties": False,
            "description": "A refused request; never its body, headers or message."}


def _rejections_operation() -> dict[str, Any]:
    def query(name: str, description: str, **schema: Any) -> dict[str, Any]:
        return {"name": name, "in": "query", "required": False, "description": description,
                "schema": schema}

    return {
        "operationId": "rejections",
        "summary": "The recent refused requests of every worker, and counts by reason",
        "description": "Where /metrics is served (metrics_port) and to whom (metrics_allow). "
                       "At most `rejections_kept` per source, the newest; counts since start.",
        "parameters": [
            query("source", "only this source's (`-`: paths with no source)", type="string"),
            query("limit", "at most this many rejections", type="integer", minimum=1,
                  maximum=999999999),
        ],
        "responses": {
            "200": _json_answer("the rejections, newest first", _ref("schemas", "Rejections")),
            "400": _json_answer("`source` is not a configured source, `limit` not a whole "
                                "number from 1, or another parameter was given",
                                _ref("schemas", "Error400")),
            "403": _json_answer("the client address is outside metrics_allow",
                                _ref("schemas", "Error403")),
        },
    }


def _probes() -> dict[str, Any]:
    status = _ref("schemas", "Status")
    return {
        "/healthz": {"get": {"operationId": "healthz", "summary": "The process is up",
                             "responses": {"200": _json_answer("up", status)}}},
        "/readyz": {"get": {
            "operationId": "readyz", "summary": "Connected to RabbitMQ (the load balancer's "
                                                "health check)",
            "responses": {"200": _json_answer("ready", status),
                          "503": _json_answer("not connected to RabbitMQ", status)},
        }},
        "/metrics": {"get": {
            "operationId": "metrics", "summary": "Prometheus metrics",
            "responses": {"200": {"description": "the Prometheus text format",
                                  "content": {"text/plain": {"schema": {"type": "string"}}}}},
        }},
        "/rejections": {"get": _rejections_operation()},
    }


def openapi_document(settings: Settings) -> dict[str, Any]:
    """The OpenAPI 3.1 document of the ingress `settings` describe (secrets not needed)."""
    paths: dict[str, Any] = {}
    security: dict[str, Any] = {}
    schema_names: list[str] = []
    for name in sorted(settings.sources):
        s = settings.sources[name]
        schemas = _payload_schemas(s)
        schema_names += [n for n in schemas if n not in schema_names]
        credential = _security(s)
        if credential is not None:
            security[credential[0]] = credential[1]
        paths[s.path] = {"post": _operation(s, schemas, credential)}
    paths.update(_probes())
    return {
        "openapi": OPENAPI_VERSION,
        "info": {
            "title": "webhook-router ingress",
            "version": API_VERSION,
            "description": (
                "Generated from the configuration by `webhook-router openapi`; do not edit. "
                "Every refusal is `{\"error\": reason, \"message\": text}`. Any path not "
                "listed answers 404 `unknown_source`, any other method 405 "
                "`method_not_allowed`. HTTP that cannot be parsed at all (a bad request "
                "line, invalid header bytes) is refused by the HTTP server itself with a "
                "plain-text 400."
            ),
        },
        "paths": paths,
        "components": _components(settings, sorted(schema_names), security),
    }


def render_yaml(document: Mapping[str, Any]) -> str:
    """The document as YAML, keys in the order built, long lines kept whole."""
    return yaml.safe_dump(dict(document), sort_keys=False, allow_unicode=True, width=1000)
