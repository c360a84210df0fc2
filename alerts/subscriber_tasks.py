"""Celery tasks for subscriber housekeeping (imported by alerts.tasks)."""

from __future__ import annotations

from celery import shared_task

from . import mailing, retention

__all__ = ["purge_old_deliveries", "purge_unconfirmed", "send_preferences_link"]


@shared_task(name="alerts.send_preferences_link", acks_late=True)
def send_preferences_link(email_hmac: str) -> None:
    """Email a preferences link to the subscriber with this address hash, if any.
    Keyed by the hash rather than an id so the view enqueues the same task for known
    and unknown addresses. Running twice is harmless: the cooldown lets one through."""
    mailing.preferences_link_send(email_hmac=email_hmac)


@shared_task(name="alerts.purge_unconfirmed")
def purge_unconfirmed() -> int:
    """Delete signups left unconfirmed past the retention period. Safe to run twice or
    to kill halfway: each chunk is deleted in its own statement."""
    return retention.purge_unconfirmed()


@shared_task(name="alerts.purge_old_deliveries")
def purge_old_deliveries() -> int:
    """Delete delivery ledger rows past DELIVERY_RETENTION_DAYS. Safe to run twice or
    to kill halfway, like purge_unconfirmed."""
    return retention.purge_old_deliveries()
