"""Prometheus metrics of the ingress.

With several worker processes, PROMETHEUS_MULTIPROC_DIR is set before the workers start and
/metrics aggregates every worker's samples.
"""

from __future__ import annotations

import os
from collections.abc import Collection, Iterable
from pathlib import Path

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
    multiprocess,
)

REQUESTS = Counter(
    "webhook_requests", "Webhook requests answered, by source and HTTP status", ["source", "status"]
)
VERIFICATION_FAILURES = Counter(
    "webhook_verification_failures", "Requests refused by verification, by reason",
    ["source", "reason"],
)
PUBLISH_LATENCY = Histogram(
    "webhook_publish_latency_seconds",
    "Time from publish to the broker's confirm",
    ["source"],
    buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0),
)
DUPLICATES = Counter("webhook_duplicates", "Repeated deliveries answered without publishing",
                     ["source"])
REJECTIONS = Counter(
    "webhook_rejections", "Requests refused (400 or more with a JSON reason), by source (- for "
    "a path with none), status and reason (the error the client got)",
    ["source", "status", "reason"],
)
HELD = Counter(
    "webhook_held", "Authentic deliveries held for an operator (not mappable), by reason: "
    "unknown_event, schema_violation, unmappable", ["source", "reason"],
)

# The same in every worker: "max" and "min" keep one sample per queue, not one per process.
QUEUE_MAX_LENGTH = Gauge(
    "webhook_queue_max_length", "Messages a bounded queue (held.*, audit) takes before the "
    "broker refuses publishes to it ([broker] held_max_length, audit_max_length)", ["queue"],
    multiprocess_mode="max",
)
QUEUE_MAX_BYTES = Gauge(
    "webhook_queue_max_bytes", "Body bytes a bounded queue takes before the broker refuses "
    "publishes to it ([broker] held_max_bytes, audit_max_bytes)", ["queue"],
    multiprocess_mode="max",
)
QUEUE_LIMIT_APPLIED = Gauge(
    "webhook_queue_limit_applied", "1 if the broker enforces the queue's limits; 0 if the "
    "queue was declared before them and works unbounded (log: queue_limits_not_applied)",
    ["queue"], multiprocess_mode="min",
)


def export_queue_limits(limits: Iterable[tuple[str, int, int]], not_limited: Collection[str]
                        ) -> None:
    """Set the gauges from (queue, max length, max bytes) and the queues that lack them."""
    for queue, max_length, max_bytes in limits:
        QUEUE_MAX_LENGTH.labels(queue).set(max_length)
        QUEUE_MAX_BYTES.labels(queue).set(max_bytes)
        QUEUE_LIMIT_APPLIED.labels(queue).set(0 if queue in not_limited else 1)


_request_counters: dict[tuple[str, int], object] = {}


def count_request(source: str, status: int) -> None:
    """REQUESTS.labels(...).inc() with the label lookup cached (it is on every request)."""
    counter = _request_counters.get((source, status))
    if counter is None:
        counter = _request_counters[(source, status)] = REQUESTS.labels(source, str(status))
    counter.inc()  # type: ignore[attr-defined]


_rejection_counters: dict[tuple[str, int, str], object] = {}


def count_rejection(source: str, status: int, reason: str) -> None:
    """REJECTIONS.labels(...).inc(), the label lookup cached (a flood of refusals is cheap)."""
    key = (source, status, reason)
    counter = _rejection_counters.get(key)
    if counter is None:
        counter = _rejection_counters[key] = REJECTIONS.labels(source, str(status), reason)
    counter.inc()  # type: ignore[attr-defined]


def multiprocess_dir() -> Path | None:
    """The directory every worker's metrics are kept in (router.serve sets it), or None when
    one process serves."""
    value = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
    return Path(value) if value else None


def render() -> tuple[bytes, str]:
    """The exposition text for /metrics and its content type."""
    if multiprocess_dir() is not None:
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)
        return generate_latest(registry), CONTENT_TYPE_LATEST
    from prometheus_client import REGISTRY

    return generate_latest(REGISTRY), CONTENT_TYPE_LATEST
