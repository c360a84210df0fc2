"""A reader's control over their subscription: unsubscribe (one click), undo and
resubscribe, the preference centre, and the emailed link to it. Every change is kept
as a consent event with the exact wording shown."""

from __future__ import annotations

import enum
import logging
from dataclasses import dataclass
from datetime import timedelta

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from ..common.addresses import email_hmac
from ..common.consent import Action, Purpose, RequestMeta, Source, record_consent
from ..common.outbox import Event, subscriber_data, webhook_emit
from ..common.ratelimits import allow_preferences_email
from ..emails import preferences_message
from ..models import Delivery, Subscriber, Suppression, Topic, Wording
from ..outbox.services import outbox_preferences_link
from ..signup.services import consent_request_for

logger = logging.getLogger(__name__)


def _locked_subscriber(subscriber_id: int) -> Subscriber | None:
    return Subscriber.objects.select_for_update().filter(pk=subscriber_id).first()


def subscriber_unsubscribe(
    *, subscriber_id: int, source: str, meta: RequestMeta, note: str = "",
    wording_kind: str | None = None, attribute: bool = True,
) -> bool:
    """Stop breaking-news emails to one subscriber and record the withdrawal.

    `attribute` credits the unsubscribe to the last alert the reader was sent (the
    per-alert figures); off where the reader did not act on an alert (re-engagement).

    Marketing consent is a separate purpose and is left alone. Returns True if this
    call changed anything; repeating it is harmless and returns False, as does an
    unknown (for example erased) subscriber.
    """
    with transaction.atomic():
        subscriber = _locked_subscriber(subscriber_id)
        if subscriber is None or subscriber.status == Subscriber.Status.UNSUBSCRIBED:
            return False
        subscriber.mark_unsubscribed()
        subscriber.save(update_fields=["status", "unsubscribed_at"])
        record_consent(subscriber=subscriber, purpose=Purpose.ALERTS, action=Action.WITHDRAWN,
                       source=source, meta=meta, note=note, wording_kind=wording_kind)
        if attribute:
            _attribute_unsubscribe(subscriber.pk)
        webhook_emit(Event.SUBSCRIBER_UNSUBSCRIBED, subscriber_data(subscriber))
    logger.info("Subscriber %s unsubscribed from alerts (%s)", subscriber_id, source)
    return True


def _attribute_unsubscribe(subscriber_id: int) -> None:
    # The link carries no alert id, so credit the unsubscribe to the last alert the
    # reader was sent: that is what the per-alert engagement figures count.
    # Only rows actually sent: reserved digest rows (PENDING) have no sent_at yet.
    latest = Delivery.objects.of_subscriber(subscriber_id).filter(sent_at__isnull=False).order_by(
        "-sent_at", "-id")
    Delivery.objects.filter(
        pk__in=latest.values("pk")[:1],
        status__in=[Delivery.Status.SENT, Delivery.Status.DEFERRED, Delivery.Status.DELIVERED,
                    Delivery.Status.OPENED, Delivery.Status.CLICKED],
    ).update(status=Delivery.Status.UNSUBSCRIBED, updated_at=timezone.now())


class ResubscribeOutcome(enum.Enum):
    RESUBSCRIBED = "resubscribed"
    CONFIRMATION_SENT = "confirmation_sent"
    ALREADY_SUBSCRIBED = "already_subscribed"
    SUPPRESSED = "suppressed"
    UNKNOWN = "unknown"


def subscriber_resubscribe(
    *, subscriber_id: int, source: str, meta: RequestMeta, wording_kind: str | None = None,
) -> ResubscribeOutcome:
    """Turn breaking-news emails back on for a reader who turned them off.

    Within UNSUBSCRIBE_UNDO_HOURS of unsubscribing this is immediate, and the alerts
    consent is recorded as given again: it is the "undo" of a mistaken click. After
    that the link may be sitting in a forwarded email, so the reader gets a fresh
    double opt-in instead (CONFIRMATION_SENT). A bounced or complained address stays
    suppressed until staff lift it. Safe to repeat.
    """
    with transaction.atomic():
        subscriber = _locked_subscriber(subscriber_id)
        if subscriber is None:
            return ResubscribeOutcome.UNKNOWN
        if subscriber.status == Subscriber.Status.CONFIRMED:
            return ResubscribeOutcome.ALREADY_SUBSCRIBED
        if Suppression.objects.of_address(subscriber.email_hmac).exists():
            return ResubscribeOutcome.SUPPRESSED
        if _within_undo_window(subscriber):
            subscriber.mark_confirmed()
            subscriber.save(update_fields=["status", "confirmed_at", "unsubscribed_at"])
            record_consent(subscriber=subscriber, purpose=Purpose.ALERTS, action=Action.GIVEN,
                           source=source, meta=meta, wording_kind=wording_kind)
            webhook_emit(Event.SUBSCRIBER_CONFIRMED, subscriber_data(subscriber))
            return ResubscribeOutcome.RESUBSCRIBED
        _request_confirmation(subscriber, source=source, meta=meta)
    return ResubscribeOutcome.CONFIRMATION_SENT


def _within_undo_window(subscriber: Subscriber) -> bool:
    if subscriber.status != Subscriber.Status.UNSUBSCRIBED or subscriber.unsubscribed_at is None:
        return False
    window = timedelta(hours=settings.UNSUBSCRIBE_UNDO_HOURS)
    return timezone.now() - subscriber.unsubscribed_at <= window


def _request_confirmation(subscriber: Subscriber, *, source: str, meta: RequestMeta) -> None:
    # As for a signup: a fresh double opt-in, confirmed through a request of its own.
    subscriber.status = Subscriber.Status.PENDING
    subscriber.created_at = timezone.now()
    subscriber.save(update_fields=["status", "created_at"])
    record_consent(subscriber=subscriber, purpose=Purpose.ALERTS, action=Action.REQUESTED,
                   source=source, meta=meta)
    consent_request_for(subscriber=subscriber, alerts=True, marketing=False, source=source, meta=meta)


@dataclass(frozen=True)
class PreferenceChoices:
    """What the preference centre form submits."""

    alerts: bool
    marketing: bool
    frequency: str
    topic_ids: list[int]
    time_zone: str


@dataclass(frozen=True)
class PreferencesResult:
    changes: list[str]
    resubscribe: ResubscribeOutcome | None = None
    # Marketing was ticked: it is given once the reader confirms by email.
    marketing_confirmation_sent: bool = False


def subscriber_update_preferences(
    *, subscriber_id: int, choices: PreferenceChoices, meta: RequestMeta,
) -> PreferencesResult | None:
    """Apply the preference centre form. Every change is recorded as a consent event
    with the preference-centre wording; the two purposes (alerts, marketing) change
    independently. Returns None for an unknown subscriber. Safe to repeat: an
    unchanged form records nothing.
    """
    source = Source.PREFERENCES
    with transaction.atomic():
        subscriber = _locked_subscriber(subscriber_id)
        if subscriber is None:
            return None
        delivery_note = _apply_delivery_choices(subscriber, choices)
        # Turning alerts off records the other changes in the withdrawal's note.
        changes, outcome = _apply_alerts_switch(subscriber, choices.alerts, meta, note=delivery_note)
        subscriber.refresh_from_db()
        if delivery_note and subscriber.status == Subscriber.Status.CONFIRMED:
            record_consent(subscriber=subscriber, purpose=Purpose.ALERTS, action=Action.GIVEN,
                           source=source, meta=meta, note=delivery_note,
                           wording_kind=Wording.Kind.PREFERENCES)
        changes += [delivery_note] if delivery_note else []
        asked = choices.marketing and not subscriber.marketing_consent
        if asked:
            _request_marketing(subscriber, meta=meta)
        elif subscriber.marketing_consent and not choices.marketing:
            _withdraw_marketing(subscriber, source=source, meta=meta)
            changes.append("marketing off")
    return PreferencesResult(changes=changes, resubscribe=outcome, marketing_confirmation_sent=asked)


def _apply_alerts_switch(
    subscriber: Subscriber, alerts: bool, meta: RequestMeta, *, note: str = "",
) -> tuple[list[str], ResubscribeOutcome | None]:
    kind = Wording.Kind.PREFERENCES
    if not alerts and subscriber.status != Subscriber.Status.UNSUBSCRIBED:
        subscriber_unsubscribe(subscriber_id=subscriber.pk, source=Source.PREFERENCES,
                               meta=meta, wording_kind=kind, note=note)
        return ["alerts off"], None
    if alerts and subscriber.status == Subscriber.Status.UNSUBSCRIBED:
        outcome = subscriber_resubscribe(subscriber_id=subscriber.pk, source=Source.PREFERENCES,
                                         meta=meta, wording_kind=kind)
        return ["alerts on"], outcome
    return [], None


def _apply_delivery_choices(subscriber: Subscriber, choices: PreferenceChoices) -> str:
    """Save frequency, topics and time zone; describe what changed ("" if nothing)."""
    changed = []
    if choices.frequency != subscriber.frequency:
        subscriber.frequency = choices.frequency
        changed.append(f"frequency: {choices.frequency}")
    if choices.time_zone != subscriber.time_zone:
        subscriber.time_zone = choices.time_zone
        changed.append(f"time zone: {choices.time_zone or 'newsroom default'}")
    subscriber.save(update_fields=["frequency", "time_zone"])
    current = set(subscriber.topics.values_list("id", flat=True))
    wanted = set(Topic.objects.filter(id__in=choices.topic_ids).values_list("id", flat=True))
    if current != wanted:
        subscriber.topics.set(wanted)
        slugs = Topic.objects.filter(id__in=wanted).values_list("slug", flat=True)
        changed.append("topics: " + (", ".join(sorted(slugs)) or "all"))
    return "; ".join(changed)


def _withdraw_marketing(subscriber: Subscriber, *, source: str, meta: RequestMeta) -> None:
    # Withdrawing takes effect at once: it must be as easy as giving, or easier.
    subscriber.marketing_consent = False
    subscriber.save(update_fields=["marketing_consent"])
    record_consent(subscriber=subscriber, purpose=Purpose.MARKETING, action=Action.WITHDRAWN,
                   source=source, meta=meta)


def _request_marketing(subscriber: Subscriber, *, meta: RequestMeta) -> None:
    # The preference link travels in every alert, forwarded ones included, so a tick
    # there is a request that the owner of the address confirms by email, as at signup.
    record_consent(subscriber=subscriber, purpose=Purpose.MARKETING, action=Action.REQUESTED,
                   source=Source.PREFERENCES, meta=meta)
    consent_request_for(subscriber=subscriber, alerts=False, marketing=True, source=Source.PREFERENCES, meta=meta)


def subscriber_revoke_links(*, subscriber_ids: list[int]) -> int:
    """Make every link already emailed to these readers stop working (preference
    centre, confirmations, data links), without rotating SECRET_KEY: links carry their
    issue time and are refused if issued before now. Unsubscribe links keep
    unsubscribing. Returns the number of readers."""
    return Subscriber.objects.filter(pk__in=subscriber_ids).update(links_not_before=timezone.now())


def subscriber_request_preferences_link(*, email: str) -> None:
    """Record "here is your preferences link" for an address, known or not, in the
    outbox (one INSERT ... SELECT), so that it is sent even if Redis is down now.

    The same work happens for every address (one statement, one nudge), so neither
    the response nor its timing says whether we know it. The outbox decides, behind a
    per-address cooldown, whether anything is sent.
    """
    outbox_preferences_link(email_hmac=email_hmac(email))


def preferences_link_send(*, email_hmac: str) -> bool:
    """Email a preferences link to the subscriber with this address hash, if there is
    one that has ever been confirmed, it is not suppressed, and it is outside its
    cooldown. Returns whether an email was sent."""
    subscriber = Subscriber.objects.filter(email_hmac=email_hmac, confirmed_at__isnull=False).first()
    if subscriber is None:
        return False
    if Suppression.objects.of_address(email_hmac).exists():
        return False  # bounced or complained: more mail would only hurt our reputation
    if not allow_preferences_email(email_hmac):
        logger.info("Preferences link for subscriber %s held back by the cooldown", subscriber.pk)
        return False
    preferences_message(subscriber).send()
    return True
