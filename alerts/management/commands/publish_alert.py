"""Publish an alert from a shell (scripts, a newsroom CMS) and follow it to the end."""

from __future__ import annotations

import time

from django.core.management.base import BaseCommand, CommandError

from alerts.models import Alert
from alerts.publishing import progress, services


class Command(BaseCommand):
    help = "Publish an alert now and print its progress until it has finished sending."

    def add_arguments(self, parser) -> None:
        parser.add_argument("alert_id", type=int)
        parser.add_argument("--no-wait", action="store_true", help="Return once published.")
        parser.add_argument("--timeout", type=float, default=3600, help="Stop waiting after this many seconds.")

    def handle(self, *args, alert_id: int, no_wait: bool, timeout: float, **options) -> None:
        alert = Alert.objects.filter(pk=alert_id).first()
        if alert is None:
            raise CommandError(f"No alert with id {alert_id}.")
        if services.alert_publish(alert_id=alert_id):
            self.stdout.write(f"Published alert {alert_id}: {alert.headline}")
        else:
            self.stdout.write(f"Alert {alert_id} was already {alert.get_status_display().lower()}.")
        if no_wait:
            return
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            alert.refresh_from_db()
            p = progress.alert_progress(alert)
            self.stdout.write(f"{p.status}: sent {p.sent}, failed {p.failed}, remaining {p.remaining}, "
                              f"{p.rate_per_s}/s")
            if alert.status not in (Alert.Status.SENDING, Alert.Status.SCHEDULED):
                return
            time.sleep(1)
        raise CommandError("Timed out waiting for the alert to finish (it keeps sending).")
