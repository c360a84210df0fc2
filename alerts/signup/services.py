"""Signing up and confirming: the double opt-in, with consent evidence recorded
alongside every state change and the confirmation email queued after the commit."""

from __future__ import annotations

import enum
import logging
from dataclasses import dataclass

from django.conf import settings
from django.db import transaction
from django.db.models import Value
from django.db.models.functions import Lower
from django.utils import timezone

from ..common.addresses import email_hmac
from ..common.consent import Action, Purpose, RequestMeta, Source, record_consent
from ..common.queueing import enqueue, enqueue_on_commit
from ..common.ratelimits import allow_confirmation_email
from ..common.suppression import active_suppression, lift_erasure
from ..common.tokens import TokenExpired, TokenInvalid, confirm_tokens
from ..emails import confirmation_message
from ..models import Subscriber, Suppression, Topic

logger = logging.getLogger(__name__)


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
            enqueue_on_commit("alerts.send_confirmation", subscriber_id=subscriber.pk)
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
    lift_erasure(subscriber.email_hmac)


def subscriber_resend_confirmation(*, subscriber_id: int) -> None:
    """Queue a fresh confirmation email for a still-pending subscriber (cooldown applies
    in the task, so this is safe to expose behind an expired link)."""
    if Subscriber.objects.filter(pk=subscriber_id, status=Subscriber.Status.PENDING).exists():
        enqueue("alerts.send_confirmation", subscriber_id=subscriber_id)


def subscriber_confirm_token_owner(*, token: str) -> int | None:
    """Whose confirmation token this is, even if it has expired (None if forged)."""
    try:
        return confirm_tokens.read(token).subscriber_id
    except TokenExpired as expired:
        return expired.subscriber_id
    except TokenInvalid:
        return None




def confirmation_send(*, subscriber_id: int) -> bool:
    """Send a confirmation email if the subscriber is still pending and the address is
    outside its cooldown. Returns whether an email was sent."""
    subscriber = Subscriber.objects.filter(pk=subscriber_id, status=Subscriber.Status.PENDING).first()
    if subscriber is None:
        return False
    if not allow_confirmation_email(subscriber.email_hmac):
        logger.info("Confirmation for subscriber %s held back by the cooldown", subscriber_id)
        return False
    confirmation_message(subscriber).send()
    return True
