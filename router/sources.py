"""Sources ready to serve: settings compiled into a verifier, limits, schemas and mappings."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from router.errors import ConfigError
from router.mapping import EventMapping, load_mappings
from router.metrics import PUBLISH_LATENCY
from router.network import IpAllowlist
from router.ratelimit import TokenBuckets
from router.schemas import SchemaRegistry
from router.settings import Settings, SourceSettings
from router.verify import Verifier, build_verifier


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

    def event_type(self, headers: Mapping[str, str], payload: Any) -> str | None:
        """The canonical event type of this delivery, or None if the topic is not mapped."""
        s = self.settings
        if s.event_type is not None:
            return s.event_type
        topic: Any = None
        if s.topic_header is not None:
            topic = headers.get(s.topic_header)
        if topic is None and s.topic_field is not None and isinstance(payload, dict):
            topic = payload.get(s.topic_field)
        if not isinstance(topic, str):
            return None
        return s.events.get(topic)

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
        mappings = load_mappings(s.mapping)
        wanted = {s.event_type} if s.event_type else set(s.events.values())
        for event_type in sorted(wanted):
            mapping = mappings.get(event_type)
            if mapping is None:
                raise ConfigError(
                    file, f"{key}.events", f"{s.mapping} has no mapping for {event_type}"
                )
            for schema in (mapping.payload_schema, mapping.model_schema):
                if schema not in registry.names():
                    raise ConfigError(
                        str(s.mapping), event_type, f"schema {schema} not found in schemas folder"
                    )
        buckets = (
            TokenBuckets(s.rate_limit.rate, s.rate_limit.burst) if s.rate_limit else None
        )
        sources[name] = Source(
            name=name,
            settings=s,
            verifier=verifier,
            allowlist=allowlist,
            buckets=buckets,
            mappings={t: mappings[t] for t in wanted},
            content_types=frozenset(s.content_types),
            publish_latency=PUBLISH_LATENCY.labels(name),
        )
    return sources
