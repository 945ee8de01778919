"""The console's aiohttp app: wiring only (state, middlewares, routes); handlers in pages."""

from __future__ import annotations

import functools
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from urllib.parse import urlencode

import aiohttp
import jinja2
from aiohttp import web

from router.broker.counts import QueueCounter
from router.console import operator, pages, sourcepages, state, subscriptionpages
from router.console.auth import LoginThrottle, PasswordChecks, may_act
from router.console.errors import ConsoleError, CsrfRefused, Forbidden, NotLoggedIn
from router.console.logouts import Logouts
from router.console.session import COOKIE, CSRF_FIELD, CSRF_HEADER, SessionCodec
from router.console.shared import SharedStore
from router.logs import Redactor
from router.network import ClientAddress
from router.schemas import SchemaRegistry
from router.settings import Settings
from router.sources import build_sources

HERE = Path(__file__).parent
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
# Who may use each route, checked in one place (_with_role, applied as the routes are
# added): "anyone" (logging in), "viewer" (everyone logged in: reading, the mapping preview,
# logging out) or "operator" (every action, and the dead letters, which hold personal data).
ROLES = ("anyone", "viewer", "operator")
ROUTES: list[tuple[str, str, Handler, str]] = [
    ("GET", "/login", pages.login_page, "anyone"),
    ("POST", "/login", pages.login, "anyone"),
    ("POST", "/logout", pages.logout, "viewer"),
    ("GET", "/", pages.overview_page, "viewer"),
    ("GET", "/api/overview", pages.overview_json, "viewer"),
    ("GET", "/search", pages.search_page, "viewer"),
    ("GET", "/api/trace", pages.trace_json, "viewer"),
    ("GET", "/audit", operator.audit_page, "viewer"),
    ("GET", "/sources", sourcepages.sources_page, "viewer"),
    ("POST", "/sources/preview", sourcepages.preview, "viewer"),
    ("POST", "/sources/send", sourcepages.send, "operator"),
    ("GET", "/subscriptions", subscriptionpages.subscriptions_page, "viewer"),
    ("GET", "/subscriptions/one", subscriptionpages.subscription_page, "viewer"),
    ("POST", "/subscriptions/enable", subscriptionpages.enable, "operator"),
    ("POST", "/subscriptions/disable", subscriptionpages.disable, "operator"),
    ("POST", "/subscriptions/test", subscriptionpages.send_test, "operator"),
    ("POST", "/subscriptions/replay", subscriptionpages.replay, "operator"),
    ("GET", "/dead-letters", operator.dead_letters_page, "operator"),
    ("GET", "/dead-letters/message", operator.dead_letter_page, "operator"),
    ("POST", "/dead-letters/replay", operator.replay, "operator"),
    ("POST", "/dead-letters/replay-all", operator.replay_all, "operator"),
    ("POST", "/dead-letters/reveal", operator.reveal, "operator"),
    ("GET", "/dead-letters/purge", operator.purge_page, "operator"),
    ("POST", "/dead-letters/purge", operator.purge, "operator"),
]


# Every answer: never cached, never framed, no script or style from elsewhere (or inline),
# never sniffed into another type, no Referer to other sites.
SECURITY_HEADERS = {
    "Cache-Control": "no-store", "X-Content-Type-Options": "nosniff",
    "Content-Security-Policy":
        "default-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'",
    "Referrer-Policy": "same-origin"}


async def _security_headers(request: web.Request, response: web.StreamResponse) -> None:
    """On every answer as it goes out, whoever made it: pages, JSON, redirects raised,
    static files, and aiohttp's own 404, 405 and 500."""
    response.headers.update(SECURITY_HEADERS)


def _with_role(role: str, handler: Handler) -> Handler:
    """`handler` for the users of `role` only: Forbidden (403) to a viewer on an operator's
    route, before the handler reads anything or acts. (The session middleware has already
    sent everyone not logged in away from every route but /login.)"""
    if role not in ROLES:
        raise ValueError(f"unknown role {role!r} for {handler.__name__}; one of {ROLES}")
    if role != "operator":
        return handler

    @functools.wraps(handler)
    async def operators_only(request: web.Request) -> web.StreamResponse:
        user = request[state.USER]
        if user is None or not may_act(user.role):
            raise Forbidden(f"only an operator may do this ({request.method} {request.path})")
        return await handler(request)

    return operators_only


@web.middleware
async def _errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    """A ConsoleError becomes its answer: JSON for /api/ and fetches, else a page."""
    try:
        return await handler(request)
    except NotLoggedIn:
        if not state.wants_json(request) and request.method == "GET":
            raise web.HTTPSeeOther(f"/login?{urlencode({'next': str(request.rel_url)})}"
                                   ) from None
        return _refusal(request, NotLoggedIn("log in first"))
    except ConsoleError as exc:
        return _refusal(request, exc)


def _refusal(request: web.Request, exc: ConsoleError) -> web.Response:
    headers = {}
    if hasattr(exc, "retry_after"):
        headers["Retry-After"] = str(exc.retry_after)
    if state.wants_json(request):
        return web.json_response({"error": exc.reason, "message": exc.message},
                                 status=exc.status, headers=headers)
    return pages.render(request, "error.html", {"error": exc.reason, "message": exc.message},
                        status=exc.status, headers=headers)


@web.middleware
async def _session(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Reads the session cookie; pages other than login need a user still configured, with
    the password hash and token they logged in with; every POST needs this session's CSRF
    token (form field `csrf` or header X-CSRF-Token)."""
    codec = request.app[state.CODEC]
    session = codec.decode(request.cookies.get(COOKIE))
    if (session is not None and session.user and not request.path.startswith("/static/")
            and await request.app[state.LOGOUTS].ended(session, codec.clock())):
        session = None  # logged out: a copy of its cookie is no session
    request[state.SESSION] = session
    console = request.app[state.SETTINGS].console
    assert console is not None
    user = console.user(session.user) if session is not None and session.user else None
    if user is not None and session is not None and not codec.still_theirs(session, user):
        user = None  # the user's password hash or token has changed since: log in again
    request[state.USER] = user
    public = request.path == "/login" or request.path.startswith("/static/")
    if user is None and not public:
        raise NotLoggedIn("log in first")
    if request.method == "POST":
        token = request.headers.get(CSRF_HEADER)
        if token is None and request.content_type == "application/x-www-form-urlencoded":
            token = (await request.post()).get(CSRF_FIELD)  # type: ignore[assignment]
        if session is None or not codec.csrf_ok(session, token):
            raise CsrfRefused("the form's CSRF token is missing or not this session's: "
                              "reload the page and try again")
    return await handler(request)


async def _http_ctx(app: web.Application) -> AsyncIterator[None]:
    async with aiohttp.ClientSession() as http:
        app[state.HTTP] = http
        yield


async def _logouts_ctx(app: web.Application) -> AsyncIterator[None]:
    yield
    await app[state.LOGOUTS].close()


async def _reads_ctx(app: web.Application) -> AsyncIterator[None]:
    """The Overview's broker and store connections: opened when first read, closed here."""
    yield
    await app[state.COUNTER].close()
    await app[state.SHARED_STORE].close()


def create_console_app(settings: Settings) -> web.Application:
    """The console for `settings` (whose [console] secrets are resolved)."""
    console = settings.console
    if console is None:
        raise ValueError("the console is not configured ([console])")
    app = web.Application(middlewares=[_errors, _session])
    app.on_response_prepare.append(_security_headers)
    app[state.SETTINGS] = settings
    app[state.CODEC] = SessionCodec(console.session_secret, console.session_lifetime)
    app[state.THROTTLE] = LoginThrottle()
    app[state.PASSWORD_CHECKS] = PasswordChecks(console.password_checks)
    app[state.CLIENTS] = ClientAddress(console.trusted_proxies)
    app[state.MASK] = Redactor(settings.logging.pii_fields)
    registry = SchemaRegistry.load(settings.server.schemas)
    app[state.SOURCES] = (registry, build_sources(settings, registry))
    app[state.TEMPLATES] = jinja2.Environment(
        loader=jinja2.FileSystemLoader(HERE / "templates"), autoescape=True,
        undefined=jinja2.StrictUndefined)
    app[state.LOGOUTS] = Logouts(settings.consumers.store)
    app.cleanup_ctx.append(_http_ctx)
    app.cleanup_ctx.append(_logouts_ctx)
    app[state.COUNTER] = QueueCounter(settings.broker, f"{settings.broker.connection_name}-console")
    app[state.SHARED_STORE] = SharedStore(settings.consumers.store)
    app.cleanup_ctx.append(_reads_ctx)
    for method, path, handler, role in ROUTES:
        app.router.add_route(method, path, _with_role(role, handler))
    app.router.add_static("/static/", HERE / "static")
    return app
