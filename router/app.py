"""The aiohttp application: built from settings, wiring only."""

from __future__ import annotations

import asyncio
import itertools
import secrets
import time
from collections.abc import AsyncIterator, Awaitable, Callable

import orjson
import structlog
from aiohttp import hdrs, web
from aiohttp.http_exceptions import ContentEncodingError
from aiohttp.typedefs import Middleware

from router.broker.publisher import Publisher
from router.envelope import log_delivery_id
from router.errors import Forbidden, IngressError
from router.hold import hold_queues, holding_sources
from router.ingress import REQUEST_INFO, Ingress, RequestInfo
from router.metrics import (
    count_rejection,
    count_request,
    export_queue_limits,
    multiprocess_dir,
    render,
)
from router.network import ClientAddress, IpAllowlist
from router.rejections import Rejections, read_query
from router.schemas import SchemaRegistry
from router.settings import ServerSettings, Settings
from router.sources import Source, build_sources

INGRESS = web.AppKey("ingress", Ingress)
PUBLISHER = web.AppKey("publisher", Publisher)
REJECTIONS = web.AppKey("rejections", Rejections)
OPERATOR_PATHS = ("/metrics", "/rejections")  # served where `metrics_port` says, to `metrics_allow`
access_log = structlog.get_logger("router.access")
log = structlog.get_logger("router.app")

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def _error_response(
    status: int, body: dict[str, object], retry_after: int | None = None
) -> web.Response:
    headers = {"Retry-After": str(retry_after)} if retry_after is not None else None
    return web.Response(
        body=orjson.dumps(body), status=status, content_type="application/json", headers=headers
    )


_HTTP_REASONS = {404: "unknown_source", 405: "method_not_allowed", 413: "payload_too_large"}


# Request ids: random per process, then a counter (cheaper than a uuid4 per request).
_REQUEST_PREFIX = secrets.token_hex(6)
_request_numbers = itertools.count(1)


@web.middleware
async def errors_and_access_log(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Map every refusal to a status and a JSON reason, and log one line per request."""
    started = time.perf_counter()
    request_id = f"{_REQUEST_PREFIX}{next(_request_numbers):010x}"
    info = RequestInfo(request_id)
    request[REQUEST_INFO] = info
    reason: str | None = None
    close = False
    try:
        response = await handler(request)
    except IngressError as exc:
        response = _error_response(exc.status, exc.body(), exc.retry_after)
        reason, close = exc.reason, exc.closes_connection
    except web.RequestPayloadError as exc:
        # Reading the body failed: a Content-Encoding that does not decode, chunks that do
        # not frame. The client's fault, like any body we cannot read.
        encoding = isinstance(exc.__cause__, ContentEncodingError)
        reason = "invalid_encoding" if encoding else "bad_request"
        response = _error_response(400, {
            "error": reason,
            "message": "the body does not decode as its Content-Encoding says" if encoding
            else "the body is not framed as its headers say",
        })
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        reason = _HTTP_REASONS.get(exc.status, "bad_request")
        message = "no webhook source at this path" if exc.status == 404 else exc.reason
        response = _error_response(exc.status, {"error": reason, "message": message})
        if "Allow" in exc.headers:
            response.headers["Allow"] = exc.headers["Allow"]
    except asyncio.CancelledError:
        raise
    except Exception:
        # A bug of ours, never the client's fault; the provider should retry later.
        log.exception("unhandled_error", request_id=request_id)
        reason = "internal_error"
        response = _error_response(500, {"error": reason, "message": "internal error"})
    response.headers["X-Request-Id"] = request_id
    count_request(info.source, response.status)
    if info.event_id is None and info.id_source is not None:
        # Refused before its delivery was parsed: the id its headers name, as they name it.
        info.event_id = log_delivery_id(info.id_source, request.headers)
    if reason is not None:  # refused (/readyz's 503 is an answer, not a refusal)
        count_rejection(info.source, response.status, reason)
        request.app[REJECTIONS].record(info.source, response.status, reason, info.event_id,
                                       info.client or request.remote)
    access_log.info(
        "request",
        request_id=request_id,
        method=request.method,
        path=request.path,
        source=info.source,
        event_id=info.event_id,
        type=info.type,
        status=response.status,
        reason=reason,
        latency_ms=round((time.perf_counter() - started) * 1000, 3),
    )
    if close:
        await _answer_and_close(request, response)
    return response


async def _answer_and_close(request: web.Request, response: web.StreamResponse) -> None:
    """Send `response`, then close the connection at once: aiohttp would otherwise go on
    reading what is left of the body (up to its lingering time) from a client too slow to
    be worth it."""
    response.force_close()
    await response.prepare(request)
    await response.write_eof()
    request.protocol.force_close()


def _webhook_handler(ingress: Ingress, source: Source) -> Handler:
    async def webhook(request: web.Request) -> web.StreamResponse:
        return await ingress.handle(source, request)

    return webhook


async def expect_continue(request: web.Request) -> None:
    """`Expect: 100-continue` gets its interim answer; any other expectation is ignored (RFC
    9110 allows it). aiohttp's own handler answers those 417 in plain text, before our
    middleware, and a 500 when the value is not UTF-8."""
    expect = request.headers.get(hdrs.EXPECT, "")
    if request.version >= (1, 1) and expect.lower() == "100-continue":
        await request.writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")
        request.writer.output_size = 0  # the answer proper has not started


def _unrouted(allowed: dict[str, list[str]]) -> Handler:
    """The last route: 405 on a known path, else 404, through the middleware (so with a JSON
    reason) and with our Expect handling (aiohttp's own routes for these have neither)."""

    async def unrouted(request: web.Request) -> web.StreamResponse:
        methods = allowed.get(request.path)
        if methods:
            raise web.HTTPMethodNotAllowed(request.method, methods)
        raise web.HTTPNotFound()

    return unrouted


async def healthz(request: web.Request) -> web.Response:
    return _error_response(200, {"status": "ok"})


async def readyz(request: web.Request) -> web.Response:
    if request.app[PUBLISHER].ready:
        return _error_response(200, {"status": "ready"})
    return _error_response(503, {"status": "unavailable", "reason": "broker_unavailable"})


def _local_port(request: web.Request) -> int | None:
    sockname = request.transport.get_extra_info("sockname") if request.transport else None
    return sockname[1] if isinstance(sockname, tuple) else None


def _for_operators(server: ServerSettings, handler: Handler) -> Handler:
    """`handler` (/metrics, /rejections) only on `metrics_port` when one is set, only to
    `metrics_allow` (loopback unless configured)."""
    allowed = IpAllowlist(server.metrics_allow)
    clients = ClientAddress(server.trusted_proxies)

    async def operators_only(request: web.Request) -> web.StreamResponse:
        if server.metrics_port is not None and _local_port(request) != server.metrics_port:
            raise web.HTTPNotFound()
        forwarded = request.headers.getall("X-Forwarded-For", None)
        client = clients.resolve(request.remote, ",".join(forwarded) if forwarded else None)
        request[REQUEST_INFO].client = client
        if not allowed.allows(client):
            raise Forbidden(f"this address may not read {request.path}")
        return await handler(request)

    return operators_only


def _metrics_handler(settings: Settings, publisher: Publisher) -> Handler:
    bounded = [(queue, limit.max_length, limit.max_bytes)
               for queue, limit in publisher.topology.bounded(holding_sources(settings))]

    async def metrics(request: web.Request) -> web.Response:
        export_queue_limits(bounded, publisher.not_limited)
        body, content_type = render()
        return web.Response(body=body, headers={"Content-Type": content_type})

    return metrics


def _rejections_handler(sources: dict[str, Source]) -> Handler:
    async def rejections(request: web.Request) -> web.Response:
        source, limit = read_query(request.query, sources)
        answer = request.app[REJECTIONS].answer(source, limit)
        return web.Response(body=orjson.dumps(answer), content_type="application/json")

    return rejections


def _metrics_port_serves_operators_only(port: int) -> Middleware:
    @web.middleware
    async def operators_only(request: web.Request, handler: Handler) -> web.StreamResponse:
        if request.path not in OPERATOR_PATHS and _local_port(request) == port:
            raise web.HTTPNotFound()
        return await handler(request)

    return operators_only


async def _rejections_ctx(app: web.Application) -> AsyncIterator[None]:
    yield
    app[REJECTIONS].close()  # a worker's last refusals reach its file


def _broker_ctx(
    publisher: Publisher, wait: bool
) -> Callable[[web.Application], AsyncIterator[None]]:
    async def broker(app: web.Application) -> AsyncIterator[None]:
        if wait:  # the server starts listening only once the broker is reached
            try:
                await publisher.connect_until_ready()
            except asyncio.CancelledError:  # stopped while connecting
                await publisher.close()
                raise
        else:  # serve at once: until the broker is reached, /readyz and webhooks answer 503
            publisher.connect_in_background()
        yield
        await publisher.close()

    return broker


def create_app(
    settings: Settings, *, publisher: Publisher | None = None, wait_for_broker: bool = False
) -> web.Application:
    """Build the ingress for `settings` (ConfigError if a source cannot work).

    With `wait_for_broker`, starting the app waits until the broker is connected, so a
    server listens only once it can publish; otherwise it answers 503 until then."""
    registry = SchemaRegistry.load(settings.server.schemas)
    sources = build_sources(settings, registry)
    publisher = publisher or Publisher(settings.broker, extra_queues=hold_queues(settings))
    ingress = Ingress(settings.server, sources, registry, publisher)
    max_body = max((s.settings.max_body for s in sources.values()), default=1024 * 1024)
    middlewares: list[Middleware] = [errors_and_access_log]
    if settings.server.metrics_port is not None:
        middlewares.append(_metrics_port_serves_operators_only(settings.server.metrics_port))
    app = web.Application(
        middlewares=middlewares,
        client_max_size=max_body,
        # Bodies are decompressed by router.body, within each source's own max_body.
        handler_args={"auto_decompress": False},
    )
    app[INGRESS] = ingress
    app[PUBLISHER] = publisher
    app[REJECTIONS] = Rejections(settings.server.rejections_kept, multiprocess_dir())
    allowed: dict[str, list[str]] = {}
    for source in sources.values():
        app.router.add_post(source.settings.path, _webhook_handler(ingress, source),
                            expect_handler=expect_continue)
        allowed[source.settings.path] = ["POST"]
    for path, probe in (
        ("/healthz", healthz), ("/readyz", readyz),
        ("/metrics", _for_operators(settings.server, _metrics_handler(settings, publisher))),
        ("/rejections", _for_operators(settings.server, _rejections_handler(sources))),
    ):
        app.router.add_get(path, probe, expect_handler=expect_continue)
        allowed[path] = ["GET", "HEAD"]
    app.router.add_route("*", "/{path:.*}", _unrouted(allowed), expect_handler=expect_continue)
    app.cleanup_ctx.append(_broker_ctx(publisher, wait_for_broker))
    app.cleanup_ctx.append(_rejections_ctx)
    return app

