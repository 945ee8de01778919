"""A mistake anywhere in the configuration (router.toml, a mapping, a schema, a secret, a
certificate) ends every command of `webhook-router` and `python -m consumers` with the one
line `configuration error: FILE: KEY: PROBLEM` and exit 2, never a traceback."""

from __future__ import annotations

import shutil
import signal
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from consumers import cli as consumers_cli
from router import cli as router_cli

ROOT = Path(__file__).resolve().parents[2]
TEST_ENV = {
    "SHOPIFY_WEBHOOK_SECRET": "shpss_test", "WOOCOMMERCE_WEBHOOK_SECRET": "wc",
    "PORTAL_WEBHOOK_TOKEN": "portal", "INVENTORY_WEBHOOK_SECRET": "inventory",
    "EASYPOST_WEBHOOK_SECRET": "easypost", "AFTERSHIP_WEBHOOK_SECRET": "aftership",
    "AMQP_URL": "amqp://guest:guest@127.0.0.1:5672/",
}
Mistake = Callable[[Path], None]


def replace(name: str, old: str, new: str) -> Mistake:
    def mistake(config: Path) -> None:
        path = config / name
        text = path.read_text()
        assert old in text, (name, old)
        path.write_text(text.replace(old, new, 1))
    return mistake


def remove(name: str) -> Mistake:
    def mistake(config: Path) -> None:
        path = config / name
        shutil.rmtree(path) if path.is_dir() else path.unlink()
    return mistake


def write(name: str, data: bytes) -> Mistake:
    def mistake(config: Path) -> None:
        (config / name).write_bytes(data)
    return mistake


def tls_pair_not_pem(config: Path) -> None:
    (config / "tls.crt").write_text("not a certificate")
    (config / "tls.key").write_text("not a key")
    replace("router.toml", '# tls_cert = "/etc/webhook-router/tls.crt"',
            'tls_cert = "tls.crt"\ntls_key = "tls.key"')(config)


def folder_for_file(config: Path) -> None:
    (config / "router.toml").unlink()
    (config / "router.toml").mkdir()


# (what is wrong, the file it names, the key it names, the mistake)
MISTAKES = [
    ("an event type with no mapping", "router.toml", "sources.shopify.events",
     replace("router.toml", '"orders/create" = "order.created"',
             '"orders/create" = "order.nothing"')),
    ("a schema file missing", "mappings/shopify.toml", "order.cancelled",
     remove("schemas/shopify.order.v1.json")),
    ("the schemas folder missing", "schemas", "(file)", remove("schemas")),
    ("a schema that is not JSON", "schemas/order.v1.json", "(json)",
     write("schemas/order.v1.json", b"{nope")),
    ("a mapping that is not TOML", "mappings/shopify.toml", "(toml)",
     write("mappings/shopify.toml", b"[order\n")),
    ("a mapping path that does not compile", "mappings/shopify.toml",
     "order.fields.order_id.path",
     replace("mappings/shopify.toml", 'order_id = { path = "id",', 'order_id = { path = "id[[*",')),
    ("a mapping conversion that does not exist", "mappings/shopify.toml",
     "order.fields.order_id.as",
     replace("mappings/shopify.toml", 'path = "id", as = "str"', 'path = "id", as = "nope"')),
    ("a scheme option that does not exist", "router.toml", "sources.shopify.options.foo",
     replace("router.toml", 'scheme = "shopify"', 'scheme = "shopify"\noptions = { foo = 1 }')),
    ("a bad type in a subscription", "router.toml", "subscriptions.customer-portal.timeout",
     replace("router.toml", "timeout = 15", 'timeout = "fast"')),
    ("a retry rung longer than RabbitMQ's longest TTL", "router.toml",
     "notifications.retry_ladder",
     replace("router.toml", "retry_ladder = [5, 300,", "retry_ladder = [5000000, 300,")),
    ("a broker URL with a broken IPv6 host", "router.toml", "broker.url",
     replace("router.toml", "[broker]\n", '[broker]\nurl = "amqp://[::1/"\n')),
    ("a broker URL with a port out of range", "router.toml", "broker.url",
     replace("router.toml", "[broker]\n", '[broker]\nurl = "amqp://host:99999/"\n')),
    ("a TLS pair that is not PEM", "router.toml", "server.tls_cert", tls_pair_not_pem),
    ("a rejections buffer below 0", "router.toml", "server.rejections_kept",
     replace("router.toml", "rejections_kept = 100", "rejections_kept = -1")),
    ("a sample file missing", "router.toml", "sources.shopify.sample",
     remove("samples/shopify-orders-create.json")),
    ("a label rate rule that is no CARRIER:SERVICE", "router.toml", "labels.allowed",
     replace("router.toml", 'allowed = ["USPS", "UPS:Ground"]', 'allowed = ["UPS:"]')),
    ("a config file that is a folder", "router.toml", "-", folder_for_file),
    ("a config file that is not UTF-8", "router.toml", "-", write("router.toml", b"\xff[x]\n")),
]
COMMANDS = [
    ("webhook-router serve", router_cli.main, ["serve", "--port", "0"]),
    ("webhook-router sign", router_cli.main, ["sign", "shopify", "--file", "/dev/null"]),
    ("webhook-router send-test", router_cli.main, ["send-test", "shopify"]),
    ("python -m consumers all", consumers_cli.main, ["all", "--port", "0"]),
    ("python -m consumers orders", consumers_cli.main, ["orders"]),
    ("python -m consumers labels", consumers_cli.main, ["labels"]),
    ("webhook-router labels", router_cli.main, ["labels", "show", "1"]),
]


@pytest.fixture
def accepted_is_a_failure(monkeypatch) -> Iterator[None]:
    """A configuration accepted by mistake fails the test at once instead of starting a
    server or a consumer; consumers' main() takes SIGTERM over, and gets it back."""

    def started(*args: object, **kwargs: object) -> None:
        for arg in args:
            getattr(arg, "close", lambda: None)()  # the coroutine never run
        raise AssertionError("the configuration was accepted")

    monkeypatch.setattr(router_cli.asyncio, "run", started)
    monkeypatch.setattr("router.serve.serve", started)
    monkeypatch.setattr(consumers_cli, "configure_logging", lambda *args: None)
    before = signal.getsignal(signal.SIGTERM)
    yield
    signal.signal(signal.SIGTERM, before)


@pytest.mark.parametrize(("what", "file", "key", "mistake"), MISTAKES,
                         ids=[m[0] for m in MISTAKES])
@pytest.mark.parametrize(("command", "main", "args"), COMMANDS, ids=[c[0] for c in COMMANDS])
def test_one_line_and_exit_2(what, file, key, mistake, command, main, args, tmp_path,
                             monkeypatch, capsys, accepted_is_a_failure):
    """The mistake is named in one line (file: key: problem) with exit 2."""
    for name, value in TEST_ENV.items():
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("DATABASE_URL", raising=False)
    config = tmp_path / "config"
    shutil.copytree(ROOT / "config", config)
    mistake(config)
    code = main(["--config", str(config / "router.toml"), *args])
    err = capsys.readouterr().err
    assert (2, 1) == (code, len(err.strip().splitlines())), err
    assert err.startswith(f"configuration error: {config / file}: {key}: "), err
