"""The deliverability guard: spam complaints and bounces over the last 24 hours, as a
share of every email handed off in that time (alerts and digests).

Gmail and Yahoo ask bulk senders to stay under 0.1% complaints and never reach 0.3%.
Above DELIVERABILITY_COMPLAINT_WARN every admin page says so and the operator's log
has a WARNING; above DELIVERABILITY_COMPLAINT_CONFIRM publishing asks the editor to
confirm with the figure in front of them.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import timedelta

from anymail.signals import EventType
from django.conf import settings
from django.core.cache import cache
from django.db.models import Sum
from django.utils import timezone

from ..models import Alert, Batch, DigestRun, TrackingEvent

logger = logging.getLogger(__name__)

WINDOW = timedelta(hours=24)
# Read on every admin page: recomputed at most once a minute, in the shared cache.
CACHE_KEY, CACHE_SECONDS = "stoppress:deliverability", 60


@dataclass(frozen=True)
class Rates:
    handed_off: int
    complaints: int
    bounces: int

    @property
    def complaint_rate(self) -> float:
        return self.complaints / self.handed_off if self.handed_off else 0.0

    @property
    def bounce_rate(self) -> float:
        return self.bounces / self.handed_off if self.handed_off else 0.0

    @property
    def warn(self) -> bool:
        return self.complaint_rate > settings.DELIVERABILITY_COMPLAINT_WARN

    @property
    def confirm(self) -> bool:
        """Whether publishing should ask the editor to confirm first."""
        return self.complaint_rate > settings.DELIVERABILITY_COMPLAINT_CONFIRM

    @property
    def complaint_percent(self) -> str:
        return f"{self.complaint_rate * 100:.2f}%"

    @property
    def bounce_percent(self) -> str:
        return f"{self.bounce_rate * 100:.2f}%"


def rolling_rates(*, fresh: bool = False) -> Rates:
    """The last 24 hours' rates, from the shared cache unless `fresh`."""
    if not fresh:
        cached = cache.get(CACHE_KEY)
        if isinstance(cached, tuple) and len(cached) == 3:
            return Rates(*cached)
    rates = _compute(timezone.now() - WINDOW)
    cache.set(CACHE_KEY, (rates.handed_off, rates.complaints, rates.bounces), CACHE_SECONDS)
    if rates.warn:
        logger.warning("Spam complaints are at %s of the %d emails handed off in the last 24 hours "
                       "(above %.2f%%): mailbox providers start filtering senders past 0.1%%.",
                       rates.complaint_percent, rates.handed_off, settings.DELIVERABILITY_COMPLAINT_WARN * 100)
    return rates


def _compute(since) -> Rates:
    # Sends by their alert's or digest run's time (both indexed), not by batch: the
    # batches and the ledger have no index by time, on purpose.
    alert_ids = list(Alert.objects.filter(published_at__gte=since).values_list("pk", flat=True))
    run_ids = list(DigestRun.objects.filter(created_at__gte=since).values_list("pk", flat=True))
    handed_off = 0
    for owner, ids in (("alert_id__in", alert_ids), ("digest_run_id__in", run_ids)):
        if ids:
            handed_off += Batch.objects.filter(**{owner: ids}).aggregate(n=Sum("sent_count"))["n"] or 0
    events = TrackingEvent.objects.filter(occurred_at__gte=since)
    complaints = events.filter(event_type=EventType.COMPLAINED).count()
    bounces = events.filter(event_type=EventType.BOUNCED).count()
    return Rates(handed_off, complaints, bounces)
