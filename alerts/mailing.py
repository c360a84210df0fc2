"""Sending single transactional emails (confirmations, preference links)."""

from __future__ import annotations

import logging

from .emails import confirmation_message
from .models import Subscriber, Suppression
from .preference_emails import preferences_message
from .ratelimits import allow_confirmation_email, allow_preferences_email

logger = logging.getLogger(__name__)


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


def preferences_link_send(*, email_hmac: str) -> bool:
    """Email a preferences link to the subscriber with this address hash, if there is
    one that has ever been confirmed, it is not suppressed, and it is outside its
    cooldown. Returns whether an email was sent."""
    subscriber = Subscriber.objects.filter(email_hmac=email_hmac, confirmed_at__isnull=False).first()
    if subscriber is None:
        return False
    if Suppression.objects.filter(email_hmac=email_hmac, lifted_at__isnull=True).exists():
        return False  # bounced or complained: more mail would only hurt our reputation
    if not allow_preferences_email(email_hmac):
        logger.info("Preferences link for subscriber %s held back by the cooldown", subscriber.pk)
        return False
    preferences_message(subscriber).send()
    return True
