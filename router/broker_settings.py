"""The `[broker]` settings: where RabbitMQ is (one address, or a cluster's), how long to wait
for its confirms, the topology's names and bounds, and TLS.  Checked at start-up like every
table (ConfigError naming the file and the key).

    [broker]
    url = "amqp://guest:guest@127.0.0.1:5672/"   # default: AMQP_URL, which may hold several
    # or a cluster's nodes (each may be a secret reference, as url may):
    # urls = ["amqp://…@rabbit-1:5672/", "amqp://…@rabbit-2:5672/", "amqp://…@rabbit-3:5672/"]
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from router.config_table import Table, existing_file, retry_ladder
from router.secrets import resolve_secret

MiB = 1024 * 1024


@dataclass(frozen=True)
class BrokerSettings:
    url: str = "amqp://guest:guest@127.0.0.1:5672/"
    # A cluster's other nodes ([broker] urls, or a comma-separated list: their first is
    # `url`); router.broker.connect tries them in turn and moves on when one goes away.
    other_urls: tuple[str, ...] = ()
    prefix: str = ""
    confirm_timeout: float = 5.0
    retry_after: int = 5
    retry_ladder: tuple[int, ...] = (5, 15, 45)
    delivery_limit: int = 20
    connection_name: str = "webhook-router"
    heartbeat: int = 4  # AMQP heartbeat seconds (0: off); a silent broker is dropped after ~2-3x
    max_in_flight: int = 1000  # unconfirmed publishes per connection; beyond: refused at once
    # Bounds of each held.SOURCE queue and of the audit queue: past either, the broker
    # refuses the publish and the ingress answers 503 (router.broker.topology).
    held_max_length: int = 10_000
    held_max_bytes: int = 256 * MiB
    audit_max_length: int = 1_000_000
    audit_max_bytes: int = 2048 * MiB
    # TLS for amqps:// (aio-pika's names; its URL query parameters work too, these win).
    cafile: Path | None = None
    certfile: Path | None = None
    keyfile: Path | None = None
    verify: bool = True
    # Queues of consumers that are off unless configured (router.broker.topology
    # OPTIONAL_QUEUES): set from their tables, e.g. ("labels",) when [labels] is enabled.
    optional_queues: tuple[str, ...] = ()
    # Work queues with a retry ladder of their own, from their tables ([labels] and
    # [storefront] retry_ladder): (queue, ladder) pairs; the others use retry_ladder.
    ladders: tuple[tuple[str, tuple[int, ...]], ...] = ()

    @property
    def addresses(self) -> tuple[str, ...]:
        """Every address of the broker: `url`, then a cluster's other nodes."""
        return (self.url, *self.other_urls)


def _check_amqp_urls(t: Table, key: str, urls: list[str]) -> None:
    """Each address must be an amqp:// or amqps:// URL that parses, all of one scheme (a
    failover must not fall back to plain text), none twice.  A problem names the address by
    its place (urls[1], or "address 2 of 3" in a comma-separated url), never by its text,
    which holds a password."""
    for i, url in enumerate(urls):
        name, which, hint = key, "", ""
        if key == "urls":
            name = f"urls[{i}]"
        elif len(urls) > 1:
            which = f"address {i + 1} of {len(urls)}: "
            hint = " (commas separate addresses: write one in a password as %2C)"
        if not url.startswith(("amqp://", "amqps://")):
            raise t.error(name, f"{which}must be an amqp:// or amqps:// URL{hint}")
        try:
            _ = urlsplit(url).port  # a broken [IPv6] host, a port out of range: ValueError
        except ValueError as exc:
            # Split at a comma, what it says may be a piece of a password: not repeated.
            raise t.error(name, f"{which}is not a valid URL{hint or f': {exc}'}") from None
        if urlsplit(url).scheme != urlsplit(urls[0]).scheme:
            raise t.error(name, f"{which}mixes amqp:// and amqps://: use one for every node")
        if url in urls[:i]:
            raise t.error(name, f"{which}is given twice")


def _broker_urls(t: Table, base: Path, env: Mapping[str, str]) -> tuple[str, list[str]]:
    """The key that gave the broker's addresses, and the addresses: `urls` (a list, each
    may be a secret reference), else `url` (one address or several separated by commas; a
    secret reference too), else AMQP_URL (the same), else the default."""
    url = t.get("url", str, None)
    refs = t.get("urls", list, None)
    if refs is not None:
        if url is not None:
            raise t.error("urls", "give url or urls, not both")
        if not refs:
            raise t.error("urls", "name at least one amqp:// URL")
        urls = []
        for i, ref in enumerate(refs):
            if not isinstance(ref, str):
                raise t.error(f"urls[{i}]", "must be a string")
            if ref.startswith(("env:", "file:")):
                ref = resolve_secret(ref, file=t.file, key=f"{t.key}.urls[{i}]", base=base,
                                     environ=env).decode()
            urls.append(ref.strip())
        return "urls", urls
    if url is None:
        url = env.get("AMQP_URL", BrokerSettings.url)
    elif url.startswith(("env:", "file:")):
        url = resolve_secret(url, file=t.file, key="broker.url", base=base, environ=env).decode()
    return "url", [part.strip() for part in url.split(",")]


def read_broker(t: Table, base: Path, env: Mapping[str, str]) -> BrokerSettings:
    """The [broker] table (ConfigError naming the file and the key of any problem)."""
    d = BrokerSettings()
    key, urls = _broker_urls(t, base, env)
    _check_amqp_urls(t, key, urls)
    ladder = retry_ladder(t, d.retry_ladder)
    s = BrokerSettings(
        url=urls[0],
        other_urls=tuple(urls[1:]),
        prefix=t.get("prefix", str, d.prefix),
        confirm_timeout=t.positive("confirm_timeout", float, d.confirm_timeout),
        retry_after=t.positive("retry_after", int, d.retry_after),
        retry_ladder=tuple(ladder),
        delivery_limit=t.positive("delivery_limit", int, d.delivery_limit),
        connection_name=t.get("connection_name", str, d.connection_name),
        heartbeat=t.get("heartbeat", int, d.heartbeat),
        max_in_flight=t.positive("max_in_flight", int, d.max_in_flight),
        held_max_length=t.positive("held_max_length", int, d.held_max_length),
        held_max_bytes=t.positive("held_max_bytes", int, d.held_max_bytes),
        audit_max_length=t.positive("audit_max_length", int, d.audit_max_length),
        audit_max_bytes=t.positive("audit_max_bytes", int, d.audit_max_bytes),
        cafile=existing_file(t, base, "cafile"),
        certfile=existing_file(t, base, "certfile"),
        keyfile=existing_file(t, base, "keyfile"),
        verify=t.get("verify", bool, d.verify),
    )
    if not 0 <= s.heartbeat <= 65535:
        raise t.error("heartbeat", "must be whole seconds from 0 (off) to 65535")
    if s.keyfile is not None and s.certfile is None:
        raise t.error("keyfile", "needs certfile")
    t.done()
    return s
