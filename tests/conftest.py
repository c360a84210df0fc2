"""Shared fixtures: a clean Redis cache per test, the fake email providers, and a real
Celery worker process on the real Redis broker for end-to-end tests."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import redis
from django.conf import settings
from django.core.cache import cache

from tests.fakes.mailgun import FakeMailgun

ROOT = Path(__file__).resolve().parent.parent
IN_CI = bool(os.environ.get("CI"))


def require_service(ok: bool, what: str) -> None:
    """Skip locally when a service is missing; in CI a missing service is a failure."""
    if ok:
        return
    if IN_CI:
        pytest.fail(f"{what} is required in CI but is not available", pytrace=False)
    pytest.skip(f"{what} is not available")


@pytest.fixture(autouse=True)
def _clean_cache():
    """Rate-limit and cooldown counters must not leak between tests."""
    cache.clear()
    yield


@pytest.fixture
def eager_celery(settings):
    """Run tasks in-process: for tests of what a task does, not of the broker."""
    settings.CELERY_TASK_ALWAYS_EAGER = True


@pytest.fixture
def broker_redis() -> redis.Redis:
    client = redis.Redis.from_url(settings.CELERY_BROKER_URL)
    try:
        client.ping()
    except redis.RedisError:
        require_service(False, "Redis")
    return client


@pytest.fixture(scope="session")
def fake_mailgun():
    with FakeMailgun() as server:
        yield server


@pytest.fixture
def mailgun(fake_mailgun, settings):
    """The real anymail Mailgun backend pointed at the local fake Mailgun."""
    fake_mailgun.reset()
    settings.EMAIL_BACKEND = "anymail.backends.mailgun.EmailBackend"
    settings.ANYMAIL = {
        **settings.ANYMAIL,
        "MAILGUN_API_KEY": fake_mailgun.api_key,
        "MAILGUN_SENDER_DOMAIN": "mg.news.example.com",
        "MAILGUN_API_URL": fake_mailgun.api_url,
    }
    return fake_mailgun


def _worker_env(fake: FakeMailgun) -> dict[str, str]:
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
    return env


class Worker:
    """A real `celery worker` process consuming every queue of the test broker."""

    def __init__(self, env: dict[str, str], log_path: Path, concurrency: int = 2) -> None:
        self.env, self.log_path, self.concurrency = env, log_path, concurrency
        self.proc: subprocess.Popen | None = None

    def start(self) -> Worker:
        log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "celery", "-A", "config", "worker",
             "-Q", "alerts,transactional,digests", "-P", "prefork",
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


@pytest.fixture
def celery_worker_process(transactional_db, fake_mailgun, broker_redis, tmp_path):
    """Start a real worker on the real broker. Tests using it see committed data only,
    hence transactional_db. The broker queues are emptied first so that no task left by
    an earlier test run is picked up."""
    broker_redis.flushdb()
    fake_mailgun.reset()
    worker = Worker(_worker_env(fake_mailgun), tmp_path / "worker.log").start()
    yield worker
    worker.stop()


def wait_until(predicate, timeout: float = 30.0, interval: float = 0.05, message: str = ""):
    """Poll until predicate() is truthy; fail with `message` after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    pytest.fail(message or f"condition not met within {timeout}s")
