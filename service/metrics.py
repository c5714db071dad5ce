"""Prometheus metrics; the names and labels of the contract's are fixed, the others are additions."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

from prometheus_client import REGISTRY, Counter, Gauge, Histogram, disable_created_metrics
from prometheus_client.core import CounterMetricFamily
from prometheus_client.registry import Collector

disable_created_metrics()  # the *_created series add noise and nothing our dashboards use

WEBHOOK_REQUESTS = Counter(
    "bcsync_webhook_requests", "Webhook requests by source and outcome", ["source", "outcome"]
)
# Addition: entries of a webhook body that could not be used (a catch-up is asked for their entity sets).
WEBHOOK_ENTRIES_DROPPED = Counter(
    "bcsync_webhook_entries_dropped", "Webhook entries not stored as events, by source and reason", ["source", "reason"]
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
EVENTS_FOLDED = Counter(
    "bcsync_events_folded", "Change events folded into one re-run of a record already being applied", ["mapping"]
)
DEAD_LETTERS = Counter("bcsync_dead_letters", "Events sent to the dead-letter queue", ["mapping"])
OUTBOX_PENDING = Gauge("bcsync_outbox_pending", "Accepted events not yet published to RabbitMQ")


class StoredSyncRecords(Collector):
    """`bcsync_sync_records_total` as the store counts it: the results of every worker, summed.

    Workers count in their own processes (and export on BCSYNC_WORKER_METRICS_PORT); the api exports this
    view instead, refreshed from the sync job log, so one scrape of the api shows what synced."""

    def __init__(self) -> None:
        self.snapshot: dict[tuple[str, str, str], float] = {}

    def collect(self) -> Iterator[CounterMetricFamily]:
        family = CounterMetricFamily("bcsync_sync_records", "Records processed by the sync engine (all workers)",
                                     labels=["mapping", "direction", "result"])
        for labels, value in sorted(self.snapshot.items()):
            family.add_metric(labels, value)
        yield family


def export_stored_sync_records(view: StoredSyncRecords) -> None:
    """Export the stored view in this process instead of the process-local counter."""
    for collector in (SYNC_RECORDS, *_exported_views):
        with contextlib.suppress(KeyError):
            REGISTRY.unregister(collector)
    _exported_views[:] = [view]
    REGISTRY.register(view)


_exported_views: list[StoredSyncRecords] = []
