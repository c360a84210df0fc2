"""Settings for the test suite: the production settings module with test defaults in
the environment. Tests run against real PostgreSQL and Redis, never SQLite."""

from __future__ import annotations

import os
import tempfile

os.environ.setdefault("SECRET_KEY", "test-secret-key-not-for-production-" + "k" * 20)
os.environ.setdefault("EMAIL_HASH_KEY", "test-email-hash-key")
os.environ.setdefault("DATABASE_URL", "postgres://postgres@127.0.0.1:5432/stoppress")
os.environ.setdefault("CACHE_REDIS_URL", "redis://127.0.0.1:6379/14")
os.environ.setdefault("CELERY_BROKER_URL", "redis://127.0.0.1:6379/15")
os.environ.setdefault("SITE_URL", "https://news.example.com")
os.environ.setdefault("ALLOWED_HOSTS", "testserver,localhost,127.0.0.1,news.example.com")
os.environ.setdefault("SECURE_SSL_REDIRECT", "0")
os.environ.setdefault("SESSION_COOKIE_SECURE", "0")
os.environ.setdefault("CSRF_COOKIE_SECURE", "0")
os.environ.setdefault("DEFAULT_FROM_EMAIL", "The Daily Courier <alerts@news.example.com>")
os.environ.setdefault("PUBLICATION_NAME", "The Daily Courier")
os.environ.setdefault("SIGNUP_RATE_PER_IP", "1000/h")
# Metrics in multiprocess mode, as in production: the test process and the worker
# processes it starts (which inherit this) write to one directory, read by /metrics.
os.environ.setdefault("PROMETHEUS_MULTIPROC_DIR", tempfile.mkdtemp(prefix="stoppress-metrics-"))

from .settings import *  # noqa: E402,F403

STORAGES["staticfiles"]["BACKEND"] = "django.contrib.staticfiles.storage.StaticFilesStorage"  # noqa: F405
PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
WHITENOISE_AUTOREFRESH = True  # no collectstatic before tests
