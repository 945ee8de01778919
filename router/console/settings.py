"""The [console] table: where the console listens and who may log in.

    [console]
    port = 8090
    host = "127.0.0.1"                 # default: loopback only
    development = false                # true: cookies without Secure (plain http on a laptop)
    session_secret = "env:CONSOLE_SESSION_SECRET"
    session_lifetime = 28800           # seconds a login lasts
    ingress_metrics = "http://127.0.0.1:9090"   # default: [server] metrics_port (or port)
    ingress_url = "http://127.0.0.1:8080"       # Send test payload: default [server] port
    trusted_proxies = ["10.0.0.0/8"]   # CIDRs whose X-Forwarded-For is believed (the client
                                       # address that failed logins are counted by)
    password_checks = 2                # argon2 checks at once (64 MiB each)

    [[console.users]]
    name = "ana"
    role = "operator"                  # or "viewer"
    password_hash = "$argon2id$..."    # `webhook-router console hash-password`
    token = "env:CONSOLE_TOKEN_ANA"    # and/or a token to log in with

Absent, the console is off (Settings.console is None).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from argon2 import extract_parameters

from router.config_table import Table, check_cidrs
from router.secrets import resolve_secret

ROLES = ("viewer", "operator")
MIN_SECRET_BYTES = 32


@dataclass(frozen=True)
class ConsoleUser:
    name: str
    role: str
    password_hash: str | None = None
    token: bytes | None = None

    def __repr__(self) -> str:  # never the hash or the token, in a traceback or a log
        return f"ConsoleUser(name={self.name!r}, role={self.role!r})"


@dataclass(frozen=True)
class ConsoleSettings:
    users: tuple[ConsoleUser, ...]
    session_secret: bytes = b""  # empty only where secrets were not resolved
    port: int = 8090
    host: str = "127.0.0.1"
    development: bool = False
    session_lifetime: float = 8 * 3600.0
    ingress_metrics: str = "http://127.0.0.1:8080"
    ingress_url: str = "http://127.0.0.1:8080"
    trusted_proxies: tuple[str, ...] = ()
    password_checks: int = 2

    def __repr__(self) -> str:
        return (f"ConsoleSettings(host={self.host!r}, port={self.port}, "
                f"users={[u.name for u in self.users]})")

    def user(self, name: str) -> ConsoleUser | None:
        return next((u for u in self.users if u.name == name), None)


def read_console(t: Table, base: Path, env: Mapping[str, str], ingress_metrics: str,
                 resolve_secrets: bool, ingress_url: str = "http://127.0.0.1:8080"
                 ) -> ConsoleSettings | None:
    """The [console] table as settings, or None when there is none (the console is off)."""
    if not t.data:
        return None
    d = ConsoleSettings(users=())
    port = t.get("port", int, d.port)
    if not 1 <= port <= 65535:
        raise t.error("port", "must be between 1 and 65535")
    ref = t.get("session_secret", str)
    if ref is None:
        raise t.error("session_secret", "is required: a secret reference like 'env:NAME'")
    secret = b""
    if resolve_secrets:
        secret = resolve_secret(ref, file=t.file, key=f"{t.key}.session_secret", base=base,
                                environ=env)
        if len(secret) < MIN_SECRET_BYTES:
            raise t.error("session_secret", f"must be at least {MIN_SECRET_BYTES} bytes "
                                            "(e.g. `openssl rand -hex 32`)")
    metrics, ingress = (_url(t, key, default) for key, default in
                        (("ingress_metrics", ingress_metrics), ("ingress_url", ingress_url)))
    entries = t.get("users", list, [])
    if not entries:
        raise t.error("users", "name at least one user ([[console.users]])")
    users = tuple(_user(Table(entry, t.file, f"{t.key}.users[{i}]"), base, env, resolve_secrets)
                  for i, entry in enumerate(entries))
    names = [u.name for u in users]
    for i, name in enumerate(names):
        if name in names[:i]:
            raise t.error(f"users[{i}].name", f"{name!r} is named twice")
    s = ConsoleSettings(
        users=users,
        session_secret=secret,
        port=port,
        host=t.get("host", str, d.host),
        development=t.get("development", bool, d.development),
        session_lifetime=t.positive("session_lifetime", float, d.session_lifetime),
        ingress_metrics=metrics,
        ingress_url=ingress,
        trusted_proxies=t.strings("trusted_proxies"),
        password_checks=t.positive("password_checks", int, d.password_checks),
    )
    check_cidrs(t, "trusted_proxies", s.trusted_proxies)
    t.done()
    return s


def _url(t: Table, key: str, default: str) -> str:
    url = t.get(key, str, default)
    if not re.match(r"https?://[^/]+", url):
        raise t.error(key, "must be an http:// or https:// URL")
    return url.rstrip("/")


def _user(t: Table, base: Path, env: Mapping[str, str], resolve_secrets: bool) -> ConsoleUser:
    name = t.require("name", str)
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.@-]{0,63}", name):
        raise t.error("name", "is 1-64 of letters, digits, _ . @ and -")
    role = t.require("role", str)
    if role not in ROLES:
        raise t.error("role", f"must be one of {', '.join(ROLES)}")
    password_hash = t.get("password_hash", str)
    if password_hash is not None:
        try:
            extract_parameters(password_hash)
        except ValueError as exc:  # argon2's InvalidHashError is one
            raise t.error("password_hash", "is not an argon2 hash (make one with "
                                           "`webhook-router console hash-password`)") from exc
    ref = t.get("token", str)
    if password_hash is None and ref is None:
        raise t.error("password_hash", "give a password_hash, a token, or both")
    token = None
    if ref is not None and resolve_secrets:
        token = resolve_secret(ref, file=t.file, key=f"{t.key}.token", base=base, environ=env)
    user = ConsoleUser(name=name, role=role, password_hash=password_hash, token=token)
    t.done()
    return user
