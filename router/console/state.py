"""The console app's typed state and per-request values, shared by its wiring and pages."""

from __future__ import annotations

import aiohttp
import jinja2
from aiohttp import web

from router.broker.counts import QueueCounter
from router.console.auth import LoginThrottle, PasswordChecks
from router.console.logouts import Logouts
from router.console.session import Session, SessionCodec
from router.console.settings import ConsoleUser
from router.console.shared import SharedStore
from router.logs import Redactor
from router.network import ClientAddress
from router.schemas import SchemaRegistry
from router.settings import Settings
from router.sources import Source

SETTINGS = web.AppKey("settings", Settings)
CODEC = web.AppKey("codec", SessionCodec)
THROTTLE = web.AppKey("throttle", LoginThrottle)
PASSWORD_CHECKS = web.AppKey("password_checks", PasswordChecks)
CLIENTS = web.AppKey("clients", ClientAddress)  # [console] trusted_proxies
MASK = web.AppKey("mask", Redactor)
TEMPLATES = web.AppKey("templates", jinja2.Environment)
HTTP = web.AppKey("http", aiohttp.ClientSession)
LOGOUTS = web.AppKey("logouts", Logouts)
# The one broker connection and one store connection the Overview reads through.
COUNTER = web.AppKey("counter", QueueCounter)
SHARED_STORE = web.AppKey("shared_store", SharedStore)
# The schemas and sources as the ingress builds them (for the mapping preview).
SOURCES: web.AppKey[tuple[SchemaRegistry, dict[str, Source]]] = web.AppKey("sources")
SESSION: web.RequestKey[Session | None] = web.RequestKey("session")
USER: web.RequestKey[ConsoleUser | None] = web.RequestKey("user")


def wants_json(request: web.Request) -> bool:
    """/api/ answers JSON, and so does any request that asks for it over HTML."""
    accept = request.headers.get("Accept", "")
    return request.path.startswith("/api/") or (
        "application/json" in accept and "text/html" not in accept)


def user_of(request: web.Request) -> ConsoleUser:
    """The logged-in user of a route past its role check (app.ROUTES says whose it is)."""
    user = request[USER]
    if user is None:  # the session middleware lets no one else past but to /login
        raise RuntimeError(f"{request.path} reached without a user")
    return user
