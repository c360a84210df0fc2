"""Who an alert goes to as it happens, and the still-eligible readers of one batch.

The audience is decided in SQL at publication: confirmed before the alert was
published, taking alerts as they happen, following one of its topics (a reader with no
topics follows them all), and not suppressed. Each batch asks again for its own range
when it sends, so someone who unsubscribes or is suppressed mid-send is skipped.
"""

from __future__ import annotations

from django.db.models import Exists, OuterRef, QuerySet
from django.utils import timezone

from ..common.cache import ProcessCache
from ..models import Alert, Batch, Delivery, Subscriber
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


def recipients_of(alert_id: int) -> QuerySet[Subscriber]:
    """The audience of a correction or update: the readers the ledger says received
    alert `alert_id` and who are still subscribed (whatever their topics or frequency
    now). The cut walks them in id order like any audience; each step probes the
    ledger's unique (alert, subscriber) once per subscriber."""
    received = Delivery.objects.filter(alert_id=alert_id, subscriber_id=OuterRef("pk"), status__in=RECEIVED)
    return Subscriber.objects.filter(status=Subscriber.Status.CONFIRMED).filter(Exists(received))


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
