"""The Prometheus endpoint's figures: the process-local counters and histograms of
alerts/common/metrics.py (added up across processes in multiprocess mode), and gauges
computed from the database and the broker at scrape time, which are right however
many processes there are.

A scrape runs a few small queries: open batches by partial index, the last
METRICS_RECENT_ALERTS alerts' hand-off and inbox times, a Redis LLEN per queue, the
outbox's backlog, and the rolling deliverability rates.
"""

from __future__ import annotations

import logging
import os

import redis
from celery import current_app
from django.conf import settings
from django.db import DatabaseError
from django.db.models import Count, Q
from prometheus_client import REGISTRY, CollectorRegistry, generate_latest, multiprocess
from prometheus_client.core import GaugeMetricFamily

from .. import models
from ..models import Alert, Batch
from . import deliverability
from .time_to_inbox import QUANTILES, cached_inbox_times

logger = logging.getLogger(__name__)

# kombu's Redis transport keeps each priority of a queue in a list of its own: the
# queue's name for priority 0, then name + SEP + step (kombu.transport.redis).
PRIORITY_SEP, PRIORITY_STEPS = "\x06\x16", (3, 6, 9)


def exposition() -> bytes:
    """The text format, for one scrape."""
    database = CollectorRegistry(auto_describe=True)
    database.register(DatabaseCollector())
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        processes = CollectorRegistry()
        multiprocess.MultiProcessCollector(processes)
    else:
        processes = REGISTRY
    return generate_latest(processes) + generate_latest(database)


class DatabaseCollector:
    """Gauges read at scrape time from the ledger, the batches and the broker."""

    def collect(self):
        yield self._open_batches()
        yield self._queue_depth()
        yield from self._outbox_backlog()
        yield from self._recent_alerts()
        yield from self._deliverability()

    def _open_batches(self) -> GaugeMetricFamily:
        family = GaugeMetricFamily("stoppress_open_batches", "Batches pending or being sent.",
                                   labels=["kind", "status"])
        open_batches = Batch.objects.filter(status__in=[Batch.Status.PENDING, Batch.Status.SENDING])
        counts = open_batches.aggregate(**{
            f"{kind}_{status}": Count("pk", filter=Q(status=status, **{f"{owner}__isnull": False}))
            for kind, owner in (("alert", "alert"), ("digest", "digest_run"))
            for status in (Batch.Status.PENDING, Batch.Status.SENDING)})
        for key, value in counts.items():
            kind, status = key.split("_")
            family.add_metric([kind, status], value)
        return family

    def _queue_depth(self) -> GaugeMetricFamily:
        family = GaugeMetricFamily("stoppress_queue_depth", "Messages waiting in each Celery queue.",
                                   labels=["queue"])
        for queue, depth in queue_depths().items():
            family.add_metric([queue], depth)
        return family

    def _outbox_backlog(self):
        # Hook: the transactional outbox (OutboxEmail), where it exists.
        backlog = outbox_backlog()
        if backlog is not None:
            family = GaugeMetricFamily("stoppress_outbox_backlog", "Emails in the outbox not yet sent.")
            family.add_metric([], backlog)
            yield family

    def _recent_alerts(self):
        alerts = list(Alert.objects.filter(published_at__isnull=False).order_by("-published_at")
                      .values_list("pk", "published_at", "first_handoff_at", "last_handoff_at")
                      [: settings.METRICS_RECENT_ALERTS])
        handoff = GaugeMetricFamily(
            "stoppress_alert_handoff_seconds",
            "Seconds from publishing to the first and last hand-off, for the most recent alerts.",
            labels=["alert", "edge"])
        for pk, published, first, last in alerts:
            for edge, at in (("first", first), ("last", last)):
                if at:
                    handoff.add_metric([str(pk), edge], (at - published).total_seconds())
        yield handoff
        inbox = GaugeMetricFamily(
            "stoppress_alert_time_to_inbox_seconds",
            "Percentiles of seconds from publishing to delivery, for the most recent alerts.",
            labels=["alert", "mailbox", "quantile"])
        delivered = GaugeMetricFamily(
            "stoppress_alert_delivered", "Readers the provider reported delivered, for the most recent alerts.",
            labels=["alert", "mailbox"])
        for pk, times in cached_inbox_times([pk for pk, *_ in alerts]).items():
            for mailbox, figures in [("all", times.overall), *times.by_mailbox.items()]:
                delivered.add_metric([str(pk), mailbox], figures.count)
                for q, value in zip(QUANTILES, (figures.p50, figures.p95, figures.p99), strict=True):
                    inbox.add_metric([str(pk), mailbox, str(q)], value)
        yield inbox
        yield delivered

    def _deliverability(self):
        rates = deliverability.rolling_rates()
        family = GaugeMetricFamily(
            "stoppress_deliverability_rate",
            "Complaints and bounces over the last 24 hours, as a share of emails handed off.", labels=["kind"])
        family.add_metric(["complaint"], rates.complaint_rate)
        family.add_metric(["bounce"], rates.bounce_rate)
        yield family


def queue_depths() -> dict[str, int]:
    """LLEN of each Celery queue (all its priorities) on the Redis broker; empty when
    the broker is not Redis or cannot be reached (the scrape still answers)."""
    names = [queue.name for queue in current_app.conf.task_queues or ()]
    try:
        client = redis.Redis.from_url(settings.CELERY_BROKER_URL, socket_timeout=2, socket_connect_timeout=2)
        with client.pipeline(transaction=False) as pipe:
            for name in names:
                for key in [name, *(f"{name}{PRIORITY_SEP}{step}" for step in PRIORITY_STEPS)]:
                    pipe.llen(key)
            lengths = pipe.execute()
    except (redis.RedisError, ValueError) as error:
        logger.warning("Metrics: queue depth unavailable: %s", error)
        return {}
    per_queue = 1 + len(PRIORITY_STEPS)
    return {name: sum(lengths[i * per_queue:(i + 1) * per_queue]) for i, name in enumerate(names)}


def outbox_backlog() -> int | None:
    """Hook for the transactional outbox: its unsent rows, or None while this
    deployment has no outbox table (the gauge is then left out)."""
    outbox = getattr(models, "OutboxEmail", None)
    if outbox is None:
        return None
    fields = {f.name for f in outbox._meta.get_fields()}
    # HOOK (outbox): "unsent" as the outbox defines it; revisit when it is merged.
    unsent = outbox.objects.filter(sent_at__isnull=True) if "sent_at" in fields else outbox.objects.all()
    try:
        return unsent.count()
    except DatabaseError:  # migrated code, unmigrated database
        return None
