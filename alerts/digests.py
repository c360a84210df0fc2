"""Scheduled digests: each daily or weekly subscriber gets one email a period, at
DIGEST_HOUR in their own time zone, holding the alerts published since their last one.

Exactly once per subscriber per period comes from the ledger: when a tick finds a
subscriber due, it reserves a Delivery row keyed (subscriber, "daily:2026-11-27") under
a unique constraint before anything is sent. A second tick, a second beat, or a rerun
after an outage finds the row and reserves nothing; a killed worker's batch is claimed
again after its lease and sends only the rows still PENDING.

Digests go through the alert engine (`fanout`): batches, claims and leases, provider
batch calls, retries, on the `digests` queue.
"""

from __future__ import annotations

import logging
import zoneinfo
from collections import defaultdict
from dataclasses import dataclass
from datetime import datetime, timedelta

from django.conf import settings
from django.db import connection as db
from django.db import transaction
from django.db.models import Exists, F, OuterRef, QuerySet
from django.utils import timezone

from . import fanout
from .emails import digest_rendering
from .models import Alert, Batch, Delivery, DigestRun, Subscriber, Suppression

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
    ).filter(
        ~Exists(Suppression.objects.filter(email_hmac=OuterRef("email_hmac"), lifted_at__isnull=True)),
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
    from .tasks import send_digest_batch

    members = due_subscribers(period.frequency, zone_names, period)
    if not members.exists():
        return None
    run = DigestRun.objects.create(frequency=period.frequency, period_key=period.key, time_zone=zone_key)
    size = fanout.sending_profile().batch_size
    fanout.create_batches({"digest_run": run}, fanout.ranges_after(members, 0, size), send_digest_batch,
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
        sql, params = in_range.values(sid=F("pk")).query.sql_with_params()
        verb, tail = ("INSERT", " ON CONFLICT DO NOTHING") if db.vendor == "postgresql" else ("INSERT OR IGNORE", "")
        with db.cursor() as cursor:
            cursor.execute(
                f"{verb} INTO alerts_delivery (subscriber_id, digest_key, digest_run_id, batch_id,"
                " status, message_id, error) SELECT s.sid, %s, %s, %s, %s, '', ''"
                f" FROM ({sql}) AS s{tail}",
                [period.key, run.pk, batch.pk, Delivery.Status.PENDING, *params],
            )


def digest_run_finish_if_done(*, run_id: int) -> bool:
    if Batch.objects.filter(digest_run_id=run_id,
                            status__in=[Batch.Status.PENDING, Batch.Status.SENDING]).exists():
        return False
    failed = Batch.objects.filter(digest_run_id=run_id, status=Batch.Status.FAILED).exists()
    return bool(DigestRun.objects.filter(pk=run_id, status=DigestRun.Status.SENDING,
                                         fanned_out_at__isnull=False).update(
        status=DigestRun.Status.FAILED if failed else DigestRun.Status.SENT, finished_at=timezone.now()))


# --- Sending one digest batch ---------------------------------------------------------

def digest_batch_send(*, batch_id: int) -> str:
    """Send the reserved digests of one batch. Safe to re-run: only rows still PENDING
    are sent, and the claim keeps two workers off one batch. Raises fanout.RetryLater on
    transient provider errors, after recording what was already sent."""
    batch = fanout.claim_batch(batch_id)
    if isinstance(batch, str):
        return batch
    pending = Delivery.objects.of_batch(batch).filter(status=Delivery.Status.PENDING)
    if batch.attempts > fanout.MAX_ATTEMPTS:
        pending.update(status=Delivery.Status.FAILED, error="gave up after repeated provider errors")
        return fanout.close_batch(batch, Batch.Status.FAILED, error=batch.last_error)
    run = batch.digest_run
    period = _period_of(run)
    rows = _eligible_rows(pending)
    groups, nothing_new = _group_by_content(rows, period)
    _mark(batch, [(sid, Delivery.Status.SKIPPED, "", "") for sid in nothing_new])
    for alert_ids, recipients in groups.items():
        try:
            results = fanout.deliver_rendered(
                _rendering(alert_ids, run.frequency), recipients,
                tag=f"{run.frequency}-digest", metadata={"digest": period.key})
        except fanout.TransientSendError as error:
            _sent(batch, error.partial_results, period)
            fanout.release_batch(batch, str(error))
            raise fanout.RetryLater(fanout.retry_delay(batch.attempts, error.retry_after), str(error)) from error
        except fanout.PermanentSendError as error:
            results = [(sid, Delivery.Status.FAILED, "", str(error)[:400]) for sid, _ in recipients]
        _sent(batch, results, period)
    # Unsubscribed or suppressed since the tick: nothing is sent to them.
    pending.update(status=Delivery.Status.SKIPPED, error="no longer subscribed")
    return fanout.close_batch(batch, Batch.Status.SENT)


def _period_of(run: DigestRun) -> Period:
    frequency = run.frequency
    kind, _, label = run.period_key.partition(":")
    if frequency == Frequency.WEEKLY:
        year, week = label.split("-W")
        day = datetime.fromisocalendar(int(year), int(week), settings.DIGEST_WEEKDAY + 1)
    else:
        day = datetime.fromisoformat(label)
    start = day.replace(hour=settings.DIGEST_HOUR, tzinfo=zone(run.time_zone))
    return Period(frequency, run.period_key, start, start - PERIOD[frequency])


def _eligible_rows(pending: QuerySet[Delivery]) -> list[tuple[int, str, datetime | None]]:
    return list(pending.filter(subscriber__status=Subscriber.Status.CONFIRMED).filter(
        ~Exists(Suppression.objects.filter(email_hmac=OuterRef("subscriber__email_hmac"),
                                           lifted_at__isnull=True)),
    ).order_by("subscriber_id").values_list("subscriber_id", "subscriber__email", "subscriber__last_digest_at"))


def _group_by_content(rows, period: Period):
    """Group recipients by the exact list of alerts their digest holds (so each group is
    one provider call); return the groups and the subscribers with nothing new."""
    oldest = period.starts_at - 2 * PERIOD[period.frequency]
    alerts = list(Alert.objects.filter(
        status__in=[Alert.Status.SENDING, Alert.Status.SENT],
        published_at__gt=oldest, published_at__lte=period.starts_at,
    ).order_by("-published_at").values_list("pk", "published_at"))
    ids = [sid for sid, _, _ in rows]
    alert_topics = _topics(Alert.topics.through, "alert_id", [pk for pk, _ in alerts])
    follows = _topics(Subscriber.topics.through, "subscriber_id", ids)
    # An alert they already received as it happens is not repeated in the digest.
    had = set(Delivery.objects.filter(subscriber_id__in=ids, alert_id__in=[pk for pk, _ in alerts])
              .values_list("subscriber_id", "alert_id"))
    groups: dict[tuple[int, ...], list[tuple[int, str]]] = defaultdict(list)
    nothing_new = []
    for sid, email, last in rows:
        since = max(last or period.previous_at, oldest)
        mine = follows.get(sid)
        chosen = tuple(pk for pk, published in alerts if published > since and (sid, pk) not in had
                       and (not mine or not alert_topics.get(pk) or mine & alert_topics[pk]))
        if chosen:
            groups[chosen].append((sid, email))
        else:
            nothing_new.append(sid)
    return groups, nothing_new


def _topics(through, key: str, ids: list[int]) -> dict[int, set[int]]:
    mapping: dict[int, set[int]] = defaultdict(set)
    for owner, topic in through.objects.filter(**{f"{key}__in": ids}).values_list(key, "topic_id"):
        mapping[owner].add(topic)
    return mapping


_cache: dict[tuple, object] = {}


def _rendering(alert_ids: tuple[int, ...], frequency: str):
    # Keyed by each alert's last edit too: an id alone can come back (SQLite reuses the
    # id of a deleted last row), and the cache lives as long as the worker.
    stamps = tuple(Alert.objects.filter(pk__in=alert_ids).order_by("pk").values_list("pk", "updated_at"))
    key = (stamps, frequency)
    if key not in _cache:
        if len(_cache) > 200:
            _cache.clear()
        alerts = list(Alert.objects.filter(pk__in=alert_ids).order_by("-published_at"))
        _cache[key] = digest_rendering(alerts, frequency)
    return _cache[key]


def _sent(batch: Batch, results: list[tuple[int, str, str, str]], period: Period) -> None:
    _mark(batch, results)
    sent = [sid for sid, status, _, _ in results if status == Delivery.Status.SENT]
    # "Through" the period start: the next digest starts from the alerts after it.
    _update_ids(Subscriber, sent, last_digest_at=period.starts_at)


def _mark(batch: Batch, results: list[tuple[int, str, str, str]]) -> None:
    """Update this batch's reserved rows in one statement per outcome."""
    if not results:
        return
    now = timezone.now()
    by_outcome: dict[tuple[str, str, str], list[int]] = defaultdict(list)
    for sid, status, message_id, error in results:
        by_outcome[(status, message_id, error)].append(sid)
    with transaction.atomic():
        for (status, message_id, error), sids in by_outcome.items():
            _update_ids(Delivery, sids, key="subscriber_id",
                        where={"digest_run_id": batch.digest_run_id, "batch_id": batch.pk, "status": "pending"},
                        status=status, message_id=message_id, error=error[:400],
                        sent_at=now if status == Delivery.Status.SENT else None)


def _update_ids(model, ids: list[int], *, key: str = "id", where: dict | None = None, **values) -> None:
    """UPDATE rows whose `key` is in `ids`. On PostgreSQL one array parameter
    (= ANY) instead of a thousand-placeholder IN list, which is slow to plan."""
    if not ids:
        return
    where = where or {}
    if db.vendor != "postgresql":
        model.objects.filter(**{f"{key}__in": ids}, **where).update(**values)
        return
    table = model._meta.db_table
    sets = ", ".join(f"{column} = %s" for column in values)
    conditions = "".join(f" AND {column} = %s" for column in where)
    with db.cursor() as cursor:
        cursor.execute(
            f"UPDATE {table} SET {sets} WHERE {key} = ANY(%s::bigint[]){conditions}",
            [*values.values(), fanout.bigint_array(ids), *where.values()],
        )
