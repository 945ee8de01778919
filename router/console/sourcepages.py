"""The Sources page: per configured source, a mapping preview (everyone: a pasted payload
parsed and mapped in-process, as the ingress would, nothing signed or published) and Send
test payload (operators: the payload signed as the provider would, marked as a console test,
and posted to the live ingress, its answer shown, the send recorded in operator_actions)."""

from __future__ import annotations

import hashlib
import time
import uuid
from typing import Any

import aiohttp
import orjson
from aiohttp import web

from router.console import actions
from router.console.errors import BadTopic, UnknownSource, UnknownTopic
from router.console.pages import render
from router.console.state import HTTP, MASK, SETTINGS, SOURCES, user_of
from router.envelope import build_event, parse_delivery
from router.errors import InvalidPayload, MalformedPayload
from router.providers import signed_headers
from router.schemas import SchemaRegistry
from router.sources import Source
from router.testmark import mark_headers

SEND_TIMEOUT = 10.0
MAX_TOPIC_KEPT = 200  # characters of a (refused) topic kept in operator_actions
MAX_TOPIC_SHOWN = 60  # and in the refusal's message


def _forms(request: web.Request) -> list[dict[str, Any]]:
    """One form per source: its topics (where a topic header carries them) and its sample."""
    forms = []
    for name, s in request.app[SETTINGS].sources.items():
        sample = s.sample.read_text(errors="replace") if s.sample is not None else ""
        forms.append({"name": name, "path": s.path, "scheme": s.scheme,
                      "topics": list(s.events) if s.topic_header else [],
                      "payload": sample})
    return forms


def _page(request: web.Request, result: dict[str, Any] | None = None,
          chosen: str = "") -> web.Response:
    """The forms, or (after a submit) the result alone: a pasted payload may hold personal
    data, so an answer never repeats it (the browser's Back keeps the form as it was)."""
    return render(request, "sources.html", {"forms": [] if result else _forms(request),
                                            "result": result, "chosen": chosen})


async def sources_page(request: web.Request) -> web.StreamResponse:
    return _page(request)


async def _form(request: web.Request) -> tuple[Source, str, str]:
    form = await request.post()
    name = str(form.get("source", ""))
    source = request.app[SOURCES][1].get(name)
    if source is None:
        raise UnknownSource(f"no source {name!r}; one of "
                            f"{', '.join(request.app[SOURCES][1])}")
    return source, str(form.get("topic", "")), str(form.get("payload", ""))


def preview_of(source: Source, registry: SchemaRegistry, body: bytes, topic: str,
               max_depth: int) -> dict[str, Any]:
    """What the ingress would make of `body` (already verified) for `source` and `topic`:
    {"status": 202, "event": envelope} or {"status": 400|422, "reason", "message",
    "errors"}. Pure: nothing published."""
    s = source.settings
    headers = {s.topic_header: topic} if s.topic_header and topic else {}
    media_type = s.content_types[0] if s.content_types else "application/json"
    try:
        delivery = parse_delivery(source, body, headers, media_type, time.time(),
                                  max_depth=max_depth)
        event = build_event(source, registry, delivery)
    except (MalformedPayload, InvalidPayload) as exc:
        return {"status": exc.status, "reason": exc.reason, "message": exc.message,
                "errors": exc.errors or []}
    return {"status": 202, "event": orjson.loads(event.body)}


async def preview(request: web.Request) -> web.StreamResponse:
    source, topic, payload = await _form(request)
    registry = request.app[SOURCES][0]
    result = preview_of(source, registry, payload.encode(), topic,
                        request.app[SETTINGS].server.max_depth)
    return _page(request, {"kind": "preview", **request.app[MASK].mask(result)}, source.name)


def _topic(source: Source, topic: str) -> str:
    """The topic to send: for a source that reads it from a header, one of its provider's
    topics ([sources.NAME.events]; none given: the first); for one that reads it from the
    body (or posts one kind of event), none. BadTopic for a control or invisible character
    (a header cannot carry CR/LF), UnknownTopic for a topic the source does not know."""
    if not topic.isprintable():
        raise BadTopic("the topic has a control or invisible character: nothing was sent")
    s = source.settings
    if not s.topic_header:
        if topic:
            raise UnknownTopic(f"{source.name} takes its topic from the body, not a header: "
                               "send no topic (nothing was sent)")
        return topic
    known = list(s.events)
    if not topic and known:
        return known[0]
    if topic not in known:
        raise UnknownTopic(f"{source.name} knows no topic {topic[:MAX_TOPIC_SHOWN]!r}; one of "
                           f"{', '.join(known)} (nothing was sent)")
    return topic


async def send(request: web.Request) -> web.StreamResponse:
    """Sign the payload as the source's provider would, marked as this operator's test
    (router.testmark), and post it to the live ingress; recorded in operator_actions with
    its topic and body digest, a refused topic too."""
    user = user_of(request)
    source, topic, payload = await _form(request)
    settings = request.app[SETTINGS]
    body = payload.encode()
    detail = {"topic": topic[:MAX_TOPIC_KEPT], "body_sha256": hashlib.sha256(body).hexdigest()}
    async with actions.action_log(settings.consumers.store) as store:
        try:
            topic = detail["topic"] = _topic(source, topic)
        except (BadTopic, UnknownTopic) as exc:
            await actions.record(store, user, "send-test", source.name, [],
                                 f"refused: {exc.reason}", detail)
            raise
        delivery_id = str(uuid.uuid4())
        headers = {**signed_headers(settings, source.name, body, topic or None, delivery_id),
                   **mark_headers(source.settings.secrets, user.name, body)}
        url = _console_ingress(request) + source.settings.path
        try:
            async with request.app[HTTP].post(
                    url, data=body, headers=headers,
                    timeout=aiohttp.ClientTimeout(total=SEND_TIMEOUT)) as answer:
                status, text = answer.status, await answer.text()
        except (aiohttp.ClientError, TimeoutError) as exc:
            problem = f"cannot reach the ingress at {url}: {exc or type(exc).__name__}"
            await actions.record(store, user, "send-test", source.name, [delivery_id],
                                 f"failed: {problem}", detail)
            result: dict[str, Any] = {"kind": "send", "status": None, "problem": problem}
            return _page(request, result, source.name)
        await actions.record(store, user, "send-test", source.name, [delivery_id],
                             f"answered {status}", detail)
    try:
        answer_body: Any = orjson.loads(text)
    except orjson.JSONDecodeError:
        answer_body = text
    result = {"kind": "send", "status": status, "url": url, "delivery_id": delivery_id,
              "marked": user.name, "body": request.app[MASK].mask(answer_body)}
    return _page(request, result, source.name)


def _console_ingress(request: web.Request) -> str:
    console = request.app[SETTINGS].console
    assert console is not None
    return console.ingress_url
