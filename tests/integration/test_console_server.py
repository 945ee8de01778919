"""The console against the real RabbitMQ and both stores: login, CSRF, throttling, the
Overview (sources, rejections from a live ingress, queue depths, subscriptions) and Search
(an order's timeline from the trace)."""

from __future__ import annotations

import asyncio
import dataclasses
import re
import threading
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import aio_pika
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from ports import free_port
from test_amqp import connection_pid, rabbitmqctl
from test_ingress import SHOPIFY_ORDER
from test_rejected_requests import forged
from test_runner import wait_for
from test_trace import ORDER, consumers, outcomes, publish

from consumers.cli import consumer_spec
from consumers.store import PostgresStore, SqliteStore, StoreError
from router.console import auth
from router.console.app import create_console_app
from router.console.auth import hash_password
from router.console.settings import ConsoleSettings, ConsoleUser
from router.console.state import SHARED_STORE
from router.settings import Settings

pytestmark = pytest.mark.integration

PASSWORD = "correct horse battery"
USERS = (ConsoleUser("ana", "operator", password_hash=hash_password(PASSWORD)),
         ConsoleUser("bo", "viewer", token=b"bo-token-0123"))
CSRF = re.compile(r'name="csrf" value="([^"]+)"')


def console_settings(settings: Settings, store_url: str, **console: Any) -> Settings:
    options = {"users": USERS, "session_secret": b"k" * 32, "development": True,
               "ingress_metrics": f"http://127.0.0.1:{free_port()}", **console}
    return dataclasses.replace(
        settings, console=ConsoleSettings(**options),
        consumers=dataclasses.replace(settings.consumers, store=store_url))


@pytest.fixture
async def console(make_console, settings, store, store_url) -> TestClient:
    return await make_console(console_settings(settings, store_url))


async def csrf_of(client: TestClient, path: str = "/login") -> str:
    response = await client.get(path)
    return CSRF.search(await response.text())[1]


async def login(client: TestClient, name: str = "ana", password: str = PASSWORD,
                **form: str) -> Any:
    token = await csrf_of(client)
    return await client.post("/login", allow_redirects=False,
                             data={"csrf": token, "name": name, "password": password, **form})


async def cookie_of(client: TestClient, user: str) -> dict[str, str]:
    """A Cookie header with a fresh session of `user` (ana by password, bo by token)."""
    response = await (login(client) if user == "ana" else
                      login(client, name="", password="", token="bo-token-0123"))
    assert 303 == response.status
    cookie = client.session.cookie_jar.filter_cookies(client.make_url("/"))["console_session"]
    return {"Cookie": f"console_session={cookie.value}"}


async def assert_logged_out(client: TestClient, cookie: dict[str, str]) -> None:
    """`cookie` is no session on `client`: a page goes to /login, JSON is 401."""
    response = await client.get("/search", headers=cookie, allow_redirects=False)
    assert (303, "/login?next=/search") == (response.status, response.headers["Location"])
    response = await client.get("/api/trace?id=1", headers=cookie)
    assert (401, "login_required") == (response.status, (await response.json())["error"])


class TestLogin:
    @pytest.mark.parametrize("path", ["/", "/search?id=1042"])
    async def test_pages_redirect_to_login(self, console, path):
        """A page without a session sends the browser to /login, remembering where to."""
        response = await console.get(path, allow_redirects=False)
        assert 303 == response.status
        assert response.headers["Location"].startswith("/login?next=/")

    @pytest.mark.parametrize("path", ["/api/overview", "/api/trace?id=1042"])
    async def test_api_answers_401(self, console, path):
        """A JSON answer without a session is 401 with a reason."""
        response = await console.get(path)
        assert (401, "login_required") == (response.status, (await response.json())["error"])

    async def test_right_password_logs_in_and_back_out(self, console):
        """The password logs in (back to `next`); logging out ends the session."""
        response = await login(console, next="/search")
        assert (303, "/search") == (response.status, response.headers["Location"])
        page = await (await console.get("/")).text()
        assert "ana (operator)" in page
        token = CSRF.search(page)[1]
        response = await console.post("/logout", data={"csrf": token}, allow_redirects=False)
        assert 303 == response.status
        assert 303 == (await console.get("/", allow_redirects=False)).status

    @pytest.mark.parametrize("next_", [
        "/\t/evil.example", "/\n/evil.example", "/\r/evil.example", "//evil.example",
        "/\\evil.example", "https://evil.example", "/%2F/evil.example", "/\u3000/evil.example"])
    async def test_next_never_leads_off_the_console(self, console, next_):
        """After logging in, a `next` that the Location header would carry to another host
        (or that holds a control, whitespace or backslash character) goes to "/" instead."""
        response = await login(console, next=next_)
        assert (303, "/") == (response.status, response.headers["Location"])

    async def test_next_of_the_login_page_never_leads_off_the_console(self, console):
        """Logged in, /login?next=... redirects at once: only to a path here. Logged out,
        the form carries only such a path."""
        hostile = ("/%09/evil.example", "/%0A/evil.example", "/%0D/evil.example",
                   "//evil.example", "/%5Cevil.example", "%09//evil.example")
        for query in hostile:
            page = await (await console.get(f"/login?next={query}")).text()
            assert 'name="next" value="/"' in page
        assert 303 == (await login(console)).status
        for query in hostile:
            response = await console.get(f"/login?next={query}", allow_redirects=False)
            assert (303, "/") == (response.status, response.headers["Location"])
        response = await console.get("/login?next=/search%3Fid%3D1042", allow_redirects=False)
        assert (303, "/search?id=1042") == (response.status, response.headers["Location"])

    async def test_a_copy_of_a_logged_out_cookie_is_no_session(self, console, make_console,
                                                               settings, store_url, store):
        """After logging out, the same cookie sent again (copied before) is no session, in
        this console and in another one on the same store."""
        assert 303 == (await login(console)).status
        cookie = console.session.cookie_jar.filter_cookies(console.make_url("/"))["console_session"]
        copied = {"Cookie": f"console_session={cookie.value}"}
        other = await make_console(console_settings(settings, store_url))
        for client in (console, other):  # valid everywhere until the logout
            assert 200 == (await client.get("/api/overview", headers=copied)).status
        token = CSRF.search(await (await console.get("/")).text())[1]
        assert 303 == (await console.post("/logout", data={"csrf": token},
                                          allow_redirects=False)).status
        for client in (console, other):
            response = await client.get("/api/overview", headers=copied)
            assert (401, "login_required") == (response.status, (await response.json())["error"])
        async with store.transaction() as tx:
            assert 1 == await tx.fetchval("SELECT COUNT(*) FROM console_logouts")

    async def test_a_changed_password_ends_the_users_sessions(self, console, make_console,
                                                              settings, store_url):
        """Ana's password changed in the config (as a restart with the new file makes it):
        her cookie from before is no session there (pages go to /login, JSON is 401), bo's
        goes on, and her new password logs her in."""
        ana, bo = await cookie_of(console, "ana"), await cookie_of(console, "bo")
        users = (dataclasses.replace(USERS[0], password_hash=hash_password("a new one")),
                 USERS[1])
        changed = await make_console(console_settings(settings, store_url, users=users))
        await assert_logged_out(changed, ana)
        response = await changed.get("/search", headers=bo, allow_redirects=False)
        assert (200, True) == (response.status, "bo (viewer)" in await response.text())
        assert 303 == (await login(changed, "ana", "a new one")).status
        assert "ana (operator)" in await (await changed.get("/search")).text()

    async def test_a_changed_token_ends_the_users_sessions(self, console, make_console,
                                                           settings, store_url):
        """So does a new token for a user who logged in with one."""
        bo = await cookie_of(console, "bo")
        users = (USERS[0], dataclasses.replace(USERS[1], token=b"bo-token-4567"))
        changed = await make_console(console_settings(settings, store_url, users=users))
        await assert_logged_out(changed, bo)

    async def test_a_user_removed_from_the_config_is_logged_out(self, console, make_console,
                                                                settings, store_url):
        """A user no longer in the config has no session, whatever their cookie says."""
        ana = await cookie_of(console, "ana")
        removed = await make_console(console_settings(settings, store_url, users=USERS[1:]))
        await assert_logged_out(removed, ana)

    async def test_logging_out_without_the_store_still_ends_the_session_here(
            self, make_console, settings, tmp_path):
        """No store to write the logout to: the cookie is cleared and this console refuses
        a copy of it all the same (it remembers its own logouts)."""
        client = await make_console(console_settings(settings, f"sqlite:///{tmp_path}/no.db"))
        assert 303 == (await login(client)).status
        cookie = client.session.cookie_jar.filter_cookies(client.make_url("/"))["console_session"]
        copied = {"Cookie": f"console_session={cookie.value}"}
        token = CSRF.search(await (await client.get("/")).text())[1]
        response = await client.post("/logout", data={"csrf": token}, allow_redirects=False)
        assert (303, "/login") == (response.status, response.headers["Location"])
        response = await client.get("/api/overview", headers=copied)
        assert 401 == response.status
        assert not (tmp_path / "no.db").exists()

    async def test_token_logs_in(self, console):
        """A configured token logs its user in."""
        response = await login(console, name="", password="", token="bo-token-0123")
        assert 303 == response.status
        assert "bo (viewer)" in await (await console.get("/")).text()

    @pytest.mark.parametrize(("name", "password"), [("ana", "wrong"), ("nobody", PASSWORD),
                                                    ("bo", "bo-token-0123")])
    async def test_wrong_password_is_refused(self, console, name, password):
        """A wrong password, an unknown user or a token given as a password: 401, no session."""
        response = await login(console, name, password)
        assert 401 == response.status
        assert "wrong name or password" in await response.text()
        assert 303 == (await console.get("/", allow_redirects=False)).status

    async def test_failed_logins_are_rate_limited(self, console):
        """After five failures for a name, even the right password waits: 429, Retry-After."""
        for _ in range(5):
            assert 401 == (await login(console, "ana", "wrong")).status
        response = await login(console, "ana", PASSWORD)
        assert 429 == response.status
        assert 1 <= int(response.headers["Retry-After"]) <= 300
        assert "too_many_attempts" in await response.text()

    async def test_cookie_flags(self, make_console, settings, store_url):
        """The session cookie is HttpOnly, SameSite=Strict, and Secure outside development."""
        for development, secure in ((False, True), (True, False)):
            client = await make_console(console_settings(settings, store_url,
                                                         development=development))
            cookie = (await client.get("/login")).headers["Set-Cookie"]
            assert "HttpOnly" in cookie and "SameSite=Strict" in cookie
            assert secure == ("Secure" in cookie)


class CountingHasher:
    """argon2's hasher, counting the passwords it checks (on the console's threads)."""

    def __init__(self, hasher: Any) -> None:
        self.hasher = hasher
        self.calls = 0
        self.lock = threading.Lock()

    def verify(self, stored: str, password: str) -> bool:
        with self.lock:
            self.calls += 1
        return bool(self.hasher.verify(stored, password))


async def attempt(client: TestClient, name: str, forwarded: str | None = None,
                  password: str = "wrong") -> Any:
    """A login attempt, from the address `forwarded` says if it is given."""
    headers = {"X-Forwarded-For": forwarded} if forwarded else {}
    return await client.post("/login", allow_redirects=False, headers=headers, data={
        "csrf": await csrf_of(client), "name": name, "password": password})


class TestLoginThrottle:
    @pytest.fixture
    async def no_store(self, make_console, settings, tmp_path) -> Any:
        """A console for `settings`' [console] options, without a store (logging in needs
        none)."""
        async def make(**console: Any) -> TestClient:
            return await make_console(console_settings(
                settings, f"sqlite:///{tmp_path}/none.sqlite3", **console))

        return make

    async def test_logins_sent_together_are_counted_before_they_are_checked(
            self, no_store, monkeypatch):
        """Fifteen wrong passwords sent at once: five are checked (argon2 runs five times),
        the other ten are 429 with Retry-After; then even the right one waits."""
        hasher = CountingHasher(auth._HASHER)
        monkeypatch.setattr(auth, "_HASHER", hasher)
        client = await no_store()
        token = await csrf_of(client)
        responses = await asyncio.gather(*(client.post("/login", data={
            "csrf": token, "name": "ana", "password": f"wrong {i}"}) for i in range(15)))
        assert [401] * 5 + [429] * 10 == sorted(r.status for r in responses)
        assert 5 == hasher.calls
        for response in responses:
            if response.status == 429:
                assert 1 <= int(response.headers["Retry-After"]) <= 300
        assert 429 == (await attempt(client, "ana", password=PASSWORD)).status
        assert 5 == hasher.calls

    async def test_a_right_password_is_not_counted_against_the_address(self, no_store):
        """Four failures and a success from one address leave it one more attempt (the
        success's own attempt is taken back), not none."""
        client = await no_store()
        for i in range(4):
            assert 401 == (await attempt(client, f"user{i}")).status
        assert 303 == (await attempt(client, "ana", password=PASSWORD)).status
        assert 401 == (await attempt(client, "user4")).status
        assert 429 == (await attempt(client, "user5")).status

    async def test_behind_a_trusted_proxy_each_client_is_counted(self, no_store):
        """Behind [console] trusted_proxies the client X-Forwarded-For names is counted, not
        the proxy everyone comes through; an IPv6 client by its /64."""
        client = await no_store(trusted_proxies=("127.0.0.1/32",))
        for i in range(5):
            assert 401 == (await attempt(client, f"user{i}", "203.0.113.7")).status
        assert 429 == (await attempt(client, "user5", "203.0.113.7")).status
        assert 401 == (await attempt(client, "user6", "198.51.100.9")).status
        for i in range(5):
            assert 401 == (await attempt(client, f"six{i}", "2001:db8:1:2::1")).status
        assert 429 == (await attempt(client, "six5", "2001:db8:1:2:ffff::beef")).status
        assert 401 == (await attempt(client, "six6", "2001:db8:1:3::1")).status

    @pytest.mark.parametrize("trusted", [(), ("10.0.0.0/8",)])
    async def test_an_untrusted_x_forwarded_for_is_ignored(self, no_store, trusted):
        """From a peer that is no trusted proxy, X-Forwarded-For changes nothing: a client
        cannot name a new address for each attempt to get past the limit."""
        client = await no_store(trusted_proxies=trusted)
        for i in range(5):
            assert 401 == (await attempt(client, f"user{i}", f"203.0.113.{i}")).status
        assert 429 == (await attempt(client, "user5", "203.0.113.99")).status


class TestCsrf:
    async def test_post_without_the_token_is_403(self, console):
        """A POST without this session's CSRF token is refused with a reason, as JSON when
        JSON is asked for, and as a page otherwise; the session goes on."""
        assert 303 == (await login(console)).status
        response = await console.post("/logout", headers={"Accept": "application/json"})
        assert 403 == response.status
        assert "csrf_token_invalid" == (await response.json())["error"]
        response = await console.post("/logout", data={"csrf": "forged"})
        assert 403 == response.status
        assert "csrf_token_invalid" in await response.text()
        assert 200 == (await console.get("/", allow_redirects=False)).status

    async def test_login_needs_the_token_too(self, console):
        """Even the login form is refused without the token its page gave."""
        response = await console.post("/login", data={"name": "ana", "password": PASSWORD})
        assert 403 == response.status


SECURITY_HEADERS = {
    "Cache-Control": "no-store", "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin"}


def assert_security_headers(what: str, response: Any) -> None:
    """`response` is never cached, framed, sniffed or referred from elsewhere."""
    headers = {name: response.headers.get(name) for name in SECURITY_HEADERS}
    assert SECURITY_HEADERS == headers, what
    policy = response.headers.get("Content-Security-Policy", "")
    assert {"default-src 'self'", "frame-ancestors 'none'"} <= set(policy.split("; ")), what


class TestSecurityHeaders:
    async def test_on_every_kind_of_answer(self, make_console, settings, tmp_path):
        """Pages, JSON, redirects, static files, refusals, and aiohttp's own 404, 405 and
        500 all carry the headers: each (method, path, expected status) below, logged out
        and then logged in."""
        app = create_console_app(console_settings(settings, f"sqlite:///{tmp_path}/no.db"))

        async def broken(request: web.Request) -> web.StreamResponse:
            raise RuntimeError("a bug")

        app.router.add_get("/api/broken", broken)
        client = TestClient(TestServer(app))
        await client.start_server()
        try:
            csrf = {"X-CSRF-Token": await csrf_of(client)}
            logged_out = [
                ("GET", "/login", {}, 200),                  # a page
                ("GET", "/static/console.css", {}, 200),     # static files
                ("GET", "/static/live.js", {}, 200),
                ("GET", "/static/nothing.css", {}, 404),     # aiohttp's 404
                ("GET", "/", {}, 303),                       # a redirect raised
                ("GET", "/api/overview", {}, 401),           # JSON refusal
                ("POST", "/logout", {}, 401),                # a refusal page
                ("POST", "/login", csrf, 401),               # a page with a status
            ]
            for method, path, headers, status in logged_out:
                response = await client.request(method, path, headers=headers,
                                                allow_redirects=False)
                assert status == response.status, (method, path)
                assert_security_headers(f"{method} {path}", response)
            response = await login(client)
            assert 303 == response.status
            assert_security_headers("POST /login (right)", response)
            csrf = {"X-CSRF-Token": CSRF.search(await (await client.get("/search")).text())[1]}
            logged_in = [
                ("GET", "/search", {}, 200),
                ("GET", "/api/trace", {}, 400),              # JSON
                ("GET", "/login", {}, 303),
                ("GET", "/no-such-page", {}, 404),           # aiohttp's 404
                ("POST", "/search", csrf, 405),              # aiohttp's 405
                ("GET", "/api/broken", {}, 500),             # aiohttp's 500
                ("POST", "/logout", {}, 403),                # no CSRF token
                ("POST", "/logout", csrf, 303),
            ]
            for method, path, headers, status in logged_in:
                response = await client.request(method, path, headers=headers,
                                                allow_redirects=False)
                assert status == response.status, (method, path)
                assert_security_headers(f"{method} {path}", response)
        finally:
            await client.close()


_NOW = datetime.now(UTC)


def hours_ago(hours: float) -> str:
    """A time as the ingress writes received_at, `hours` before this module was loaded."""
    return (_NOW - timedelta(hours=hours)).isoformat(timespec="milliseconds")


class TestOverview:
    async def test_sources_rejections_queues_and_subscriptions(
            self, make_console, make_client, settings, store_url, store, amqp, topology):
        """Each source's path and scheme, the live ingress's rejections by reason, each
        queue's depth and each subscription's state."""
        ingress = await make_client(settings)
        refused = await ingress.post("/webhooks/shopify", data=b"{}",
                                     headers={"Content-Type": "application/json"})
        assert 401 == refused.status
        reason = (await refused.json())["error"]
        await publish(amqp, topology, ORDER)
        client = await make_console(console_settings(
            settings, store_url, ingress_metrics=str(ingress.make_url("")).rstrip("/")))
        assert 303 == (await login(client)).status

        async def queued() -> bool:
            answer = await (await client.get("/api/overview")).json()
            depths = {q["queue"]: q["depth"] for q in answer["broker"]["queues"]}
            return depths["orders"] == 1 and depths["audit"] == 1

        await wait_for(queued)
        # What the audit consumer recorded: one shopify event an hour ago, two since.
        async with store.transaction() as tx:
            for n, at in enumerate([hours_ago(2), hours_ago(0.5), hours_ago(0.1)]):
                await tx.execute(
                    "INSERT INTO audit_events (event_id, source, type, received_at,"
                    " recorded_at) VALUES ($1, 'shopify', 'order.created', $2, $2)",
                    f"evt-{n}", at)
        answer = await (await client.get("/api/overview")).json()
        assert {"accepted": 2, "last_seen": hours_ago(0.1)} == answer["store"]["sources"][
            "shopify"]
        assert {"accepted": 0, "last_seen": None} == answer["store"]["sources"]["easypost"]
        assert {"reasons": [[reason, 1]], "at_least": False} == answer["rejections"][
            "recent"]["shopify"]
        assert {"source": "shopify", "path": "/webhooks/shopify", "scheme": "shopify",
                "on_invalid": "hold"} in answer["sources"]
        assert [[reason, 1]] == answer["rejections"]["counts"]["shopify"]
        orders = next(q for q in answer["broker"]["queues"] if q["queue"] == "orders")
        assert (0, 0, 0) == (orders["consumers"], orders["retrying"], orders["dead"])
        assert answer["store"]["available"]
        assert (set(settings.subscriptions)
                == {s["subscription"] for s in answer["store"]["subscriptions"]})
        page = await (await client.get("/")).text()
        assert "/webhooks/shopify" in page and reason in page

    async def test_renders_share_one_broker_and_one_store_connection(
            self, make_console, settings, store_url, store, topology, monkeypatch):
        """Ten renders after the first open no broker connection (counted at the real
        aio_pika.connect, wrapped) and no store; once the broker closes the console's
        connection, the next render opens one more and shows the queues; a store that failed
        is opened once more too; shutting down closes the connection."""
        name = f"test-console-{uuid.uuid4().hex[:8]}"  # whose connection to close
        settings = dataclasses.replace(settings, broker=dataclasses.replace(
            settings.broker, connection_name=name))
        connects: list[Any] = []
        real_connect = aio_pika.connect

        async def counted_connect(*args: Any, **kwargs: Any) -> Any:
            connection = await real_connect(*args, **kwargs)
            if kwargs["client_properties"]["connection_name"] == f"{name}-console":
                connects.append(connection)
            return connection

        store_opens: list[Any] = []
        for kind in (SqliteStore, PostgresStore):
            def counted_open(opened: Any, *, real: Any = kind.open) -> Any:
                store_opens.append(opened)
                return real(opened)
            monkeypatch.setattr(kind, "open", counted_open)
        monkeypatch.setattr(aio_pika, "connect", counted_connect)
        client = await make_console(console_settings(settings, store_url))
        assert 303 == (await login(client)).status

        async def render() -> dict[str, Any]:
            answer = await (await client.get("/api/overview")).json()
            assert (True, True) == (answer["broker"]["available"],
                                    answer["store"]["available"])
            return answer

        await render()
        assert 1 == len(connects)
        opened = len(store_opens)  # the Overview's store, and the logouts' one
        for _ in range(10):
            await render()
        assert (1, opened) == (len(connects), len(store_opens))

        await rabbitmqctl("close_connection", await connection_pid(f"{name}-console"),
                          "closed under the console")
        answer = await render()
        assert 2 == len(connects)
        assert {"orders", "audit"} <= {q["queue"] for q in answer["broker"]["queues"]}
        await render()
        assert 2 == len(connects)

        with pytest.raises(StoreError):  # a read that failed: the store is opened again
            async with client.server.app[SHARED_STORE].use():
                raise StoreError("the store went away")
        await render()
        await render()
        assert opened + 1 == len(store_opens)
        await client.close()  # and the console's connection closes with it
        assert connects[-1].is_closed

    async def test_what_cannot_be_read_says_unavailable(self, make_console, settings,
                                                        tmp_path):
        """No ingress and no store: the page says so in place and still answers 200."""
        client = await make_console(console_settings(
            settings, f"sqlite:///{tmp_path}/none.sqlite3"))
        assert 303 == (await login(client)).status
        response = await client.get("/")
        assert 200 == response.status
        assert "Rejections: unavailable" in await response.text()
        answer = await (await client.get("/api/overview")).json()
        assert (False, False) == (answer["rejections"]["available"],
                                  answer["store"]["available"])
        assert not (tmp_path / "none.sqlite3").exists()

    async def test_pii_fields_are_masked(self, make_console, settings, store_url, store):
        """A key named in [logging] pii_fields is masked in the JSON answer."""
        masked = dataclasses.replace(settings, logging=dataclasses.replace(
            settings.logging, pii_fields=("path",)))
        client = await make_console(console_settings(masked, store_url))
        assert 303 == (await login(client)).status
        answer = await (await client.get("/api/overview")).json()
        assert {"[redacted]"} == {source["path"] for source in answer["sources"]}


class TestSearch:
    async def test_an_order_id_shows_its_timeline(self, console, amqp, topology, store,
                                                  settings):
        """Search by order id: received, recorded, the orders consumer's outcome and the
        notification, on the page and as JSON; the customer's name is nowhere."""
        await publish(amqp, topology, ORDER)
        async with consumers(store, settings, consumer_spec("audit", settings),
                             consumer_spec("orders", settings)):
            async def applied() -> bool:
                found = await outcomes(store, ORDER["id"])
                return {("audit", "recorded"), ("orders", "backordered")} <= set(found)

            await wait_for(applied)
        assert 303 == (await login(console)).status
        page = await (await console.get("/search", params={"id": "1042"})).text()
        assert ORDER["id"] in page
        assert "received <strong>order.created</strong> from shopify" in page
        assert "order_id 1042" in page and "<strong>backordered</strong>" in page
        assert "notification order.backordered" in page
        assert "Jane Doe" not in page
        answer = await (await console.get("/api/trace", params={"id": "1042"})).json()
        [event] = answer["events"]
        assert ("orders", "backordered") in [(a["consumer"], a["outcome"])
                                             for a in event["attempts"]]

    async def test_an_unknown_id_says_nothing_matches(self, console):
        """An id the store does not know: the page says so, and that the ingress's refusals
        could not be read (no ingress answers at ingress_metrics here)."""
        assert 303 == (await login(console)).status
        page = await (await console.get("/search", params={"id": "no-such-id"})).text()
        assert "Nothing matches" in page
        assert "The ingress's refusals could not be read" in page

    async def test_a_delivery_refused_at_the_ingress(self, make_console, make_client, settings,
                                                     store_url, store, queue_depths):
        """A forged Shopify order: searching its delivery id shows the ingress's refusal
        (401 invalid_signature), on the page and as JSON; nothing reached a queue."""
        ingress = await make_client(settings)
        headers = forged(settings)
        response = await ingress.post("/webhooks/shopify", data=SHOPIFY_ORDER, headers=headers)
        assert 401 == response.status
        client = await make_console(console_settings(
            settings, store_url, ingress_metrics=str(ingress.make_url("")).rstrip("/")))
        assert 303 == (await login(client)).status
        delivery = headers["X-Shopify-Event-Id"]
        page = await (await client.get("/search", params={"id": delivery})).text()
        assert f"Delivery <code>{delivery}</code> refused by the ingress" in page
        assert "refused: 401 <code>invalid_signature</code> (source shopify" in page
        assert "Nothing matches" not in page
        answer = await (await client.get("/api/trace", params={"id": delivery})).json()
        assert ([], [("shopify", 401, "invalid_signature")]) == (
            answer["events"],
            [(r["source"], r["status"], r["reason"]) for r in answer["refused"]])
        assert 0 == sum((await queue_depths()).values())

    async def test_a_search_without_an_id_is_400(self, console):
        """The JSON trace needs an id."""
        assert 303 == (await login(console)).status
        response = await console.get("/api/trace")
        assert (400, "bad_search") == (response.status, (await response.json())["error"])
