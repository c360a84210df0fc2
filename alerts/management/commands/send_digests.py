"""Run one digest tick by hand (operators, tests); beat normally does this every minute."""

from __future__ import annotations

from datetime import datetime

from django.core.management.base import BaseCommand, CommandError
from django.utils import timezone

from alerts.digests.schedule import digest_tick
from alerts.models import DigestRun


class Command(BaseCommand):
    help = "Start the digest runs that are due now (or at --at), exactly as a beat tick does."

    def add_arguments(self, parser) -> None:
        parser.add_argument("--now", action="store_true", help="Run the tick for the current time.")
        parser.add_argument("--at", help="Run the tick as if it were this ISO 8601 time (with offset).")

    def handle(self, *args, now: bool, at: str | None, **options) -> None:
        if not now and not at:
            raise CommandError("Say --now, or --at 2026-11-27T07:00:00+00:00.")
        when = timezone.now()
        if at:
            try:
                when = datetime.fromisoformat(at)
            except ValueError:
                raise CommandError(f"--at {at!r} is not an ISO 8601 time.") from None
            if timezone.is_naive(when):
                raise CommandError("--at needs a UTC offset, e.g. +00:00.")
        run_ids = digest_tick(now=when)
        if not run_ids:
            self.stdout.write("No digests due.")
        for run in DigestRun.objects.filter(pk__in=run_ids):
            self.stdout.write(f"Started {run.period_key} for {run.time_zone}: {run.planned} subscribers")
