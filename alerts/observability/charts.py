"""The data of the admin's charts, as plain lists ready for JSON: one alert's hand-offs
and deliveries against seconds since publishing, and its engagement over the hours
after; time to inbox and engagement across the latest alerts; subscribers over time.

Every series is counted in the database, never by loading rows: an alert's batches
(a thousand for a million readers), its provider events grouped into buckets of time,
and subscribers grouped by day.
"""

from __future__ import annotations

import math
from collections import defaultdict
from datetime import date, datetime, timedelta

from anymail.signals import EventType
from django.core.cache import cache
from django.db import connection
from django.db.models import Count, Q
from django.db.models.functions import TruncDate
from django.utils import timezone

from ..models import Alert, Batch, Delivery, Subscriber, TrackingEvent
from .time_to_inbox import cached_inbox_times

# At most this many points a line: a phone's width, and a small JSON every refresh.
MAX_POINTS = 200
ENGAGEMENT_HOURS = 48
# The dashboard's figures count the ledger of each of the latest alerts (a million rows
# each, for a big list): computed at most once in this many seconds.
DASHBOARD_CACHE_SECONDS = 300
# Every open progress page refreshes its charts every 2 s while the alert sends; one
# count serves them all for this long.
CHARTS_CACHE_SECONDS = 5
ENGAGEMENT = {"opened": EventType.OPENED, "clicked": EventType.CLICKED, "unsubscribed": EventType.UNSUBSCRIBED}
S = Delivery.Status
# The ledger keeps each reader's latest state: an opener who clicked is counted in both.
REACHED = {
    "delivered": [S.DELIVERED, S.OPENED, S.CLICKED, S.UNSUBSCRIBED, S.COMPLAINED],
    "opened": [S.OPENED, S.CLICKED],
    "clicked": [S.CLICKED],
}


def alert_charts(alert: Alert, *, cached: bool = False) -> dict:
    """Both charts of one alert's page; `live` while it is still sending. `cached`: at
    most CHARTS_CACHE_SECONDS old, for the page's refreshes while it sends."""
    if cached:
        key = f"stoppress:alert-charts:{alert.pk}"
        found = cache.get(key)
        if found is None:
            found = alert_charts(alert)
            cache.set(key, found, CHARTS_CACHE_SECONDS)
        return found
    return {"status": alert.status, "live": alert.status in (Alert.Status.SENDING, Alert.Status.SCHEDULED),
            "sending": sending_series(alert), "engagement": engagement_series(alert)}


def sending_series(alert: Alert) -> dict:
    """Readers handed off and delivered, cumulative, against seconds since publishing:
    {"handed_off": [[s, n], ...], "delivered": [[s, n], ...], "audience": n}."""
    if alert.published_at is None:
        return {"handed_off": [], "delivered": [], "audience": alert.audience_size}
    batches = (Batch.objects.filter(alert=alert, sent_at__isnull=False, sent_count__gt=0)
               .order_by("sent_at").values_list("sent_at", "sent_count"))
    handed_off, total = [[0.0, 0]], 0
    for sent_at, count in batches:
        total += count
        handed_off.append([_since(alert.published_at, sent_at), total])
    delivered, total = [[0.0, 0]], 0
    width, buckets = _buckets(alert, [EventType.DELIVERED], span_from=alert.published_at)
    for bucket in sorted(buckets):
        total += buckets[bucket][EventType.DELIVERED]
        delivered.append([float((bucket + 1) * width), total])
    return {"handed_off": _thin(handed_off), "delivered": _thin(delivered),
            "audience": alert.audience_size}


def engagement_series(alert: Alert) -> dict:
    """Opens, clicks and unsubscribes in each hour after publishing (up to 48 hours):
    {"hours": [0, 1, ...], "opened": [...], "clicked": [...], "unsubscribed": [...]}."""
    if alert.published_at is None:
        return {"hours": [], **{name: [] for name in ENGAGEMENT}}
    hours = min(ENGAGEMENT_HOURS, max(1, math.ceil(_since(alert.published_at, timezone.now()) / 3600)))
    _, buckets = _buckets(alert, list(ENGAGEMENT.values()), width=3600)
    return {"hours": list(range(hours)),
            **{name: [buckets.get(hour, {}).get(kind, 0) for hour in range(hours)]
               for name, kind in ENGAGEMENT.items()}}


def _buckets(alert: Alert, kinds: list[str], *, width: int | None = None,
             span_from: datetime | None = None) -> tuple[int, dict[int, dict[str, int]]]:
    """(bucket width in seconds, {bucket: {event type: count}}) of the alert's events of
    `kinds` by time since publishing. Without `width`, one that keeps MAX_POINTS."""
    events = TrackingEvent.objects.filter(alert=alert, event_type__in=kinds)
    if width is None:
        latest = events.order_by("-occurred_at").values_list("occurred_at", flat=True).first()
        span = _since(alert.published_at, latest) if latest else 0
        width = max(1, math.ceil(span / MAX_POINTS))
    rows = _bucket_rows(alert, kinds, width) if connection.vendor == "postgresql" else \
        _bucket_rows_portable(alert, kinds, width)
    counted: dict[int, dict[str, int]] = defaultdict(lambda: defaultdict(int))
    for bucket, kind, count in rows:
        counted[max(int(bucket), 0)][kind] += count
    return width, counted


def _bucket_rows(alert: Alert, kinds: list[str], width: int) -> list[tuple]:
    """Raw, for floor() over an interval's epoch, which the ORM does not express: one
    pass over the alert's events by the partial index on (alert, event type)."""
    sql = f"""
        SELECT floor(EXTRACT(EPOCH FROM occurred_at - %s) / %s)::int AS bucket, event_type, COUNT(*)
        FROM {TrackingEvent._meta.db_table}
        WHERE alert_id = %s AND event_type = ANY(%s)
        GROUP BY bucket, event_type
    """
    with connection.cursor() as cursor:
        cursor.execute(sql, [alert.published_at, width, alert.pk, kinds])
        return cursor.fetchall()


def _bucket_rows_portable(alert: Alert, kinds: list[str], width: int) -> list[tuple]:
    counts: dict[tuple[int, str], int] = defaultdict(int)
    events = TrackingEvent.objects.filter(alert=alert, event_type__in=kinds)
    for kind, at in events.values_list("event_type", "occurred_at").iterator():
        counts[(math.floor(_since(alert.published_at, at) / width), kind)] += 1
    return [(bucket, kind, n) for (bucket, kind), n in counts.items()]


def recent_alerts(limit: int = 20, *, fresh: bool = False) -> dict:
    """The latest `limit` published alerts, oldest first: headline, p50 and p95 time to
    inbox, and the shares of delivered readers who opened and clicked (at most
    DASHBOARD_CACHE_SECONDS old unless `fresh`)."""
    key = f"stoppress:recent-alerts:{limit}"
    cached = None if fresh else cache.get(key)
    if cached is None:
        cached = _recent_alerts(limit)
        cache.set(key, cached, DASHBOARD_CACHE_SECONDS)
    return cached


def _recent_alerts(limit: int) -> dict:
    alerts = list(Alert.objects.filter(published_at__isnull=False).order_by("-published_at")
                  .values_list("pk", "headline", "published_at")[:limit])[::-1]
    ids = [pk for pk, *_ in alerts]
    times = cached_inbox_times(ids)
    reached = {row["alert_id"]: row for row in Delivery.objects.filter(alert_id__in=ids).values("alert_id")
               .annotate(**{name: Count("pk", filter=Q(status__in=s)) for name, s in REACHED.items()})}
    rows = []
    for pk, headline, published_at in alerts:
        counts = reached.get(pk, {})
        delivered = counts.get("delivered", 0)
        overall = times[pk].overall if pk in times else None
        rows.append({
            "id": pk, "label": f"{published_at:%d %b %H:%M}", "headline": headline,
            "p50": overall.p50 if overall else None, "p95": overall.p95 if overall else None,
            "open_rate": _percent(counts.get("opened", 0), delivered),
            "click_rate": _percent(counts.get("clicked", 0), delivered),
        })
    return {"alerts": rows}


def subscriber_series(days: int = 90) -> dict:
    """Confirmed readers at the end of each of the last `days` days, and signups and
    unsubscribes each day, split by where readers signed up (Subscriber.source). From
    each reader's latest confirmation and unsubscription, which is what is kept. At most
    DASHBOARD_CACHE_SECONDS old."""
    key = f"stoppress:subscriber-series:{days}"
    cached = cache.get(key)
    if cached is None:
        cached = _subscriber_series(days)
        cache.set(key, cached, DASHBOARD_CACHE_SECONDS)
    return cached


def _subscriber_series(days: int) -> dict:
    today = timezone.now().date()
    first = today - timedelta(days=days - 1)
    since = timezone.make_aware(datetime.combine(first, datetime.min.time()))
    labels = [first + timedelta(days=n) for n in range(days)]
    signups = _per_day_by_source(Subscriber.objects.filter(created_at__gte=since), "created_at")
    unsubscribes = _per_day_by_source(Subscriber.objects.filter(unsubscribed_at__gte=since), "unsubscribed_at")
    confirmations = _per_day(Subscriber.objects.filter(confirmed_at__gte=since), "confirmed_at")
    # Unsubscribed after confirming: each takes one off the confirmed readers of that day.
    left = _per_day(Subscriber.objects.filter(unsubscribed_at__gte=since, confirmed_at__isnull=False),
                    "unsubscribed_at")
    confirmed = Subscriber.objects.filter(confirmed_at__lt=since).filter(
        Q(unsubscribed_at__isnull=True) | Q(unsubscribed_at__gte=since)).count()
    series = []
    for day in labels:
        confirmed += confirmations.get(day, 0) - left.get(day, 0)
        series.append(confirmed)
    sources = sorted(set(signups) | set(unsubscribes))
    return {
        "days": [f"{day:%d %b}" for day in labels], "confirmed": series,
        "signups": {source or "other": [signups.get(source, {}).get(day, 0) for day in labels]
                    for source in sources},
        "unsubscribes": {source or "other": [unsubscribes.get(source, {}).get(day, 0) for day in labels]
                         for source in sources},
    }


def _per_day(queryset, field: str) -> dict[date, int]:
    return dict(queryset.annotate(day=TruncDate(field)).values("day").annotate(n=Count("pk"))
                .values_list("day", "n"))


def _per_day_by_source(queryset, field: str) -> dict[str, dict[date, int]]:
    counted: dict[str, dict[date, int]] = defaultdict(dict)
    for source, day, n in (queryset.annotate(day=TruncDate(field)).values("source", "day")
                           .annotate(n=Count("pk")).values_list("source", "day", "n")):
        counted[source][day] = n
    return counted


def _since(start: datetime, end: datetime) -> float:
    return round(max((end - start).total_seconds(), 0.0), 3)


def _percent(part: int, whole: int) -> float | None:
    return round(100 * part / whole, 1) if whole else None


def _thin(points: list[list]) -> list[list]:
    """At most MAX_POINTS points, always keeping the last (the total so far)."""
    if len(points) <= MAX_POINTS:
        return points
    step = math.ceil(len(points) / MAX_POINTS)
    return points[::step] + ([points[-1]] if (len(points) - 1) % step else [])
