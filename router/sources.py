"""Sources ready to serve: settings compiled into a verifier, limits, schemas and mappings."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from router.errors import ConfigError
from router.mapping import EventMapping, load_mappings, load_proofs
from router.metrics import PUBLISH_LATENCY
from router.network import IpAllowlist
from router.ratelimit import TokenBuckets
from router.schemas import SchemaRegistry
from router.settings import Settings, SourceSettings
from router.verify import Verifier, build_verifier, check_options


@dataclass(frozen=True)
class Source:
    """One configured webhook endpoint, everything it needs built once at start-up."""

    name: str
    settings: SourceSettings
    verifier: Verifier
    allowlist: IpAllowlist | None
    buckets: TokenBuckets | None
    mappings: Mapping[str, EventMapping]  # canonical event type -> mapping
    content_types: frozenset[str]
    publish_latency: Any  # this source's child of PUBLISH_LATENCY, looked up once
    proofs: Mapping[str, str] = field(default_factory=dict)  # topic -> proof schema

    def topic(self, headers: Mapping[str, str], payload: Any) -> str | None:
        """The provider's topic of this delivery: its topic header, else the body's topic
        field; None when there is neither (or it is not text)."""
        s = self.settings
        topic: Any = None
        if s.topic_header is not None:
            topic = headers.get(s.topic_header)
        if topic is None and s.topic_field is not None and isinstance(payload, dict):
            topic = payload.get(s.topic_field)
        return topic if isinstance(topic, str) else None

    def event_type(self, headers: Mapping[str, str], payload: Any) -> str | None:
        """The canonical event type of this delivery, or None if the topic is not mapped."""
        if self.settings.event_type is not None:
            return self.settings.event_type
        topic = self.topic(headers, payload)
        return None if topic is None else self.settings.events.get(topic)

    def delivery_id(self, headers: Mapping[str, str], payload: Any) -> str | None:
        """The provider's own id for this event, stable across its retries, if it has one."""
        s = self.settings
        for name in s.id_headers:
            value = headers.get(name)
            if value:
                return value
        if s.id_field is not None and isinstance(payload, dict):
            value = payload.get(s.id_field)
            if isinstance(value, str | int) and not isinstance(value, bool) and value != "":
                return str(value)
        return None


def build_sources(settings: Settings, registry: SchemaRegistry) -> dict[str, Source]:
    """Compile every configured source; ConfigError for anything that cannot work."""
    file = str(settings.file)
    sources: dict[str, Source] = {}
    for name, s in settings.sources.items():
        key = f"sources.{name}"
        try:
            allowlist = IpAllowlist(s.allow_ips) if s.allow_ips else None
        except ValueError as exc:
            raise ConfigError(file, f"{key}.allow_ips", str(exc)) from exc
        verifier = build_verifier(s.scheme, s.secrets, s.options, file=file, key=key)
        mappings = _mappings(settings, s, registry)
        proofs = load_proofs(s.mapping, schema_names=registry.names())
        buckets = (
            TokenBuckets(s.rate_limit.rate, s.rate_limit.burst) if s.rate_limit else None
        )
        sources[name] = Source(
            name=name,
            settings=s,
            verifier=verifier,
            allowlist=allowlist,
            buckets=buckets,
            mappings=mappings,
            proofs={topic: proofs[topic] for topic in s.events if topic in proofs},
            content_types=frozenset(s.content_types),
            publish_latency=PUBLISH_LATENCY.labels(name),
        )
    return sources


def _mappings(settings: Settings, s: SourceSettings, registry: SchemaRegistry
              ) -> dict[str, EventMapping]:
    """The source's mapping per event type it publishes, each with its schemas present."""
    mappings = load_mappings(s.mapping)
    wanted = {s.event_type} if s.event_type else set(s.events.values())
    for event_type in sorted(wanted):
        mapping = mappings.get(event_type)
        if mapping is None:
            raise ConfigError(str(settings.file), f"sources.{s.name}.events",
                              f"{s.mapping} has no mapping for {event_type}")
        for schema in (mapping.payload_schema, mapping.model_schema):
            if schema not in registry.names():
                raise ConfigError(
                    str(s.mapping), event_type, f"schema {schema} not found in schemas folder"
                )
    return {t: mappings[t] for t in wanted}


def check_sources(settings: Settings, *, verifiers: bool) -> None:
    """Compile the schemas and every source's mappings (and, with `verifiers`, which needs
    the secrets resolved, the whole source) as the ingress does at start-up: every command
    checks the whole configuration first, so a mistake anywhere is one ConfigError line,
    never a traceback from deep inside a command."""
    registry = SchemaRegistry.load(settings.server.schemas)
    if verifiers:
        build_sources(settings, registry)
        return
    for s in settings.sources.values():
        check_options(s.scheme, s.options, file=str(settings.file), key=f"sources.{s.name}")
        _mappings(settings, s, registry)
        load_proofs(s.mapping, schema_names=registry.names())
