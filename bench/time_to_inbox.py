#!/usr/bin/env python
"""What seeing an alert costs on a big list: the time-to-inbox percentiles, the
progress page's charts and one /metrics scrape, over an alert with N delivered events.

    DATABASE_URL=postgres://…/a_scratch_db python bench/time_to_inbox.py --events 1000000

It adds one alert and its events to the (migrated) database DATABASE_URL names (and
clears the cache CACHE_REDIS_URL names: use one of its own),
measures each query several times (median), and deletes them again. PostgreSQL only:
the events are generated in SQL.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:] = [entry for entry in sys.path if Path(entry or ".").resolve() != Path(__file__).resolve().parent]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
os.environ.setdefault("DEBUG", "1")

import django  # noqa: E402

django.setup()

from django.core.cache import cache  # noqa: E402
from django.db import connection  # noqa: E402
from django.utils import timezone  # noqa: E402

from alerts.models import Alert, TrackingEvent  # noqa: E402
from alerts.observability import charts  # noqa: E402
from alerts.observability.metrics import exposition  # noqa: E402
from alerts.observability.time_to_inbox import inbox_times  # noqa: E402


def timed(call, repeat: int) -> float:
    """Median milliseconds of `repeat` calls."""
    samples = []
    for _ in range(repeat):
        started = time.perf_counter()
        call()
        samples.append((time.perf_counter() - started) * 1000)
    return round(statistics.median(samples), 1)


def seed(alert: Alert, events: int) -> None:
    table = TrackingEvent._meta.db_table
    with connection.cursor() as cursor:
        for kind, count, spread in (("delivered", events, 600), ("opened", events // 5, 7200)):
            cursor.execute(f"""
                INSERT INTO {table} (event_id, event_type, message_id, recipient_hmac, reject_reason,
                                     description, occurred_at, received_at, alert_id, mailbox)
                SELECT 'bench:' || %s || ':' || %s || ':' || g, %s, '', '', '', '',
                       %s + (random() * %s) * interval '1 second', now(), %s,
                       (ARRAY['gmail', 'microsoft', 'yahoo', 'apple', 'other'])[1 + g %% 5]
                FROM generate_series(1, %s) AS g
            """, [alert.pk, kind, kind, alert.published_at, spread, alert.pk, count])
        cursor.execute(f"ANALYZE {table}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--events", type=int, default=100_000, help="delivered events (opens: a fifth of it)")
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    if connection.vendor != "postgresql":
        parser.error("DATABASE_URL must name a PostgreSQL database")
    published = timezone.now() - timezone.timedelta(hours=3)
    alert = Alert.objects.create(headline="Benchmark alert", status=Alert.Status.SENT, published_at=published)
    try:
        started = time.perf_counter()
        seed(alert, args.events)
        seeded_s = round(time.perf_counter() - started, 1)
        results = {
            "events": args.events, "seed_s": seeded_s,
            "inbox_times_ms": timed(lambda: inbox_times([alert.pk]), args.repeat),
            "sending_series_ms": timed(lambda: charts.sending_series(alert), args.repeat),
            "engagement_series_ms": timed(lambda: charts.engagement_series(alert), args.repeat),
            # Cold: nothing cached (the first scrape or poll after CACHE_SECONDS);
            # warm: the figures reused from the shared cache.
            "metrics_scrape_cold_ms": timed(lambda: (cache.clear(), exposition()), args.repeat),
            "metrics_scrape_warm_ms": timed(exposition, args.repeat),
        }
    finally:
        TrackingEvent.objects.filter(alert=alert).delete()
        alert.delete()
    print(json.dumps(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
