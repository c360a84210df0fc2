"""Publish an alert from a shell (scripts, a newsroom CMS) and follow it to the end:
an existing alert by id, or a new one written and published (or scheduled) in one go."""

from __future__ import annotations

import time
import zoneinfo
from datetime import datetime

import pydantic
from django.conf import settings
from django.core.management.base import BaseCommand, CommandError
from django.db import transaction
from django.utils import timezone

from alerts.api.schemas import AlertIn, ScheduleIn
from alerts.models import Alert
from alerts.publishing import progress, services


class Command(BaseCommand):
    help = ("Publish an alert now and print its progress until it has finished sending: an existing "
            "alert (ALERT_ID), or a new one (--headline, --standfirst, --url, --topic, --schedule).")

    def add_arguments(self, parser) -> None:
        parser.add_argument("alert_id", type=int, nargs="?", help="An alert already written in the admin.")
        parser.add_argument("--headline", help="Write a new alert with this headline (its subject).")
        parser.add_argument("--standfirst", default="", help="The new alert's standfirst (preheader).")
        parser.add_argument("--url", default="", help="The new alert's article URL.")
        parser.add_argument("--topic", action="append", default=[], dest="topics", metavar="SLUG",
                            help="A topic of the new alert (repeat for more); none means every reader.")
        parser.add_argument("--schedule", metavar="TIME",
                            help="Publish at this time instead of now, ISO 8601 (2026-12-01T18:30); without "
                                 f"an offset it is the newsroom's time ({settings.PUBLICATION_TIME_ZONE}).")
        parser.add_argument("--no-wait", action="store_true", help="Return once published.")
        parser.add_argument("--timeout", type=float, default=3600, help="Stop waiting after this many seconds.")

    def handle(self, *args, alert_id: int | None, headline: str | None, schedule: str | None,
               no_wait: bool, timeout: float, **options) -> None:
        if (alert_id is None) == (headline is None):
            raise CommandError("Give an ALERT_ID to publish, or --headline to write a new alert (not both).")
        when = _parse_time(schedule) if schedule else None
        if headline is not None:
            alert = self._create(headline=headline, when=when, **options)
        else:
            alert = self._existing(alert_id, when)
        if when is not None:
            alert.refresh_from_db()
            local = timezone.localtime(alert.scheduled_for, zoneinfo.ZoneInfo(settings.PUBLICATION_TIME_ZONE))
            self.stdout.write(f"Alert {alert.pk} is {alert.status} for {local:%Y-%m-%d %H:%M %Z} "
                              f"({alert.scheduled_for:%H:%M} UTC).")
            return
        if not no_wait:
            self._follow(alert, timeout)

    def _create(self, *, headline: str, when: datetime | None, standfirst: str, url: str,
                topics: list[str], **options) -> Alert:
        try:
            fields = AlertIn(headline=headline, standfirst=standfirst, url=url, topics=topics,
                             status="scheduled" if when else "published", scheduled_for=when)
        except pydantic.ValidationError as error:
            raise CommandError("; ".join(f"{'.'.join(map(str, e['loc'])) or 'alert'}: {e['msg']}"
                                         for e in error.errors(include_url=False))) from None
        with transaction.atomic():
            try:
                found = services.topics_by_slug(fields.topics)
            except services.UnknownTopics as unknown:
                raise CommandError(f"{unknown}. Topics are listed under Admin → Topics.") from None
            alert = services.alert_create(headline=fields.headline, standfirst=fields.standfirst,
                                          url=fields.url, topics=found)
            try:
                if when is None:
                    services.alert_publish(alert_id=alert.pk)
                else:
                    services.alert_schedule(alert_id=alert.pk, when=fields.scheduled_for)
            except services.ApprovalRequired as error:
                # Raised inside the transaction: the new alert is rolled back with it.
                raise CommandError(f"{error} Nothing was created: write it in the admin, where another "
                                   "editor can approve it.") from None
        self.stdout.write(f"Created alert {alert.pk}: {alert.headline}")
        return alert

    def _existing(self, alert_id: int, when: datetime | None) -> Alert:
        alert = Alert.objects.filter(pk=alert_id).first()
        if alert is None:
            raise CommandError(f"No alert with id {alert_id}.")
        if when is not None:
            try:
                when = ScheduleIn(scheduled_for=when).scheduled_for
            except pydantic.ValidationError as error:
                raise CommandError(f"--schedule {error.errors()[0]['msg']}") from None
        try:
            if when is not None:
                if not services.alert_schedule(alert_id=alert_id, when=when):
                    raise CommandError(f"Alert {alert_id} is {alert.get_status_display().lower()}: "
                                       "it cannot be scheduled.")
            elif services.alert_publish(alert_id=alert_id):
                self.stdout.write(f"Published alert {alert_id}: {alert.headline}")
            else:
                self.stdout.write(f"Alert {alert_id} was already {alert.get_status_display().lower()}.")
        except services.ApprovalRequired as error:
            raise CommandError(f"Alert {alert_id} was not sent. {error} Approve it in the admin "
                               "(Alerts → the alert → Approve), then run this again.") from None
        return alert

    def _follow(self, alert: Alert, timeout: float) -> None:
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


def _parse_time(text: str) -> datetime:
    """ISO 8601; a time without an offset is the newsroom's local time, as an editor
    would say it (summer time included)."""
    try:
        when = datetime.fromisoformat(text)
    except ValueError:
        raise CommandError(f"--schedule {text!r} is not an ISO 8601 time, e.g. 2026-12-01T18:30.") from None
    if timezone.is_naive(when):
        zone = zoneinfo.ZoneInfo(settings.PUBLICATION_TIME_ZONE)
        when = when.replace(tzinfo=zone)
    return when
