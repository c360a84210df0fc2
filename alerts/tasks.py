"""Thin Celery entry points: each unpacks ids and calls one function."""

from __future__ import annotations

import logging

from celery import shared_task

from . import mailing

logger = logging.getLogger(__name__)


@shared_task(name="alerts.send_confirmation", acks_late=True)
def send_confirmation(subscriber_id: int) -> None:
    """Send the double opt-in email. Running twice is harmless: the per-address
    cooldown lets only the first through."""
    mailing.confirmation_send(subscriber_id=subscriber_id)
