"""Where the benchmark keeps its data, shared by every part of it: its own PostgreSQL
database and Redis databases, the fake provider's credentials, and the results folder."""

from __future__ import annotations

from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"

DB_NAME = "stoppress_bench"
PG_SERVER = "postgres://postgres@127.0.0.1:5432"
REDIS_SERVER = "redis://127.0.0.1:6379"
BROKER_DB, CACHE_DB = 10, 11  # ours alone; the test suite uses 12-15
API_KEY = "bench-api-key"
SENDER_DOMAIN = "mg.news.example.com"
EMAIL_HASH_KEY = "bench-email-hash-key"
SECRET_KEY = "bench-secret-key-not-for-production-" + "b" * 24
