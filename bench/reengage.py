"""How long the daily re-engagement pass takes over N confirmed readers.

    DATABASE_URL=postgres://postgres@127.0.0.1:5432/<yours> CACHE_REDIS_URL=... CELERY_BROKER_URL=... \\
        .venv/bin/python bench/reengage.py --subscribers 100000

Uses the database and Redis databases of the environment (migrated first), seeds N
confirmed readers subscribed a year ago, one alert a month ago sent to all of them
(the ledger), opens by half of them, and then times one `reengage_run` (which asks
the other half, recording their emails in the outbox) and a second, idempotent one.
Everything it made is deleted afterwards. A benchmark, not a test.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from datetime import timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
os.environ.setdefault("DEBUG", "1")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--subscribers", type=int, default=100_000)
    args = parser.parse_args()
    if "DATABASE_URL" not in os.environ:
        sys.exit("Set DATABASE_URL (and CACHE_REDIS_URL, CELERY_BROKER_URL) to databases of your own.")
    os.environ["REENGAGE_AFTER_MONTHS"] = "3"
    os.environ.setdefault("EMAIL_BACKEND", "anymail.backends.mailgun.EmailBackend")
    os.environ.setdefault("TRACKING_WEBHOOK_ESPS", "mailgun")

    import django

    django.setup()
    from django.core.management import call_command
    from django.db import transaction
    from django.utils import timezone

    from alerts.models import Alert, Batch, Delivery, OutboxEmail, Subscriber, TrackingEvent
    from alerts.subscribers.reengagement import reengage_run

    call_command("migrate", verbosity=0)
    n, now = args.subscribers, timezone.now()
    tag = f"bench-reengage-{int(time.time())}"
    with transaction.atomic():
        readers = Subscriber.objects.bulk_create(
            [Subscriber(email=f"{tag}-{i}@example.com", email_hmac=f"{tag}-{i}", status="confirmed",
                        confirmed_at=now - timedelta(days=365)) for i in range(n)], batch_size=5000)
        alert = Alert.objects.create(headline=tag, status="sent", published_at=now - timedelta(days=30))
        batch = Batch.objects.create(alert=alert, first_subscriber_id=readers[0].pk,
                                     last_subscriber_id=readers[-1].pk, status="sent")
        Delivery.objects.bulk_create([Delivery(alert=alert, subscriber=r, batch=batch, status="delivered",
                                               sent_at=alert.published_at) for r in readers], batch_size=5000)
        TrackingEvent.objects.bulk_create([TrackingEvent(event_id=f"{tag}:{r.pk}", event_type="opened",
                                                         recipient_hmac=r.email_hmac, occurred_at=now - timedelta(days=5))
                                           for r in readers[::2]], batch_size=5000)
    try:
        started = time.perf_counter()
        first = reengage_run(budget_seconds=3600)
        first_s = time.perf_counter() - started
        started = time.perf_counter()
        second = reengage_run(budget_seconds=3600)
        second_s = time.perf_counter() - started
        print(f"readers: {n}, asked: {first.asked} in {first_s:.2f} s ({n / first_s:,.0f} readers/s); "
              f"second pass asked {second.asked} in {second_s:.2f} s ({n / second_s:,.0f} readers/s)")
    finally:
        ids = [r.pk for r in readers]
        OutboxEmail.objects.filter(subscriber_id__in=ids).delete()
        Delivery.objects.filter(alert=alert).delete()
        TrackingEvent.objects.filter(event_id__startswith=f"{tag}:").delete()
        Batch.objects.filter(alert=alert).delete()
        alert.delete()
        Subscriber.objects.filter(pk__in=ids).delete()


if __name__ == "__main__":
    main()
