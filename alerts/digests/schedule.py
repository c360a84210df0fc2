"""Scheduled digests: each daily or weekly subscriber gets one email a period, at
DIGEST_HOUR in their own time zone, holding the alerts published since their last one.

Exactly once per subscriber per period comes from the ledger: when a tick finds a
subscriber due, it reserves a Delivery row keyed (subscriber, "daily:2026-11-27") under
a unique constraint before anything is sent. A second tick, a second beat, or a rerun
after an outage finds the row and reserves nothing; a killed worker's batch is claimed
again after its lease and sends only the rows still PENDING.

Digests go through the engine alerts use (`alerts.sending`): batches, claims and
leases, provider batch calls, retries, on the `digests` queue. This module decides who
is due and reserves them; `send.py` sends one batch.
"""

from __future__ import annotations

import logging
import zoneinfo
from collections import defaultdict
from dataclasses import dataclass
from datetime import datetime, timedelta

from django.conf import settings
from django.db.models import Exists, F, OuterRef, QuerySet
from django.utils import timezone

from ..models import Batch, Delivery, DigestRun, Subscriber
from ..sending import ledger
from ..sending.batches import BatchOwner, create_batches, ranges_after
from ..sending.provider import sending_profile

logger = logging.getLogger(__name__)

Frequency = Subscriber.Frequency
PERIOD = {Frequency.DAILY: timedelta(days=1), Frequency.WEEKLY: timedelta(days=7)}


@dataclass(frozen=True)
class Period:
    frequency: str
    key: str
    starts_at: datetime  # when this period's digest fell due (aware)
    previous_at: datetime  # when the period before it fell due


def zone(name: str) -> zoneinfo.ZoneInfo:
    """The subscriber's zone; an empty or unknown name means the publication's."""
    try:
        return zoneinfo.ZoneInfo(name or settings.PUBLICATION_TIME_ZONE)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError):
        return zoneinfo.ZoneInfo(settings.PUBLICATION_TIME_ZONE)


def current_period(frequency: str, zone_name: str, now: datetime) -> Period | None:
    """The latest period whose digest is due in this zone at `now`, or None if that
    moment is further back than DIGEST_CATCH_UP_HOURS (then we wait for the next one
    rather than send a morning digest in the evening)."""
    local = now.astimezone(zone(zone_name))
    start = local.replace(hour=settings.DIGEST_HOUR, minute=0, second=0, microsecond=0)
    if frequency == Frequency.WEEKLY:
        start -= timedelta(days=(local.weekday() - settings.DIGEST_WEEKDAY) % 7)
    if start > local:
        start -= PERIOD[frequency]
    if now - start > timedelta(hours=settings.DIGEST_CATCH_UP_HOURS):
        return None
    if frequency == Frequency.WEEKLY:
        year, week, _ = start.isocalendar()
        key = f"weekly:{year}-W{week:02d}"
    else:
        key = f"daily:{start.date().isoformat()}"
    return Period(frequency, key, start, start - PERIOD[frequency])


def due_subscribers(frequency: str, zone_names: list[str], period: Period) -> QuerySet[Subscriber]:
    """Confirmed, unsuppressed subscribers of this frequency and zone without a ledger
    row for the period yet."""
    return Subscriber.objects.filter(
        status=Subscriber.Status.CONFIRMED, frequency=frequency, time_zone__in=zone_names,
    ).unsuppressed().filter(
        ~Exists(Delivery.objects.filter(subscriber_id=OuterRef("pk"), digest_key=period.key)),
    )


def digest_tick(*, now: datetime | None = None) -> list[int]:
    """Start the digest runs due at `now`. Returns the ids of the runs started.

    Safe to call any number of times (beat every minute, a second beat, by hand): a
    subscriber is reserved for a period once, so later ticks find nobody due.
    """
    now = now or timezone.now()
    started = []
    for frequency in (Frequency.DAILY, Frequency.WEEKLY):
        for zone_key, zone_names in _zones(frequency).items():
            period = current_period(frequency, zone_key, now)
            if period is None:
                continue
            run_id = _start_run(period, zone_key, zone_names)
            if run_id:
                started.append(run_id)
    return started


def _zones(frequency: str) -> dict[str, list[str]]:
    """Subscribers' stored zone names, grouped by the zone they resolve to."""
    names = (Subscriber.objects.filter(status=Subscriber.Status.CONFIRMED, frequency=frequency)
             .values_list("time_zone", flat=True).distinct())
    groups: dict[str, list[str]] = defaultdict(list)
    for name in names:
        groups[zone(name).key].append(name)
    return groups


def _start_run(period: Period, zone_key: str, zone_names: list[str]) -> int | None:
    members = due_subscribers(period.frequency, zone_names, period)
    if not members.exists():
        return None
    run = DigestRun.objects.create(frequency=period.frequency, period_key=period.key, time_zone=zone_key)
    size = sending_profile().batch_size
    create_batches(BatchOwner(digest_run_id=run.pk), ranges_after(members, 0, size), "alerts.send_digest_batch",
                   prepare=lambda batches: _reserve(batches, members, period, run))
    planned = Delivery.objects.filter(digest_run=run).count()
    DigestRun.objects.filter(pk=run.pk).update(fanned_out_at=timezone.now(), planned=planned)
    logger.info("Digest %s for %s: %d subscribers reserved", period.key, zone_key, planned)
    digest_run_finish_if_done(run_id=run.pk)
    return run.pk


def _reserve(batches: list[Batch], members: QuerySet[Subscriber], period: Period, run: DigestRun) -> None:
    """Reserve one PENDING ledger row per due subscriber of each batch's range, in one
    statement per batch. A subscriber another run reserved first is left to it."""
    for batch in batches:
        in_range = members.filter(pk__gte=batch.first_subscriber_id, pk__lte=batch.last_subscriber_id)
        if not ledger.on_postgresql():
            ledger.reserve_digest_rows_portable(in_range, digest_key=period.key, run_id=run.pk, batch_id=batch.pk)
            continue
        sql, params = in_range.values(sid=F("pk")).query.sql_with_params()
        ledger.reserve_digest_rows(sql, params, digest_key=period.key, run_id=run.pk, batch_id=batch.pk)


def digest_run_finish_if_done(*, run_id: int) -> bool:
    if Batch.objects.filter(digest_run_id=run_id,
                            status__in=[Batch.Status.PENDING, Batch.Status.SENDING]).exists():
        return False
    failed = Batch.objects.filter(digest_run_id=run_id, status=Batch.Status.FAILED).exists()
    return bool(DigestRun.objects.filter(pk=run_id, status=DigestRun.Status.SENDING,
                                         fanned_out_at__isnull=False).update(
        status=DigestRun.Status.FAILED if failed else DigestRun.Status.SENT, finished_at=timezone.now()))


def period_of(run: DigestRun) -> Period:
    frequency = run.frequency
    kind, _, label = run.period_key.partition(":")
    if frequency == Frequency.WEEKLY:
        year, week = label.split("-W")
        day = datetime.fromisocalendar(int(year), int(week), settings.DIGEST_WEEKDAY + 1)
    else:
        day = datetime.fromisoformat(label)
    start = day.replace(hour=settings.DIGEST_HOUR, tzinfo=zone(run.time_zone))
    return Period(frequency, run.period_key, start, start - PERIOD[frequency])
