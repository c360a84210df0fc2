"""Where the benchmark keeps its data, shared by every part of it: its own PostgreSQL
database and Redis databases, the fake provider's credentials, and the results folder."""

from __future__ import annotations

import os
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"

# Overridable, so that two checkouts (old and new code, run in alternation) can each
# keep a database migrated by their own code.
DB_NAME = os.environ.get("BENCH_DATABASE", "stoppress_bench")
PG_SERVER = "postgres://postgres@127.0.0.1:5432"
REDIS_SERVER = "redis://127.0.0.1:6379"
# Ours alone; the test suite uses 12-15.
BROKER_DB, CACHE_DB = (int(n) for n in os.environ.get("BENCH_REDIS_DBS", "10,11").split(","))
API_KEY = "bench-api-key"
SENDER_DOMAIN = "mg.news.example.com"
EMAIL_HASH_KEY = "bench-email-hash-key"
SECRET_KEY = "bench-secret-key-not-for-production-" + "b" * 24
