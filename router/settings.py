"""Settings: `config/router.toml` read once at start-up into frozen dataclasses.

Every problem is a ConfigError naming the file, the key and what is wrong, raised
when the settings are loaded, never when they are first used.
"""

from __future__ import annotations

import dataclasses
import fnmatch
import os
import re
import ssl
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from router.broker_settings import BrokerSettings, read_broker
from router.config_table import Table as _Table
from router.config_table import check_cidrs as _check_cidrs
from router.config_table import non_negative as _non_negative
from router.config_table import path_in as _path
from router.config_table import relative as _relative
from router.config_table import retry_ladder as _ladder
from router.console.settings import ConsoleSettings, read_console
from router.errors import ConfigError
from router.label_settings import LabelSettings, read_labels
from router.providers import PROVIDERS, Provider
from router.secrets import resolve_secret
from router.storefront_settings import StorefrontSettings, read_storefront

DEFAULT_CONFIG = Path("config/router.toml")
ON_INVALID = ("hold", "reject")
MiB = 1024 * 1024
# Per source; each worker writes all it keeps to a file every half second while refusing.
MAX_REJECTIONS_KEPT = 10_000
# Who may read /metrics and /rejections unless `metrics_allow` says otherwise: this machine.
LOOPBACK = ("127.0.0.0/8", "::1")

@dataclass(frozen=True)
class RateLimit:
    """Token bucket per client: `rate` requests per second, bursts up to `burst`."""

    rate: float
    burst: int


@dataclass(frozen=True)
class SourceSettings:
    name: str
    path: str
    scheme: str
    secrets: tuple[bytes, ...]
    options: Mapping[str, Any]
    mapping: Path
    events: Mapping[str, str]  # provider topic -> canonical event type
    topic_header: str | None = None
    topic_field: str | None = None
    event_type: str | None = None  # a fixed type, for sources that post one kind of event
    id_headers: tuple[str, ...] = ()
    id_field: str | None = None
    occurred_at_header: str | None = None
    content_types: tuple[str, ...] = ("application/json",)
    allow_ips: tuple[str, ...] = ()
    rate_limit: RateLimit | None = None
    max_body: int = MiB
    body_timeout: float = 30.0  # seconds to receive the whole body (408 after)
    include_raw: bool = False
    sample: Path | None = None  # a payload for `send-test`
    on_invalid: str = "reject"  # "hold": accept and hold an authentic unmappable delivery


@dataclass(frozen=True)
class ServerSettings:
    host: str = "0.0.0.0"
    port: int = 8080
    workers: int = 1
    max_depth: int = 32
    trusted_proxies: tuple[str, ...] = ()
    shutdown_timeout: float = 30.0
    dedup_window: float = 24 * 3600.0
    dedup_capacity: int = 100_000
    max_connections: int = 1000  # open connections per process; beyond, 503 and close
    header_timeout: float = 10.0  # seconds for a connection's request line and headers (408)
    tls_cert: Path | None = None
    tls_key: Path | None = None
    schemas: Path = Path("config/schemas")
    metrics_port: int | None = None  # /metrics and /rejections there only, not on `port`
    metrics_allow: tuple[str, ...] = LOOPBACK  # CIDRs that may read them
    rejections_kept: int = 100  # refused requests kept per source for /rejections; 0: none


@dataclass(frozen=True)
class LoggingSettings:
    level: str = "info"
    pii_fields: tuple[str, ...] = (
        "email",
        "phone",
        "address",
        "shipping_address",
        "billing_address",
        "name",
        "first_name",
        "last_name",
    )


@dataclass(frozen=True)
class ConsumerSettings:
    store: str = "sqlite:///data/router.sqlite3"  # DATABASE_URL, when set, wins
    prefetch: int = 100
    concurrency: int = 1
    partial_allocation: bool = False
    unpaid_expiry: float = 3 * 24 * 3600.0  # seconds an unpaid order keeps its stock; 0: ever


# What the consumers announce (outbox kinds); subscriptions choose among them.
NOTIFICATION_TYPES = (
    "order.allocated",
    "order.partially_allocated",
    "order.backordered",
    "order.on_hold",
    "order.ready_to_ship",
    "order.label_purchased",
    "order.completed",
    "order.expired",
    "order.refunded",
    "order.cancelled",
    "stock.changed",
    "shipment.updated",
    "shipment.label_created",
)
# Headers a subscription may not set: the signature's, and what HTTP itself decides.
RESERVED_HEADERS = frozenset({
    "webhook-id", "webhook-timestamp", "webhook-signature", "content-type", "content-length",
    "host", "transfer-encoding", "connection",
})


@dataclass(frozen=True)
class NotificationSettings:
    mode: str = "production"  # production: https only; development: http to loopback too
    retry_ladder: tuple[int, ...] = (5, 300, 1800, 7200, 18000, 36000, 36000)
    pause_after: int = 20  # consecutive failures ...
    pause_window: float = 300.0  # ... spanning at least this many seconds pause a subscription
    max_response_bytes: int = 4096
    concurrency: int = 8  # deliveries in flight per subscription


@dataclass(frozen=True)
class SubscriptionSettings:
    name: str
    url: str
    events: tuple[str, ...]
    secrets: tuple[bytes, ...] = ()
    headers: Mapping[str, str] = field(default_factory=dict)
    timeout: float = 15.0
    rate_limit: RateLimit | None = None
    enabled: bool = True
    allow_private: bool = False

    def wants(self, event_type: str) -> bool:
        """True if one of `events` (`*` matches anything, `shipment.*` one family) matches."""
        return any(fnmatch.fnmatchcase(event_type, pattern) for pattern in self.events)


@dataclass(frozen=True)
class Settings:
    file: Path
    server: ServerSettings = field(default_factory=ServerSettings)
    broker: BrokerSettings = field(default_factory=BrokerSettings)
    logging: LoggingSettings = field(default_factory=LoggingSettings)
    consumers: ConsumerSettings = field(default_factory=ConsumerSettings)
    notifications: NotificationSettings = field(default_factory=NotificationSettings)
    subscriptions: Mapping[str, SubscriptionSettings] = field(default_factory=dict)
    sources: Mapping[str, SourceSettings] = field(default_factory=dict)
    console: ConsoleSettings | None = None  # None: the console is off
    labels: LabelSettings = field(default_factory=LabelSettings)
    storefront: StorefrontSettings = field(default_factory=StorefrontSettings)


def local_url(server: ServerSettings, *, metrics: bool = False) -> str:
    """The ingress's base URL as seen from its own machine (loopback where it listens on
    every address): its port, or with `metrics` where /metrics and /rejections are."""
    host = "127.0.0.1" if server.host in ("0.0.0.0", "::") else server.host
    scheme = "https" if server.tls_cert else "http"
    port = server.metrics_port or server.port if metrics else server.port
    return f"{scheme}://{f'[{host}]' if ':' in host else host}:{port}"


def load_settings(
    path: Path | str = DEFAULT_CONFIG,
    environ: Mapping[str, str] | None = None,
    *,
    resolve_secrets: bool = True,
    resolve_subscription_secrets: bool | None = None,
    resolve_console_secrets: bool = False,
    resolve_carrier_secrets: bool = False,
    resolve_store_secrets: bool = False,
) -> Settings:
    """Read and check the whole configuration, resolving secret references.

    `resolve_secrets=False` leaves sources without secrets, for commands that only talk to
    the broker (topology) and should not need the webhook secrets;
    `resolve_subscription_secrets` (default: the same) does so for the outbound subscriptions;
    the [console] secrets are resolved only for the console (`resolve_console_secrets`);
    the [labels] carrier key only for those that call the carrier (`resolve_carrier_secrets`).
    """
    if resolve_subscription_secrets is None:
        resolve_subscription_secrets = resolve_secrets
    path = Path(path)
    file = str(path)
    try:
        with path.open("rb") as fh:
            raw = tomllib.load(fh)
    except FileNotFoundError as exc:
        raise ConfigError(file, "-", "file not found") from exc
    except OSError as exc:  # a folder, no permission
        raise ConfigError(file, "-", f"cannot be read: {exc.strerror}") from exc
    except UnicodeDecodeError as exc:
        raise ConfigError(file, "-", f"not valid TOML: not UTF-8 (byte {exc.start})") from exc
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(file, "-", f"not valid TOML: {exc}") from exc
    env = os.environ if environ is None else environ
    base = path.parent
    top = _Table(raw, file, "")
    server = _server(top.table("server"), base)
    broker = read_broker(top.table("broker"), base, env)
    logging = _logging(top.table("logging"))
    consumers = _consumers(top.table("consumers"), env)
    notifications = _notifications(top.table("notifications"))
    subscriptions_table = top.table("subscriptions")
    subscriptions = {
        name: _subscription(name, subscriptions_table.table(name), base, env,
                            resolve_subscription_secrets, notifications.mode)
        for name in subscriptions_table.data
    }
    subscriptions_table.done()
    sources_table = top.table("sources")
    sources: dict[str, SourceSettings] = {}
    paths: dict[str, str] = {}
    for name in sources_table.data:
        source = _source(name, sources_table.table(name), base, env, resolve_secrets)
        if source.path in paths:
            raise sources_table.error(
                f"{name}.path", f"{source.path} is already used by source {paths[source.path]}"
            )
        paths[source.path] = name
        sources[name] = source
    sources_table.done()
    console = read_console(top.table("console"), base, env, local_url(server, metrics=True),
                           resolve_console_secrets, local_url(server))
    labels = read_labels(top.table("labels"), base, env, resolve_carrier_secrets)
    storefront = read_storefront(top.table("storefront"), base, env, resolve_store_secrets)
    # Their queues exist only while their consumers are on.
    optional = tuple(name for name, on in (("labels", labels.enabled),
                                           ("storefront", storefront.enabled)) if on)
    ladders = (("labels", labels.retry_ladder), ("storefront", storefront.retry_ladder))
    broker = dataclasses.replace(broker, optional_queues=optional, ladders=ladders)
    top.done()
    return Settings(file=path, server=server, broker=broker, logging=logging,
                    consumers=consumers, notifications=notifications,
                    subscriptions=subscriptions, sources=sources, console=console,
                    labels=labels, storefront=storefront)


def _server(t: _Table, base: Path) -> ServerSettings:
    d = ServerSettings()
    tls_cert = _relative(base, t.get("tls_cert", str))
    tls_key = _relative(base, t.get("tls_key", str))
    if (tls_cert is None) != (tls_key is None):
        raise t.error("tls_cert", "tls_cert and tls_key go together")
    for name, p in (("tls_cert", tls_cert), ("tls_key", tls_key)):
        if p is not None and not p.is_file():
            raise t.error(name, f"file {p} does not exist")
    if tls_cert is not None and tls_key is not None:
        _check_tls(t, tls_cert, tls_key)
    port = t.get("port", int, d.port)
    if not 0 <= port <= 65535:
        raise t.error("port", "must be between 0 and 65535")
    metrics_port = t.get("metrics_port", int, None)
    if metrics_port is not None and not 1 <= metrics_port <= 65535:
        raise t.error("metrics_port", "must be between 1 and 65535")
    if metrics_port is not None and metrics_port == port:
        raise t.error("metrics_port", "must differ from port")
    rejections_kept = t.get("rejections_kept", int, d.rejections_kept)
    if not 0 <= rejections_kept <= MAX_REJECTIONS_KEPT:
        raise t.error("rejections_kept", f"must be between 0 (none) and {MAX_REJECTIONS_KEPT}")
    s = ServerSettings(
        host=t.get("host", str, d.host),
        port=port,
        workers=t.positive("workers", int, d.workers),
        max_depth=t.positive("max_depth", int, d.max_depth),
        trusted_proxies=t.strings("trusted_proxies"),
        shutdown_timeout=t.positive("shutdown_timeout", float, d.shutdown_timeout),
        dedup_window=t.positive("dedup_window", float, d.dedup_window),
        dedup_capacity=t.positive("dedup_capacity", int, d.dedup_capacity),
        max_connections=t.positive("max_connections", int, d.max_connections),
        header_timeout=t.positive("header_timeout", float, d.header_timeout),
        tls_cert=tls_cert,
        tls_key=tls_key,
        schemas=_path(base, t.get("schemas", str, "schemas")),
        metrics_port=metrics_port,
        metrics_allow=t.strings("metrics_allow", d.metrics_allow),
        rejections_kept=rejections_kept,
    )
    _check_cidrs(t, "trusted_proxies", s.trusted_proxies)
    _check_cidrs(t, "metrics_allow", s.metrics_allow)
    if not s.metrics_allow:  # it used to mean anyone: say what to write instead
        raise t.error("metrics_allow", 'an empty list lets nobody read /metrics; leave it out '
                                       'for loopback only, or write ["0.0.0.0/0", "::/0"] for '
                                       "anyone")
    t.done()
    return s


def _check_tls(t: _Table, cert: Path, key: Path) -> None:
    """Load the pair as serving will, so a wrong file is named now, not as a traceback then."""

    def no_password() -> bytes:
        raise ValueError("an encrypted key needs a password; give an unencrypted key file")

    try:
        ssl.create_default_context(ssl.Purpose.CLIENT_AUTH).load_cert_chain(
            cert, key, password=no_password)
    except (ssl.SSLError, OSError, ValueError) as exc:
        reason = getattr(exc, "reason", None) or str(exc)
        raise t.error("tls_cert", f"{cert} and {key} are not a PEM certificate and its key: "
                                  f"{reason}") from exc


def _logging(t: _Table) -> LoggingSettings:
    d = LoggingSettings()
    level = t.get("level", str, d.level).lower()
    if level not in ("debug", "info", "warning", "error"):
        raise t.error("level", "must be one of debug, info, warning, error")
    s = LoggingSettings(level=level, pii_fields=t.strings("pii_fields", d.pii_fields))
    t.done()
    return s


def _consumers(t: _Table, env: Mapping[str, str]) -> ConsumerSettings:
    d = ConsumerSettings()
    configured = t.get("store", str, d.store)
    store = env.get("DATABASE_URL") or configured
    if not store.startswith(("sqlite://", "postgresql://", "postgres://")):
        raise t.error("store", "must be a sqlite:///PATH or postgresql:// URL")
    s = ConsumerSettings(
        store=store,
        prefetch=t.positive("prefetch", int, d.prefetch),
        concurrency=t.positive("concurrency", int, d.concurrency),
        partial_allocation=t.get("partial_allocation", bool, d.partial_allocation),
        unpaid_expiry=_non_negative(t, "unpaid_expiry", d.unpaid_expiry),
    )
    t.done()
    return s


def _rate_limit(t: _Table) -> RateLimit | None:
    if t.get("rate_limit", dict) is None:
        return None
    rt = t.table("rate_limit")
    rate = rt.positive("rate", float, None)
    if rate is None:
        raise rt.error("rate", "is required")
    limit = RateLimit(rate=rate, burst=rt.positive("burst", int, max(1, int(rate))))
    rt.done()
    return limit


def _notifications(t: _Table) -> NotificationSettings:
    d = NotificationSettings()
    mode = t.get("mode", str, d.mode)
    if mode not in ("production", "development"):
        raise t.error("mode", "must be production or development")
    s = NotificationSettings(
        mode=mode,
        retry_ladder=_ladder(t, d.retry_ladder),
        pause_after=t.positive("pause_after", int, d.pause_after),
        pause_window=t.positive("pause_window", float, d.pause_window),
        max_response_bytes=t.positive("max_response_bytes", int, d.max_response_bytes),
        concurrency=t.positive("concurrency", int, d.concurrency),
    )
    t.done()
    return s


def _subscription(
    name: str, t: _Table, base: Path, env: Mapping[str, str], resolve_secrets: bool, mode: str
) -> SubscriptionSettings:
    from router.egress import UnsafeURL, check_url

    if not re.fullmatch(r"[a-z0-9][a-z0-9_-]{0,62}", name):
        raise t.error("", "a subscription name is 1-63 of a-z, 0-9, _ and -")
    url = t.require("url", str)
    allow_private = t.get("allow_private", bool, False)
    try:
        check_url(url, mode=mode, allow_private=allow_private)
    except UnsafeURL as exc:
        raise t.error("url", str(exc)) from exc
    events = t.strings("events")
    if not events:
        raise t.error("events", "name at least one notification type, e.g. \"shipment.*\"")
    for pattern in events:
        if not any(fnmatch.fnmatchcase(kind, pattern) for kind in NOTIFICATION_TYPES):
            raise t.error("events", f"{pattern!r} matches no notification type "
                                    f"({', '.join(NOTIFICATION_TYPES)})")
    refs = t.get("secrets", list, [])
    if not refs:
        raise t.error("secrets", "at least one whsec_ secret reference is required")
    enabled = t.get("enabled", bool, True)
    secrets = tuple(  # a subscription switched off in the file needs no secret yet
        resolve_secret(ref, file=t.file, key=f"{t.key}.secrets[{i}]", base=base, environ=env)
        for i, ref in enumerate(refs)
        if resolve_secrets and enabled
    )
    headers = t.get("headers", dict, {})
    for header, value in headers.items():
        if not isinstance(value, str):
            raise t.error(f"headers.{header}", "must be a string")
        if header.lower() in RESERVED_HEADERS:
            raise t.error(f"headers.{header}", "is set by the router and cannot be overridden")
    if secrets:
        from router.verify.standard_webhooks import signer

        signer(secrets, file=t.file, key=t.key)  # each must be a whsec_ key
    s = SubscriptionSettings(
        name=name,
        url=url,
        events=events,
        secrets=secrets,
        headers=dict(headers),
        timeout=t.positive("timeout", float, 15.0),
        rate_limit=_rate_limit(t),
        enabled=enabled,
        allow_private=allow_private,
    )
    t.done()
    return s


def _source(
    name: str, t: _Table, base: Path, env: Mapping[str, str], resolve_secrets: bool
) -> SourceSettings:
    scheme = t.require("scheme", str)
    provider = PROVIDERS.get(scheme) or Provider(scheme, scheme, on_invalid="reject")
    refs = t.get("secrets", list, [])
    secrets = tuple(
        resolve_secret(ref, file=t.file, key=f"{t.key}.secrets[{i}]", base=base, environ=env)
        for i, ref in enumerate(refs)
        if resolve_secrets
    )
    mapping = _path(base, t.require("mapping", str))
    if not mapping.is_file():
        raise t.error("mapping", f"file {mapping} does not exist")
    sample = _relative(base, t.get("sample", str))
    if sample is not None and not sample.is_file():
        raise t.error("sample", f"file {sample} does not exist")
    events = t.get("events", dict, {})
    if not all(isinstance(k, str) and isinstance(v, str) for k, v in events.items()):
        raise t.error("events", "must map provider topics to event types (strings)")
    topic_header = t.get("topic_header", str, provider.topic_header)
    topic_field = t.get("topic_field", str, provider.topic_field)
    event_type = t.get("event_type", str)
    if event_type is None and topic_header is None and topic_field is None:
        raise t.error("event_type", "set event_type, topic_header or topic_field")
    if event_type is None and not events:
        raise t.error("events", "map at least one provider topic to an event type")
    path = t.get("path", str, f"/webhooks/{name}")
    if not path.startswith("/"):
        raise t.error("path", "must start with /")
    rate_limit = _rate_limit(t)
    content_types = tuple(c.lower() for c in t.strings("content_types", ("application/json",)))
    allow_ips = t.strings("allow_ips")
    _check_cidrs(t, "allow_ips", allow_ips)
    on_invalid = t.get("on_invalid", str, provider.on_invalid)
    if on_invalid not in ON_INVALID:
        raise t.error("on_invalid", f"must be one of {', '.join(ON_INVALID)}")
    s = SourceSettings(
        name=name,
        path=path,
        scheme=scheme,
        secrets=secrets,
        options=t.get("options", dict, {}),
        mapping=mapping,
        events=events,
        topic_header=topic_header,
        topic_field=topic_field,
        event_type=event_type,
        id_headers=t.strings("id_headers", provider.id_headers),
        id_field=t.get("id_field", str, provider.id_field),
        occurred_at_header=t.get("occurred_at_header", str, provider.occurred_at_header),
        content_types=content_types,
        allow_ips=allow_ips,
        rate_limit=rate_limit,
        max_body=t.positive("max_body", int, MiB),
        body_timeout=t.positive("body_timeout", float, 30.0),
        include_raw=t.get("include_raw", bool, False),
        sample=sample,
        on_invalid=on_invalid,
    )
    t.done()
    return s
