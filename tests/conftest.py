"""Fixtures shared by the test folders: a clean Redis cache per test, eager Celery,
the fake email providers, a real Celery worker process on the real Redis broker for
end-to-end tests, and the alert that the fan-out, sending and sweeper tests publish.

Fixtures used by one folder only are in that folder's conftest.py; those of a single
top-level module (test_tracking.py) stay in it."""

from __future__ import annotations

import pytest
import redis
from django.conf import settings
from django.core.cache import cache

from alerts.common.cache import clear_all
from alerts.models import Alert, Topic
from tests.fakes.mailgun import FakeMailgun
from tests.fakes.sendgrid import FakeSendGrid
from tests.helpers import Worker, require_service, worker_env


@pytest.fixture(autouse=True)
def _clean_cache():
    """Rate-limit and cooldown counters must not leak between tests, nor ids cached in
    process memory of rows that a test's rollback removed (wording texts)."""
    cache.clear()
    clear_all()
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


@pytest.fixture
def fake_sendgrid():
    """A second provider's fake, for failover to EMAIL_BACKEND_FALLBACK."""
    with FakeSendGrid() as fake:
        yield fake


@pytest.fixture
def clean_failover_record():
    """The primary provider's health record (alerts/sending/failover.py) is shared
    through Redis: a failover test starts and ends without one."""
    client = redis.Redis.from_url(settings.CACHE_REDIS_URL)

    def clear():
        for key in client.scan_iter("stoppress:failover:*"):
            client.delete(key)

    clear()
    yield
    clear()


@pytest.fixture
def celery_worker_process(transactional_db, fake_mailgun, broker_redis, tmp_path):
    """Start a real worker on the real broker. Tests using it see committed data only,
    hence transactional_db. The broker queues are emptied first so that no task left by
    an earlier test run is picked up."""
    broker_redis.flushdb()
    fake_mailgun.reset()
    worker = Worker(worker_env(fake_mailgun), tmp_path / "worker.log").start()
    yield worker
    worker.stop()


@pytest.fixture
def world():
    return Topic.objects.create(name="World", slug="world")


@pytest.fixture
def alert(world):
    alert = Alert.objects.create(headline="Missiles fired <b>hours</b> before summit",
                                 standfirst="Two launches & a meeting", url="https://news.example.com/a")
    return alert
