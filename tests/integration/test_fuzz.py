"""A property-based fuzzer against a live ingress: a real server on a loopback port, the real
RabbitMQ under this test's own prefix, requests written byte for byte on the socket.

Two runs, each a fixed, reproducible budget (hypothesis, derandomized):
- raw: random methods, paths, headers (non-UTF-8 bytes, huge values, duplicates), bodies
  (random bytes, deep or huge JSON, 1e400 and 10**400, invalid UTF-8, XML, forms) and
  encodings (gzip, deflate, bogus Content-Encoding, charset parameters, chunked);
- signed: deliveries correctly signed with the test's secrets over random or mutated JSON,
  with random topic, delivery-id and time headers: they may be held, never a 5xx.
Properties: no 5xx but 503; every 4xx the application answers is JSON with a reason, and
every answer on a documented path is one docs/openapi.yaml lists, with a body its schema
allows; afterwards, every message on every queue (work, retry, dead, unrouted, held) is one
the ingress answered 202 for a request that verifies under the test's secrets.
"""

from __future__ import annotations

import asyncio
import base64
import collections
import dataclasses
import gzip
import http.client
import json
import socket
import threading
import time
import zlib
from collections.abc import Coroutine
from pathlib import Path
from typing import Any

import aio_pika
import jsonschema_rs
import jwt
import pytest
import yaml
from aiohttp import web
from hypothesis import HealthCheck, given
from hypothesis import settings as budget
from hypothesis import strategies as st
from multidict import CIMultiDict

from router.app import create_app
from router.broker.topology import Topology
from router.hold import hold_queues
from router.providers import signed_headers
from router.settings import Settings
from router.verify import build_verifier

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[2]
SAMPLES = ROOT / "config" / "samples"
DOCUMENT = yaml.safe_load((ROOT / "docs" / "openapi.yaml").read_text())
RAW_EXAMPLES = 4000
SIGNED_EXAMPLES = 1500

# Test-only secrets of the extra sources below.
JWT_SECRET = b"jwt-test-secret-0123456789abcdef0123456789"
WHSEC = b"whsec_" + base64.b64encode(b"standard-webhooks-test-key-32byte")


def fuzz_settings(settings: Settings) -> Settings:
    """The shipped config plus one source for each scheme family it does not use (so every
    verifier is fuzzed), all on the portal's mapping; loopback is a trusted proxy, so a
    random X-Forwarded-For picks the client address (and its rate-limit bucket)."""
    portal = settings.sources["portal"]
    extra = {
        "github": dict(scheme="github", secrets=(b"github-test-secret",), options={},
                       topic_header="X-GitHub-Event", topic_field=None,
                       id_headers=("X-GitHub-Delivery",), on_invalid="hold"),
        "stripe": dict(scheme="stripe", secrets=(b"whsec_stripe_test",), options={},
                       on_invalid="hold"),
        "standard": dict(scheme="standard-webhooks", secrets=(WHSEC,), options={},
                         id_headers=("webhook-id", "svix-id"), on_invalid="hold"),
        "basic": dict(scheme="basic", secrets=(b"basic-test-password",),
                      options={"username": "inventory"}),
        "jwt": dict(scheme="jwt", secrets=(JWT_SECRET,),
                    options={"algorithms": ["HS256"], "audience": "webhook-router"}),
        "sha512": dict(scheme="hmac", secrets=(b"sha512-test-secret",),
                       options={"header": "X-Signature", "algorithm": "sha512",
                                "encoding": "base64"},
                       content_types=("application/json", "application/xml", "text/xml")),
    }
    sources = dict(settings.sources)
    for name, changes in extra.items():
        sources[name] = dataclasses.replace(portal, name=name, path=f"/webhooks/{name}",
                                            **changes)
    server = dataclasses.replace(settings.server, trusted_proxies=("127.0.0.1/32",))
    return dataclasses.replace(settings, sources=sources, server=server)


# --- the live ingress and a raw HTTP client ------------------------------------------


class LiveIngress:
    """The ingress served on a loopback port from a thread of its own (its own event loop),
    as a provider would reach it."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.loop = asyncio.new_event_loop()
        self.runner = web.AppRunner(create_app(settings, wait_for_broker=True))
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.port = 0

    def run(self, coroutine: Coroutine[Any, Any, Any], timeout: float = 60.0) -> Any:
        return asyncio.run_coroutine_threadsafe(coroutine, self.loop).result(timeout)

    def start(self) -> None:
        self.thread.start()
        self.run(self.runner.setup())
        site = web.TCPSite(self.runner, "127.0.0.1", 0)
        self.run(site.start())
        self.port = self.runner.addresses[0][1]

    def stop(self) -> None:
        self.run(self.runner.cleanup())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
        self.loop.close()


@dataclasses.dataclass
class Answer:
    status: int
    headers: http.client.HTTPMessage
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


def exchange(port: int, raw: bytes) -> Answer:
    """Write `raw` on a fresh connection and read the answer (the request says close)."""
    with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
        try:
            sock.sendall(raw)
        except (BrokenPipeError, ConnectionResetError):
            pass  # refused before the body was read (413 on the declared length): read that
        response = http.client.HTTPResponse(sock, method=raw.split(b" ", 1)[0].decode("latin-1"))
        response.begin()
        return Answer(response.status, response.headers, response.read())


Headers = list[tuple[bytes, bytes]]


@dataclasses.dataclass
class Case:
    """One request as it goes on the wire; `body` is what the encoding was applied to."""

    method: bytes
    path: bytes
    headers: Headers
    body: bytes
    encoding: str = ""  # "", gzip, deflate, not-gzip (the header says gzip), or a bogus one
    chunked: bool = False

    def wire_body(self) -> bytes:
        return encode(self.body, self.encoding)

    def raw(self) -> bytes:
        body = self.wire_body()
        lines = [self.method + b" " + self.path + b" HTTP/1.1", b"Host: 127.0.0.1",
                 b"Connection: close"]
        lines += [name + b": " + value for name, value in self.headers]
        if self.encoding:
            said = "gzip" if self.encoding == "not-gzip" else self.encoding
            lines.append(b"Content-Encoding: " + said.encode())
        if self.chunked:
            lines.append(b"Transfer-Encoding: chunked")
            framed = b"".join(b"%x\r\n%s\r\n" % (len(part), part)
                              for part in (body[i:i + 4096] for i in range(0, len(body), 4096)))
            body = framed + b"0\r\n\r\n"
        else:
            lines.append(b"Content-Length: %d" % len(body))
        return b"\r\n".join(lines) + b"\r\n\r\n" + body

    def cimultidict(self) -> CIMultiDict[str]:
        """The headers as aiohttp hands them to a verifier."""
        return CIMultiDict((n.decode("latin-1"), v.decode("utf-8", "surrogateescape"))
                           for n, v in self.headers)


def encode(body: bytes, encoding: str) -> bytes:
    if encoding == "gzip":
        return gzip.compress(body)
    if encoding == "deflate":
        return zlib.compress(body)
    if encoding == "truncated-gzip":
        return gzip.compress(body)[:-6]
    return body  # identity, not-gzip, or an encoding the server does not know: as they are


# --- strategies -----------------------------------------------------------------------

FUZZ_SOURCES: dict[str, Any] = {}  # filled by the live fixture (name -> SourceSettings)

TOKEN = st.text(st.sampled_from("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_"),
                min_size=1, max_size=20).map(str.encode)
HEADER_NAMES = [
    b"Authorization", b"X-Forwarded-For", b"X-Shopify-Hmac-Sha256",
    b"X-Shopify-Topic", b"X-Shopify-Event-Id", b"X-Shopify-Webhook-Id", b"X-Shopify-Triggered-At",
    b"X-WC-Webhook-Signature", b"X-WC-Webhook-Topic", b"X-WC-Webhook-Delivery-ID",
    b"X-Inventory-Signature", b"X-Inventory-Timestamp", b"X-Hmac-Signature",
    b"aftership-hmac-sha256", b"X-Hub-Signature-256", b"X-GitHub-Event", b"X-GitHub-Delivery",
    b"Stripe-Signature", b"webhook-id", b"webhook-timestamp", b"webhook-signature", b"svix-id",
    b"svix-timestamp", b"svix-signature", b"X-Signature", b"Expect", b"Accept-Encoding",
]
MEDIA_TYPES = [b"application/json", b"application/json; charset=utf-8",
               b"application/json; charset=latin-1", b"APPLICATION/JSON", b"application/xml",
               b"text/xml; charset=utf-16", b"application/x-www-form-urlencoded",
               b"application/vnd.api+json", b"text/plain", b"multipart/form-data; boundary=x",
               b"application/json; charset=\xff\xfe", b"", b"*/*", b"application/"]
# Header values: any byte but controls (aiohttp's parser refuses those: some are below).
_CONTROLS = bytes(range(32)) + b"\x7f"
HEADER_BYTES = st.binary(max_size=64).map(lambda b: b.translate(None, _CONTROLS).strip())
HEADER_VALUES = st.one_of(
    HEADER_BYTES,
    st.text(max_size=40).map(lambda t: t.encode("utf-8").translate(None, _CONTROLS).strip()),
    st.sampled_from([b"Bearer x", b"Basic !!!", b"Basic aW52ZW50b3J5Og==", b"sha256=00",
                     b"t=1,v1=00", b"v1,AAAA", b"hmac-sha256-hex=zz", b"1e400", b"-1",
                     b"9" * 400, b"\xff\xfe", b"\xc3\x28", b"100-continue", b"orders/create",
                     b"1.2.3.4", b"2001:db8::1", b"[2001:db8::1]:80, 10.0.0.1", b"garbage, ,",
                     b"Bearer " + b"e" * 300, b"a\x01b", b"\x7f", b"tab\tin"]),
)
HUGE_VALUES = st.sampled_from([4000, 8100, 8200, 65536]).map(lambda n: b"x" * n)  # limit 8190


def _json_values() -> st.SearchStrategy[Any]:
    scalars = st.one_of(st.none(), st.booleans(), st.integers(), st.integers(-10**30, 10**30),
                        st.floats(allow_nan=False, allow_infinity=False), st.text(max_size=20))
    return st.recursive(scalars, lambda inner: st.lists(inner, max_size=4)
                        | st.dictionaries(st.text(max_size=10), inner, max_size=5), max_leaves=25)


JSON_VALUES = _json_values()
SPECIAL_NUMBERS = [b"1e400", b"-1e400", b"1" + b"0" * 400, b"-" + b"9" * 5000, b"1E-400",
                   b"0.0000000000000000000000000000000001", b"-0", b"18446744073709551616",
                   b"9007199254740993", b"NaN", b"Infinity", b"1.5e308"]


@st.composite
def json_bodies(draw: st.DrawFn) -> bytes:
    """JSON-ish bodies: valid documents, huge numbers spliced in, deep nesting, broken
    UTF-8, truncation."""
    kind = draw(st.sampled_from(["value", "number", "deep", "bad_utf8", "truncated",
                                 "escapes", "huge"]))
    if kind == "value":
        return json.dumps(draw(JSON_VALUES), ensure_ascii=draw(st.booleans())).encode()
    if kind == "number":
        number = draw(st.sampled_from(SPECIAL_NUMBERS))
        return draw(st.sampled_from([number, b'{"id":' + number + b'}',
                                     b'{"quantity":' + number + b',"exp":' + number + b'}',
                                     b"[" + number + b"]"]))
    if kind == "deep":
        depth = draw(st.sampled_from([31, 32, 33, 200, 1023, 1025, 5000]))
        opener = draw(st.sampled_from([b"[", b'{"a":']))
        closer = b"]" if opener == b"[" else b"}"
        return opener * depth + b"1" + closer * depth
    if kind == "bad_utf8":
        junk = draw(st.sampled_from([b"\xff", b"\xc3\x28", b"\xed\xa0\x80", b"\xf8\x88\x80\x80",
                                     b"\xc0\xaf"]))
        return b'{"note":"' + junk + b'","id":1}'
    if kind == "truncated":
        text = json.dumps(draw(JSON_VALUES)).encode()
        return text[: draw(st.integers(0, max(0, len(text) - 1)))]
    if kind == "escapes":
        return draw(st.sampled_from([b'{"a":"\\ud800"}', b'{"a":"\\u0000"}', b'"\\x"',
                                     b'{"a":1,"a":2}', b"\xef\xbb\xbf{}", b"{}" + b" " * 100]))
    return b'{"line_items":[' + b",".join([b'{"sku":"x","quantity":1}'] * 30000) + b"]}"


BODIES = st.one_of(
    json_bodies(),
    st.binary(max_size=300),
    st.sampled_from([
        b"", b"webhook_id=15", b"webhook_id=15&x=\xff", b"<a><b>1</b></a>",
        b'<?xml version="1.0"?><!DOCTYPE a [<!ENTITY x "y">]><a>&x;</a>', b"<a>" * 100,
        b"<order><id>1</id><line_items><sku>x</sku></line_items></order>",
    ]),
    st.integers(1_048_000, 1_049_600).map(lambda n: b"[" + b"0," * ((n - 3) // 2) + b"0]"),
)
ENCODINGS = st.sampled_from(["", "", "", "", "", "", "gzip", "gzip", "deflate", "deflate",
                             "not-gzip", "truncated-gzip", "br", "zstd", "identity", "x-bogus",
                             "gzip, deflate"])


def _paths() -> list[bytes]:
    return [s.path.encode() for s in FUZZ_SOURCES.values()]


@st.composite
def raw_cases(draw: st.DrawFn) -> Case:
    """Anything a client could send."""
    # Mostly a POST to a source, so that most cases get past the router.
    method = b"POST" if draw(st.integers(0, 3)) else draw(st.sampled_from(
        [b"GET", b"PUT", b"DELETE", b"PATCH", b"HEAD", b"OPTIONS", b"TRACE", b"FOO"]))
    where = draw(st.integers(0, 7))
    path = draw(st.sampled_from(_paths()) if where < 6 else st.sampled_from(
        [b"/healthz", b"/readyz", b"/metrics", b"/", b"/webhooks/", b"/webhooks/shopify/",
         b"/WEBHOOKS/SHOPIFY", b"/webhooks/../healthz", b"/webhooks/shopify?x=1&y=%ff",
         b"/webhooks/%73hopify", b"//webhooks//shopify"]) if where == 6
        else TOKEN.map(lambda t: b"/webhooks/" + t))
    headers: Headers = []
    if draw(st.integers(0, 9)) > 0:
        headers.append((b"Content-Type", draw(st.sampled_from(MEDIA_TYPES))))
    for _ in range(draw(st.integers(0, 6))):
        name = draw(st.one_of(st.sampled_from(HEADER_NAMES), TOKEN))
        rare = draw(st.integers(0, 19))
        headers.append((name, draw(HUGE_VALUES if rare == 0 else HEADER_VALUES)))
        if rare == 1:  # the same header twice
            headers.append((name, draw(HEADER_VALUES)))
    return Case(method, path, headers, draw(BODIES), draw(ENCODINGS), draw(st.booleans()))


def _mutate(value: Any, draw: st.DrawFn, depth: int = 0) -> Any:
    """A sample payload with some of its values replaced, dropped or added."""
    if isinstance(value, dict) and depth < 3:
        out = {}
        for key, item in value.items():
            choice = draw(st.integers(0, 9))
            if choice == 0:
                continue  # dropped
            out[key] = draw(JSON_VALUES) if choice == 1 else _mutate(item, draw, depth + 1)
        if draw(st.integers(0, 4)) == 0:
            out[draw(st.text(max_size=8))] = draw(JSON_VALUES)
        return out
    if isinstance(value, list) and depth < 3:
        return [_mutate(item, draw, depth + 1) for item in value]
    return value


SAMPLE_FILES = sorted(SAMPLES.glob("*.json"))


@st.composite
def signed_cases(draw: st.DrawFn) -> tuple[str, Case]:
    """A delivery signed with the test's secrets over random or mutated JSON, with random
    topic, delivery id and time headers."""
    name = draw(st.sampled_from(sorted(FUZZ_SOURCES)))
    source = FUZZ_SOURCES[name]
    kind = draw(st.sampled_from(["mutated", "mutated", "random", "number"]))
    if kind == "random":
        body = draw(json_bodies())
    else:
        sample = json.loads(draw(st.sampled_from(SAMPLE_FILES)).read_bytes())
        if kind == "number":
            sample[draw(st.sampled_from(sorted(sample)))] = int("1" + "0" * 400)
        body = json.dumps(_mutate(sample, draw)).encode()
    topics = list(source.events) or ["x"]
    topic = draw(st.one_of(st.sampled_from(topics), st.text(max_size=30)))
    headers = signed_headers(LIVE_SETTINGS[0], name, body, topic or None,
                             delivery_id=draw(st.one_of(st.none(), TOKEN.map(bytes.decode))))
    if name == "jwt":
        headers["Authorization"] = "Bearer " + draw(jwt_tokens())
    wire: Headers = [(k.encode(), v.encode("utf-8", "surrogateescape")) for k, v in headers.items()]
    mutable = [n for n in (source.topic_header, source.occurred_at_header, *source.id_headers)
               if n and n.lower() not in {"webhook-id", "svix-id"}]  # those are signed
    for header in mutable:
        if draw(st.integers(0, 3)) == 0:
            wire = [(k, v) for k, v in wire if k.decode().lower() != header.lower()]
            if draw(st.booleans()):
                wire.append((header.encode(), draw(HEADER_VALUES)))
    xff = draw(st.ip_addresses().map(str).map(str.encode))
    wire.append((b"X-Forwarded-For", xff))
    encoding = draw(st.sampled_from(["", "", "gzip", "deflate"]))
    return name, Case(b"POST", source.path.encode(), wire, body, encoding, draw(st.booleans()))


@st.composite
def jwt_tokens(draw: st.DrawFn) -> str:
    """HS256 tokens with the test secret and random claims, some of them absurd."""
    now = int(time.time())
    claims: dict[str, Any] = {"aud": draw(st.sampled_from(["webhook-router", "other"]))}
    for claim in ("exp", "nbf", "iat"):
        if draw(st.integers(0, 2)):
            claims[claim] = draw(st.one_of(
                # An offset from now: the drawn range must not move with the clock (hypothesis
                # replays a case and refuses a strategy whose bounds changed in between).
                st.integers(-1000, 1000).map(lambda offset: now + offset),
                st.floats(allow_nan=False),
                st.sampled_from([True, "soon", None, [], 1e308, -(10**30), 10**400])))
    if "exp" not in claims and draw(st.booleans()):
        claims["exp"] = now + 300
    return jwt.encode(claims, JWT_SECRET, algorithm="HS256")


# --- the properties -------------------------------------------------------------------


def _inline(node: Any) -> Any:
    """A schema from the document with its `$ref`s replaced by what they point at."""
    if isinstance(node, dict):
        if "$ref" in node:
            target: Any = DOCUMENT
            for part in node["$ref"].removeprefix("#/").split("/"):
                target = target[part]
            return _inline(target)
        return {k: _inline(v) for k, v in node.items()}
    if isinstance(node, list):
        return [_inline(v) for v in node]
    return node


_VALIDATORS: dict[tuple[str, str, int], Any] = {}


def documented(path: str, method: str, status: int) -> Any:
    """The validator of the documented answer's JSON body; None if the path and method are
    not documented; AssertionError if they are but this status is not."""
    operation = DOCUMENT["paths"].get(path, {}).get(method.lower())
    if operation is None:
        return None
    key = (path, method, status)
    if key not in _VALIDATORS:
        response = operation["responses"].get(str(status))
        assert response is not None, f"{method} {path} answered {status}, not documented"
        content = _inline(response).get("content", {})
        schema = content.get("application/json", {}).get("schema")
        _VALIDATORS[key] = jsonschema_rs.validator_for(schema) if schema else False
    return _VALIDATORS[key]


@dataclasses.dataclass
class Tally:
    """What a run saw, printed at its end (the README quotes it)."""

    name: str
    cases: int = 0
    statuses: collections.Counter[int] = dataclasses.field(default_factory=collections.Counter)
    reasons: collections.Counter[str] = dataclasses.field(default_factory=collections.Counter)
    protocol_400: int = 0
    server_errors: list[str] = dataclasses.field(default_factory=list)
    accepted: dict[str, tuple[str, Case, float]] = dataclasses.field(default_factory=dict)
    started: float = dataclasses.field(default_factory=time.monotonic)

    def report(self, messages: int) -> str:
        statuses = " ".join(f"{s}:{n}" for s, n in sorted(self.statuses.items()))
        reasons = ", ".join(f"{r} {n}" for r, n in self.reasons.most_common(12))
        return (f"fuzz {self.name}: {self.cases} cases in {time.monotonic() - self.started:.0f}"
                f" s; statuses {statuses}; of the 400s {self.protocol_400} from the HTTP "
                f"parser (plain text); 5xx other than 503: {len(self.server_errors)}; "
                f"messages queued {messages} (all verified)\n  most seen: {reasons}")


def check_answer(case: Case, answer: Answer, tally: Tally, source: str | None,
                 sent_at: float) -> None:
    """The properties every answer must have; `sent_at`: when the request went out."""
    tally.cases += 1
    tally.statuses[answer.status] += 1
    path = case.path.decode("latin-1").partition("?")[0]
    described = f"{case.method!r} {case.path!r} -> {answer.status} {answer.body[:200]!r}"
    if answer.status >= 500 and answer.status != 503:
        tally.server_errors.append(described)
        raise AssertionError(f"server error: {described}")
    from_app = "X-Request-Id" in answer.headers
    if not from_app:
        # aiohttp's own parser refused what is not HTTP it can read (a bad request line,
        # header bytes, a header over 8190 bytes, a duplicate Content-Type): before routing.
        assert 400 == answer.status, described
        tally.protocol_400 += 1
        tally.reasons["parser: " + answer.body.decode("latin-1").split(":")[0][:32]] += 1
        return
    if answer.status >= 400 and case.method != b"HEAD":
        body = answer.json()
        assert isinstance(body.get("error"), str) and isinstance(body.get("message"), str), \
            described
        tally.reasons[f"{answer.status} {body['error']}"] += 1
    validator = documented(path, case.method.decode("latin-1"), answer.status)
    if validator and case.method != b"HEAD":
        errors = [e.message for e in validator.iter_errors(answer.json())]
        assert [] == errors, described
    if answer.status == 202:
        assert source is not None, f"accepted without a source: {described}"
        tally.accepted[answer.headers["X-Request-Id"]] = (source, case, sent_at)


async def drain(topology: Topology, settings: Settings) -> list[aio_pika.IncomingMessage]:
    """Every message on every queue of this test's topology, held queues included, but the
    audit consumer's (a copy of every event; tests/integration/test_audit.py checks it)."""
    audit = topology.queue("audit")
    names = [*(name for name in topology.names() if not name.startswith(audit)),
             *(spec.name for spec in hold_queues(settings))]
    messages = []
    async with await aio_pika.connect(settings.broker.url) as connection:
        channel = await connection.channel()
        for name in names:
            queue = await channel.declare_queue(name, passive=True)
            while (message := await queue.get(fail=False, no_ack=True)) is not None:
                messages.append(message)
    return messages


def check_queues(live: LiveIngress, topology: Topology, tally: Tally) -> int:
    """Every queued message is one the ingress accepted (202) for a request that verifies
    under the test's secrets; every 202 left exactly one message."""
    messages = live.run(drain(topology, live.settings))
    verifiers = {name: build_verifier(s.scheme, s.secrets, s.options, file="test", key=name)
                 for name, s in live.settings.sources.items()}
    for message in messages:
        entry = tally.accepted.get(message.correlation_id or "")
        assert entry is not None, f"a message no 202 answered for: {message.message_id!r}"
        source, case, sent_at = entry
        verifiers[source].verify(case.body, case.cimultidict(), sent_at)  # raises if forged
        if message.headers.get("x-held-reason"):
            assert case.body == message.body  # held byte for byte
    assert len(tally.accepted) == len(messages)
    return len(messages)


# --- the runs -------------------------------------------------------------------------

LIVE_SETTINGS: list[Settings] = []


@pytest.fixture
def live(settings: Settings, topology: Topology):
    """The fuzzed ingress, live on a loopback port, on this test's topology."""
    fuzzed = fuzz_settings(settings)
    FUZZ_SOURCES.clear()
    FUZZ_SOURCES.update(fuzzed.sources)
    LIVE_SETTINGS[:] = [fuzzed]
    ingress = LiveIngress(fuzzed)
    ingress.start()
    try:
        yield ingress
    finally:
        # The topology fixture deletes the shipped sources' hold queues; these are the
        # extra sources'.
        extra = [spec.name for spec in hold_queues(fuzzed)
                 if spec.name.rpartition(".")[2] not in settings.sources]
        ingress.run(delete_queues(fuzzed, extra))
        ingress.stop()


async def delete_queues(settings: Settings, names: list[str]) -> None:
    async with await aio_pika.connect(settings.broker.url) as connection:
        channel = await connection.channel()
        for name in names:
            queue = await channel.get_queue(name, ensure=False)
            await queue.delete(if_unused=False, if_empty=False)


BUDGET = dict(derandomize=True, database=None, deadline=None, print_blob=True,
              suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                     HealthCheck.filter_too_much, HealthCheck.large_base_example])


def _source_of(path: bytes) -> str | None:
    bare = path.partition(b"?")[0].decode("latin-1")
    return next((name for name, s in FUZZ_SOURCES.items() if s.path == bare), None)


def _report(capsys: pytest.CaptureFixture[str], text: str) -> None:
    with capsys.disabled():
        print("\n" + text)


def test_raw_requests(live: LiveIngress, topology: Topology, capsys):
    """Whatever bytes a client sends: no 5xx but 503, a JSON reason on every 4xx the
    application gives, answers as documented, and nothing reaches a queue unverified."""
    tally = Tally("raw")

    @budget(max_examples=RAW_EXAMPLES, **BUDGET)
    @given(raw_cases())
    def fuzz(case: Case) -> None:
        sent_at = time.time()
        answer = exchange(live.port, case.raw())
        check_answer(case, answer, tally, _source_of(case.path), sent_at)

    try:
        fuzz()
    finally:
        messages = check_queues(live, topology, tally)
        _report(capsys, tally.report(messages))
    assert [] == tally.server_errors


def test_signed_deliveries(live: LiveIngress, topology: Topology, capsys):
    """Authentic deliveries of random or mutated JSON, with random topic, id and time
    headers: accepted, held or refused with a reason, never a 5xx but 503; each accepted one
    is on a queue exactly once."""
    tally = Tally("signed")

    @budget(max_examples=SIGNED_EXAMPLES, **BUDGET)
    @given(signed_cases())
    def fuzz(signed: tuple[str, Case]) -> None:
        name, case = signed
        sent_at = time.time()
        check_answer(case, exchange(live.port, case.raw()), tally, name, sent_at)

    try:
        fuzz()
    finally:
        messages = check_queues(live, topology, tally)
        _report(capsys, tally.report(messages))
    assert [] == tally.server_errors
    assert tally.statuses[202] > 0  # the signatures are right: some were accepted or held


# --- what the fuzzer found ------------------------------------------------------------

SHOPIFY_ORDER = (SAMPLES / "shopify-orders-create.json").read_bytes()


def _shopify(settings: Settings, body: bytes = SHOPIFY_ORDER, **extra: bytes) -> Headers:
    headers = [(k.encode(), v.encode()) for k, v in
               signed_headers(settings, "shopify", body, "orders/create").items()]
    return headers + [(k.replace("_", "-").encode(), v) for k, v in extra.items()]


def _jwt_case(settings: Settings) -> Case:
    body = (SAMPLES / "portal-order-created.json").read_bytes()
    token = jwt.encode({"aud": "webhook-router", "exp": 10**400}, JWT_SECRET, algorithm="HS256")
    return Case(b"POST", b"/webhooks/jwt", [(b"Content-Type", b"application/json"),
                                            (b"Authorization", b"Bearer " + token.encode())],
                body)


FOUND = [
    # (case, request(settings), status, reason)
    ("gzip body that does not decode",
     lambda s: Case(b"POST", b"/webhooks/shopify", _shopify(s), SHOPIFY_ORDER, "not-gzip"),
     400, "invalid_encoding"),
    ("deflate body that does not decode",
     lambda s: Case(b"POST", b"/webhooks/shopify",
                    _shopify(s, b"xx") + [(b"Content-Encoding", b"deflate")], b"xx"),
     400, "invalid_encoding"),
    ("Expect header not UTF-8", lambda s: Case(
        b"POST", b"/webhooks/shopify",
        [(b"Content-Type", b"application/json"), (b"Expect", b"\xff")], b"{}"),
     401, "missing_signature"),
    ("unknown expectation", lambda s: Case(
        b"POST", b"/webhooks/shopify", _shopify(s, Expect=b"x-unknown"), SHOPIFY_ORDER),
     202, None),
    ("Expect header on an unknown path", lambda s: Case(
        b"POST", b"/nowhere", [(b"Expect", b"\xff")], b"{}"), 404, "unknown_source"),
    ("Expect header with a method not allowed", lambda s: Case(
        b"PUT", b"/webhooks/shopify", [(b"Expect", b"\xff")], b"{}"), 405,
     "method_not_allowed"),
    ("non-UTF-8 delivery-id header", lambda s: Case(
        b"POST", b"/webhooks/shopify",
        [h for h in _shopify(s) if h[0] != b"X-Shopify-Event-Id"]
        + [(b"X-Shopify-Event-Id", b"\xff\xfe")], SHOPIFY_ORDER),
     400, "invalid_event_id"),
    ("JWT exp = 10**400", _jwt_case, 401, "invalid_token"),
]


@pytest.mark.parametrize(("make", "status", "reason"), [row[1:] for row in FOUND],
                         ids=[row[0] for row in FOUND])
def test_found_by_the_fuzzer(live: LiveIngress, topology: Topology, make, status, reason):
    """Each input the fuzzer once answered with a 500, or without a JSON reason, now gets its
    status and reason; nothing is queued but what is accepted."""
    case = make(live.settings)
    tally = Tally("found")
    sent_at = time.time()
    answer = exchange(live.port, case.raw())
    check_answer(case, answer, tally, _source_of(case.path), sent_at)
    assert status == answer.status, answer.body
    if reason is not None:
        assert reason == answer.json()["error"]
    assert (1 if status == 202 else 0) == check_queues(live, topology, tally)
