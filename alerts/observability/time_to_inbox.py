"""Time to inbox: how long readers waited between the editor publishing an alert and
the provider reporting it delivered to their mailbox, as p50, p95 and p99, overall and
per mailbox provider.

Each "delivered" event is matched to its alert as it arrives (`arrival_of`, by the
provider message id, which is on the batch for a batch call and on the ledger row for a
per-recipient message) and stored with the alert and the reader's mailbox provider on
its TrackingEvent row; the figures are then one query over the alert's events.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import NamedTuple

from anymail.signals import EventType
from django.core.cache import cache
from django.db import connection

from ..common import metrics
from ..models import Alert, Batch, Delivery, TrackingEvent
from .mailboxes import LABELS, mailbox_of

QUANTILES = (0.5, 0.95, 0.99)
# An alert's figures take one sort of its delivered events: about 2 s for a million on
# a busy 2-core machine (bench/time_to_inbox.py). The progress page polls every second
# and every scrape asks again, so polls and scrapes reuse them for this long.
CACHE_SECONDS = 30


class Arrival(NamedTuple):
    """What an event is about: its alert (None for a digest or an unknown message),
    when that alert was published, and the reader's mailbox provider."""

    alert_id: int | None
    published_at: datetime | None
    mailbox: str


def arrival_of(message_id: str, recipient: str) -> Arrival:
    """The alert a provider event belongs to, by its message id: one index probe of the
    batches, and one of the ledger when the id was a per-recipient message's."""
    mailbox = mailbox_of(recipient)
    if not message_id:
        return Arrival(None, None, mailbox)
    bare = message_id.strip("<>")
    spellings = {message_id, bare, f"<{bare}>"}
    found = (Batch.objects.filter(message_id__in=spellings, alert__isnull=False)
             .values_list("alert_id", "alert__published_at").first())
    if found is None:
        found = (Delivery.objects.filter(message_id__in=spellings, alert__isnull=False)
                 .values_list("alert_id", "alert__published_at").first())
    return Arrival(found[0], found[1], mailbox) if found else Arrival(None, None, mailbox)


def observe_arrival(arrival: Arrival, delivered_at: datetime) -> None:
    """Add one reader's time to inbox to the histogram (alerts only)."""
    if arrival.alert_id is not None and arrival.published_at is not None:
        seconds = max((delivered_at - arrival.published_at).total_seconds(), 0.0)
        metrics.TIME_TO_INBOX_SECONDS.labels(mailbox=arrival.mailbox).observe(seconds)


def count_event(esp_name: str, kind: str, outcome: str) -> None:
    metrics.WEBHOOK_EVENTS.labels(esp=str(esp_name).lower(), event=kind, outcome=outcome).inc()


@dataclass(frozen=True)
class Quantiles:
    """Seconds from publishing to delivery: how many readers, and the 50th, 95th and
    99th percentiles (interpolated, as PostgreSQL's percentile_cont)."""

    count: int
    p50: float | None
    p95: float | None
    p99: float | None

    @classmethod
    def of(cls, count: int, values) -> Quantiles:
        values = [round(float(v), 3) if v is not None else None for v in (values or [None] * 3)]
        return cls(count, *values)


NONE = Quantiles(0, None, None, None)


@dataclass(frozen=True)
class InboxTimes:
    overall: Quantiles = NONE
    by_mailbox: dict[str, Quantiles] = field(default_factory=dict)

    def rows(self) -> list[tuple[str, str, Quantiles]]:
        """(mailbox, label, figures) for each provider that had deliveries, in LABELS' order."""
        return [(key, label, self.by_mailbox[key]) for key, label in LABELS.items() if key in self.by_mailbox]

    def as_dict(self) -> dict:
        return {"overall": vars(self.overall),
                "by_mailbox": {key: vars(value) for key, value, in self.by_mailbox.items()}}


def alert_inbox_times(alert: Alert, *, cached: bool = False) -> InboxTimes:
    times = cached_inbox_times([alert.pk]) if cached else inbox_times([alert.pk])
    return times.get(alert.pk, InboxTimes())


def cached_inbox_times(alert_ids: list[int]) -> dict[int, InboxTimes]:
    """inbox_times, each alert's figures at most CACHE_SECONDS old (shared cache)."""
    keys = {pk: f"stoppress:inbox:{pk}" for pk in alert_ids}
    found = cache.get_many(list(keys.values()))
    missing = [pk for pk, key in keys.items() if not isinstance(found.get(key), InboxTimes)]
    fresh = inbox_times(missing)
    # An alert without deliveries yet is kept as empty figures, so it is not asked again.
    cache.set_many({keys[pk]: fresh.get(pk, InboxTimes()) for pk in missing}, CACHE_SECONDS)
    times = {pk: found[key] for pk, key in keys.items() if pk not in missing}
    times.update(fresh)
    return {pk: value for pk, value in times.items() if value.overall.count}


def inbox_times(alert_ids: list[int]) -> dict[int, InboxTimes]:
    """Each alert's time to inbox, overall and per mailbox provider (alerts with no
    delivered event are left out)."""
    if not alert_ids:
        return {}
    rows = _quantile_rows(list(alert_ids)) if connection.vendor == "postgresql" else _quantile_rows_portable(alert_ids)
    overall: dict[int, Quantiles] = {}
    by_mailbox: dict[int, dict[str, Quantiles]] = {}
    for alert_id, mailbox, count, values in rows:
        figures = Quantiles.of(count, values)
        if mailbox is None:
            overall[alert_id] = figures
        else:
            by_mailbox.setdefault(alert_id, {})[mailbox] = figures
    return {alert_id: InboxTimes(figures, by_mailbox.get(alert_id, {})) for alert_id, figures in overall.items()}


def _quantile_rows(alert_ids: list[int]) -> list[tuple]:
    """Raw, because the ORM has neither percentile_cont nor ROLLUP: one pass over the
    alerts' delivered events (by the partial index on alert and event type) gives every
    alert's overall figures and each mailbox provider's."""
    events, alerts = TrackingEvent._meta.db_table, Alert._meta.db_table
    sql = f"""
        SELECT e.alert_id, e.mailbox, COUNT(*),
               percentile_cont(%s::float8[]) WITHIN GROUP (
                   ORDER BY GREATEST(EXTRACT(EPOCH FROM e.occurred_at - a.published_at), 0))
        FROM {events} e JOIN {alerts} a ON a.id = e.alert_id
        WHERE e.alert_id = ANY(%s) AND e.event_type = %s AND a.published_at IS NOT NULL
        GROUP BY ROLLUP (e.alert_id, e.mailbox)
        HAVING e.alert_id IS NOT NULL
    """
    with connection.cursor() as cursor:
        cursor.execute(sql, [list(QUANTILES), alert_ids, EventType.DELIVERED])
        # ROLLUP marks an alert's overall row with a NULL mailbox; the column itself is
        # never NULL (it defaults to "").
        return cursor.fetchall()


def _quantile_rows_portable(alert_ids: list[int]) -> list[tuple]:
    """The same rows on any database, the percentiles computed here (SQLite, in development)."""
    published = dict(Alert.objects.filter(pk__in=alert_ids).values_list("pk", "published_at"))
    seconds: dict[tuple[int, str | None], list[float]] = {}
    events = TrackingEvent.objects.filter(alert_id__in=alert_ids, event_type=EventType.DELIVERED)
    for alert_id, mailbox, occurred_at in events.values_list("alert_id", "mailbox", "occurred_at").iterator():
        if published.get(alert_id) is None:
            continue
        value = max((occurred_at - published[alert_id]).total_seconds(), 0.0)
        seconds.setdefault((alert_id, mailbox), []).append(value)
        seconds.setdefault((alert_id, None), []).append(value)
    return [(alert_id, mailbox, len(values), [percentile(sorted(values), q) for q in QUANTILES])
            for (alert_id, mailbox), values in seconds.items()]


def percentile(ordered: list[float], q: float) -> float:
    """percentile_cont: linear interpolation between the closest ranks of sorted values."""
    position = (len(ordered) - 1) * q
    low = int(position)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)
