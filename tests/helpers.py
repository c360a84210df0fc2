"""Helpers shared by test modules in different files: the services the suite needs, a
real Celery worker, assertions on email, and the constants, links and steps that the
modules of one package's tests have in common."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

import pytest
from django.conf import settings
from django.core.mail import EmailMessage
from django.db import connection
from django.urls import reverse
from django.utils import timezone

from alerts.common.tokens import link_tokens
from alerts.digests.schedule import digest_tick
from alerts.digests.send import digest_batch_send
from alerts.models import Alert, Batch, ConsentEvent, Subscriber
from alerts.publishing import fanout

ROOT = Path(__file__).resolve().parent.parent
IN_CI = bool(os.environ.get("CI"))


def require_service(ok: bool, what: str) -> None:
    """Skip locally when a service is missing; in CI a missing service is a failure."""
    if ok:
        return
    if IN_CI:
        pytest.fail(f"{what} is required in CI but is not available", pytrace=False)
    pytest.skip(f"{what} is not available")


def wait_until(predicate, timeout: float = 30.0, interval: float = 0.05, message: str = ""):
    """Poll until predicate() is truthy; fail with `message` after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    pytest.fail(message or f"condition not met within {timeout}s")


class Worker:
    """A real `celery worker` process consuming every queue of the test broker."""

    def __init__(self, env: dict[str, str], log_path: Path, concurrency: int = 2,
                 celery_args: list[str] | None = None) -> None:
        self.env, self.log_path, self.concurrency = env, log_path, concurrency
        self.celery_args = celery_args or []  # before "worker", e.g. ["--quiet"]
        self.proc: subprocess.Popen | None = None

    def start(self) -> Worker:
        log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "celery", "-A", "config", *self.celery_args, "worker",
             "-Q", "alerts,transactional,digests,sweeps,webhooks", "-P", "prefork",
             f"--concurrency={self.concurrency}", "--loglevel=INFO", "--without-heartbeat",
             "--without-gossip", "--without-mingle", "-n", f"test-{os.getpid()}-{time.time_ns()}@%h"],
            cwd=ROOT, env=self.env, stdout=log, stderr=subprocess.STDOUT,
        )
        self._wait_ready()
        return self

    def _wait_ready(self, timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if b"ready." in self.log_path.read_bytes():
                return
            if self.proc.poll() is not None:
                break
            time.sleep(0.1)
        raise RuntimeError("Celery worker did not start:\n" + self.log_path.read_text()[-3000:])

    def child_pids(self) -> list[int]:
        out = subprocess.run(["pgrep", "-P", str(self.proc.pid)], capture_output=True, text=True)
        return [int(pid) for pid in out.stdout.split()]

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


# --- Email ----------------------------------------------------------------------------


def worker_env(fake, **overrides: str) -> dict[str, str]:
    """The environment of a test worker process, pointed at the fake Mailgun `fake`."""
    db = settings.DATABASES["default"]
    env = dict(os.environ)
    env.update({
        "DJANGO_SETTINGS_MODULE": "config.test_settings",
        "DATABASE_URL": f"postgres://{db['USER']}@{db['HOST']}:{db['PORT']}/{db['NAME']}",
        "EMAIL_BACKEND": "anymail.backends.mailgun.EmailBackend",
        "MAILGUN_API_KEY": fake.api_key,
        "MAILGUN_SENDER_DOMAIN": "mg.news.example.com",
        "MAILGUN_API_URL": fake.api_url,
        "PYTHONUNBUFFERED": "1",
        # Small batches and short leases, so a few thousand subscribers make many
        # batches and a dead worker's batch is taken over within seconds.
        "FANOUT_BATCH_SIZE": "250",
        "BATCH_LEASE_SECONDS": "4",
        "SWEEP_REQUEUE_AFTER_SECONDS": "3",
    })
    env.update(overrides)
    return env


def html_body(message: EmailMessage) -> str:
    for content, mimetype in getattr(message, "alternatives", []):
        if mimetype == "text/html":
            return content
    raise AssertionError("message has no HTML part")


def assert_email_contains(message: EmailMessage, fragment: str) -> None:
    """The fragment is in both the plain-text and the HTML body."""
    assert fragment in message.body, f"{fragment!r} not in text body"
    assert fragment in html_body(message), f"{fragment!r} not in HTML body"


def link_in(text: str, path_prefix: str) -> str:
    match = re.search(r"https?://[^\s\"'<>]+" + re.escape(path_prefix) + r"[^\s\"'<>]+", text)
    assert match, f"no link to {path_prefix} in:\n{text}"
    return match.group(0)


# --- Signup pages (tests/signup/) -----------------------------------------------------


SIGNUP = "/"
API = "/api/subscribe"
PARTNER = "https://www.example-news.com"
PHONE = {"width": 375, "height": 740}


# --- Subscriber links (tests/subscribers/, tests/common/) -----------------------------


ONE_CLICK = {"List-Unsubscribe": "One-Click"}


def unsubscribe_path(subscriber: Subscriber) -> str:
    return reverse("alerts:unsubscribe", args=[link_tokens.make_token(subscriber.pk)])


def withdrawals(subscriber: Subscriber):
    return ConsentEvent.objects.filter(subscriber=subscriber, purpose="alerts", action="withdrawn")


REQUEST = "/preferences/"


def prefs_path(subscriber: Subscriber) -> str:
    return reverse("alerts:preferences", args=[link_tokens.make_token(subscriber.pk)])


def form_data(**overrides) -> dict:
    data = {"alerts": "on", "frequency": "immediate", "time_zone": "", "topics": []}
    data.update(overrides)
    return {key: value for key, value in data.items() if value is not None}


def request_link(client, email: str = "alice@example.com", **extra):
    """Ask for a preferences link; the outbox sends it once the request commits."""
    from django.test import TestCase

    with TestCase.captureOnCommitCallbacks(execute=True):
        return client.post(REQUEST, {"email": email, **extra}, REMOTE_ADDR="203.0.113.5")


# --- Sending an alert (tests/sending/, tests/publishing/, tests/test_models.py) -------


# --- Providers' fakes (tests/sending/test_providers.py, test_per_message_providers.py) ---

# A reader's own link in an email, its token in group 1.
READER_LINK = re.compile(r"https://news\.example\.com/u/([^/\s\"<>]+)/")


def link_owner(token: str) -> int:
    """The subscriber a link token belongs to."""
    return link_tokens.read_for_unsubscribe(token)


def fake_provider(settings, providers: dict, esp_name: str):
    """Start `esp_name`'s fake from `providers` (esp_name -> (fake class, anymail backend
    module, ANYMAIL settings for the fake)) and point EMAIL_BACKEND at it: a generator
    for a fixture to yield from."""
    fake_class, module, anymail = providers[esp_name]
    with fake_class() as fake:
        settings.EMAIL_BACKEND = f"anymail.backends.{module}.EmailBackend"
        settings.ANYMAIL = {**settings.ANYMAIL, **anymail(fake)}
        fake.esp_name = esp_name
        yield fake


def publish_and_cut(alert, batch_size=None, settings=None):
    if settings is not None and batch_size:
        settings.FANOUT_BATCH_SIZE = batch_size
    Alert.objects.filter(pk=alert.pk).update(status=Alert.Status.SENDING, published_at=timezone.now())
    fanout.alert_fan_out(alert_id=alert.pk)
    return list(Batch.objects.filter(alert=alert).order_by("first_subscriber_id"))


def send_all(batches):
    for batch in batches:
        fanout.batch_send(batch_id=batch.pk)


# --- Failover (tests/publishing/test_failover.py, tests/digests/test_failover.py) -----


SENDGRID = "anymail.backends.sendgrid.EmailBackend"  # the fallback's backend, on its fake


def fallback_env(fake_sendgrid, **overrides: str) -> dict[str, str]:
    """A test worker's extra environment: the fake SendGrid as EMAIL_BACKEND_FALLBACK,
    failing over after 2 s."""
    return {"EMAIL_BACKEND_FALLBACK": SENDGRID, "SENDGRID_API_KEY": fake_sendgrid.api_key,
            "SENDGRID_API_URL": fake_sendgrid.api_url, "FAILOVER_AFTER_SECONDS": "2", **overrides}


def use_fallback(settings, fake_sendgrid) -> None:
    """In process: the fake SendGrid as EMAIL_BACKEND_FALLBACK."""
    settings.EMAIL_BACKEND_FALLBACK = SENDGRID
    settings.ANYMAIL = {**settings.ANYMAIL, "SENDGRID_API_KEY": fake_sendgrid.api_key,
                        "SENDGRID_API_URL": fake_sendgrid.api_url}


# --- Digests (tests/digests/) ---------------------------------------------------------


# 27 November 2026: Tokyo is UTC+9, London is UTC+0.
TOKYO_7AM = datetime(2026, 11, 26, 22, 0, tzinfo=UTC)
LONDON_7AM = datetime(2026, 11, 27, 7, 0, tzinfo=UTC)


def tick(at: datetime) -> list[int]:
    """One beat tick at `at`, then every queued batch sent, as workers would."""
    runs = digest_tick(now=at)
    for batch in Batch.objects.filter(digest_run__isnull=False, status=Batch.Status.PENDING):
        digest_batch_send(batch_id=batch.pk)
    return runs


def digest_recipients(mailgun) -> list[str]:
    return [r for call in mailgun.calls for r in call.recipients]


# --- Data rights (tests/rights/) ------------------------------------------------------


# The address of erin, the subscriber of the rights tests (tests/rights/conftest.py).
EMAIL = "Erin.Erase@example.com"


def tables_containing(text: str) -> list[str]:
    """Every table.column (text-like, any table) whose value contains `text`, any case."""
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT table_name, column_name FROM information_schema.columns "
            "WHERE table_schema = current_schema() AND data_type IN "
            "('text', 'character varying', 'character', 'json', 'jsonb')")
        columns = cursor.fetchall()
        hits = []
        for table, column in columns:
            quoted_table, quoted_column = connection.ops.quote_name(table), connection.ops.quote_name(column)
            cursor.execute(f"SELECT count(*) FROM {quoted_table} WHERE {quoted_column}::text ILIKE %s",
                           [f"%{text}%"])
            if cursor.fetchone()[0]:
                hits.append(f"{table}.{column}")
    return hits
