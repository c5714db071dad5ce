"""Prometheus metrics; the names and labels are fixed by the contract."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram, disable_created_metrics

disable_created_metrics()  # the *_created series add noise and nothing our dashboards use

WEBHOOK_REQUESTS = Counter(
    "bcsync_webhook_requests", "Webhook requests by source and outcome", ["source", "outcome"]
)
EVENTS_PUBLISHED = Counter(
    "bcsync_events_published", "Change events published to RabbitMQ", ["source", "entity"]
)
SYNC_RECORDS = Counter(
    "bcsync_sync_records", "Records processed by the sync engine", ["mapping", "direction", "result"]
)
SYNC_LAG = Histogram(
    "bcsync_sync_lag_seconds", "From the change at the source to the write at the destination", ["mapping"],
    buckets=(0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60, 300, 1800),
)
DEAD_LETTERS = Counter("bcsync_dead_letters", "Events sent to the dead-letter queue", ["mapping"])
OUTBOX_PENDING = Gauge("bcsync_outbox_pending", "Accepted events not yet published to RabbitMQ")
