"""The Sources page: per configured source, a mapping preview (everyone: a pasted payload
parsed and mapped in-process, as the ingress would, nothing signed or published) and Send
test payload (operators: the payload signed as the provider would and posted to the live
ingress, its answer shown, the send recorded in operator_actions)."""

from __future__ import annotations

import time
import uuid
from typing import Any

import aiohttp
import orjson
from aiohttp import web

from router.console import actions
from router.console.errors import UnknownSource
from router.console.pages import render
from router.console.state import HTTP, MASK, SETTINGS, SOURCES, user_of
from router.envelope import build_event, parse_delivery
from router.errors import InvalidPayload, MalformedPayload
from router.providers import signed_headers
from router.schemas import SchemaRegistry
from router.sources import Source

SEND_TIMEOUT = 10.0


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


async def send(request: web.Request) -> web.StreamResponse:
    user = user_of(request)
    source, topic, payload = await _form(request)
    settings = request.app[SETTINGS]
    body = payload.encode()
    delivery_id = str(uuid.uuid4())
    headers = signed_headers(settings, source.name, body, topic or None, delivery_id)
    url = _console_ingress(request) + source.settings.path
    async with actions.action_log(settings.consumers.store) as store:
        try:
            async with request.app[HTTP].post(
                    url, data=body, headers=headers,
                    timeout=aiohttp.ClientTimeout(total=SEND_TIMEOUT)) as answer:
                status, text = answer.status, await answer.text()
        except (aiohttp.ClientError, TimeoutError) as exc:
            problem = f"cannot reach the ingress at {url}: {exc or type(exc).__name__}"
            await actions.record(store, user, "send-test", source.name, [delivery_id],
                                 f"failed: {problem}")
            result: dict[str, Any] = {"kind": "send", "status": None, "problem": problem}
            return _page(request, result, source.name)
        await actions.record(store, user, "send-test", source.name, [delivery_id],
                             f"answered {status}")
    try:
        answer_body: Any = orjson.loads(text)
    except orjson.JSONDecodeError:
        answer_body = text
    result = {"kind": "send", "status": status, "url": url, "delivery_id": delivery_id,
              "body": request.app[MASK].mask(answer_body)}
    return _page(request, result, source.name)


def _console_ingress(request: web.Request) -> str:
    console = request.app[SETTINGS].console
    assert console is not None
    return console.ingress_url
