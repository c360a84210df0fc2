"""Who an alert goes to as it happens, and the still-eligible readers of one batch.

The audience is decided in SQL at publication: confirmed before the alert was
published, taking alerts as they happen, following one of its topics (a reader with no
topics follows them all), and not suppressed. Each batch asks again for its own range
when it sends, so someone who unsubscribes or is suppressed mid-send is skipped.
"""

from __future__ import annotations

from collections.abc import Iterator

from django.db.models import Exists, Max, OuterRef, QuerySet
from django.utils import timezone

from ..common.cache import ProcessCache
from ..models import Alert, Batch, Delivery, Subscriber, Suppression
from ..sending import ledger

# Per worker process, keyed by everything that could change the value.
_topic_ids_cache: ProcessCache[list[int]] = ProcessCache("alert topics", size=100)
_audience_sql_cache: ProcessCache[tuple[str, tuple]] = ProcessCache("audience SQL", size=20)


def audience(alert: Alert) -> QuerySet[Subscriber]:
    """Subscribers an alert goes to as it happens: confirmed before it was published,
    taking alerts as they happen, not suppressed, and following one of its topics (a
    subscriber with no topics follows them all)."""
    return audience_before_suppression(alert).unsuppressed()


def audience_before_suppression(alert: Alert) -> QuerySet[Subscriber]:
    """The audience but for the suppression list, which the cut joins on its own."""
    if alert.follow_up_of_id:
        return recipients_of(alert.follow_up_of_id)
    subscribers = Subscriber.objects.filter(
        status=Subscriber.Status.CONFIRMED,
        frequency=Subscriber.Frequency.IMMEDIATE,
        confirmed_at__lte=alert.published_at,
    )
    topic_ids = _topic_ids(alert)
    if topic_ids:
        follows = Subscriber.topics.through.objects.filter(subscriber_id=OuterRef("pk"))
        subscribers = subscribers.filter(
            ~Exists(follows) | Exists(follows.filter(topic_id__in=topic_ids))
        )
    return subscribers


# Ledger states that mean the reader was sent the alert: handed to the provider and not
# bounced (a complaint or an unsubscribe says they had it; the filters below leave them out).
RECEIVED = (Delivery.Status.SENT, Delivery.Status.DELIVERED, Delivery.Status.DEFERRED,
            Delivery.Status.OPENED, Delivery.Status.CLICKED, Delivery.Status.COMPLAINED,
            Delivery.Status.UNSUBSCRIBED)


def recipients_of(alert_id: int, within: tuple[int, int] | None = None) -> QuerySet[Subscriber]:
    """The audience of a correction or update: the readers the ledger says received
    alert `alert_id` and who are still subscribed (whatever their topics or frequency
    now), optionally only those with ids `within` (first, last). The cut walks them in
    id order like any audience, probing the ledger's unique (alert, subscriber)."""
    received = Delivery.objects.filter(alert_id=alert_id, subscriber_id=OuterRef("pk"), status__in=RECEIVED)
    subscribers = Subscriber.objects.filter(status=Subscriber.Status.CONFIRMED)
    if within is not None:
        # The range on the ledger too: PostgreSQL does not carry a range across the
        # join, and without it may read all of the original's rows for every batch.
        received = received.filter(subscriber_id__gte=within[0], subscriber_id__lte=within[1])
        subscribers = subscribers.filter(pk__gte=within[0], pk__lte=within[1])
    return subscribers.filter(Exists(received))


# Subscriber ids a step of a follow-up's cut reads the original's ledger for, at most
# (as many as the audience walk reads rows); the first steps read fewer, so that the
# first batch is queued at once.
FOLLOW_UP_STEP = 50_000


def follow_up_ranges(original_id: int, after: int, size: int) -> Iterator[tuple[int, int, int]]:
    """The cut of a correction or update: (first_id, last_id, count) for consecutive
    runs of `size` of the original's readers still subscribed, with ids above `after`.

    It walks the original's ledger rather than the subscribers, by windows of
    subscriber ids on its unique (alert, subscriber) index. Windows rather than
    LIMIT: minutes after a big send PostgreSQL's statistics do not know the alert's
    rows yet, and for "the next N rows" it would read all of them at every step."""
    last_id = Delivery.objects.filter(alert_id=original_id).aggregate(m=Max("subscriber_id"))["m"] or 0
    suppressed = Suppression.objects.active().filter(email_hmac=OuterRef("subscriber__email_hmac"))
    rows = (Delivery.objects.filter(alert_id=original_id, status__in=RECEIVED,
                                    subscriber__status=Subscriber.Status.CONFIRMED)
            .filter(~Exists(suppressed)).order_by("subscriber_id").values_list("subscriber_id", flat=True))
    pending: list[int] = []
    window = size
    while after < last_id:
        pending += rows.filter(subscriber_id__gt=after, subscriber_id__lte=after + window)
        while len(pending) >= size:
            yield pending[0], pending[size - 1], size
            del pending[:size]
        after, window = after + window, min(2 * window, FOLLOW_UP_STEP)
    if pending:
        yield pending[0], pending[-1], len(pending)


def _topic_ids(alert: Alert) -> list[int]:
    """The alert's topics, read once per worker process rather than once per batch (a
    published alert can no longer be edited; updated_at keys out any earlier edit)."""
    if alert.pk is None:
        return []
    if alert.status in (Alert.Status.DRAFT, Alert.Status.SCHEDULED):
        return list(alert.topics.values_list("id", flat=True))  # still editable
    return _topic_ids_cache.get((alert.pk, alert.updated_at),
                                lambda: list(alert.topics.values_list("id", flat=True)))


def audience_count(alert: Alert) -> int:
    """How many would receive the alert if it were published now (for the editor)."""
    probe = Alert(pk=alert.pk, published_at=timezone.now(), status=alert.status,
                  follow_up_of_id=alert.follow_up_of_id)
    return audience(probe).count() if alert.pk else 0


def _audience_sql(alert: Alert) -> tuple[str, tuple]:
    """The alert's audience as SQL, compiled once per worker process: compiling the
    queryset costs three times running it. Each batch selects its id range from it
    (PostgreSQL pushes the range into the subquery: the plan is the same)."""
    def compile_() -> tuple[str, tuple]:
        members = audience_before_suppression(alert).order_by().values_list("pk", "email", "email_hmac")
        return members.query.sql_with_params()

    return _audience_sql_cache.get((alert.pk, alert.updated_at, alert.published_at), compile_)


def recipients(batch: Batch, alert: Alert) -> list[tuple[int, str]]:
    """(id, email) of the batch's range still eligible now and not yet in the ledger."""
    if alert.follow_up_of_id:
        return _follow_up_recipients(batch, alert)
    if batch.attempts == 1 and ledger.on_postgresql():
        return ledger.unsuppressed_in_range(*_audience_sql(alert), batch.first_subscriber_id,
                                            batch.last_subscriber_id)
    members = audience_before_suppression(alert)
    if batch.attempts > 1:
        # Only an earlier attempt of this batch can have written ledger rows for its
        # range (ranges do not overlap), so the first attempt skips the anti-join.
        already = Delivery.objects.filter(alert_id=batch.alert_id, subscriber_id=OuterRef("pk"))
        members = members.filter(~Exists(already))
    return ledger.unsuppressed_in_range_portable(members, batch.first_subscriber_id, batch.last_subscriber_id)


def _follow_up_recipients(batch: Batch, alert: Alert) -> list[tuple[int, str]]:
    """recipients() for a correction or update: its query names the batch's range in
    the original's ledger too, so it is built per batch (about a millisecond)."""
    span = (batch.first_subscriber_id, batch.last_subscriber_id)
    members = recipients_of(alert.follow_up_of_id, within=span)
    if batch.attempts > 1:
        already = Delivery.objects.filter(alert_id=batch.alert_id, subscriber_id=OuterRef("pk"))
        members = members.filter(~Exists(already))
    if ledger.on_postgresql():
        sql, params = members.order_by().values_list("pk", "email", "email_hmac").query.sql_with_params()
        return ledger.unsuppressed_in_range(sql, params, *span)
    return ledger.unsuppressed_in_range_portable(members, *span)
