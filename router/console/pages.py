"""The console's handlers: short, each reading the request, asking overview or trace, and
rendering a template (or the same data as JSON), masked."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlencode

import orjson
from aiohttp import web
from yarl import URL

from consumers.store import StoreError
from consumers.trace import placed_asides, trace
from router.console.auth import check_token, may_act
from router.console.errors import BadSearch, StoreUnavailable, TooManyAttempts
from router.console.overview import overview
from router.console.session import COOKIE
from router.console.settings import ConsoleSettings, ConsoleUser
from router.console.state import (
    CLIENTS,
    CODEC,
    COUNTER,
    HTTP,
    LOGOUTS,
    MASK,
    PASSWORD_CHECKS,
    SESSION,
    SETTINGS,
    SHARED_STORE,
    TEMPLATES,
    THROTTLE,
    USER,
)

MAX_ID = 200
TRACE_LIMIT = 50
# One leading "/" (not "//" or "/\\"), then printable ASCII but the backslash: no scheme, no
# host, no control or whitespace character.
_LOCAL_PATH = re.compile(r"/(?![/\\])[!-\[\]-~]*")


def _console(request: web.Request) -> ConsoleSettings:
    console = request.app[SETTINGS].console
    assert console is not None  # the app is only made with one
    return console


def render(request: web.Request, template: str, context: dict[str, Any], *,
           status: int = 200, headers: dict[str, str] | None = None) -> web.Response:
    """The page `template` with `context`, the user and this session's CSRF token."""
    session, user = request.get(SESSION), request.get(USER)
    page = request.app[TEMPLATES].get_template(template).render(
        **context, user=user, may_act=user is not None and may_act(user.role),
        csrf=request.app[CODEC].csrf_token(session) if session is not None else "")
    return web.Response(text=page, content_type="text/html", status=status, headers=headers)


def after_action(request: web.Request, path: str, params: dict[str, str],
                 note: str) -> web.HTTPSeeOther:
    """The redirect to `path` after an action, with `note` (what was done) to show there,
    signed for this session (see notice)."""
    session = request[SESSION]
    assert session is not None  # an action is only taken in a session
    token = request.app[CODEC].note_token(session, note)
    query = urlencode({**params, "done": note, "done_token": token})
    return web.HTTPSeeOther(f"{path}?{query}")


def notice(request: web.Request) -> str | None:
    """The `done` note of after_action's redirect; None where there is none or where it was
    not written by this console for this session (a crafted link shows nothing)."""
    note, session = request.query.get("done"), request.get(SESSION)
    if note is None or session is None:
        return None
    ok = request.app[CODEC].note_ok(session, note, request.query.get("done_token"))
    return note if ok else None


def _json(data: Any, status: int = 200) -> web.Response:
    return web.json_response(data, status=status, dumps=lambda o: orjson.dumps(o).decode())


def _new_session(request: web.Request, user: ConsoleUser | None = None) -> str:
    """A new session (new nonce, so a new CSRF token) for `user`, as its cookie value."""
    codec = request.app[CODEC]
    session = codec.new(user)
    request[SESSION] = session
    return codec.encode(session)


def _set_cookie(request: web.Request, response: web.StreamResponse, value: str) -> None:
    console = _console(request)
    response.set_cookie(COOKIE, value, httponly=True, samesite="Strict",
                        secure=not console.development, path="/",
                        max_age=int(console.session_lifetime))


def next_location(value: str | None) -> str:
    """Where to go after logging in: `value` as the Location header will carry it, if that is
    a path on this console, else "/".

    The check is on the URL as sent, not as given: yarl drops tab, CR and LF, so "/\t/x"
    goes out as "//x", another host. Both the sent form and its decoded path must be one
    leading "/" and printable ASCII without a backslash ("/%2F/x" and "/%5Cx" are refused
    too, in case anything on the way decodes them).
    """
    try:
        url = URL(value or "/")
    except ValueError:
        return "/"
    location = str(url)
    if _LOCAL_PATH.fullmatch(location) and _LOCAL_PATH.fullmatch(url.path):
        return location
    return "/"


async def login_page(request: web.Request) -> web.StreamResponse:
    if request[USER] is not None:
        raise web.HTTPSeeOther(next_location(request.query.get("next")))
    cookie = _new_session(request) if request[SESSION] is None else None
    response = render(request, "login.html", {"next": next_location(request.query.get("next")),
                                              "problem": None})
    if cookie is not None:  # a session before logging in: the form's CSRF token
        _set_cookie(request, response, cookie)
    return response


async def login(request: web.Request) -> web.StreamResponse:
    form = await request.post()
    name, password, token = (str(form.get(key, "")) for key in ("name", "password", "token"))
    address = _client(request)
    throttle = request.app[THROTTLE]
    wait = throttle.reserve(address, name)  # a failure until it is known to be right
    if wait is not None:
        raise TooManyAttempts("too many failed logins: wait and try again", wait)
    console = _console(request)
    if token:
        user = check_token(console, token)
    else:  # argon2 takes tens of milliseconds of CPU: not on the loop
        user = await request.app[PASSWORD_CHECKS].check(console, name, password)
    if user is None:
        return render(request, "login.html", {
            "next": next_location(str(form.get("next", ""))),
            "problem": "wrong token" if token else "wrong name or password"}, status=401)
    throttle.succeeded(address, name)
    done = web.HTTPSeeOther(next_location(str(form.get("next", ""))))
    _set_cookie(request, done, _new_session(request, user))
    raise done


def _client(request: web.Request) -> str:
    """The client's address: behind [console] trusted_proxies, from X-Forwarded-For."""
    forwarded = ",".join(request.headers.getall("X-Forwarded-For", ()))
    return request.app[CLIENTS].resolve(request.remote, forwarded or None)


async def logout(request: web.Request) -> web.StreamResponse:
    session = request[SESSION]
    if session is not None and session.user:  # a copy of the cookie ends with it
        await request.app[LOGOUTS].add(session)
    done = web.HTTPSeeOther("/login")
    done.del_cookie(COOKIE, path="/")
    raise done


async def _overview(request: web.Request) -> Any:
    settings = request.app[SETTINGS]
    data = await overview(settings, request.app[HTTP], _console(request).ingress_metrics,
                          request.app[COUNTER], request.app[SHARED_STORE])
    return request.app[MASK].mask(data)


async def overview_page(request: web.Request) -> web.StreamResponse:
    updated = datetime.now(UTC).strftime("%H:%M:%S")
    return render(request, "overview.html", {**await _overview(request), "updated": updated})


async def overview_json(request: web.Request) -> web.StreamResponse:
    return _json(await _overview(request))


async def _trace(request: web.Request, ident: str) -> Any:
    if len(ident) > MAX_ID:
        raise BadSearch(f"an id is at most {MAX_ID} characters")
    try:
        result = await trace(request.app[SETTINGS].consumers.store, ident, TRACE_LIMIT,
                             http=request.app[HTTP], ingress=_console(request).ingress_metrics)
    except (StoreError, OSError) as exc:
        raise StoreUnavailable(f"the store cannot be read: {exc}") from exc
    return request.app[MASK].mask(result)


async def search_page(request: web.Request) -> web.StreamResponse:
    ident = request.query.get("id", "").strip()
    result = await _trace(request, ident) if ident else None
    asides = placed_asides(result) if result else []
    return render(request, "search.html", {"id": ident, "result": result, "asides": asides})


async def trace_json(request: web.Request) -> web.StreamResponse:
    ident = request.query.get("id", "").strip()
    if not ident:
        raise BadSearch("give an id: ?id=ORDER_ID (or event id, tracking code, SKU)")
    return _json(await _trace(request, ident))
