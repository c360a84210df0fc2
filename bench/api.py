"""What the publishing API costs per request, in process through Django's whole stack
(middleware, authentication, rate limit, validation, idempotency, PostgreSQL): the
median and 95th percentile time and the queries of each kind of request.

    DATABASE_URL=postgres://postgres@127.0.0.1:5432/stoppress_c \\
    CACHE_REDIS_URL=redis://127.0.0.1:6379/6 .venv/bin/python bench/api.py --requests 300

The database (created and migrated if missing) and the cache's Redis database come from
the environment, so the benchmark never touches anybody else's. It removes what it
made. Drafts only: nothing is queued, so no broker or worker is needed."""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=300, help="requests of each kind")
    parser.add_argument("--json", type=Path, help="write the figures here too")
    args = parser.parse_args()
    if not os.environ.get("DATABASE_URL"):
        parser.error("set DATABASE_URL (and CACHE_REDIS_URL) to a database of the benchmark's own")
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.test_settings")
    os.environ.setdefault("API_RATE_PER_TOKEN", "1000000/m")
    os.environ.setdefault("LOG_LEVEL", "WARNING")
    import django

    django.setup()
    _ensure_database()
    results = _run(args.requests)
    for name, figures in results.items():
        print(f"{name:<42} median {figures['median_ms']:6.2f} ms   p95 {figures['p95_ms']:6.2f} ms   "
              f"{figures['queries']} queries")
    print(f"command: DATABASE_URL=… CACHE_REDIS_URL=… .venv/bin/python bench/api.py --requests {args.requests}")
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))
    return 0


def _ensure_database() -> None:
    import psycopg
    from django.conf import settings
    from django.core.management import call_command

    db = settings.DATABASES["default"]
    with psycopg.connect(host=db["HOST"], port=db["PORT"] or 5432, user=db["USER"], dbname="postgres",
                         autocommit=True) as conn:
        if not conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", [db["NAME"]]).fetchone():
            conn.execute(f'CREATE DATABASE "{db["NAME"]}"')
    call_command("migrate", verbosity=0)


def _run(n: int) -> dict[str, dict]:
    from django.db import connection
    from django.test import Client
    from django.test.utils import CaptureQueriesContext

    from alerts.api.tokens import token_create
    from alerts.models import Alert, ApiToken, IdempotentRequest, Topic

    topic, _ = Topic.objects.get_or_create(slug="bench-world", defaults={"name": "Bench world"})
    row, token = token_create(name="bench", scope=ApiToken.Scope.PUBLISH)
    client = Client(HTTP_AUTHORIZATION=f"Bearer {token}")
    body = {"headline": "Storm closes bridge", "standfirst": "Traffic diverted", "topics": [topic.slug],
            "url": "https://news.example.com/storm"}
    made: list[int] = []

    def create(key: str | None = None):
        headers = {"Idempotency-Key": key} if key else {}
        response = client.post("/api/v1/alerts", body, content_type="application/json", headers=headers)
        made.append(response.json()["id"])
        return response

    replay_key = str(uuid.uuid4())
    create(replay_key)
    kinds = {
        "GET /api/v1/topics": lambda: client.get("/api/v1/topics"),
        "POST /api/v1/alerts (draft)": create,
        "POST /api/v1/alerts (draft, Idempotency-Key)": lambda: create(str(uuid.uuid4())),
        "POST /api/v1/alerts (replayed Idempotency-Key)": lambda: client.post(
            "/api/v1/alerts", body, content_type="application/json", headers={"Idempotency-Key": replay_key}),
        "GET /api/v1/alerts/{id} (with progress)": lambda: client.get(f"/api/v1/alerts/{made[0]}"),
    }
    results = {}
    try:
        for name, call in kinds.items():
            for _ in range(10):  # warm up
                call()
            times = []
            for _ in range(n):
                started = time.perf_counter()
                response = call()
                times.append((time.perf_counter() - started) * 1000)
                assert response.status_code < 300, response.content
            with CaptureQueriesContext(connection) as queries:
                call()
            times.sort()
            results[name] = {"median_ms": round(statistics.median(times), 2),
                             "p95_ms": round(times[int(len(times) * 0.95) - 1], 2), "queries": len(queries)}
    finally:
        Alert.objects.filter(pk__in=set(made)).delete()
        IdempotentRequest.objects.filter(token=row).delete()
        row.delete()
    return results


if __name__ == "__main__":
    sys.exit(main())
