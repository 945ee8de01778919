"""The operator console in a real headless Chromium, against the real thing: `python -m
consumers all` (the ingress and every consumer, on SQLite, as scripts/start runs them) and
`python -m router console`, both started from a copy of config/ with a `[console]` table
written as the README says, on this test's own broker prefix.

What a new user does after the README: log in, post the sample order with Send test
payload, find it by its order id with its whole timeline, replay a dead letter and see it
applied; and what the console refuses: a viewer's replay, an action without the CSRF token.

Screenshots of the main pages go to $CONSOLE_SCREENSHOTS when it is set (scripts/screenshots
sets it to docs/console), else to a temporary directory.
"""

from __future__ import annotations

import base64
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import orjson
import pytest
from ports import free_port
from selenium import webdriver
from selenium.common.exceptions import WebDriverException
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webdriver import WebDriver
from selenium.webdriver.remote.webelement import WebElement
from selenium.webdriver.support.ui import WebDriverWait

from router.providers import signed_headers
from router.settings import load_settings

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[2]
CHROMIUM = os.environ.get("CHROMIUM", "/usr/bin/chromium")
CHROMEDRIVER = os.environ.get("CHROMEDRIVER", "/usr/bin/chromedriver")
ORDER_ID = "5820982911946154508"  # config/samples/shopify-orders-create.json
PASSWORDS = {"ana": "correct horse battery staple", "bo": "viewer's own passphrase"}
WAIT = 30.0  # seconds for anything that crosses the broker and a consumer


def _hash(password: str) -> str:
    """The argon2 hash, made as the README says: `webhook-router console hash-password`."""
    done = subprocess.run([sys.executable, "-m", "router", "console", "hash-password"],
                          input=password + "\n", capture_output=True, text=True, check=True,
                          cwd=ROOT, timeout=60)
    return done.stdout.strip()


def _config(tmp: Path, prefix: str, port: int, console_port: int, store: str,
            receiver: str) -> Path:
    """A copy of config/ on loopback ports of its own, this test's prefix and store, its
    subscriptions delivering to `receiver`, and a [console] table with an operator (ana) and
    a viewer (bo), as the README's steps write it."""
    config = tmp / "config"
    shutil.copytree(ROOT / "config", config)
    toml = config / "router.toml"
    text = toml.read_text()
    replacements = [
        ('host = "0.0.0.0"\nport = 8080\n', f'host = "127.0.0.1"\nport = {port}\n'),
        ('prefix = ""', f'prefix = "{prefix}"'),
        ("retry_ladder = [5, 15, 45]", "retry_ladder = [1, 2]"),
        ('store = "sqlite:///data/router.sqlite3"', f'store = "{store}"'),
        # Both subscriptions on, delivering to this test's receiver on loopback.
        ('mode = "production"', 'mode = "development"'),
        ('"https://portal.example.com/webhooks/fulfillment"', f'"{receiver}/portal"'),
        ('"https://shop.example.com/hooks/stock-levels"', f'"{receiver}/stock"'),
        ("enabled = false              # switch on once the portal has the secret",
         "enabled = true\nallow_private = true"),
        ('secrets = ["env:STOREFRONT_NOTIFY_SECRET"]\nenabled = false',
         'secrets = ["env:STOREFRONT_NOTIFY_SECRET"]\nenabled = true\nallow_private = true'),
    ]
    for old, new in replacements:
        assert old in text, f"config/router.toml no longer has {old!r}"
        text = text.replace(old, new, 1)
    users = "".join(
        f'\n[[console.users]]\nname = "{name}"\nrole = "{role}"\n'
        f'password_hash = "{_hash(PASSWORDS[name])}"\n'
        for name, role in (("ana", "operator"), ("bo", "viewer")))
    text += (f'\n[console]\nport = {console_port}\ndevelopment = true\n'
             f'session_secret = "env:CONSOLE_SESSION_SECRET"\n{users}')
    toml.write_text(text)
    return toml


def _http_ok(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return response.status == 200
    except (urllib.error.URLError, OSError):
        return False


def wait_until(check: Callable[[], object], what: str, timeout: float = WAIT) -> object:
    """check()'s first true answer, asked again every 0.2 s until `timeout` (then fail)."""
    deadline = time.monotonic() + timeout
    while True:
        answer = check()
        if answer:
            return answer
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {timeout:.0f} s: {what}")
        time.sleep(0.2)


def _stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


class _Subscriber(BaseHTTPRequestHandler):
    """A subscriber that takes every notification (204); the paths it was posted to."""

    posted: list[str] = []

    def do_POST(self) -> None:  # noqa: N802 (http.server's name)
        self.rfile.read(int(self.headers.get("Content-Length", 0)))
        self.posted.append(self.path)
        self.send_response(204)
        self.end_headers()

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002
        pass


@dataclass
class Stack:
    config: Path
    env: dict[str, str]
    ingress: str
    console: str
    logs: Path

    def post(self, source: str, body: dict[str, object], topic: str | None = None) -> int:
        """Post `body` signed as `source`'s provider would (as `webhook-router send-test`)."""
        data = orjson.dumps(body)
        settings = load_settings(self.config, environ=self.env)
        headers = signed_headers(settings, source, data, topic)
        path = settings.sources[source].path
        request = urllib.request.Request(f"{self.ingress}{path}", data=data, headers=headers)
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """The ingress with every consumer, and the console, as processes of their own."""
    from conftest import TEST_ENV

    tmp = tmp_path_factory.mktemp("browser")
    prefix = f"test-browser-{uuid.uuid4().hex[:8]}."
    port, console_port = free_port(), free_port()
    subscriber = ThreadingHTTPServer(("127.0.0.1", 0), _Subscriber)
    threading.Thread(target=subscriber.serve_forever, daemon=True).start()
    receiver = f"http://127.0.0.1:{subscriber.server_address[1]}"
    config = _config(tmp, prefix, port, console_port, f"sqlite:///{tmp}/router.sqlite3",
                     receiver)
    whsec = "whsec_" + base64.b64encode(b"browser-test-subscriber-key").decode()
    env = {**os.environ, **TEST_ENV, "CONSOLE_SESSION_SECRET": uuid.uuid4().hex * 2,
           "PORTAL_NOTIFY_SECRET": whsec, "STOREFRONT_NOTIFY_SECRET": whsec}
    logs = tmp / "logs"
    logs.mkdir()
    procs: list[subprocess.Popen[bytes]] = []

    def start(name: str, *args: str) -> None:
        with open(logs / f"{name}.log", "wb") as log:
            procs.append(subprocess.Popen(
                [sys.executable, "-m", *args, "--config", str(config)], cwd=ROOT, env=env,
                stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                start_new_session=True))

    running = Stack(config, env, f"http://127.0.0.1:{port}", f"http://127.0.0.1:{console_port}",
                    logs)
    try:
        start("consumers", "consumers", "all")
        start("console", "router", "console")

        def up() -> bool:
            for proc in procs:
                if proc.poll() is not None:
                    raise AssertionError(f"{proc.args} exited {proc.returncode}: "
                                         f"{_tail(logs)}")
            return _http_ok(f"{running.ingress}/readyz") and _http_ok(
                f"{running.console}/login")

        wait_until(up, "the ingress ready and the console answering", 60)
        yield running
    finally:
        for proc in procs:
            _stop(proc)
        subscriber.shutdown()
        subscriber.server_close()
        subprocess.run([sys.executable, "-m", "router", "topology", "--delete", "--config",
                        str(config)], cwd=ROOT, env=env, capture_output=True, timeout=120,
                       check=True)


def _tail(logs: Path) -> str:
    return " | ".join(f"{p.name}: {p.read_text()[-2000:]}" for p in sorted(logs.iterdir()))


@pytest.fixture(scope="module")
def driver() -> Iterator[WebDriver]:
    """A headless Chromium (Debian's chromium and its chromedriver; .ci/run installs them)."""
    for path in (CHROMIUM, CHROMEDRIVER):
        if not os.path.exists(path):
            pytest.fail(f"{path} is missing: install Debian's chromium and chromium-driver "
                        "(as .ci/run does), or point CHROMIUM and CHROMEDRIVER at them")
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for argument in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage",
                     "--window-size=1280,900", "--disable-gpu", "--no-first-run"):
        options.add_argument(argument)
    browser = webdriver.Chrome(options=options, service=Service(CHROMEDRIVER))
    browser.set_page_load_timeout(WAIT)
    try:
        yield browser
    finally:
        browser.quit()


@pytest.fixture(scope="module")
def screenshots(tmp_path_factory: pytest.TempPathFactory) -> Path:
    where = os.environ.get("CONSOLE_SCREENSHOTS")
    folder = Path(where) if where else tmp_path_factory.mktemp("screenshots")
    folder.mkdir(parents=True, exist_ok=True)
    return folder


# --- what a user does ------------------------------------------------------------------


def leaving(driver: WebDriver) -> None:
    """Mark this page, so arrived() can tell the next one from it."""
    driver.execute_script("document.documentElement.dataset.leaving = 'yes'")


def arrived(driver: WebDriver) -> None:
    """Wait until the page marked by leaving() has been replaced by one fully loaded. While
    the browser navigates, ChromeDriver may answer a question about either page with an
    error ("Node with given id does not belong to the document", "no such execution
    context"): that is no answer yet, so the question is asked again."""
    WebDriverWait(driver, WAIT, ignored_exceptions=(WebDriverException,)).until(
        lambda d: d.execute_script("return document.readyState === 'complete'"
                                   " && !document.documentElement.dataset.leaving"))


def click(driver: WebDriver, button: WebElement) -> None:
    """Click a button that submits a form, and wait until the next page has replaced this
    one (a click returns before the browser has navigated)."""
    leaving(driver)
    button.click()
    arrived(driver)


def text(driver: WebDriver) -> str:
    return driver.find_element(By.TAG_NAME, "body").text


def log_in(driver: WebDriver, stack: Stack, name: str, password: str | None = None) -> None:
    driver.delete_all_cookies()
    driver.get(f"{stack.console}/")  # sent to the login page
    assert "/login" in driver.current_url
    driver.find_element(By.NAME, "name").send_keys(name)
    driver.find_element(By.NAME, "password").send_keys(password or PASSWORDS[name])
    click(driver, driver.find_element(By.CSS_SELECTOR, "form[action='/login'] button"))
    assert driver.find_elements(By.CSS_SELECTOR, "header .logout"), text(driver)


def source_form(driver: WebDriver, stack: Stack, source: str) -> WebElement:
    driver.get(f"{stack.console}/sources")
    return driver.find_element(
        By.XPATH, f"//form[input[@name='source' and @value='{source}']]")


def send_payload(driver: WebDriver, stack: Stack, source: str,
                 payload: dict[str, object] | None = None) -> str:
    """Sources → the source's form (its sample, or `payload` typed in) → Send test payload;
    the result section's text."""
    form = source_form(driver, stack, source)
    if payload is not None:
        box = form.find_element(By.NAME, "payload")
        box.clear()
        box.send_keys(orjson.dumps(payload).decode())
    click(driver, form.find_element(By.XPATH, ".//button[text()='Send test payload']"))
    return driver.find_element(By.ID, "result").text


def search(driver: WebDriver, stack: Stack, ident: str) -> str:
    driver.get(f"{stack.console}/search")
    box = driver.find_element(By.NAME, "id")
    box.send_keys(ident)
    click(driver, driver.find_element(By.XPATH, "//button[text()='Trace']"))
    return text(driver)


def search_until(driver: WebDriver, stack: Stack, ident: str, pattern: str) -> str:
    """The search page for `ident`, searched again until its text matches `pattern`."""
    found: list[str] = []

    def matches() -> bool:
        found[:] = [search(driver, stack, ident)]
        return re.search(pattern, found[0]) is not None

    try:
        wait_until(matches, f"{pattern!r} in the trace of {ident}")
    except AssertionError as exc:
        raise AssertionError(f"{exc}; the page said: {found[0] if found else ''}") from None
    return found[0]


def inventory(sku: str, event_id: str, as_of: str, **change: int) -> dict[str, object]:
    return {"event_id": event_id, "sku": sku, "location": "austin-1", "as_of": as_of, **change}


def bury_stock_change(driver: WebDriver, stack: Stack, sku: str) -> str:
    """Stock of 5 for `sku`, then a correction of -8 that the inventory consumer must refuse
    (on_hand would be -3): a dead letter in inventory. Its delivery id."""
    dead = f"inv-{sku}-minus-8"
    assert "answered 202" in send_payload(driver, stack, "inventory", inventory(
        sku, f"inv-{sku}-count", "2026-11-29T08:00:00Z", on_hand=5))
    assert "answered 202" in send_payload(driver, stack, "inventory", inventory(
        sku, dead, "2026-11-29T09:00:00Z", delta=-8))
    search_until(driver, stack, sku, r"dead-lettered: stock .*on_hand would be -3, below 0")
    return dead


def dead_letter_row(driver: WebDriver, stack: Stack, sku: str) -> WebElement | None:
    driver.get(f"{stack.console}/dead-letters?queue=inventory")
    rows = driver.find_elements(By.XPATH, f"//table[@id='messages']//tr[contains(., '{sku}')]")
    return rows[0] if rows else None


# --- the tests ---------------------------------------------------------------------------


class TestNewUser:
    def test_log_in(self, driver, stack, screenshots):
        """A wrong password is refused on the page; the right one opens the Overview, with
        the sources' paths to paste into the providers and the queues."""
        log_in_page = f"{stack.console}/login"
        driver.delete_all_cookies()
        driver.get(log_in_page)
        driver.save_screenshot(str(screenshots / "login.png"))
        driver.find_element(By.NAME, "name").send_keys("ana")
        driver.find_element(By.NAME, "password").send_keys("not the password")
        click(driver, driver.find_element(By.CSS_SELECTOR, "form[action='/login'] button"))
        assert "wrong name or password" in text(driver)
        log_in(driver, stack, "ana")
        page = text(driver)
        assert "Overview" in page and "ana (operator)" in page
        assert "/webhooks/shopify" in page and "Broker: up" in page and "Store: up" in page
        driver.save_screenshot(str(screenshots / "overview.png"))

    def test_sample_order_found_by_order_id(self, driver, stack, screenshots):
        """Send test payload posts Shopify's sample order, signed, to the live ingress (202);
        Search by its order id shows its timeline: received, recorded by audit, taken by the
        orders consumer with its outcome."""
        log_in(driver, stack, "ana")
        result = send_payload(driver, stack, "shopify")
        assert "The ingress answered 202" in result and '"accepted"' in result
        driver.save_screenshot(str(screenshots / "sources-sent.png"))
        page = search_until(driver, stack, ORDER_ID, r"orders attempt 1: (allocated|backordered)")
        assert "received order.created from shopify" in page
        assert f"recorded by audit (order_id {ORDER_ID}" in page
        driver.save_screenshot(str(screenshots / "search.png"))

    def test_dead_letter_replayed_and_applied(self, driver, stack, screenshots):
        """A stock correction that would take on_hand below 0 is dead-lettered; once the
        received batch is in, the operator replays it from Dead letters and its timeline
        shows it applied; the replay is on the Audit page."""
        sku = f"BROWSER-{uuid.uuid4().hex[:6].upper()}"
        log_in(driver, stack, "ana")
        dead = bury_stock_change(driver, stack, sku)
        row = dead_letter_row(driver, stack, sku)
        assert row is not None and "below 0" in row.text
        driver.save_screenshot(str(screenshots / "dead-letters.png"))
        # Inspect it: the payload, the customer's details masked (none in stock changes).
        click(driver, row.find_element(By.TAG_NAME, "a"))
        assert "on_hand would be -3" in text(driver) and dead in text(driver)
        driver.save_screenshot(str(screenshots / "dead-letter.png"))
        # The received batch that makes the correction fit.
        assert "answered 202" in send_payload(driver, stack, "inventory", inventory(
            sku, f"inv-{sku}-plus-10", "2026-11-29T09:30:00Z", delta=10))
        search_until(driver, stack, sku, r"inventory attempt 1: applied[\s\S]*"
                                         r"inventory attempt 1: applied")
        row = dead_letter_row(driver, stack, sku)
        assert row is not None
        click(driver, row.find_element(By.XPATH, ".//button[text()='Replay']"))
        assert "replayed" in driver.find_element(By.CSS_SELECTOR, "p.ok").text
        page = search_until(driver, stack, dead, r"replayed at [\s\S]*: applied|"
                                                 r"applied[\s\S]*replayed at")
        assert "dead-lettered: stock" in page
        driver.save_screenshot(str(screenshots / "search-replayed.png"))
        assert dead_letter_row(driver, stack, sku) is None
        driver.get(f"{stack.console}/audit")
        assert re.search(rf"ana \(operator\).*replay.*inventory.*{dead}.*replayed 1",
                         text(driver))
        driver.save_screenshot(str(screenshots / "audit.png"))


class TestRefused:
    def test_viewer_cannot_replay(self, driver, stack):
        """A viewer sees no Dead letters link and no Send test payload button, gets 403 on
        the dead letters page, and a replay posted with the viewer's own valid CSRF token is
        403 too: the dead letter stays."""
        sku = f"BROWSER-{uuid.uuid4().hex[:6].upper()}"
        log_in(driver, stack, "ana")
        dead = bury_stock_change(driver, stack, sku)
        log_in(driver, stack, "bo")
        assert "bo (viewer)" in text(driver)
        assert not driver.find_elements(By.LINK_TEXT, "Dead letters")
        form = source_form(driver, stack, "shopify")
        assert not form.find_elements(By.XPATH, ".//button[text()='Send test payload']")
        driver.get(f"{stack.console}/dead-letters?queue=inventory")
        assert "forbidden: only an operator" in text(driver)
        driver.get(f"{stack.console}/")
        leaving(driver)
        # The replay form an operator would have, built in this page with its CSRF token.
        driver.execute_script("""
            const form = document.createElement('form');
            form.method = 'post'; form.action = '/dead-letters/replay';
            const fields = {csrf: document.querySelector('input[name=csrf]').value,
                            queue: 'inventory', id: arguments[0]};
            for (const [name, value] of Object.entries(fields)) {
              const input = document.createElement('input');
              input.type = 'hidden'; input.name = name; input.value = value;
              form.appendChild(input);
            }
            document.body.appendChild(form); form.submit();""", dead)
        arrived(driver)
        assert driver.current_url.endswith("/dead-letters/replay")
        assert "forbidden: only an operator" in text(driver)
        log_in(driver, stack, "ana")
        assert dead_letter_row(driver, stack, sku) is not None

    def test_action_without_csrf_token_refused(self, driver, stack):
        """The replay form with its CSRF token emptied is refused (csrf_token_invalid), and
        nothing is replayed."""
        sku = f"BROWSER-{uuid.uuid4().hex[:6].upper()}"
        log_in(driver, stack, "ana")
        bury_stock_change(driver, stack, sku)
        row = dead_letter_row(driver, stack, sku)
        assert row is not None
        button = row.find_element(By.XPATH, ".//button[text()='Replay']")
        driver.execute_script(
            "arguments[0].form.querySelector('input[name=csrf]').value = ''", button)
        click(driver, button)
        page = text(driver)
        assert "csrf_token_invalid" in page and "reload the page" in page
        assert dead_letter_row(driver, stack, sku) is not None
        driver.get(f"{stack.console}/audit")
        assert sku not in text(driver)


class TestSubscriptions:
    def test_an_operator_tests_disables_and_enables_a_subscription(self, driver, stack,
                                                                  screenshots):
        """Subscriptions lists both; storefront-stock shows the delivery of a stock change
        with its status and latency; Send test notification shows the subscriber's 204;
        Disable and Enable change its state; each action is on the Audit page."""
        sku = f"BROWSER-{uuid.uuid4().hex[:6].upper()}"
        assert 202 == stack.post("inventory", inventory(sku, f"inv-{sku}-subs",
                                                        "2026-11-29T10:00:00Z", on_hand=7))
        log_in(driver, stack, "ana")
        driver.get(f"{stack.console}/subscriptions")
        page = text(driver)
        assert "customer-portal" in page and "storefront-stock" in page
        driver.save_screenshot(str(screenshots / "subscriptions.png"))

        def one() -> str:
            driver.get(f"{stack.console}/subscriptions/one?name=storefront-stock")
            return text(driver)

        wait_until(lambda: re.search(rf"stock\.changed \d+ HTTP 204 \d+ ms .*{sku}", one()),
                   f"the delivery of {sku}'s stock change listed with its latency")
        click(driver, driver.find_element(By.XPATH, "//button[text()='Send test notification']"))
        results = driver.find_elements(By.ID, "result")
        assert results, text(driver)
        assert re.search(r"Test notification test_\w+: HTTP 204 in \d+ ms", results[0].text)
        driver.save_screenshot(str(screenshots / "subscription.png"))
        click(driver, driver.find_element(By.XPATH, "//button[text()='Disable']"))
        assert re.search(r"State\s+disabled", text(driver))
        click(driver, driver.find_element(By.XPATH, "//button[text()='Enable']"))
        assert re.search(r"State\s+enabled", text(driver))
        driver.get(f"{stack.console}/audit")
        audit = text(driver)
        for action in ("test-notification", "disable", "enable"):
            assert re.search(rf"ana \(operator\) {action} storefront-stock", audit), action


class TestLive:
    def test_overview_counters_move_without_a_reload(self, driver, stack, screenshots):
        """The Overview's counters follow what happens: a stock change posted to the
        ingress (not through the console) shows in inventory's accepted count, and once it
        is dead-lettered in the inventory queue's dead count, on the page as it stays open."""
        log_in(driver, stack, "ana")

        def counts() -> tuple[int, int]:
            """Inventory's accepted and dead counts, read in one script: live.js replaces
            the cells every few seconds, so an element found first could be gone when read."""
            found = driver.execute_script(
                "return [\"tr[data-source='inventory'] td.accepted\","
                " \"tr[data-queue='inventory'] td.dead\"]"
                ".map(s => document.querySelector(s).textContent.trim())")
            return int(found[0]), int(found[1])

        before = counts()
        driver.execute_script("window.notReloaded = true")
        sku = f"BROWSER-{uuid.uuid4().hex[:6].upper()}"
        assert 202 == stack.post("inventory", inventory(sku, f"inv-{sku}-live",
                                                        "2026-11-29T10:00:00Z", delta=-1))
        WebDriverWait(driver, WAIT).until(
            lambda d: counts() == (before[0] + 1, before[1] + 1))
        assert driver.execute_script("return window.notReloaded") is True
        assert "live" in driver.execute_script(
            "return document.getElementById('live-state').textContent")
        driver.set_window_size(390, 844)  # a phone
        try:
            driver.get(f"{stack.console}/")
            driver.save_screenshot(str(screenshots / "overview-phone.png"))
        finally:
            driver.set_window_size(1280, 900)


def test_chromium_answers(driver):
    """The browser itself: a page it renders (so a broken install fails here first)."""
    try:
        driver.get("data:text/html,<title>ok</title><p>rendered</p>")
    except WebDriverException as exc:  # pragma: no cover - what a broken install says
        pytest.fail(f"chromium did not render a page: {exc}")
    assert "ok" == driver.title
