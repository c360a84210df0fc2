"""Sending single transactional emails (confirmations, preference links)."""

from __future__ import annotations

import logging

from .emails import confirmation_message
from .models import Subscriber
from .ratelimits import allow_confirmation_email

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
