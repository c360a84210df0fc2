"""The benchmark's side of the Django app: the alert (or digest tick) it measures, the
no-op tasks that warm the workers up, and the app's own address hash for the seed.

Every import of `alerts.*` in the benchmark is in this module, so that a change of the
app's module paths is fixed here alone. They stay inside the functions: Django is set up
only once the benchmark has put its environment in place.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, TypeAlias

if TYPE_CHECKING:
    import redis
    from django.db.models import QuerySet

    from alerts.models import Alert, Batch


def app_email_hmac(email: str) -> str:
    """The app's keyed hash of an address. The seed computes the same HMAC itself (one
    copied key per row is faster) and checks one row against this."""
    from alerts.common.addresses import email_hmac

    return email_hmac(email)


def warm_up(broker: redis.Redis, rounds: int) -> None:
    """Run no-op tasks (ids that do not exist) so each pool child has run a task (lazy
    imports done) and this process has its broker connection open, as in a long-running
    deployment; then wait for the queue to drain. (Celery closes the database connection
    after every task anyway.)"""
    from alerts.tasks import fan_out_alert, send_batch

    for _ in range(rounds):
        send_batch.delay(batch_id=0)
        fan_out_alert.delay(alert_id=0)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if broker.llen("alerts") == 0 and broker.hlen("unacked") == 0:
            break
        time.sleep(0.05)
    time.sleep(0.3)


def digest_hour_now() -> int:
    """The publication's local hour, so the workers find the daily digest due now."""
    import zoneinfo

    from django.conf import settings

    return datetime.now(zoneinfo.ZoneInfo(settings.PUBLICATION_TIME_ZONE)).hour


def create_alert(**fields: object) -> Alert:
    from alerts.models import Alert

    return Alert.objects.create(**{
        "headline": "Bench: Parliament votes to dissolve itself after all-night session",
        "standfirst": "A general election will be held in six weeks, the Speaker announced.",
        "body": "MPs voted 412 to 198 shortly after 5am.\n\nThe motion was tabled by the "
                "government late on Tuesday after talks collapsed.\n\nMore follows.",
        "url": "https://news.example.com/politics/2026/parliament-dissolved",
        **fields,
    })


def _since(t0: float, moment: datetime | None) -> float | None:
    return None if moment is None else round(moment.timestamp() - t0, 3)


def _batch_summary(batches: QuerySet[Batch]) -> dict:
    from django.db.models import Count, Max, Sum

    rows = (batches.values("status").annotate(
        n=Count("pk"), planned=Sum("planned_count"), sent=Sum("sent_count"), failed=Sum("failed_count"),
        skipped=Sum("skipped_count"), max_attempts=Max("attempts")).order_by("status"))
    return {
        "batches": {row["status"]: {k: v for k, v in row.items() if k != "status"} for row in rows},
        "batch_errors": list(batches.exclude(last_error="").values_list("last_error", flat=True)[:3]),
    }


@dataclass(frozen=True)
class Progress:
    """One look at a sending alert in the database, as the chaos benchmark polls it
    (bench/chaos.py): to time its faults and to say how many readers were in flight."""

    status: str
    fanned_out: bool
    last_handoff_at: datetime | None
    batches: dict[str, int]  # batch status -> batches
    sending: tuple[tuple[int, int], ...]  # (batch id, planned readers) of each batch SENDING

    @property
    def cut(self) -> int:
        return sum(self.batches.values())

    @property
    def sending_readers(self) -> int:
        return sum(readers for _, readers in self.sending)


class AlertJob:
    """Publish one breaking alert, through the same service the admin calls."""

    kind = "alert"

    def prepare(self) -> None:
        self.alert = create_alert()

    def start(self) -> None:
        from alerts.publishing.services import alert_publish

        alert_publish(alert_id=self.alert.pk, user=None)

    def status(self) -> str:
        from alerts.models import Alert

        return Alert.objects.filter(pk=self.alert.pk).values_list("status", flat=True).first() or "?"

    def published_at(self) -> datetime:
        from alerts.models import Alert

        return Alert.objects.values_list("published_at", flat=True).get(pk=self.alert.pk)

    def ledger_where(self) -> tuple[str, list]:
        return "d.alert_id = %s", [self.alert.pk]

    def progress(self) -> Progress | None:
        """The alert row and its batches now; None while the database does not answer
        (a chaos scenario restarts it), with the broken connection closed so the next
        look opens a new one."""
        from django.db import DatabaseError, InterfaceError, connection
        from django.db.models import Count

        from alerts.models import Alert, Batch

        try:
            alert = Alert.objects.values("status", "fanned_out_at", "last_handoff_at").get(pk=self.alert.pk)
            batches = Batch.objects.filter(alert_id=self.alert.pk)
            counts = dict(batches.values_list("status").annotate(n=Count("pk")).values_list("status", "n"))
            sending = tuple(batches.filter(status=Batch.Status.SENDING).values_list("pk", "planned_count"))
        except (DatabaseError, InterfaceError):
            connection.close()
            return None
        return Progress(alert["status"], alert["fanned_out_at"] is not None, alert["last_handoff_at"],
                        counts, sending)

    def summary(self, t0: float) -> dict:
        from django.db.models import Count

        from alerts.models import Alert, Batch, Delivery

        alert = Alert.objects.get(pk=self.alert.pk)
        return {
            "status": alert.status,
            "audience_size": alert.audience_size,
            "published_at_s": _since(t0, alert.published_at),
            "fanned_out_at_s": _since(t0, alert.fanned_out_at),
            "first_handoff_at_s": _since(t0, alert.first_handoff_at),
            "last_handoff_at_s": _since(t0, alert.last_handoff_at),
            "finished_at_s": _since(t0, alert.finished_at),
            **_batch_summary(Batch.objects.filter(alert_id=alert.pk)),
            "ledger": dict(Delivery.objects.filter(alert_id=alert.pk).values_list("status")
                           .annotate(n=Count("pk")).values_list("status", "n")),
        }


class CorrectionJob(AlertJob):
    """Send a correction of an alert that every eligible subscriber received: the
    original's ledger is written directly (one batch per 1,000 readers, each with the
    provider message id a batch call gets), then the correction goes through the same
    function the admin calls, cut by the original's ledger and threaded under it."""

    kind = "correction"

    def prepare(self) -> None:
        from django.db import connection

        from alerts.models import Batch
        from bench.seed import eligible_where

        published = datetime.now(UTC) - timedelta(minutes=5)
        self.original = create_alert(status="sent", published_at=published)
        with connection.cursor() as cursor:
            cursor.execute(f"SELECT s.id FROM alerts_subscriber s WHERE {eligible_where('alert')} ORDER BY s.id",
                           {"at": published})
            ids = [row[0] for row in cursor.fetchall()]
        Batch.objects.bulk_create([
            Batch(alert=self.original, status="sent", first_subscriber_id=chunk[0], last_subscriber_id=chunk[-1],
                  planned_count=len(chunk), sent_count=len(chunk), attempts=1, sent_at=published,
                  message_id=f"<bench.{self.original.pk}.{n}@mg.news.example.com>")
            for n, chunk in enumerate(ids[i:i + 1000] for i in range(0, len(ids), 1000))])
        with connection.cursor() as cursor:
            cursor.execute(
                "INSERT INTO alerts_delivery (alert_id, subscriber_id, batch_id, status, digest_key, message_id,"
                " error, sent_at) SELECT b.alert_id, s.id, b.id, 'sent', '', '', '', b.sent_at"
                " FROM alerts_batch b JOIN alerts_subscriber s ON s.id BETWEEN b.first_subscriber_id"
                f" AND b.last_subscriber_id WHERE b.alert_id = %(alert)s AND {eligible_where('alert')}",
                {"alert": self.original.pk, "at": published})
        self.alert = self.original

    def start(self) -> None:
        from alerts.publishing.corrections import send_follow_up

        self.alert = send_follow_up(self.original, kind="correction", headline="Bench: the vote was 411 to 199",
                                    standfirst="We gave the wrong figures earlier.")

    def published_at(self) -> datetime:
        return self.original.published_at  # the readers are the original's


class DigestJob:
    """Run one digest tick, as beat does every minute (the `alerts.send_digests` task),
    for daily subscribers whose digest hour is now, with three alerts to summarise."""

    kind = "digest"

    def prepare(self) -> None:
        import zoneinfo

        from django.conf import settings

        local = datetime.now(zoneinfo.ZoneInfo(settings.PUBLICATION_TIME_ZONE))
        if local.hour != int(os.environ["DIGEST_HOUR"]):
            raise RuntimeError("the digest hour passed during the benchmark: run it again")
        due = local.replace(minute=0, second=0, microsecond=0)
        for hours, headline in ((1, "Bench digest: budget passed"), (3, "Bench digest: storm warning"),
                                (6, "Bench digest: cup final result")):
            create_alert(headline=headline, status="sent", published_at=due - timedelta(hours=hours))

    def start(self) -> None:
        from alerts.tasks import send_digests

        send_digests.delay()

    def status(self) -> str:
        from alerts.models import DigestRun

        statuses = set(DigestRun.objects.values_list("status", flat=True))
        if not statuses:
            return "not started"
        return "sending" if "sending" in statuses else ("failed" if "failed" in statuses else "sent")

    def published_at(self) -> datetime:
        return datetime.now(UTC)  # not used by the digest audience

    def ledger_where(self) -> tuple[str, list]:
        return "d.digest_run_id IS NOT NULL", []

    def summary(self, t0: float) -> dict:
        from django.db.models import Count, Max, Min

        from alerts.models import Batch, Delivery, DigestRun

        runs = list(DigestRun.objects.order_by("pk"))
        batches = Batch.objects.filter(digest_run__isnull=False)
        sent = batches.aggregate(first=Min("sent_at"), last=Max("sent_at"))
        return {
            "status": self.status(),
            "audience_size": sum(run.planned for run in runs),
            "runs": [{"period": run.period_key, "time_zone": run.time_zone, "status": run.status,
                      "planned": run.planned} for run in runs],
            "published_at_s": _since(t0, min((run.created_at for run in runs), default=None)),
            "fanned_out_at_s": _since(t0, max((run.fanned_out_at for run in runs if run.fanned_out_at),
                                              default=None)),
            "first_handoff_at_s": _since(t0, sent["first"]),
            "last_handoff_at_s": _since(t0, sent["last"]),
            "finished_at_s": _since(t0, max((run.finished_at for run in runs if run.finished_at), default=None)),
            **_batch_summary(batches),
            "ledger": dict(Delivery.objects.filter(digest_run__isnull=False).values_list("status")
                           .annotate(n=Count("pk")).values_list("status", "n")),
        }


# What one benchmark run measures: the watcher and the verifier take any.
Job: TypeAlias = AlertJob | CorrectionJob | DigestJob
