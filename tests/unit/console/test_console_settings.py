"""[console] loads into ConsoleSettings, or None when absent; every mistake names its key."""

from __future__ import annotations

from pathlib import Path

import pytest

from router.cli import main
from router.console.auth import hash_password
from router.errors import ConfigError
from router.settings import load_settings

SHIPPED = Path(__file__).resolve().parents[3] / "config" / "router.toml"
SECRET = "s" * 32
HASH = hash_password("correct horse")
SOURCE = """
[sources.shop]
scheme = "shopify"
secrets = ["env:S1"]
mapping = "m.toml"
[sources.shop.events]
"orders/create" = "order.created"
"""
CONSOLE = f"""
[console]
port = 8091
session_secret = "env:CONSOLE_SECRET"
[[console.users]]
name = "ana"
role = "operator"
password_hash = "{HASH}"
[[console.users]]
name = "bo"
role = "viewer"
token = "env:BO_TOKEN"
"""
ENV = {"S1": "a", "CONSOLE_SECRET": SECRET, "BO_TOKEN": "bo-token"}


def load(tmp_path: Path, text: str, **options):
    (tmp_path / "m.toml").write_text("")
    path = tmp_path / "router.toml"
    path.write_text(text + SOURCE)
    return load_settings(path, environ=ENV, **options)


class TestConsoleSettings:
    def test_absent_means_off(self, tmp_path):
        """Without a [console] table there is no console."""
        assert None is load(tmp_path, "").console

    def test_users_roles_and_defaults(self, tmp_path):
        """Users keep their role, hash and token; host is loopback, cookies are Secure."""
        console = load(tmp_path, CONSOLE, resolve_console_secrets=True).console
        assert ("ana", "operator", HASH) == (console.users[0].name, console.users[0].role,
                                             console.users[0].password_hash)
        assert b"bo-token" == console.users[1].token
        assert SECRET.encode() == console.session_secret
        assert ("127.0.0.1", 8091, False) == (console.host, console.port, console.development)
        assert "http://127.0.0.1:8080" == console.ingress_metrics

    def test_trusted_proxies_and_password_checks(self, tmp_path):
        """No proxy is trusted and two passwords are checked at once, unless they say."""
        console = load(tmp_path, CONSOLE).console
        assert ((), 2) == (console.trusted_proxies, console.password_checks)
        text = CONSOLE.replace("port = 8091", 'port = 8091\npassword_checks = 1\n'
                                              'trusted_proxies = ["10.0.0.0/8", "::1"]')
        console = load(tmp_path, text).console
        assert (("10.0.0.0/8", "::1"), 1) == (console.trusted_proxies, console.password_checks)

    def test_ingress_metrics_default_follows_server(self, tmp_path):
        """The ingress's rejections are read on [server] metrics_port by default."""
        text = "[server]\nmetrics_port = 9100\n" + CONSOLE
        assert "http://127.0.0.1:9100" == load(tmp_path, text).console.ingress_metrics

    def test_ingress_url_default_follows_server_port(self, tmp_path):
        """Send test payload posts to [server] port on loopback unless ingress_url says."""
        text = '[server]\nport = 8181\nmetrics_port = 9100\nhost = "0.0.0.0"\n' + CONSOLE
        assert "http://127.0.0.1:8181" == load(tmp_path, text).console.ingress_url
        text = CONSOLE.replace("port = 8091", 'port = 8091\ningress_url = "https://in.example/"')
        assert "https://in.example" == load(tmp_path, text).console.ingress_url

    def test_secrets_wait_for_the_console(self, tmp_path):
        """Other commands load the settings without the console's secrets."""
        text = CONSOLE.replace("env:CONSOLE_SECRET", "env:UNSET_SECRET")
        assert b"" == load(tmp_path, text).console.session_secret

    def test_repr_hides_hashes_and_tokens(self, tmp_path):
        """A settings object printed in a traceback shows no hash and no token."""
        console = load(tmp_path, CONSOLE, resolve_console_secrets=True).console
        assert "argon2" not in repr(console) and "bo-token" not in repr(console.users[1])

    @pytest.mark.parametrize(("old", "new", "key", "problem"), [
        ('role = "viewer"', 'role = "admin"', "console.users[1].role", "must be one of"),
        (f'password_hash = "{HASH}"', 'password_hash = "plain"', "console.users[0].password_hash",
         "not an argon2 hash"),
        ('token = "env:BO_TOKEN"', "", "console.users[1].password_hash", "give a password_hash"),
        ('name = "bo"', 'name = "ana"', "console.users[1].name", "named twice"),
        ("port = 8091", "port = 0", "console.port", "between 1 and 65535"),
        ('session_secret = "env:CONSOLE_SECRET"', 'session_secret = "inline"',
         "console.session_secret", "references"),
        ('session_secret = "env:CONSOLE_SECRET"', 'session_secret = "env:S1"',
         "console.session_secret", "at least 32 bytes"),
        ("port = 8091", 'port = 8091\ningress_url = "127.0.0.1:8080"', "console.ingress_url",
         "must be an http:// or https:// URL"),
        ("port = 8091", "port = 8091\nsesion_lifetime = 60", "console.sesion_lifetime",
         "unknown setting"),
        ("port = 8091", 'port = 8091\ntrusted_proxies = ["10.0.0.0/33"]',
         "console.trusted_proxies", "'10.0.0.0/33' is not an IP address or CIDR"),
        ("port = 8091", 'port = 8091\ntrusted_proxies = "10.0.0.0/8"',
         "console.trusted_proxies", "must be list"),
        ("port = 8091", "port = 8091\npassword_checks = 0", "console.password_checks",
         "greater than 0"),
    ])
    def test_mistakes_name_the_key(self, tmp_path, old, new, key, problem):
        """A wrong value fails at load time as `file: key: problem`."""
        with pytest.raises(ConfigError) as caught:
            load(tmp_path, CONSOLE.replace(old, new), resolve_console_secrets=True)
        assert key in str(caught.value) and problem in str(caught.value)

    def test_no_users_is_refused(self, tmp_path):
        """A console nobody can log in to is a mistake."""
        text = '[console]\nsession_secret = "env:CONSOLE_SECRET"\n'
        with pytest.raises(ConfigError, match="console.users"):
            load(tmp_path, text)


def test_console_command_without_the_table_exits_2(capsys, monkeypatch, test_env):
    """`webhook-router console` where [console] is absent says the console is off."""
    for name, value in test_env.items():  # it signs test payloads: it reads source secrets
        monkeypatch.setenv(name, value)
    assert 2 == main(["console", "--config", str(SHIPPED)])
    assert "console: no [console] table: the console is off" in capsys.readouterr().err
