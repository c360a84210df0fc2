"""Writes that matter: signing up, confirming, changing consent.

Each service runs in one transaction, records consent evidence alongside the state
change, and enqueues its email only after the commit.
"""

from __future__ import annotations

import enum
import ipaddress
import logging
from dataclasses import dataclass
from datetime import timedelta

from django.conf import settings
from django.db import transaction
from django.db.models import Value
from django.db.models.functions import Lower
from django.utils import timezone

from . import privacy, wording
from .addresses import email_hmac
from .models import ConsentEvent, Delivery, Subscriber, Suppression, Topic, Wording
from .queueing import enqueue, enqueue_on_commit
from .tokens import TokenExpired, TokenInvalid, confirm_tokens

logger = logging.getLogger(__name__)

Source = ConsentEvent.Source
Purpose = ConsentEvent.Purpose
Action = ConsentEvent.Action


@dataclass(frozen=True)
class RequestMeta:
    """Where a consent action came from; stored according to CONSENT_NETWORK_DATA."""

    ip: str | None = None
    user_agent: str = ""

    def stored_ip(self) -> str | None:
        if settings.CONSENT_NETWORK_DATA == "none" or not self.ip:
            return None
        try:
            address = ipaddress.ip_address(self.ip)
        except ValueError:
            return None
        if settings.CONSENT_NETWORK_DATA == "truncated":
            prefix = 24 if address.version == 4 else 48
            return str(ipaddress.ip_network(f"{address}/{prefix}", strict=False).network_address)
        return str(address)

    def stored_user_agent(self) -> str:
        if settings.CONSENT_NETWORK_DATA == "none":
            return ""
        return self.user_agent[:400]


def record_consent(
    *, subscriber: Subscriber, purpose: str, action: str, source: str,
    meta: RequestMeta, note: str = "", wording_kind: str | None = None,
) -> ConsentEvent:
    """Append one consent event with the wording and privacy notice now in force.

    `wording_kind` names the text the reader was shown when it differs from the
    purpose's own signup wording (the preference centre shows its own)."""
    kind = wording_kind or (
        Wording.Kind.MARKETING if purpose == Purpose.MARKETING else Wording.Kind.ALERTS
    )
    return ConsentEvent.objects.create(
        subscriber=subscriber,
        purpose=purpose,
        action=action,
        source=source,
        wording=wording.current(kind),
        privacy_notice=wording.current(Wording.Kind.PRIVACY),
        ip_address=meta.stored_ip(),
        user_agent=meta.stored_user_agent(),
        note=note,
    )


def active_suppression(email: str) -> Suppression | None:
    return Suppression.objects.filter(email_hmac=email_hmac(email), lifted_at__isnull=True).first()


def subscriber_subscribe(
    *, email: str, marketing: bool, source: str, meta: RequestMeta,
    timezone_name: str = "", topic_ids: list[int] | None = None,
) -> None:
    """Sign an address up. Returns nothing on purpose: the caller must answer every
    address the same way, whatever its state, so nobody can learn who is subscribed.

    `email` must already be normalised (addresses.normalize_email).
    """
    suppression = active_suppression(email)
    if suppression and suppression.reason != Suppression.Reason.ERASED:
        # Bounced or complained: never mail it again from a form anyone can fill in.
        logger.info("Signup for a suppressed address ignored (%s)", suppression.reason)
        return
    with transaction.atomic():
        subscriber = _lock_or_create(email=email, source=source, timezone_name=timezone_name)
        if subscriber.status == Subscriber.Status.CONFIRMED:
            return
        if subscriber.status == Subscriber.Status.UNSUBSCRIBED:
            # Coming back: a fresh double opt-in, and older links stop working.
            subscriber.status = Subscriber.Status.PENDING
            subscriber.created_at = timezone.now()
            subscriber.save(update_fields=["status", "created_at"])
        if topic_ids:
            subscriber.topics.set(Topic.objects.filter(id__in=topic_ids))
        record_consent(subscriber=subscriber, purpose=Purpose.ALERTS, action=Action.REQUESTED,
                       source=source, meta=meta)
        if marketing:
            record_consent(subscriber=subscriber, purpose=Purpose.MARKETING, action=Action.GIVEN,
                           source=source, meta=meta)
        if settings.DOUBLE_OPT_IN or suppression:
            from .tasks import send_confirmation

            enqueue_on_commit(send_confirmation, subscriber_id=subscriber.pk)
        else:
            _confirm(subscriber, source=source, meta=meta, marketing=marketing)


def _lock_or_create(*, email: str, source: str, timezone_name: str) -> Subscriber:
    # INSERT ... ON CONFLICT DO NOTHING, then lock: two concurrent signups of one
    # address meet at the unique constraint and both end up holding the same row.
    Subscriber.objects.bulk_create(
        [Subscriber(email=email, email_hmac=email_hmac(email), source=source,
                    time_zone=timezone_name[:64])],
        ignore_conflicts=True,
    )
    return Subscriber.objects.select_for_update().get(pk=subscriber_id_for(email))


def subscriber_id_for(email: str) -> int | None:
    """Look an address up case-insensitively through the unique LOWER(email) index."""
    return (
        Subscriber.objects.alias(email_lower=Lower("email"))
        .filter(email_lower=Lower(Value(email))).values_list("pk", flat=True).first()
    )


class ConfirmOutcome(enum.Enum):
    CONFIRMED = "confirmed"
    ALREADY_CONFIRMED = "already_confirmed"
    EXPIRED = "expired"
    INVALID = "invalid"


@dataclass(frozen=True)
class ConfirmResult:
    outcome: ConfirmOutcome
    subscriber_id: int | None = None


def subscriber_confirm(*, token: str, meta: RequestMeta) -> ConfirmResult:
    """Confirm the subscription a confirmation link names. Safe to repeat: a second
    confirmation of the same address reports ALREADY_CONFIRMED and changes nothing."""
    try:
        claim = confirm_tokens.read(token)
    except TokenExpired as expired:
        return ConfirmResult(ConfirmOutcome.EXPIRED, expired.subscriber_id)
    except TokenInvalid:
        return ConfirmResult(ConfirmOutcome.INVALID)
    with transaction.atomic():
        subscriber = Subscriber.objects.select_for_update().filter(pk=claim.subscriber_id).first()
        if subscriber is None:
            return ConfirmResult(ConfirmOutcome.INVALID)
        if subscriber.status == Subscriber.Status.CONFIRMED:
            return ConfirmResult(ConfirmOutcome.ALREADY_CONFIRMED, subscriber.pk)
        if not confirm_tokens.matches(subscriber, claim):
            return ConfirmResult(ConfirmOutcome.INVALID)
        marketing = _marketing_requested(subscriber)
        _confirm(subscriber, source=Source.EMAIL_LINK, meta=meta, marketing=marketing)
    return ConfirmResult(ConfirmOutcome.CONFIRMED, subscriber.pk)


def _marketing_requested(subscriber: Subscriber) -> bool:
    last = (
        subscriber.consent_events.filter(purpose=Purpose.MARKETING)
        .order_by("-created_at", "-id").values_list("action", flat=True).first()
    )
    return last == Action.GIVEN


def _confirm(subscriber: Subscriber, *, source: str, meta: RequestMeta, marketing: bool) -> None:
    subscriber.mark_confirmed()
    subscriber.marketing_consent = marketing
    subscriber.save(update_fields=["status", "confirmed_at", "unsubscribed_at", "marketing_consent"])
    record_consent(subscriber=subscriber, purpose=Purpose.ALERTS, action=Action.CONFIRMED,
                   source=source, meta=meta)
    if marketing:
        record_consent(subscriber=subscriber, purpose=Purpose.MARKETING, action=Action.CONFIRMED,
                       source=source, meta=meta)
    # A fresh double opt-in is what lifts an erasure suppression (and only that kind).
    Suppression.objects.filter(
        email_hmac=subscriber.email_hmac, lifted_at__isnull=True, reason=Suppression.Reason.ERASED
    ).update(lifted_at=timezone.now(), lift_reason="Signed up again and confirmed")


def subscriber_resend_confirmation(*, subscriber_id: int) -> None:
    """Queue a fresh confirmation email for a still-pending subscriber (cooldown applies
    in the task, so this is safe to expose behind an expired link)."""
    from .tasks import send_confirmation

    if Subscriber.objects.filter(pk=subscriber_id, status=Subscriber.Status.PENDING).exists():
        enqueue(send_confirmation, subscriber_id=subscriber_id)


def subscriber_confirm_token_owner(*, token: str) -> int | None:
    """Whose confirmation token this is, even if it has expired (None if forged)."""
    try:
        return confirm_tokens.read(token).subscriber_id
    except TokenExpired as expired:
        return expired.subscriber_id
    except TokenInvalid:
        return None


# --- Subscriber control: unsubscribe, resubscribe, preferences, erasure ------------


def _locked_subscriber(subscriber_id: int) -> Subscriber | None:
    return Subscriber.objects.select_for_update().filter(pk=subscriber_id).first()


def subscriber_unsubscribe(
    *, subscriber_id: int, source: str, meta: RequestMeta, note: str = "",
    wording_kind: str | None = None,
) -> bool:
    """Stop breaking-news emails to one subscriber and record the withdrawal.

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
        _attribute_unsubscribe(subscriber.pk)
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
        if Suppression.objects.filter(email_hmac=subscriber.email_hmac, lifted_at__isnull=True).exists():
            return ResubscribeOutcome.SUPPRESSED
        if _within_undo_window(subscriber):
            subscriber.mark_confirmed()
            subscriber.save(update_fields=["status", "confirmed_at", "unsubscribed_at"])
            record_consent(subscriber=subscriber, purpose=Purpose.ALERTS, action=Action.GIVEN,
                           source=source, meta=meta, wording_kind=wording_kind)
            return ResubscribeOutcome.RESUBSCRIBED
        _request_confirmation(subscriber, source=source, meta=meta)
    return ResubscribeOutcome.CONFIRMATION_SENT


def _within_undo_window(subscriber: Subscriber) -> bool:
    if subscriber.status != Subscriber.Status.UNSUBSCRIBED or subscriber.unsubscribed_at is None:
        return False
    window = timedelta(hours=settings.UNSUBSCRIBE_UNDO_HOURS)
    return timezone.now() - subscriber.unsubscribed_at <= window


def _request_confirmation(subscriber: Subscriber, *, source: str, meta: RequestMeta) -> None:
    from .tasks import send_confirmation

    # As in subscriber_subscribe: a fresh double opt-in, and older confirm links die.
    subscriber.status = Subscriber.Status.PENDING
    subscriber.created_at = timezone.now()
    subscriber.save(update_fields=["status", "created_at"])
    record_consent(subscriber=subscriber, purpose=Purpose.ALERTS, action=Action.REQUESTED,
                   source=source, meta=meta)
    enqueue_on_commit(send_confirmation, subscriber_id=subscriber.pk)


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
        if choices.marketing != subscriber.marketing_consent:
            _set_marketing(subscriber, choices.marketing, source=source, meta=meta)
            changes.append("marketing " + ("on" if choices.marketing else "off"))
    return PreferencesResult(changes=changes, resubscribe=outcome)


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


def _set_marketing(subscriber: Subscriber, given: bool, *, source: str, meta: RequestMeta) -> None:
    subscriber.marketing_consent = given
    subscriber.save(update_fields=["marketing_consent"])
    record_consent(subscriber=subscriber, purpose=Purpose.MARKETING,
                   action=Action.GIVEN if given else Action.WITHDRAWN, source=source, meta=meta)


def subscriber_request_preferences_link(*, email: str) -> None:
    """Queue "here is your preferences link" for an address, known or not.

    The same work happens for every address (one enqueue, keyed by the address's
    HMAC), so neither the response nor its timing says whether we know it. The task
    decides, behind a per-address cooldown, whether anything is sent.
    """
    from .subscriber_tasks import send_preferences_link

    enqueue(send_preferences_link, email_hmac=email_hmac(email))


def subscriber_erase(*, subscriber_id: int, by=None) -> bool:
    """Erase a subscriber: their row, consent history and deliveries, and every copy of
    their address in free text. Only the address's keyed hash survives, as an ERASED
    suppression, so imports skip it and a new signup needs a fresh double opt-in.

    `by` is the staff user who did it, or None for the subscriber themselves.
    Returns False if there was no such subscriber (already erased): safe to repeat.
    """
    with transaction.atomic():
        subscriber = _locked_subscriber(subscriber_id)
        if subscriber is None:
            return False
        privacy.scrub_address(subscriber)
        who = f"staff user {by.pk}" if by is not None else "the subscriber"
        suppression_add(email_hmac=subscriber.email_hmac, reason=Suppression.Reason.ERASED,
                        detail=f"Erased by {who}")
        Delivery.objects.of_subscriber(subscriber.pk).delete()
        subscriber.delete()
    logger.info("Erased subscriber %s (by %s)", subscriber_id, who)
    return True


# --- The suppression list -----------------------------------------------------------


def suppression_add(*, email_hmac: str, reason: str, event_id: str = "", detail: str = "") -> bool:
    """Suppress an address (by keyed hash). Returns False if it already had an active
    suppression, which is kept: the first reason is the one that counts."""
    if Suppression.objects.filter(email_hmac=email_hmac, lifted_at__isnull=True).exists():
        return False
    # ON CONFLICT DO NOTHING against the one-active-per-address index: a concurrent
    # insert for the same address is not an error.
    created = Suppression.objects.bulk_create(
        [Suppression(email_hmac=email_hmac, reason=reason, event_id=event_id[:200],
                     detail=detail[:400])],
        ignore_conflicts=True,
    )
    logger.info("Suppressed an address (%s, event %s)", reason, event_id or "-")
    return bool(created)


def suppression_lift(*, suppression_id: int, user, reason: str) -> bool:
    """Lift an active suppression, recording who and why (the reason is required).
    Returns False if it was not active. Raises ValueError for a blank reason."""
    reason = (reason or "").strip()
    if not reason:
        raise ValueError("A reason is required to lift a suppression.")
    lifted = Suppression.objects.filter(pk=suppression_id, lifted_at__isnull=True).update(
        lifted_at=timezone.now(), lifted_by=user, lift_reason=reason[:400],
    )
    if lifted:
        logger.info("Suppression %s lifted by user %s", suppression_id, getattr(user, "pk", None))
    return lifted == 1
